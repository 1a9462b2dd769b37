#pragma once
// Dropout (PyTorch's torch.nn.functional.dropout), one graph node.
//
//   sg::Tensor y = sg::dropout(x, 0.1, module.is_training(), gen);
//
// In training, each element of x is zeroed with probability p and the kept ones are scaled
// by 1 / (1 - p), so the expectation is unchanged. p = 0 or training = false returns x
// itself (no copy, no node, no draw from gen); p = 1 gives zeros (and zero gradients); a p
// outside [0, 1] (or NaN) is an error. Float32 and float64, any shape and strides.
//
// The mask is never stored: it is a counter-based hash of (seed, element index) — the same
// keep decision as scaled_dot_product_attention's dropout (ops/attention_kernels.h,
// dropout_keep) — with one seed drawn from gen per call. Backward regenerates it from the
// seed: dx = g * mask / (1 - p), at no memory cost. The keep probability is 1 - p rounded
// to a multiple of 2^-24, and kept values are scaled by its exact inverse (1 / (1 - p) to
// within 2^-24 relative).
#include <cstdint>

#include "core/generator.h"
#include "core/tensor.h"

namespace sg {

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

namespace kernels {
// x, y: (n) contiguous; y[i] = keep(seed, i) ? x[i] * scale : 0 with the keep rule of
// dropout_keep(seed, i, threshold). Forward runs it on x, backward on the gradient; y must
// not overlap x. Parallel over chunks of i when n is large; each decision depends on i only.
template <typename T> void dropout_apply(const T* x, T* y, int64_t n, uint64_t seed, uint32_t threshold, T scale);
}  // namespace kernels

}  // namespace sg
