// Tensor printing in PyTorch 1.13's layout (torch/_tensor_str.py, default print options):
//
//   tensor([[ 1.0000, -2.5000],
//           [ 3.0000,  4.0000]], dtype=float64, requires_grad=True)
//
// One formatter is chosen for the whole tensor from the elements that are shown: floats
// print with 4 decimals, as "1." when every finite value is an integer, or in scientific
// notation when the nonzero finite magnitudes span more than 1000x, exceed 1e8 or go below
// 1e-4. Every element is right-aligned to the widest one. Tensors of more than 1000
// elements show only the first and last 3 entries of each dim, with "..." between them.
#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "core/autograd.h"
#include "core/kernels.h"
#include "core/tensor.h"

namespace sg {
namespace {

constexpr int kPrecision = 4;
constexpr int64_t kThreshold = 1000;  // more elements than this: summarize
constexpr int64_t kEdgeItems = 3;     // entries kept at each end of a summarized dim
constexpr int64_t kLineWidth = 80;

// The indices of a dim of size n that are printed, in order.
std::vector<int64_t> shown_indices(int64_t n, bool summarize) {
  std::vector<int64_t> idx;
  if (summarize && n > 2 * kEdgeItems) {
    for (int64_t i = 0; i < kEdgeItems; ++i) idx.push_back(i);
    for (int64_t i = n - kEdgeItems; i < n; ++i) idx.push_back(i);
  } else {
    for (int64_t i = 0; i < n; ++i) idx.push_back(i);
  }
  return idx;
}

// Whether the dim is cut in the middle (a "..." goes after the first kEdgeItems entries).
bool is_cut(int64_t n, bool summarize) { return summarize && n > 2 * kEdgeItems; }

// Formats every element of one tensor the same way (PyTorch's _Formatter).
template <typename T> class Formatter {
 public:
  explicit Formatter(const std::vector<T>& shown) {
    if constexpr (std::is_floating_point_v<T>) {
      std::vector<double> vals;  // nonzero finite values
      for (T v : shown)
        if (std::isfinite(v) && v != 0) vals.push_back(static_cast<double>(v));
      if (vals.empty()) return;  // nothing to measure: "0.", "nan", "inf" as they come
      double lo = std::abs(vals[0]), hi = lo;
      for (double v : vals) {
        lo = std::min(lo, std::abs(v));
        hi = std::max(hi, std::abs(v));
        if (v != std::ceil(v)) int_mode_ = false;
      }
      // NOTE: integer-valued tensors may still go scientific, but never for small values.
      sci_mode_ = hi / lo > 1000.0 || hi > 1.0e8 || (!int_mode_ && lo < 1.0e-4);
      for (double v : vals) {
        const size_t len = sci_mode_ ? fmt::format("{:.{}e}", v, kPrecision).size()
                           : int_mode_ ? fmt::format("{:.0f}", v).size() + 1  // the "."
                                       : fmt::format("{:.{}f}", v, kPrecision).size();
        width_ = std::max(width_, len);
      }
    } else {
      for (T v : shown) width_ = std::max(width_, plain(v).size());
    }
  }

  size_t width() const { return width_; }

  // The element right-aligned to the common width.
  std::string format(T v) const {
    std::string s = plain(v);
    if (s.size() < width_) s.insert(0, width_ - s.size(), ' ');
    return s;
  }

 private:
  std::string plain(T v) const {
    if constexpr (std::is_same_v<T, bool>) {
      return v ? "True" : "False";
    } else if constexpr (std::is_integral_v<T>) {
      return fmt::format("{}", v);
    } else {
      const double d = static_cast<double>(v);
      if (std::isnan(d)) return "nan";  // fmt would print "-nan" for a negative nan
      if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
      if (sci_mode_) return fmt::format("{:.{}e}", d, kPrecision);
      if (int_mode_) return fmt::format("{:.0f}.", d);
      return fmt::format("{:.{}f}", d, kPrecision);
    }
  }

  bool int_mode_ = true;
  bool sci_mode_ = false;
  size_t width_ = 1;
};

template <typename T> class Printer {
 public:
  Printer(const Tensor& t, bool summarize)
      : base_(static_cast<const T*>(t.raw_data())), shape_(t.shape()), strides_(t.strides()), summarize_(summarize) {}

  // The shown elements in print order (what the formatter measures).
  void collect(size_t d, int64_t off, std::vector<T>& out) const {
    if (d == shape_.size()) {
      out.push_back(base_[off]);
      return;
    }
    for (int64_t i : shown_indices(shape_[d], summarize_)) collect(d + 1, off + i * strides_[d], out);
  }

  // PyTorch's _tensor_str_with_formatter: dims from d on, starting at element offset off;
  // indent is the column of the opening bracket.
  std::string render(const Formatter<T>& f, size_t d, int64_t off, int64_t indent) const {
    const size_t ndim = shape_.size();
    if (d == ndim) return f.format(base_[off]);  // 0-d
    const int64_t n = shape_[d];
    const bool cut = is_cut(n, summarize_);
    const std::vector<int64_t> idx = shown_indices(n, summarize_);
    std::vector<std::string> parts;
    if (d + 1 == ndim) {  // a row: elements wrap at the line width
      for (size_t k = 0; k < idx.size(); ++k) {
        if (cut && k == static_cast<size_t>(kEdgeItems)) parts.push_back(" ...");
        parts.push_back(f.format(base_[off + idx[k] * strides_[d]]));
      }
      const int64_t element_length = static_cast<int64_t>(f.width()) + 2;
      const int64_t per_line = std::max<int64_t>(1, (kLineWidth - indent) / element_length);
      std::string out = "[";
      for (size_t k = 0; k < parts.size(); ++k) {
        if (k > 0) out += k % per_line == 0 ? ",\n" + std::string(indent + 1, ' ') : ", ";
        out += parts[k];
      }
      return out + "]";
    }
    for (size_t k = 0; k < idx.size(); ++k) {
      if (cut && k == static_cast<size_t>(kEdgeItems)) parts.push_back("...");
      parts.push_back(render(f, d + 1, off + idx[k] * strides_[d], indent + 1));
    }
    const std::string sep = "," + std::string(ndim - d - 1, '\n') + std::string(indent + 1, ' ');
    std::string out = "[";
    for (size_t k = 0; k < parts.size(); ++k) {
      if (k > 0) out += sep;
      out += parts[k];
    }
    return out + "]";
  }

 private:
  const T* base_;
  const Shape& shape_;
  const Strides& strides_;
  bool summarize_;
};

std::string body_string(const Tensor& t, int64_t indent) {
  const bool summarize = t.numel() > kThreshold;
  if (t.dtype() == kBFloat16) {  // as PyTorch: the values widened to float32 (exact), same formatter
    Tensor wide = empty(t.shape(), kFloat32);
    copy_kernel(wide, t);
    return body_string(wide, indent);
  }
  return visit_dtype(t.dtype(), [&]<typename T>() {
    Printer<T> p(t, summarize);
    std::vector<T> shown;
    p.collect(0, 0, shown);
    return p.render(Formatter<T>(shown), 0, 0, indent);
  });
}

// Python's str(tuple(shape)): "(2, 0)", "(0,)".
std::string shape_tuple(const Shape& s) {
  if (s.size() == 1) return fmt::format("({},)", s[0]);
  return fmt::format("({})", fmt::join(s, ", "));
}

// PyTorch's _add_suffixes: ", suffix" on the last line unless that passes the line width.
std::string add_suffixes(std::string s, const std::vector<std::string>& suffixes, int64_t indent) {
  const size_t nl = s.rfind('\n');
  // NOTE: mirrors PyTorch's len(s) - s.rfind("\n") + 1, including rfind's -1 when there is
  // no newline, so wrapping decisions match exactly.
  int64_t last_line_len =
      static_cast<int64_t>(s.size()) - (nl == std::string::npos ? -1 : static_cast<int64_t>(nl)) + 1;
  for (const std::string& suffix : suffixes) {
    const auto len = static_cast<int64_t>(suffix.size());
    if (last_line_len + len + 2 > kLineWidth) {
      s += ",\n" + std::string(indent, ' ') + suffix;
      last_line_len = indent + len;
    } else {
      s += ", " + suffix;
      last_line_len += len + 2;
    }
  }
  return s + ")";
}

}  // namespace

std::string to_string(const Tensor& t) {
  if (!t.defined()) return "tensor(undefined)";
  const std::string prefix = "tensor(";
  const auto indent = static_cast<int64_t>(prefix.size());
  std::vector<std::string> suffixes;
  std::string body;
  if (t.numel() == 0) {
    // No element shows the dtype, so print it unless it is the default one.
    if (t.dim() != 1) suffixes.push_back("size=" + shape_tuple(t.shape()));
    if (t.dtype() != kFloat32) suffixes.push_back(fmt::format("dtype={}", t.dtype()));
    body = "[]";
  } else {
    if (t.dtype() == kFloat64 || t.dtype() == kBFloat16) suffixes.push_back(fmt::format("dtype={}", t.dtype()));
    body = body_string(t, indent);
  }
  if (t.grad_fn())
    suffixes.push_back(fmt::format("grad_fn=<{}>", t.grad_fn()->name()));
  else if (t.requires_grad())
    suffixes.push_back("requires_grad=True");
  return add_suffixes(prefix + body, suffixes, indent);
}

}  // namespace sg
