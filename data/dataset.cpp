#include "data/dataset.h"

#include <cmath>
#include <cstring>

#include "core/kernels.h"
#include "core/strided.h"

namespace sg::data {

namespace {

// A contiguous handle on t's data with no history: t itself when it already is contiguous.
Tensor contiguous_data(const Tensor& t, const char* what) {
  SG_CHECK(t.defined(), "TensorDataset: {} is undefined", what);
  SG_CHECK(!t.requires_grad(), "TensorDataset: {} {} requires grad; a data set holds data, detach() it first", what,
           t.shape());
  SG_CHECK(t.dim() >= 1, "TensorDataset: {} must have a sample dim, got a 0-dim tensor", what);
  return t.is_contiguous() ? t.detach() : make_contiguous_copy(t);
}

// dst[i] = src[indices[i]] for rows of row_bytes bytes. The caller checked the indices.
// src: (N, row_bytes) bytes; dst: (B, row_bytes) bytes.
void gather_rows(const std::byte* src, std::byte* dst, std::span<const int64_t> indices, size_t row_bytes) {
  const int64_t B = static_cast<int64_t>(indices.size());
  parallel_for(B, static_cast<int64_t>(row_bytes / 4), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      std::memcpy(dst + static_cast<size_t>(i) * row_bytes, src + static_cast<size_t>(indices[i]) * row_bytes,
                  row_bytes);
  });
}

Tensor gather(const Tensor& t, std::span<const int64_t> indices) {
  Shape shape = t.shape();
  shape[0] = static_cast<int64_t>(indices.size());
  Tensor out = empty(shape, t.dtype());
  const size_t row_bytes = t.size(0) > 0 ? t.nbytes() / static_cast<size_t>(t.size(0)) : 0;
  gather_rows(static_cast<const std::byte*>(t.raw_data()), static_cast<std::byte*>(out.raw_data()), indices, row_bytes);
  return out;
}

// x: n values, in place.
template <typename T>
void normalize_kernel(T* x, int64_t n, T mean, T stddev) {
  parallel_for(n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) x[i] = (x[i] - mean) / stddev;
  });
}

}  // namespace

TensorDataset::TensorDataset(const Tensor& inputs, const Tensor& targets)
    : inputs_(contiguous_data(inputs, "inputs")), targets_(contiguous_data(targets, "targets")) {
  SG_CHECK(inputs_.size(0) == targets_.size(0),
           "TensorDataset: inputs {} and targets {} differ in the number of samples (the first dim)", inputs_.shape(),
           targets_.shape());
}

Batch TensorDataset::get_batch(std::span<const int64_t> indices) const {
  const int64_t n = size();
  for (size_t i = 0; i < indices.size(); ++i)
    SG_CHECK(indices[i] >= 0 && indices[i] < n,
             "TensorDataset::get_batch: index {} at position {} is out of range [0, {})", indices[i], i, n);
  return Batch{gather(inputs_, indices), gather(targets_, indices)};
}

void Normalize::check() const {
  SG_CHECK(std > 0 && std::isfinite(std) && std::isfinite(mean),
           "Normalize: needs a finite mean and a positive std, got mean {} std {}", mean, std);
}

void Normalize::apply_(const Tensor& x) const {
  check();
  SG_CHECK(x.defined() && is_floating(x.dtype()), "Normalize: expects a float32 or float64 tensor, got {}",
           x.defined() ? dtype_name(x.dtype()) : "undefined");
  SG_CHECK(!x.requires_grad(), "Normalize: the tensor {} requires grad; normalize data, not parameters", x.shape());
  SG_CHECK(x.is_contiguous(), "Normalize::apply_: the tensor {} is not contiguous; use operator() for a copy",
           x.shape());
  visit_floating(x.dtype(), [&]<typename T>() {
    normalize_kernel<T>(x.data_ptr<T>(), x.numel(), static_cast<T>(mean), static_cast<T>(std));
  });
  ++x.impl()->storage->version;  // an in-place write, like Tensor::set
}

Tensor Normalize::operator()(const Tensor& x) const {
  SG_CHECK(x.defined(), "Normalize: the tensor is undefined");
  SG_CHECK(!x.requires_grad(), "Normalize: the tensor {} requires grad; normalize data, not parameters", x.shape());
  Tensor out = make_contiguous_copy(x);
  apply_(out);
  return out;
}

void RandomShift::check() const {
  SG_CHECK(max_pixels >= 0 && std::isfinite(fill), "RandomShift: needs max_pixels >= 0 and a finite fill, got {} and {}",
           max_pixels, fill);
}

void RandomShift::apply_(const Tensor& x, Generator& gen) const {
  check();
  SG_CHECK(x.defined() && is_floating(x.dtype()) && x.dim() == 3 && x.is_contiguous() && !x.requires_grad(),
           "RandomShift: expects a contiguous floating (B, H, W) batch that does not require grad, got {}",
           x.defined() ? fmt::format("{} {}", dtype_name(x.dtype()), x.shape()) : "undefined");
  if (max_pixels == 0 || x.numel() == 0) return;
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), span = 2 * max_pixels + 1;
  visit_floating(x.dtype(), [&]<typename T>() {
    std::vector<T> image(static_cast<size_t>(H * W));
    for (int64_t b = 0; b < B; ++b) {
      const int64_t dy = static_cast<int64_t>(gen.below(static_cast<uint64_t>(span))) - max_pixels;
      const int64_t dx = static_cast<int64_t>(gen.below(static_cast<uint64_t>(span))) - max_pixels;
      T* p = x.data_ptr<T>() + b * H * W;
      std::copy(p, p + H * W, image.begin());
      for (int64_t i = 0; i < H; ++i)  // out[i][j] = in[i - dy][j - dx], or fill
        for (int64_t j = 0; j < W; ++j) {
          const int64_t si = i - dy, sj = j - dx;
          p[i * W + j] = si >= 0 && si < H && sj >= 0 && sj < W ? image[static_cast<size_t>(si * W + sj)]
                                                               : static_cast<T>(fill);
        }
    }
  });
  ++x.impl()->storage->version;
}

}  // namespace sg::data
