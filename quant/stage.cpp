// Stage plumbing (quant/stage.h): saving and loading fields, calibration observers, and the
// integer Linear.
#include "quant/stage.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>

#include "core/error.h"
#include "core/onednn.h"

namespace sg::quant {

int64_t IntTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

IntTensor quantize_per_token(IntType type, const int32_t* values, const Shape& shape, double scale) {
  IntTensor y;
  y.type = type;
  y.shape = shape;
  y.scale = scale;
  const int64_t cols = shape.back(), rows = y.numel() / cols;
  y.row_factor.resize(static_cast<size_t>(rows));
  if (type == IntType::kU8) {
    y.u8.resize(static_cast<size_t>(rows * cols));
    quantize_rows_u8(values, rows, cols, y.u8.data(), y.row_factor.data());
  } else {
    y.s8.resize(static_cast<size_t>(rows * cols));
    quantize_rows_s8(values, rows, cols, y.s8.data(), y.row_factor.data());
  }
  return y;
}

// ---- StageWriter / StageReader --------------------------------------------------------------

namespace {

template <typename T> Tensor as_int64(const std::vector<T>& v, const Shape& shape) {
  std::vector<int64_t> wide(v.begin(), v.end());
  return from_vector<int64_t>(wide, shape);
}


}  // namespace

void StageWriter::ints(const std::string& name, const std::vector<int8_t>& v, const Shape& shape) {
  tensors.emplace_back(prefix + name, as_int64(v, shape));
  narrow[prefix + name] = "I8";
}

void StageWriter::ints(const std::string& name, const std::vector<int32_t>& v, const Shape& shape) {
  tensors.emplace_back(prefix + name, as_int64(v, shape));
  narrow[prefix + name] = "I32";
}

void StageWriter::reals(const std::string& name, const std::vector<double>& v) {
  tensors.emplace_back(prefix + name, from_vector<double>(v, {static_cast<int64_t>(v.size())}));
}

void StageWriter::real(const std::string& key, double value) { text(key, fmt::format("{:.17g}", value)); }

StageReader::StageReader(const std::string& path, SafetensorsFile file) : path_(path), file_(std::move(file)) {
  for (const auto& [name, t] : file_.tensors) read_[name] = false;
}

std::string StageReader::text(const std::string& key) const {
  const auto it = file_.metadata.find(prefix + key);
  SG_CHECK(it != file_.metadata.end(), "QuantizedModel::load: '{}': metadata '{}' is missing", path_, prefix + key);
  return it->second;
}

double StageReader::real(const std::string& key) const {
  const std::string s = text(key);
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  SG_CHECK(!s.empty() && end == s.c_str() + s.size() && std::isfinite(v) && v > 0,
           "QuantizedModel::load: '{}': metadata '{}' = '{}' is not a positive finite number", path_, prefix + key, s);
  return v;
}

Shape StageReader::shape(const std::string& key) const {
  const std::string s = text(key);
  Shape out;
  size_t at = 0;
  while (at <= s.size() && !s.empty()) {
    const size_t comma = std::min(s.find(',', at), s.size());
    const std::string part = s.substr(at, comma - at);
    char* end = nullptr;
    const long long d = std::strtoll(part.c_str(), &end, 10);
    SG_CHECK(!part.empty() && end == part.c_str() + part.size() && d > 0 && d < (int64_t{1} << 32),
             "QuantizedModel::load: '{}': metadata '{}' = '{}' is not a shape (positive sizes, comma-separated)",
             path_, prefix + key, s);
    out.push_back(d);
    at = comma + 1;
  }
  SG_CHECK(!out.empty(), "QuantizedModel::load: '{}': metadata '{}' is an empty shape", path_, prefix + key);
  return out;
}

const Tensor& StageReader::tensor(const std::string& name, const char* dtype, const Shape& shape) const {
  const std::string full = prefix + name;
  const auto it = std::find_if(file_.tensors.begin(), file_.tensors.end(),
                               [&](const auto& e) { return e.first == full; });
  SG_CHECK(it != file_.tensors.end(), "QuantizedModel::load: '{}': tensor '{}' is missing", path_, full);
  const std::string& file_dtype = file_.dtypes.at(full);
  SG_CHECK(file_dtype == dtype, "QuantizedModel::load: '{}': tensor '{}' is {}, expected {}", path_, full, file_dtype,
           dtype);
  SG_CHECK(it->second.shape() == shape, "QuantizedModel::load: '{}': tensor '{}' has shape {}, expected {}", path_,
           full, it->second.shape(), shape);
  read_[full] = true;
  return it->second;
}

bool StageReader::flag(const std::string& key) const {
  const std::string s = text(key);
  SG_CHECK(s == "0" || s == "1", "QuantizedModel::load: '{}': metadata '{}' is '{}', not 0 or 1", path_, prefix + key,
           s);
  return s == "1";
}

std::vector<int8_t> StageReader::s8(const std::string& name, const Shape& shape) const {
  const std::vector<int64_t> v = tensor(name, "I8", shape).to_vector<int64_t>();
  return std::vector<int8_t>(v.begin(), v.end());  // the file's I8: every value fits
}

std::vector<int32_t> StageReader::s32(const std::string& name, const Shape& shape) const {
  const std::vector<int64_t> v = tensor(name, "I32", shape).to_vector<int64_t>();
  return std::vector<int32_t>(v.begin(), v.end());
}

std::vector<double> StageReader::reals(const std::string& name, int64_t n) const {
  const std::vector<double> v = tensor(name, "F64", {n}).to_vector<double>();
  for (size_t i = 0; i < v.size(); ++i)
    SG_CHECK(std::isfinite(v[i]) && v[i] > 0, "QuantizedModel::load: '{}': tensor '{}' element {} is {}, not > 0",
             path_, prefix + name, i, v[i]);
  return v;
}

void StageReader::check_all_read() const {
  for (const auto& [name, was_read] : read_)
    SG_CHECK(was_read, "QuantizedModel::load: '{}': tensor '{}' belongs to no stage", path_, name);
}

// ---- Observer ---------------------------------------------------------------------------------

void Observer::add(const Tensor& x) {
  const std::vector<float> v = x.detach().contiguous().to_vector<float>();
  // Keep about 2^16 samples of each batch for the percentile.
  const size_t stride = std::max<size_t>(1, v.size() >> 16);
  for (size_t i = 0; i < v.size(); ++i) {
    const float a = std::fabs(v[i]);
    SG_CHECK(std::isfinite(a), "quantize: a calibration activation is {} (the float model produced it)", v[i]);
    absmax_ = std::max(absmax_, static_cast<double>(a));
    if (i % stride == 0) sample_.push_back(a);
  }
}

double Observer::range(const QuantizeOptions& o) const {
  double r = absmax_;
  if (o.calibration == Calibration::kPercentile && !sample_.empty()) {
    std::vector<float> s = sample_;
    const size_t k = std::min(s.size() - 1, static_cast<size_t>(std::ceil(o.percentile / 100.0 * s.size())) - 1);
    std::nth_element(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(k), s.end());
    r = s[k];
  }
  // An activation that is 0 everywhere still needs a scale.
  return r > 0 ? r : 1.0;
}

// ---- LinearStage --------------------------------------------------------------------------------

LinearStage::Fields LinearStage::quantize_weights(const Tensor& weight, const Tensor& bias, double in_scale,
                                                  bool per_token_in) {
  Fields f;
  f.per_token_in = per_token_in;
  f.out = weight.size(0);
  f.in = weight.size(1);
  f.in_scale = in_scale;
  const std::vector<double> w = weight.detach().to(kFloat64).contiguous().to_vector<double>();
  const std::vector<double> b =
      bias.defined() ? bias.detach().to(kFloat64).to_vector<double>() : std::vector<double>(f.out, 0.0);
  f.weight.resize(w.size());
  f.bias.resize(f.out);
  f.weight_scale.resize(f.out);
  for (int64_t c = 0; c < f.out; ++c) {
    double m = 0;
    for (int64_t k = 0; k < f.in; ++k) m = std::max(m, std::fabs(w[c * f.in + k]));
    const double s = m > 0 ? m / 127.0 : 1.0;
    f.weight_scale[c] = s;
    for (int64_t k = 0; k < f.in; ++k)
      f.weight[c * f.in + k] = static_cast<int8_t>(std::clamp(std::round(w[c * f.in + k] / s), -127.0, 127.0));
    if (per_token_in) continue;  // the bias goes to the output's scale: bias_at_targets()
    const double q = std::round(b[c] / (in_scale * s));
    SG_CHECK(std::fabs(q) < 2147483647.0,
             "quantize: Linear ({} -> {}): bias {} of channel {} is {} at the accumulator's scale {:g}, beyond int32",
             f.in, f.out, b[c], c, q, in_scale * s);
    f.bias[c] = static_cast<int32_t>(q);
  }
  return f;
}

double LinearStage::Fields::target_scale(int64_t c) const {
  switch (output) {
    case LinearOutput::kLogits: return per_token_in ? fine_scale : 0;
    case LinearOutput::kS32: return out_scale;
    case LinearOutput::kS8Gelu: return pre_scale;
    case LinearOutput::kS8:
    case LinearOutput::kU8Relu:
      if (per_token_out) return fine_scale;
      return column_out_scale.empty() ? out_scale : column_out_scale[c];
  }
  return 0;
}

void LinearStage::bias_at_targets(Fields& f, const Tensor& bias) {
  const std::vector<double> b =
      bias.defined() ? bias.detach().to(kFloat64).to_vector<double>() : std::vector<double>(f.out, 0.0);
  for (int64_t c = 0; c < f.out; ++c) {
    const double q = std::round(b[c] / f.target_scale(c));
    SG_CHECK(std::fabs(q) < 1073741824.0,
             "quantize: Linear ({} -> {}): bias {} of channel {} is {} at its output's scale {:g}, beyond 2^30", f.in,
             f.out, b[c], c, q, f.target_scale(c));
    f.bias[c] = static_cast<int32_t>(q);
  }
}

LinearStage::LinearStage(Fields f) : f_(std::move(f)) {
  SG_CHECK(f_.in > 0 && f_.out > 0 && static_cast<int64_t>(f_.weight.size()) == f_.in * f_.out &&
               static_cast<int64_t>(f_.bias.size()) == f_.out && static_cast<int64_t>(f_.weight_scale.size()) == f_.out,
           "LinearStage: inconsistent fields ({} -> {})", f_.in, f_.out);
  SG_CHECK(f_.in_type != IntType::kS32, "LinearStage: the input must be int8 or uint8");
  SG_CHECK(f_.column_out_scale.empty() || (f_.output == LinearOutput::kS8 && !f_.per_token_out &&
                                           static_cast<int64_t>(f_.column_out_scale.size()) == f_.out),
           "LinearStage: per-column output scales need a static int8 output and one scale per column");
  SG_CHECK(!f_.per_token_out || f_.output == LinearOutput::kS8 || f_.output == LinearOutput::kU8Relu ||
               f_.output == LinearOutput::kS8Gelu,
           "LinearStage: a per-token output must be int8, uint8 after ReLU, or int8 after GELU");
  weight_column_sums_.resize(static_cast<size_t>(f_.out));
  int8_column_sums(f_.in, f_.out, f_.weight.data(), f_.in, true, weight_column_sums_.data());
  // A signed input's product comes back as (x + 128) W^T (Int8Gemm::a_plus_128: no correction
  // pass); the - 128 colsum(W) goes with the bias, when the sums fit int32.
  acc_bias_ = f_.bias;
  if (f_.in_type == IntType::kS8) {
    bool fits = true;
    for (int64_t c = 0; c < f_.out; ++c) {
      const int64_t offset = -128 * int64_t{weight_column_sums_[c]}, sum = offset + f_.bias[c];
      fits = fits && sum >= INT32_MIN && sum <= INT32_MAX;
      acc_offset_.push_back(static_cast<int32_t>(offset));
      acc_bias_[c] = static_cast<int32_t>(std::clamp<int64_t>(sum, INT32_MIN, INT32_MAX));
    }
    if (!fits) {  // keep gemm_int8's own correction
      acc_offset_.clear();
      acc_bias_ = f_.bias;
    }
  }
  for (int64_t c = 0; c < f_.out; ++c)
    if (const double to = f_.target_scale(c); to > 0) requant_.push_back(to_fixed_point(f_.in_scale * f_.weight_scale[c] / to));
  if (f_.output == LinearOutput::kS8Gelu)
    gelu_ = f_.per_token_out ? make_gelu_params(f_.pre_scale, f_.fine_scale, kWideGeluMax)
                             : make_gelu_params(f_.pre_scale, f_.out_scale);
  if (f_.output == LinearOutput::kLogits)
    for (int64_t c = 0; c < f_.out; ++c)
      logit_scales_.push_back(f_.per_token_in ? f_.fine_scale : f_.in_scale * f_.weight_scale[c]);
}

namespace {

__extension__ typedef __int128 int128;

// Per-token input: acc + offset (rows, cols) stands at in_scale * m_r * weight_scale[c]; out =
// round((acc + offset_c) m_r r_c) + bias_c (r_c = f[c]: in_scale weight_scale[c] / target, half
// away from zero), clamped to [-2^30, 2^30]. |acc + offset| <= 2^32, m_r < 2^31 and the
// multiplier < 2^31: 128-bit products. offset: (cols) or null.
void rescale_rows(const int32_t* acc, const int32_t* offset, int64_t rows, int64_t cols, const int32_t* row_factor,
                  const FixedPoint* f, const int32_t* bias, int32_t* out) {
  constexpr int64_t kLimit = int64_t{1} << 30;
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 15))
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t a = int64_t{acc[r * cols + c]} + (offset ? offset[c] : 0);
      const int128 p = static_cast<int128>(a) * row_factor[r] * f[c].multiplier;
      const int s = f[c].shift;
      const int128 v = ((p + (int128{1} << (s - 1)) - (p < 0)) >> s) + bias[c];
      out[r * cols + c] = static_cast<int32_t>(std::clamp<int128>(v, -kLimit, kLimit));
    }
}

template <typename T> std::vector<T> narrow_to(const std::vector<int32_t>& wide, int32_t lo, int32_t hi) {
  std::vector<T> out(wide.size());
  for (size_t i = 0; i < wide.size(); ++i) out[i] = static_cast<T>(std::clamp(wide[i], lo, hi));
  return out;
}

}  // namespace

IntTensor LinearStage::finish(std::vector<int32_t> wide, const Shape& shape) const {
  // per-token: out_scale is fine_scale / qmax, set by quantize()
  if (f_.per_token_out && f_.output != LinearOutput::kS8Gelu)
    return quantize_per_token(f_.output == LinearOutput::kU8Relu ? IntType::kU8 : IntType::kS8, wide.data(), shape,
                              f_.out_scale);
  IntTensor y;
  y.shape = shape;
  y.scale = f_.out_scale;
  switch (f_.output) {
    case LinearOutput::kLogits:
      y.type = IntType::kS32;
      y.column_scales = logit_scales_;
      y.s32 = std::move(wide);
      break;
    case LinearOutput::kS32:
      y.type = IntType::kS32;
      y.s32 = std::move(wide);
      break;
    case LinearOutput::kS8:
      y.type = IntType::kS8;
      y.s8 = narrow_to<int8_t>(wide, -127, 127);
      break;
    case LinearOutput::kU8Relu:
      y.type = IntType::kU8;
      y.u8 = narrow_to<uint8_t>(wide, 0, 255);
      break;
    case LinearOutput::kS8Gelu:
      if (f_.per_token_out) {
        std::vector<int32_t> g(wide.size());
        gelu_s32(wide.data(), static_cast<int64_t>(wide.size()), gelu_, g.data());
        return quantize_per_token(IntType::kS8, g.data(), shape, f_.out_scale);
      } else {
        y.type = IntType::kS8;
        y.s8.resize(wide.size());
        gelu_s8(wide.data(), static_cast<int64_t>(wide.size()), gelu_, y.s8.data());
      }
      break;
  }
  return y;
}

IntTensor LinearStage::run(const IntTensor& x) const {
  SG_CHECK(!x.shape.empty() && x.shape.back() == f_.in && x.type == f_.in_type,
           "quantized Linear ({} -> {}): input of shape {} and type {}, expected last dim {} and type {}", f_.in,
           f_.out, x.shape, static_cast<int>(x.type), f_.in, static_cast<int>(f_.in_type));
  const int64_t rows = x.numel() / f_.in;
  SG_CHECK(f_.per_token_in ? static_cast<int64_t>(x.row_factor.size()) == rows : x.row_factor.empty(),
           "quantized Linear ({} -> {}): expected {} input, got {} row factors for {} rows", f_.in, f_.out,
           f_.per_token_in ? "a per-token" : "a per-tensor", x.row_factor.size(), rows);
  const int64_t n = rows * f_.out;
  const auto acc = std::make_unique_for_overwrite<int32_t[]>(static_cast<size_t>(n));  // every element written
  const void* a = f_.in_type == IntType::kU8 ? static_cast<const void*>(x.u8.data()) : x.s8.data();
  gemm_int8({.M = rows, .N = f_.out, .K = f_.in, .a = a, .a_signed = f_.in_type == IntType::kS8, .lda = f_.in,
             .b = f_.weight.data(), .trans_b = true, .ldb = f_.in,  // W is (out, in): x W^T
             .c = acc.get(), .ldc = f_.out, .b_column_sums = weight_column_sums_.data(),
             .a_plus_128 = !acc_offset_.empty()});  // then acc_offset_ / acc_bias_ finish the product
  Shape shape = x.shape;
  shape.back() = f_.out;
  if (f_.per_token_in) {  // the bias is at the target scale: added after the rescale
    std::vector<int32_t> wide(static_cast<size_t>(n));
    rescale_rows(acc.get(), acc_offset_.empty() ? nullptr : acc_offset_.data(), rows, f_.out, x.row_factor.data(),
                 requant_.data(), f_.bias.data(), wide.data());
    return finish(std::move(wide), shape);
  }
  // Static input: the bias is at the accumulator's scale, added by the requantization.
  if (f_.output == LinearOutput::kLogits) {
    std::vector<int32_t> logits(static_cast<size_t>(n));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < f_.out; ++c) logits[r * f_.out + c] = acc[r * f_.out + c] + acc_bias_[c];
    return finish(std::move(logits), shape);
  }
  if (!f_.per_token_out && (f_.output == LinearOutput::kS8 || f_.output == LinearOutput::kU8Relu)) {
    IntTensor y;  // straight to int8 (uint8 from 0 after ReLU)
    y.shape = shape;
    y.scale = f_.out_scale;
    if (f_.output == LinearOutput::kS8) {
      y.type = IntType::kS8;
      y.s8.resize(static_cast<size_t>(n));
      requantize_s8(acc.get(), rows, f_.out, f_.out, requant_.data(), true, -127, 127, y.s8.data(), f_.out,
                    acc_bias_.data());
    } else {
      y.type = IntType::kU8;
      y.u8.resize(static_cast<size_t>(n));
      requantize_u8(acc.get(), rows, f_.out, f_.out, requant_.data(), true, 0, 255, y.u8.data(), f_.out,
                    acc_bias_.data());
    }
    return y;
  }
  std::vector<int32_t> wide(static_cast<size_t>(n));
  requantize_s32(acc.get(), rows, f_.out, f_.out, requant_.data(), true, wide.data(), f_.out, acc_bias_.data());
  return finish(std::move(wide), shape);
}

namespace {
constexpr std::pair<LinearOutput, const char*> kOutputNames[] = {{LinearOutput::kS8, "s8"},
                                                                 {LinearOutput::kU8Relu, "u8_relu"},
                                                                 {LinearOutput::kS8Gelu, "s8_gelu"},
                                                                 {LinearOutput::kS32, "s32"},
                                                                 {LinearOutput::kLogits, "logits"}};
const char* output_name(LinearOutput o) {
  for (const auto& [value, name] : kOutputNames)
    if (value == o) return name;
  return "?";
}
}  // namespace

void LinearStage::save(StageWriter& w) const {
  w.text("in_type", f_.in_type == IntType::kU8 ? "u8" : "s8");
  w.text("output", output_name(f_.output));
  w.real("in_scale", f_.in_scale);
  w.real("out_scale", f_.out_scale);
  w.real("pre_scale", f_.pre_scale);
  w.text("weight_shape", join_shape({f_.out, f_.in}));
  w.ints("weight", f_.weight, {f_.out, f_.in});
  w.ints("bias", f_.bias, {f_.out});
  w.reals("weight_scale", f_.weight_scale);
  w.text("per_column_out", f_.column_out_scale.empty() ? "0" : "1");
  if (!f_.column_out_scale.empty()) w.reals("column_out_scale", f_.column_out_scale);
  w.text("per_token_in", f_.per_token_in ? "1" : "0");
  w.text("per_token_out", f_.per_token_out ? "1" : "0");
  w.real("fine_scale", f_.fine_scale);
}

std::unique_ptr<Stage> LinearStage::load(const StageReader& r) {
  Fields f;
  const std::string in_type = r.text("in_type"), output = r.text("output");
  SG_CHECK(in_type == "s8" || in_type == "u8", "QuantizedModel::load: {}in_type is '{}', not s8 or u8", r.prefix,
           in_type);
  f.in_type = in_type == "u8" ? IntType::kU8 : IntType::kS8;
  bool known = false;
  for (const auto& [value, name] : kOutputNames)
    if (output == name) {
      f.output = value;
      known = true;
    }
  SG_CHECK(known, "QuantizedModel::load: {}output is '{}' (s8, u8_relu, s8_gelu, s32, logits)", r.prefix, output);
  f.in_scale = r.real("in_scale");
  f.out_scale = r.real("out_scale");
  f.pre_scale = r.real("pre_scale");
  const Shape ws = r.shape("weight_shape");
  SG_CHECK(ws.size() == 2, "QuantizedModel::load: {}weight_shape must be (out, in)", r.prefix);
  f.out = ws[0];
  f.in = ws[1];
  f.weight = r.s8("weight", {f.out, f.in});
  f.bias = r.s32("bias", {f.out});
  f.weight_scale = r.reals("weight_scale", f.out);
  if (r.flag("per_column_out")) f.column_out_scale = r.reals("column_out_scale", f.out);
  f.per_token_in = r.flag("per_token_in");
  f.per_token_out = r.flag("per_token_out");
  f.fine_scale = r.real("fine_scale");
  return std::make_unique<LinearStage>(std::move(f));
}

int64_t LinearStage::parameter_bytes() const {
  return static_cast<int64_t>(f_.weight.size() + 4 * f_.bias.size() + 8 * f_.weight_scale.size());
}

std::string LinearStage::describe() const {
  return fmt::format("linear {} -> {} ({}{} in, {}{} out, in scale {:.4g}, out scale {:.4g})", f_.in, f_.out,
                     f_.per_token_in ? "per-token " : "", f_.in_type == IntType::kU8 ? "u8" : "s8",
                     f_.per_token_out ? "per-token " : "", output_name(f_.output), f_.in_scale,
                     f_.per_token_out ? f_.fine_scale : f_.out_scale);
}

}  // namespace sg::quant
