// QuantizedModel (quant/quantize.h): the pipeline of stages, its two float ends, saving and
// loading, and quantize() with calibration for the models it knows.
#include "quant/quantize.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "nn/activation.h"
#include "nn/dropout.h"
#include "nn/linear.h"
#include "nn/sequential.h"
#include "nn/vision_transformer.h"
#include "ops/elementwise.h"
#include "quant/stage.h"

namespace sg::quant {

namespace {
constexpr const char* kFormat = "softgrad-int8/1";

}  // namespace

// ---- QuantizedModel -------------------------------------------------------------------------

QuantizedModel::QuantizedModel() = default;
QuantizedModel::~QuantizedModel() = default;
QuantizedModel::QuantizedModel(QuantizedModel&&) noexcept = default;
QuantizedModel& QuantizedModel::operator=(QuantizedModel&&) noexcept = default;

void QuantizedModel::add_stage(std::unique_ptr<Stage> stage) { stages_.push_back(std::move(stage)); }

void QuantizedModel::set_input(Shape sample_shape, double scale) {
  input_shape_ = std::move(sample_shape);
  input_scale_ = scale;
}

IntTensor QuantizedModel::quantize_input(const Tensor& x) const {
  SG_CHECK(x.defined() && x.dim() == static_cast<int64_t>(input_shape_.size()) + 1 &&
               Shape(x.shape().begin() + 1, x.shape().end()) == input_shape_,
           "QuantizedModel::forward: expected a batch of shape (B, {}), got {}", join_shape(input_shape_),
           x.defined() ? fmt::format("{}", x.shape()) : std::string("an undefined tensor"));
  SG_CHECK(x.dtype() == kFloat32 || x.dtype() == kFloat64,
           "QuantizedModel::forward: expected float32 (or float64) input, got {}", x.dtype());
  const std::vector<double> v = x.detach().to(kFloat64).contiguous().to_vector<double>();
  IntTensor q;
  q.type = IntType::kS8;
  q.shape = x.shape();
  q.scale = input_scale_;
  q.s8.resize(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    SG_CHECK(!std::isnan(v[i]), "QuantizedModel::forward: input element {} is NaN", i);
    q.s8[i] = static_cast<int8_t>(std::clamp(std::round(v[i] / input_scale_), -127.0, 127.0));
  }
  return q;
}

IntTensor QuantizedModel::forward_integer(const IntTensor& x) const {
  SG_CHECK(!stages_.empty(), "QuantizedModel::forward: the model is empty (quantize() or load() makes one)");
  IntTensor h = stages_[0]->run(x);
  for (size_t i = 1; i < stages_.size(); ++i) h = stages_[i]->run(h);
  return h;
}

Tensor QuantizedModel::dequantize(const IntTensor& logits) {
  SG_CHECK(logits.type == IntType::kS32 && !logits.shape.empty() &&
               static_cast<int64_t>(logits.column_scales.size()) == logits.shape.back(),
           "QuantizedModel::dequantize: expected int32 accumulators with one scale per column");
  const int64_t cols = logits.shape.back(), rows = logits.numel() / cols;
  std::vector<float> out(logits.s32.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out[r * cols + c] = static_cast<float>(logits.s32[r * cols + c] * logits.column_scales[c]);
  return from_vector<float>(out, logits.shape);
}

Tensor QuantizedModel::forward(const Tensor& x) const { return dequantize(forward_integer(quantize_input(x))); }

int64_t QuantizedModel::parameter_bytes() const {
  int64_t n = 0;
  for (const auto& s : stages_) n += s->parameter_bytes();
  return n;
}

std::string QuantizedModel::describe() const {
  std::string out = fmt::format("input (B, {}) -> int8, scale {:.4g}\n", join_shape(input_shape_), input_scale_);
  for (size_t i = 0; i < stages_.size(); ++i) out += fmt::format("{:>3}  {}\n", i, stages_[i]->describe());
  return out;
}

void QuantizedModel::save(const std::string& path) const {
  StageWriter w;
  w.metadata["format"] = kFormat;
  w.metadata["input_shape"] = join_shape(input_shape_);
  w.real("input_scale", input_scale_);
  std::string kinds;
  for (size_t i = 0; i < stages_.size(); ++i) {
    w.prefix = fmt::format("stage.{}.", i);
    stages_[i]->save(w);
    if (i > 0) kinds += ',';
    kinds += stages_[i]->kind();
  }
  w.prefix.clear();
  w.metadata["stages"] = kinds;
  save_safetensors(path, w.tensors, w.metadata, w.narrow);
}

QuantizedModel QuantizedModel::load(const std::string& path) {
  StageReader r(path, load_safetensors(path));
  const auto& meta = r.metadata();
  const auto format = meta.find("format");
  SG_CHECK(format != meta.end() && format->second == kFormat,
           "QuantizedModel::load: '{}': metadata 'format' is {}, expected '{}' (a file written by "
           "QuantizedModel::save)",
           path, format == meta.end() ? std::string("missing") : "'" + format->second + "'", kFormat);
  QuantizedModel m;
  m.set_input(r.shape("input_shape"), r.real("input_scale"));
  const std::string kinds = r.text("stages");
  size_t at = 0, i = 0;
  while (at <= kinds.size()) {
    const size_t comma = std::min(kinds.find(',', at), kinds.size());
    r.prefix = fmt::format("stage.{}.", i++);
    m.add_stage(load_stage(kinds.substr(at, comma - at), r));
    at = comma + 1;
  }
  r.prefix.clear();
  r.check_all_read();
  return m;
}

std::unique_ptr<Stage> load_stage(const std::string& kind, const StageReader& r) {
  if (kind == "linear") return LinearStage::load(r);
  if (auto stage = load_vit_stage(kind, r)) return stage;
  fail("QuantizedModel::load: {}: unknown stage kind '{}'", r.prefix, kind);
}

// ---- quantize(): the MLP (nn::Sequential) ---------------------------------------------------------

namespace {

// A Sequential read as Linear layers, each with the activation after it (Dropout skipped).
struct DenseLayer {
  std::shared_ptr<nn::Linear> linear;
  enum class Act { kNone, kRelu, kGelu } act = Act::kNone;
};

std::vector<DenseLayer> dense_layers(const nn::Sequential& seq) {
  std::vector<DenseLayer> layers;
  for (size_t i = 0; i < seq.size(); ++i) {
    const std::shared_ptr<nn::Module>& m = seq[i];
    if (auto linear = std::dynamic_pointer_cast<nn::Linear>(m)) {
      layers.push_back({linear});
      continue;
    }
    if (std::dynamic_pointer_cast<nn::Dropout>(m)) continue;  // the identity in inference
    const bool relu = std::dynamic_pointer_cast<nn::ReLU>(m) != nullptr;
    const bool gelu = !relu && std::dynamic_pointer_cast<nn::GELU>(m) != nullptr;
    SG_CHECK(relu || gelu,
             "quantize: Sequential layer {} is a {}, which has no integer kernel (an MLP may hold Linear, ReLU, "
             "GELU and Dropout)",
             i, m->type_name());
    SG_CHECK(!layers.empty() && layers.back().act == DenseLayer::Act::kNone,
             "quantize: Sequential layer {} ({}) does not follow a Linear; the integer pipeline fuses each "
             "activation into the Linear before it",
             i, m->type_name());
    layers.back().act = relu ? DenseLayer::Act::kRelu : DenseLayer::Act::kGelu;
  }
  SG_CHECK(!layers.empty(), "quantize: the Sequential holds no Linear layer");
  SG_CHECK(layers.back().act == DenseLayer::Act::kNone,
           "quantize: the Sequential ends with an activation; the integer pipeline ends with a Linear (the logits)");
  return layers;
}

QuantizedModel quantize_mlp(nn::Sequential& seq, const std::vector<Tensor>& batches, const QuantizeOptions& o) {
  const std::vector<DenseLayer> layers = dense_layers(seq);
  // Calibration: the float model layer by layer, the range of every quantized activation.
  Observer input;
  std::vector<Observer> pre(layers.size()), out(layers.size());
  {
    NoGradGuard no_grad;
    for (const Tensor& batch : batches) {
      Tensor x = batch.detach().to(kFloat32);
      input.add(x);
      for (size_t i = 0; i < layers.size(); ++i) {
        x = layers[i].linear->forward(x);
        if (layers[i].act == DenseLayer::Act::kGelu) {
          pre[i].add(x);
          x = gelu(x);
        } else if (layers[i].act == DenseLayer::Act::kRelu) {
          x = relu(x);
        }
        out[i].add(x);
      }
    }
  }
  QuantizedModel q;
  const Tensor& first = batches.front();
  double in_scale = input.range(o) / 127.0;
  q.set_input(Shape(first.shape().begin() + 1, first.shape().end()), in_scale);
  IntType in_type = IntType::kS8;
  for (size_t i = 0; i < layers.size(); ++i) {
    const nn::Linear& lin = *layers[i].linear;
    // The first layer's input is the model's (static).
    LinearStage::Fields f = LinearStage::quantize_weights(lin.weight, lin.bias, in_scale, o.per_token && i > 0);
    f.in_type = in_type;
    const bool last = i + 1 == layers.size();
    const double range = out[i].range(o);
    if (last) {
      f.output = LinearOutput::kLogits;
      f.fine_scale = range / kFineSteps;
    } else {
      f.output = layers[i].act == DenseLayer::Act::kRelu   ? LinearOutput::kU8Relu
                 : layers[i].act == DenseLayer::Act::kGelu ? LinearOutput::kS8Gelu
                                                           : LinearOutput::kS8;
      const IntType out_type = f.output == LinearOutput::kU8Relu ? IntType::kU8 : IntType::kS8;
      if (f.output == LinearOutput::kS8Gelu) f.pre_scale = pre[i].range(o) / 16384.0;  // |x| up to 2^14
      f.per_token_out = o.per_token;
      f.fine_scale = range / kFineSteps;
      // per-token: out_scale is the rows' base scale (row r: times its factor)
      f.out_scale = (o.per_token ? f.fine_scale : range) / qmax(out_type);
      in_type = out_type;
    }
    if (f.per_token_in) LinearStage::bias_at_targets(f, lin.bias);
    in_scale = f.out_scale;
    q.add_stage(std::make_unique<LinearStage>(std::move(f)));
  }
  return q;
}

}  // namespace

QuantizedModel quantize(nn::Module& model, const std::vector<Tensor>& calibration_batches,
                        const QuantizeOptions& options) {
  SG_CHECK(!calibration_batches.empty(), "quantize: the calibration set is empty (give at least one batch)");
  SG_CHECK(options.percentile > 0 && options.percentile <= 100, "quantize: percentile must be in (0, 100], got {}",
           options.percentile);
  const Tensor& first = calibration_batches.front();
  for (size_t i = 0; i < calibration_batches.size(); ++i) {
    const Tensor& b = calibration_batches[i];
    SG_CHECK(b.defined() && b.dim() >= 2 && b.size(0) > 0 && is_floating(b.dtype()),
             "quantize: calibration batch {} must be a non-empty float batch (B, ...), got {}", i,
             b.defined() ? fmt::format("{} {}", b.shape(), b.dtype()) : std::string("an undefined tensor"));
    SG_CHECK(Shape(b.shape().begin() + 1, b.shape().end()) == Shape(first.shape().begin() + 1, first.shape().end()),
             "quantize: calibration batch {} has shape {}, but batch 0 has {} (the sample shapes must agree)", i,
             b.shape(), first.shape());
  }
  const bool was_training = model.is_training();
  model.eval();  // dropout off while calibrating
  struct Restore {
    nn::Module& m;
    bool training;
    ~Restore() { m.train(training); }
  } restore{model, was_training};
  if (auto* seq = dynamic_cast<nn::Sequential*>(&model)) return quantize_mlp(*seq, calibration_batches, options);
  if (auto* vit = dynamic_cast<nn::VisionTransformer*>(&model)) return quantize_vit(*vit, calibration_batches, options);
  fail("quantize: a {} has no integer pipeline (quantize takes an nn::Sequential MLP or an nn::VisionTransformer)",
       model.type_name());
}

}  // namespace sg::quant
