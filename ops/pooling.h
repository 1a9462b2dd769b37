#pragma once
// 2-D pooling over (N, C, H, W) (PyTorch's max_pool2d, avg_pool2d, adaptive_avg_pool2d),
// each one graph node with a hand-derived backward; float32 and float64; threads over the
// N C planes.
//
//   auto [y, idx] = sg::max_pool2d(x, 2);                     // 2x2 windows, stride 2
//   sg::Tensor a = sg::avg_pool2d(x, 3, {.stride = 1, .padding = 1});
//   sg::Tensor g = sg::adaptive_avg_pool2d(x, {1, 1});        // global average: (N, C, 1, 1)
//
// Output size per dim: floor((H + 2 p - d (k - 1) - 1) / s) + 1, or ceil with ceil_mode
// (then a last window that would start in the bottom/right padding is dropped, as PyTorch).
// stride defaults to the kernel size; padding must be at most half the (dilated) kernel.
// max_pool2d: the padding is -inf; values and int64 indices (h W + w in the input plane);
// ties keep the first maximum in row-major window order, a NaN wins (PyTorch's CPU rule);
// backward adds each output's gradient to its argmax. avg_pool2d: count_include_pad
// (default true) divides by the window clipped to the padded input, otherwise to the input;
// backward spreads each gradient evenly over its window. adaptive_avg_pool2d: window o of
// a dim spans [floor(o H / Ho), ceil((o + 1) H / Ho)).
// The kernels (vectorized across output columns, with their naive references) are in
// ops/pooling_kernels.h.
#include <cstdint>
#include <optional>

#include "core/tensor.h"
#include "ops/conv.h"

namespace sg {

struct MaxPool2dOptions {
  std::optional<Size2d> stride = std::nullopt;  // default: the kernel size
  Size2d padding = 0;
  Size2d dilation = 1;
  bool ceil_mode = false;
};
ValuesIndices max_pool2d(const Tensor& x, Size2d kernel_size, const MaxPool2dOptions& options = {});

struct AvgPool2dOptions {
  std::optional<Size2d> stride = std::nullopt;  // default: the kernel size
  Size2d padding = 0;
  bool ceil_mode = false;
  bool count_include_pad = true;
};
Tensor avg_pool2d(const Tensor& x, Size2d kernel_size, const AvgPool2dOptions& options = {});

Tensor adaptive_avg_pool2d(const Tensor& x, Size2d output_size);

}  // namespace sg
