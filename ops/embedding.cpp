// embedding: the gather and scatter-add kernels, then the op and its backward node side by
// side. Semantics in ops/embedding.h. Letters: V rows of the table, D its width, n lookups.
#include "ops/embedding.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "core/autograd.h"
#include "core/error.h"
#include "core/strided.h"

namespace sg {

// ---- kernels -----------------------------------------------------------------------------

namespace kernels {

template <typename T> void embedding_forward(const T* weight, const int64_t* idx, T* out, int64_t n, int64_t D) {
  parallel_for(n, D, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      std::memcpy(out + i * D, weight + idx[i] * D, static_cast<size_t>(D) * sizeof(T));
  });
}

template <typename T>
void embedding_backward(const T* g, const int64_t* idx, T* dweight, int64_t n, int64_t V, int64_t D, int64_t skip) {
  // Thread t adds only the lookups whose row falls in its range [V t / nt, V (t + 1) / nt):
  // every thread reads all n indices (cheap) and no two threads write one row.
  const int64_t work = n * D;
  const int threads = omp_in_parallel() ? 1
                                        : static_cast<int>(std::max<int64_t>(
                                              1, std::min<int64_t>({omp_get_max_threads(), work / kGrainElems, V})));
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t lo = V * t / nt, hi = V * (t + 1) / nt;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t row = idx[i];
      if (row < lo || row >= hi || row == skip) continue;
      T* dst = dweight + row * D;
      const T* src = g + i * D;
      for (int64_t j = 0; j < D; ++j) dst[j] += src[j];
    }
  }
}

#define SG_INSTANTIATE_EMBEDDING_KERNELS(T)                                                   \
  template void embedding_forward<T>(const T*, const int64_t*, T*, int64_t, int64_t);         \
  template void embedding_backward<T>(const T*, const int64_t*, T*, int64_t, int64_t, int64_t, int64_t);
SG_INSTANTIATE_EMBEDDING_KERNELS(float)
SG_INSTANTIATE_EMBEDDING_KERNELS(double)
#undef SG_INSTANTIATE_EMBEDDING_KERNELS

}  // namespace kernels

// ---- op ----------------------------------------------------------------------------------

namespace {

// Throws for the first index outside [0, V), naming it and where it sits.
void check_indices(const int64_t* idx, const Tensor& indices, int64_t V, const Tensor& weight) {
  const int64_t n = indices.numel();
  for (int64_t i = 0; i < n; ++i) {
    if (idx[i] >= 0 && idx[i] < V) [[likely]]
      continue;
    // The position as a multi-index into the indices' shape.
    std::vector<int64_t> pos(indices.shape().size());
    int64_t rest = i;
    for (int64_t d = static_cast<int64_t>(pos.size()) - 1; d >= 0; --d) {
      pos[d] = rest % indices.shape()[d];
      rest /= indices.shape()[d];
    }
    fail("embedding: index {} at position {} of indices {} is out of range for {} embeddings (weight {}); "
         "expected 0 <= index < {}",
         idx[i], pos, indices.shape(), V, weight.shape(), V);
  }
}

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& indices, const EmbeddingOptions& options) {
  check_defined("embedding", weight, "weight");
  check_defined("embedding", indices, "indices tensor");
  refuse_bfloat16("embedding", weight.dtype());
  SG_CHECK(weight.dim() == 2 && is_floating(weight.dtype()),
           "embedding: weight must be a 2-D (num_embeddings, embedding_dim) float32 or float64 tensor, got {} of "
           "shape {}",
           weight.dtype(), weight.shape());
  SG_CHECK(indices.dtype() == kInt64, "embedding: indices must be int64, got {} of shape {}", indices.dtype(),
           indices.shape());
  const int64_t V = weight.size(0), D = weight.size(1);
  int64_t skip = -1;
  if (options.padding_idx) {
    const int64_t p = *options.padding_idx;
    SG_CHECK(p >= -V && p < V, "embedding: padding_idx {} is out of range for {} embeddings (expected -{} <= "
             "padding_idx < {})", p, V, V, V);
    skip = p < 0 ? p + V : p;
  }
  const Tensor idx = indices.contiguous();
  const int64_t n = idx.numel();
  check_indices(idx.data_ptr<int64_t>(), idx, V, weight);
  const Tensor wc = weight.detach().contiguous();
  Shape out_shape = indices.shape();
  out_shape.push_back(D);
  Tensor out = empty(out_shape, weight.dtype());
  visit_floating(weight.dtype(), [&]<typename T>() {
    kernels::embedding_forward<T>(wc.data_ptr<T>(), idx.data_ptr<int64_t>(), out.data_ptr<T>(), n, D);
  });
  // dweight (V, D) = zeros, then each gradient row added into the row it was read from.
  record("embedding", {weight}, out, [V, D, n, skip, saved_idx = SavedTensor(idx)](const Tensor& grad) {
    const Tensor ix = saved_idx.get();
    const Tensor g = grad.contiguous();
    Tensor dweight = zeros({V, D}, g.dtype());
    visit_floating(g.dtype(), [&]<typename T>() {
      kernels::embedding_backward<T>(g.data_ptr<T>(), ix.data_ptr<int64_t>(), dweight.data_ptr<T>(), n, V, D, skip);
    });
    return grads(dweight);
  });
  return out;
}

}  // namespace sg
