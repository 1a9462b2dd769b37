#pragma once
// Post-training int8 quantization (seed section 5.4): a trained float model becomes a model
// that runs in integers, attention's softmax included.
//
//   std::vector<sg::Tensor> batches = ...;              // a few training batches, float32
//   sg::quant::QuantizedModel q = sg::quant::quantize(model, batches);
//   sg::Tensor logits = q.forward(images);               // float in, float out
//   q.save("model.int8.safetensors");                    // int8 weights, int32 biases, scales
//   auto again = sg::quant::QuantizedModel::load("model.int8.safetensors");  // bit-exact
//
// Models: an nn::Sequential of Linear, ReLU, GELU and Dropout (the MLP), and
// nn::VisionTransformer (patch embedding, class token, position embedding, pre-norm encoder
// layers with MultiHeadAttention and a GELU MLP, LayerNorm, mean or class-token pooling).
// Any other module is refused by name.
//
// The scheme (symmetric throughout, zero points 0):
// - weights int8 per output channel: scale_c = max|W_c| / 127; biases int32 at the scale of
//   their accumulator (input scale x weight scale);
// - activations int8 (uint8 after a ReLU) with one scale per tensor from calibration: the
//   largest |x| seen (kMinMax) or a percentile of |x| (kPercentile) over the calibration
//   batches, run through the float model; or, with per_token, one scale per row found at run
//   time (QuantizeOptions);
// - products int8 x int8 -> int32 (core/onednn.h gemm_int8), requantized to the next
//   int8 scale by fixed-point multipliers (quant/int_kernels.h);
// - softmax, GELU and LayerNorm by the integer kernels of quant/int_kernels.h.
// forward() quantizes its float input once, runs forward_integer(), and converts the int32
// logits back to float: no float arithmetic between the two ends (tests check it by trapping
// every inexact floating-point operation while forward_integer runs).
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "nn/module.h"

namespace sg::quant {

enum class Calibration {
  kMinMax,      // scale = max |x| / qmax over the calibration batches
  kPercentile,  // scale = the given percentile of |x| / qmax (clips the rare outliers)
};

struct QuantizeOptions {
  Calibration calibration = Calibration::kMinMax;
  double percentile = 99.99;  // in (0, 100], for kPercentile
  // Per-token dynamic scales: every Linear's input gets one scale per row (token, or sample
  // for the MLP), its largest |value| found at run time, instead of one calibrated scale for
  // the tensor. The value is formed in int32 at a fine calibrated scale (range / 2^16) and
  // divided by its row's maximum in integers (quantize_rows_s8). Calibrated (static) still:
  // the model's input, q, k and v (the softmax's integer exp needs one score scale per head,
  // and P V mixes the rows of v), and the int32 residual stream.
  bool per_token = false;
};

// An integer activation: row-major values of one type, and the scale they stand at.
enum class IntType : uint8_t { kS8, kU8, kS32 };
struct IntTensor {
  IntType type = IntType::kS8;
  Shape shape;
  double scale = 1.0;       // real value = integer * scale (kS32 logits: see column_scales)
  // Per-token (QuantizeOptions::per_token): row r (a row is the last dim) stands at
  // scale * row_factor[r]. Empty: one scale for every row.
  std::vector<int32_t> row_factor;
  std::vector<int8_t> s8;   // kS8
  std::vector<uint8_t> u8;  // kU8
  std::vector<int32_t> s32;  // kS32
  std::vector<double> column_scales;  // kS32 accumulators of a per-channel product: one per column
  int64_t numel() const;
};

// One step of the integer pipeline (quant/quantize.cpp defines them).
class Stage;

class QuantizedModel {
 public:
  QuantizedModel();
  ~QuantizedModel();
  QuantizedModel(QuantizedModel&&) noexcept;
  QuantizedModel& operator=(QuantizedModel&&) noexcept;

  // float32 input of the float model's shape (batch first) -> float32 logits.
  Tensor forward(const Tensor& x) const;
  // The three parts of forward: float -> int8 input; the integer pipeline; int32 -> float.
  IntTensor quantize_input(const Tensor& x) const;
  IntTensor forward_integer(const IntTensor& x) const;
  static Tensor dequantize(const IntTensor& logits);

  // safetensors: I8 weights, I32 biases, the scales in the metadata with
  // "format" = "softgrad-int8/1". load() validates every field and gives back a model whose
  // outputs equal the saved one's bit for bit.
  void save(const std::string& path) const;
  static QuantizedModel load(const std::string& path);

  // Bytes of the quantized parameters (int8 weights, int32 biases and the like).
  int64_t parameter_bytes() const;
  // One line per stage: what it is, its scales and shapes.
  std::string describe() const;

  // For quantize() and load(): appends a stage.
  void add_stage(std::unique_ptr<Stage> stage);
  void set_input(Shape sample_shape, double scale);

 private:
  std::vector<std::unique_ptr<Stage>> stages_;
  Shape input_shape_;  // one sample's shape
  double input_scale_ = 1.0;
};

// Throws sg::Error for an empty calibration set, a batch whose sample shape differs from the
// first, a model or a layer with no integer kernel here (named with its type and position).
QuantizedModel quantize(nn::Module& model, const std::vector<Tensor>& calibration_batches,
                        const QuantizeOptions& options = {});

}  // namespace sg::quant
