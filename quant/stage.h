#pragma once
// The pieces of a QuantizedModel (quant/quantize.h), private to quant/: the Stage interface,
// the integer Linear, calibration observers, and the safetensors writer/reader helpers the
// stages save and load themselves with.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "quant/int_kernels.h"
#include "quant/quantize.h"

namespace sg::quant {

// ---- saving and loading ------------------------------------------------------------------

// "d0,d1,..." (the metadata's form of a shape; StageReader::shape reads it back).
inline std::string join_shape(const Shape& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(s[i]);
  }
  return out;
}

// Collects one model's tensors (narrowed to I8/I32 where asked) and metadata strings, each
// stage under its prefix "stage.<i>.".
struct StageWriter {
  NamedTensors tensors;
  std::map<std::string, std::string> narrow, metadata;
  std::string prefix;  // the stage (or part of a stage) being written: "stage.3.", "stage.3.ln1."

  void ints(const std::string& name, const std::vector<int8_t>& v, const Shape& shape);
  void ints(const std::string& name, const std::vector<int32_t>& v, const Shape& shape);
  void reals(const std::string& name, const std::vector<double>& v);  // F64
  void text(const std::string& key, const std::string& value) { metadata[prefix + key] = value; }
  void real(const std::string& key, double value);  // exact: 17 significant digits
};

// Sets a writer's or reader's prefix to prefix + part for one scope.
template <typename T> struct SubPrefix {
  SubPrefix(T& io, const std::string& part) : io_(io), saved_(io.prefix) { io.prefix += part; }
  ~SubPrefix() { io_.prefix = saved_; }
  T& io_;
  std::string saved_;
};

// Reads what a StageWriter wrote, validating each field: presence, file dtype, shape, range.
class StageReader {
 public:
  StageReader(const std::string& path, SafetensorsFile file);
  mutable std::string prefix;  // the stage (or part of a stage) being read: "stage.3.", "stage.3.ln1."

  std::string text(const std::string& key) const;
  double real(const std::string& key) const;  // finite and > 0
  bool flag(const std::string& key) const;    // "0" or "1"
  std::vector<int8_t> s8(const std::string& name, const Shape& shape) const;
  std::vector<int32_t> s32(const std::string& name, const Shape& shape) const;
  std::vector<double> reals(const std::string& name, int64_t n) const;  // each finite and > 0
  // A shape written by the metadata as "d0,d1,...".
  Shape shape(const std::string& key) const;
  const std::map<std::string, std::string>& metadata() const { return file_.metadata; }
  // Every tensor of the file must have been read (no stray data).
  void check_all_read() const;

 private:
  const Tensor& tensor(const std::string& name, const char* dtype, const Shape& shape) const;
  std::string path_;
  SafetensorsFile file_;
  mutable std::map<std::string, bool> read_;
};

// ---- stages --------------------------------------------------------------------------------

class Stage {
 public:
  virtual ~Stage() = default;
  virtual std::string kind() const = 0;
  virtual IntTensor run(const IntTensor& x) const = 0;
  virtual void save(StageWriter& w) const = 0;
  virtual int64_t parameter_bytes() const = 0;
  virtual std::string describe() const = 0;
};

// Builds a stage of a saved kind from its fields (quant/quantize.cpp keeps the registry).
std::unique_ptr<Stage> load_stage(const std::string& kind, const StageReader& r);
// The ViT's stages (quant/vit.cpp): vit_embed, vit_layer, vit_head; nullptr for other kinds.
std::unique_ptr<Stage> load_vit_stage(const std::string& kind, const StageReader& r);

// What a Linear does with its int32 accumulators.
enum class LinearOutput {
  kS8,       // requantized to int8
  kU8Relu,   // ReLU fused: uint8 from 0
  kS8Gelu,   // rescaled to an int32 GELU input scale, i-GELU, int8
  kS32,      // rescaled to one int32 scale (the residual stream's)
  kLogits,   // left as accumulators; the model dequantizes them per column
};

// y = x W^T + b on the last dim of an int8/uint8 tensor of any leading shape.
class LinearStage : public Stage {
 public:
  struct Fields {
    int64_t in = 0, out = 0;
    IntType in_type = IntType::kS8;
    double in_scale = 1, out_scale = 1, pre_scale = 1;  // pre_scale: GELU's int32 input
    LinearOutput output = LinearOutput::kS8;
    std::vector<int8_t> weight;         // (out, in)
    std::vector<int32_t> bias;          // (out), at in_scale * weight_scale[c]
    std::vector<double> weight_scale;   // (out)
    // kS8 only, optional: one output scale per column instead of out_scale (an attention's
    // fused q/k/v projection gives q, k and v each their own scale).
    std::vector<double> column_out_scale;
    // Per-token activations (QuantizeOptions::per_token):
    // - per_token_in: input row r stands at in_scale * row_factor[r], so the accumulator's scale
    //   differs per row; each row is rescaled in integers (acc m_r r_c, 128-bit) to the column's
    //   target scale (target_scale()), and the bias is stored at that target scale instead.
    // - per_token_out (kS8, kU8Relu, kS8Gelu): the output is formed in int32 at fine_scale
    //   (GELU: gelu_s32), then each row quantized with its own factor (quantize_rows_s8/u8).
    // - fine_scale: that int32 scale; also the logits' scale (kLogits) after a per-token input.
    bool per_token_in = false, per_token_out = false;
    double fine_scale = 1;
    // The scale the accumulators of column c are rescaled to: GELU's input scale, the int32 or
    // int8 output's, or fine_scale; 0 for kLogits with a static input (left as accumulators).
    double target_scale(int64_t c) const;
  };
  explicit LinearStage(Fields f);
  // From a float Linear's weight (out, in) and bias (or undefined): per-channel int8 weights,
  // the bias at the accumulator's scale in_scale * weight_scale[c]; per_token_in: the bias is
  // left for bias_at_targets(), to call once the output fields are set.
  static Fields quantize_weights(const Tensor& weight, const Tensor& bias, double in_scale,
                                 bool per_token_in = false);
  static void bias_at_targets(Fields& f, const Tensor& bias);  // bias[c] at f.target_scale(c)

  std::string kind() const override { return "linear"; }
  IntTensor run(const IntTensor& x) const override;
  void save(StageWriter& w) const override;
  static std::unique_ptr<Stage> load(const StageReader& r);
  int64_t parameter_bytes() const override;
  std::string describe() const override;
  const Fields& fields() const { return f_; }

 private:
  // int32 at the target scale -> this stage's output (narrowed, GELU, or per-token rows).
  IntTensor finish(std::vector<int32_t> wide, const Shape& shape) const;

  Fields f_;
  std::vector<int32_t> weight_column_sums_;  // for gemm_int8 with a signed input (Int8Gemm::b_column_sums)
  // Signed input: -128 colsum(W) per column, owed by the product (Int8Gemm::a_plus_128); empty
  // otherwise. acc_bias_: the bias plus that offset, added to a static input's accumulators.
  std::vector<int32_t> acc_offset_, acc_bias_;
  std::vector<FixedPoint> requant_;  // per column: accumulator scale -> target scale
  GeluParams gelu_;
  std::vector<double> logit_scales_;  // kLogits: each column's accumulator scale, for dequantize()
};

// Multi-head self-attention in integers (quant/vit.cpp): qkv (B, T, 3 dim) int8 (q, k, v
// side by side, each with its own scale folded into `exp`: scores Q K^T are int32 at
// q_scale * k_scale, exp.scale = that / sqrt(head dim)), integer softmax to uint8 (1/256),
// P V as uint8 x int8 -> int32 at v_scale / 256, requantized by `requant` to int8 at
// out_scale; output (B, T, dim) with the heads merged. per_token_scale > 0 (= v_scale / 256 /
// 127, the accumulators' scale over 127): each token's row is quantized by its own largest
// |value| instead (quantize_rows_s8; requant and out_scale unused).
IntTensor int8_attention(const IntTensor& qkv, int64_t heads, const ExpParams& exp, FixedPoint requant,
                         double out_scale, double per_token_scale = 0);

// quantize() for an nn::VisionTransformer (quant/vit.cpp).
}  // namespace sg::quant
namespace sg::nn {
class VisionTransformer;
}
namespace sg::quant {
QuantizedModel quantize_vit(nn::VisionTransformer& vit, const std::vector<Tensor>& batches, const QuantizeOptions& o);

// ---- calibration -----------------------------------------------------------------------------

// The range of one activation over the calibration batches.
class Observer {
 public:
  void add(const Tensor& x);                     // float32 values
  double range(const QuantizeOptions& o) const;  // max |x|, or the percentile of |x|; > 0
 private:
  double absmax_ = 0;
  std::vector<float> sample_;  // |x|, every stride-th element
};

// Per-token activations are formed in int32 at a fine scale: the calibrated range / 2^16 (room
// for 2^14 times the range before the int32 clamp at 2^30); GELU's wide output saturates at
// kWideGeluMax (2^7 times the range).
inline constexpr double kFineSteps = 65536.0;
inline constexpr int32_t kWideGeluMax = 1 << 23;

// The integer type a stage emits, and its largest magnitude.
inline int32_t qmax(IntType t) { return t == IntType::kU8 ? 255 : 127; }

// A per-token activation from int32 values at one fine scale (row-major, rows of shape's last
// dim): int8 (kS8) or uint8 after ReLU (kU8) by quantize_rows_s8/u8, each row with its factor;
// `scale` is the base (row r: scale * row_factor[r]), i.e. the fine scale / qmax(type).
IntTensor quantize_per_token(IntType type, const int32_t* values, const Shape& shape, double scale);

}  // namespace sg::quant
