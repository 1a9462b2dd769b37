// Sorting, selection and sampling: the kernels (naive reference first, then the fast one),
// then the ops with their backward side by side. Semantics in ops/sort.h.
//
// Every op sees its input as a contiguous (O, R, I) block and works along R: a "row" is R
// elements spaced I apart (I = 1 when the dim is the last one). Non-contiguous inputs are
// copied first.
//
// Dimension letters: O = outer, R = size of the dim, I = inner, K = entries kept by topk,
// N = rows and C = categories of multinomial's weights, S = samples per row.
#include "ops/sort.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/autograd.h"
#include "core/strided.h"

namespace sg {

namespace kernels {
namespace {

// ============================================================================================
// The order
// ============================================================================================

// a < b in sort order: NaN after every number, NaNs equal to each other (PyTorch's rule);
// -0.0 == 0.0.
template <typename T> bool key_less(T a, T b) {
  if constexpr (std::is_floating_point_v<T>)
    return a < b || (b != b && a == a);
  else
    return a < b;
}

template <typename T> struct Entry {
  T value;
  int64_t index;  // position along the dim
};

// The total order of a stable sort: by value (ascending, or descending), equal values by
// index. Sorting (value, index) pairs by it with any algorithm gives the stable result.
template <bool kDescending, typename T> struct EntryOrder {
  bool operator()(const Entry<T>& a, const Entry<T>& b) const {
    if (kDescending ? key_less(b.value, a.value) : key_less(a.value, b.value)) return true;
    if (kDescending ? key_less(a.value, b.value) : key_less(b.value, a.value)) return false;
    return a.index < b.index;
  }
};

// Row r of (O, R, I) starts at o * R * I + i and steps by I.
template <typename T> void load_row(const T* x, int64_t row, int64_t R, int64_t I, Entry<T>* buf) {
  const int64_t o = row / I, i = row % I;
  const T* p = x + o * R * I + i;
  for (int64_t r = 0; r < R; ++r) buf[r] = {p[r * I], r};
}

template <typename T>
void store_row(const Entry<T>* buf, int64_t row, int64_t K, int64_t I, T* values, int64_t* indices) {
  const int64_t o = row / I, i = row % I;
  T* v = values + o * K * I + i;
  int64_t* ix = indices + o * K * I + i;
  for (int64_t k = 0; k < K; ++k) {
    v[k * I] = buf[k].value;
    ix[k * I] = buf[k].index;
  }
}

// Insertion sort: an entry moves left only past entries it strictly precedes, so equal
// values keep their order without looking at indices (an independent check of stability).
template <typename T> void insertion_sort(Entry<T>* buf, int64_t n, bool descending) {
  for (int64_t j = 1; j < n; ++j) {
    const Entry<T> e = buf[j];
    int64_t k = j;
    while (k > 0 && (descending ? key_less(buf[k - 1].value, e.value) : key_less(e.value, buf[k - 1].value))) {
      buf[k] = buf[k - 1];
      --k;
    }
    buf[k] = e;
  }
}

template <typename T> void insertion_sort_by_index(Entry<T>* buf, int64_t n) {
  for (int64_t j = 1; j < n; ++j)
    for (int64_t k = j; k > 0 && buf[k].index < buf[k - 1].index; --k) std::swap(buf[k], buf[k - 1]);
}

// Rows of R elements cost about R log R comparisons each.
int64_t sort_cost(int64_t R) {
  int64_t lg = 1;
  while ((int64_t{1} << lg) < R) ++lg;
  return R * lg;
}

// ============================================================================================
// sort
// ============================================================================================

// Fast path, per row: copy the row into (value, index) pairs, move the NaNs to their end
// (they tie with each other, so they stay in index order), and std::sort the numbers by
// (value, index) -- a total order, so the result is the stable one -- with plain compares.
template <bool kDescending, typename T> void sort_row(Entry<T>* buf, int64_t R) {
  Entry<T>* first = buf;
  Entry<T>* last = buf + R;
  if constexpr (std::is_floating_point_v<T>) {
    auto is_number = [](const Entry<T>& e) { return e.value == e.value; };
    // NaN is the largest: at the end ascending, at the front descending.
    if constexpr (kDescending) {
      first = std::stable_partition(buf, buf + R, [&](const Entry<T>& e) { return !is_number(e); });
    } else {
      last = std::stable_partition(buf, buf + R, is_number);
    }
  }
  std::sort(first, last, [](const Entry<T>& a, const Entry<T>& b) {
    if (kDescending ? a.value > b.value : a.value < b.value) return true;
    if (kDescending ? a.value < b.value : a.value > b.value) return false;
    return a.index < b.index;
  });
}

}  // namespace

template <typename T>
void sort_forward_naive(const T* x, T* values, int64_t* indices, int64_t O, int64_t R, int64_t I, bool descending) {
  std::vector<Entry<T>> buf(static_cast<size_t>(R));
  for (int64_t row = 0; row < O * I; ++row) {
    load_row(x, row, R, I, buf.data());
    insertion_sort(buf.data(), R, descending);
    store_row(buf.data(), row, R, I, values, indices);
  }
}

template <typename T>
void sort_forward(const T* x, T* values, int64_t* indices, int64_t O, int64_t R, int64_t I, bool descending) {
  parallel_for(O * I, sort_cost(R), [&](int64_t begin, int64_t end) {
    std::vector<Entry<T>> buf(static_cast<size_t>(R));
    for (int64_t row = begin; row < end; ++row) {
      load_row(x, row, R, I, buf.data());
      if (descending)
        sort_row<true>(buf.data(), R);
      else
        sort_row<false>(buf.data(), R);
      store_row(buf.data(), row, R, I, values, indices);
    }
  });
}

// ============================================================================================
// topk
// ============================================================================================

// Naive: the whole row sorted (largest: descending), the first K kept; unsorted: those K
// put back in index order.
template <typename T>
void topk_forward_naive(const T* x, T* values, int64_t* indices, int64_t O, int64_t R, int64_t I, int64_t K,
                        bool largest, bool sorted) {
  std::vector<Entry<T>> buf(static_cast<size_t>(R));
  for (int64_t row = 0; row < O * I; ++row) {
    load_row(x, row, R, I, buf.data());
    insertion_sort(buf.data(), R, largest);
    if (!sorted) insertion_sort_by_index(buf.data(), K);
    store_row(buf.data(), row, K, I, values, indices);
  }
}

namespace {
// The K best entries of a row first: nth_element then a sort of those K only. The order is
// total (ties by index), so the K selected are exactly the naive kernel's.
template <bool kLargest, typename T> void topk_row(Entry<T>* buf, int64_t R, int64_t K, bool sorted) {
  const EntryOrder<kLargest, T> order;
  if (K < R) std::nth_element(buf, buf + K, buf + R, order);
  if (sorted)
    std::sort(buf, buf + K, order);
  else
    std::sort(buf, buf + K, [](const Entry<T>& a, const Entry<T>& b) { return a.index < b.index; });
}
}  // namespace

template <typename T>
void topk_forward(const T* x, T* values, int64_t* indices, int64_t O, int64_t R, int64_t I, int64_t K, bool largest,
                  bool sorted) {
  if (K == 0) return;
  parallel_for(O * I, R + sort_cost(K), [&](int64_t begin, int64_t end) {
    std::vector<Entry<T>> buf(static_cast<size_t>(R));
    for (int64_t row = begin; row < end; ++row) {
      load_row(x, row, R, I, buf.data());
      if (largest)
        topk_row<true>(buf.data(), R, K, sorted);
      else
        topk_row<false>(buf.data(), R, K, sorted);
      store_row(buf.data(), row, K, I, values, indices);
    }
  });
}

// ---- backward of sort and topk ----

template <typename T>
void scatter_rows(const T* dy, const int64_t* indices, T* dx, int64_t O, int64_t K, int64_t R, int64_t I) {
  parallel_for(O, K * I, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const T* dyo = dy + o * K * I;
      const int64_t* ixo = indices + o * K * I;
      T* dxo = dx + o * R * I;
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < I; ++i) dxo[ixo[k * I + i] * I + i] = dyo[k * I + i];
    }
  });
}

// ============================================================================================
// cumsum
// ============================================================================================

namespace {
// float32 and float64 accumulate in double, int64 in uint64 (modular: wraps like PyTorch's).
template <typename T> using Acc = std::conditional_t<std::is_floating_point_v<T>, double, uint64_t>;

// Columns per piece of work when I > 1: the accumulators (8 KB) stay in L1.
constexpr int64_t kColTile = 1024;

// Runs scan(o, i0, i1) over (o, column strip) pieces in parallel; each scans R rows of its
// strip with one accumulator per column.
template <typename Scan> void for_each_strip(int64_t O, int64_t R, int64_t I, Scan&& scan) {
  const int64_t strips = (I + kColTile - 1) / kColTile;
  parallel_for(O * strips, R * std::min(I, kColTile), [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t o = u / strips, i0 = (u % strips) * kColTile;
      scan(o, i0, std::min(I, i0 + kColTile));
    }
  });
}
}  // namespace

// Forward: acc[i] += x[o, r, i]; y[o, r, i] = acc[i], r ascending.
template <typename T> void cumsum_forward(const T* x, T* y, int64_t O, int64_t R, int64_t I) {
  for_each_strip(O, R, I, [&](int64_t o, int64_t i0, int64_t i1) {
    Acc<T> acc[kColTile] = {};
    const int64_t w = i1 - i0;
    const T* xo = x + o * R * I + i0;
    T* yo = y + o * R * I + i0;
    for (int64_t r = 0; r < R; ++r)
      for (int64_t i = 0; i < w; ++i) {
        acc[i] += static_cast<Acc<T>>(xo[r * I + i]);
        yo[r * I + i] = static_cast<T>(acc[i]);
      }
  });
}

// Backward: the same scan with r descending.
template <typename T> void cumsum_backward(const T* dy, T* dx, int64_t O, int64_t R, int64_t I) {
  for_each_strip(O, R, I, [&](int64_t o, int64_t i0, int64_t i1) {
    Acc<T> acc[kColTile] = {};
    const int64_t w = i1 - i0;
    const T* dyo = dy + o * R * I + i0;
    T* dxo = dx + o * R * I + i0;
    for (int64_t r = R - 1; r >= 0; --r)
      for (int64_t i = 0; i < w; ++i) {
        acc[i] += static_cast<Acc<T>>(dyo[r * I + i]);
        dxo[r * I + i] = static_cast<T>(acc[i]);
      }
  });
}

// ============================================================================================
// multinomial
// ============================================================================================

namespace {
// Row n's cumulative weights in double, each weight divided by the row's largest so that
// the total (at most C) cannot overflow. Returns the last category with a positive scaled
// weight (a rounded-up u * total falls there).
template <typename T> int64_t row_cdf(const T* w, int64_t C, double* cdf) {
  double mx = 0;
  for (int64_t c = 0; c < C; ++c) mx = std::max(mx, static_cast<double>(w[c]));
  double s = 0;
  int64_t last = 0;
  for (int64_t c = 0; c < C; ++c) {
    const double v = static_cast<double>(w[c]) / mx;
    s += v;
    cdf[c] = s;
    if (v > 0) last = c;
  }
  return last;
}

// Successive sampling's keys: log(w_c) - log(E_c), E_c ~ Exp(1) (-inf for a zero weight,
// which is then never among the S largest). One uniform per category, in order.
template <typename T> void row_keys(const T* w, int64_t C, Generator& gen, std::vector<Entry<double>>& keys) {
  keys.clear();
  for (int64_t c = 0; c < C; ++c) {
    const double u = gen.uniform();  // [0, 1)
    const double e = -std::log1p(-u);  // [0, 37]: u = 0 gives e = 0 and the key +inf
    if (w[c] > 0) keys.push_back({std::log(static_cast<double>(w[c])) - std::log(e), c});
  }
}
}  // namespace

template <typename T>
void multinomial_forward_naive(const T* w, int64_t N, int64_t C, int64_t S, bool replacement, Generator& gen,
                               int64_t* out) {
  std::vector<double> cdf(static_cast<size_t>(C));
  std::vector<Entry<double>> keys;
  for (int64_t n = 0; n < N; ++n) {
    const T* wn = w + n * C;
    int64_t* on = out + n * S;
    if (replacement) {
      const int64_t last = row_cdf(wn, C, cdf.data());
      for (int64_t s = 0; s < S; ++s) {
        const double u = gen.uniform() * cdf[C - 1];
        int64_t c = 0;
        while (c < C && !(cdf[c] > u)) ++c;  // the first category whose slice ends above u
        on[s] = c < C ? c : last;
      }
    } else {
      row_keys(wn, C, gen, keys);
      std::stable_sort(keys.begin(), keys.end(), [](const auto& a, const auto& b) { return a.value > b.value; });
      for (int64_t s = 0; s < S; ++s) on[s] = keys[s].index;
    }
  }
}

template <typename T>
void multinomial_forward(const T* w, int64_t N, int64_t C, int64_t S, bool replacement, Generator& gen,
                         int64_t* out) {
  // NOTE: one thread: rows draw from one sequential generator, so a row's draws depend on
  // every row before it.
  std::vector<double> cdf(static_cast<size_t>(C));
  std::vector<Entry<double>> keys;
  for (int64_t n = 0; n < N; ++n) {
    const T* wn = w + n * C;
    int64_t* on = out + n * S;
    if (replacement) {
      const int64_t last = row_cdf(wn, C, cdf.data());
      for (int64_t s = 0; s < S; ++s) {
        const double u = gen.uniform() * cdf[C - 1];
        const int64_t c = std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin();
        on[s] = c < C ? c : last;
      }
    } else {
      row_keys(wn, C, gen, keys);
      const auto first = keys.begin(), kth = first + S;
      const EntryOrder<true, double> order;  // largest key first; equal keys by index
      std::nth_element(first, kth, keys.end(), order);
      std::sort(first, kth, order);
      for (int64_t s = 0; s < S; ++s) on[s] = keys[s].index;
    }
  }
}

// ---- instantiations ----
#define SG_SORT_KERNELS(T)                                                                                     \
  template void sort_forward<T>(const T*, T*, int64_t*, int64_t, int64_t, int64_t, bool);                      \
  template void sort_forward_naive<T>(const T*, T*, int64_t*, int64_t, int64_t, int64_t, bool);                \
  template void topk_forward<T>(const T*, T*, int64_t*, int64_t, int64_t, int64_t, int64_t, bool, bool);       \
  template void topk_forward_naive<T>(const T*, T*, int64_t*, int64_t, int64_t, int64_t, int64_t, bool, bool); \
  template void cumsum_forward<T>(const T*, T*, int64_t, int64_t, int64_t);
SG_SORT_KERNELS(float)
SG_SORT_KERNELS(double)
SG_SORT_KERNELS(int64_t)
#undef SG_SORT_KERNELS
template void scatter_rows<float>(const float*, const int64_t*, float*, int64_t, int64_t, int64_t, int64_t);
template void scatter_rows<double>(const double*, const int64_t*, double*, int64_t, int64_t, int64_t, int64_t);
template void cumsum_backward<float>(const float*, float*, int64_t, int64_t, int64_t);
template void cumsum_backward<double>(const double*, double*, int64_t, int64_t, int64_t);
template void multinomial_forward<float>(const float*, int64_t, int64_t, int64_t, bool, Generator&, int64_t*);
template void multinomial_forward<double>(const double*, int64_t, int64_t, int64_t, bool, Generator&, int64_t*);
template void multinomial_forward_naive<float>(const float*, int64_t, int64_t, int64_t, bool, Generator&, int64_t*);
template void multinomial_forward_naive<double>(const double*, int64_t, int64_t, int64_t, bool, Generator&,
                                                int64_t*);

}  // namespace kernels

// ============================================================================================
// Ops: checks, the kernel, the node
// ============================================================================================

namespace {

// Wraps dim for x (a 0-dim tensor takes 0 or -1); the error names the op and the shape.
int64_t checked_dim(const Tensor& x, int64_t dim, const char* op) {
  const int64_t nd = x.dim();
  const int64_t lo = nd == 0 ? -1 : -nd, hi = nd == 0 ? 0 : nd - 1;
  SG_CHECK(dim >= lo && dim <= hi, "{}: dim {} is out of range for a tensor of shape {} (expected a dim in [{}, {}])",
           op, dim, x.shape(), lo, hi);
  return dim < 0 ? dim + std::max<int64_t>(nd, 1) : dim;
}

void check_input(const Tensor& x, const char* op) {
  check_defined(op, x);
  refuse_bfloat16(op, x.dtype());
  SG_CHECK(x.dtype() != kBool, "{}: expected a float32, float64 or int64 tensor, got bool of shape {}", op,
           x.shape());
}

// x as (O, R, I) around dim d; a 0-dim tensor is (1, 1, 1).
struct Rows {
  int64_t O = 1, R = 1, I = 1;
};
Rows rows_of(const Shape& shape, int64_t d) {
  Rows L;
  for (int64_t k = 0; k < static_cast<int64_t>(shape.size()); ++k) {
    if (k < d) L.O *= shape[k];
    if (k == d) L.R = shape[k];
    if (k > d) L.I *= shape[k];
  }
  return L;
}

// values' backward for sort and topk: dy, of K entries per row, scattered to the saved
// indices of x's rows of R.
void record_scatter(const char* op, const Tensor& x, ValuesIndices& r, Rows L, int64_t K) {
  if (!any_requires_grad({x})) return;
  record(op, {x}, r.values, [in_shape = x.shape(), is = SavedTensor(r.indices), L, K](const Tensor& dy) {
    Tensor dx = zeros(in_shape, dy.dtype());
    const Tensor dyc = dy.contiguous(), idx = is.get().contiguous();
    if (dx.numel() > 0)
      visit_floating(dy.dtype(), [&]<typename T>() {
        kernels::scatter_rows(dyc.data_ptr<T>(), idx.data_ptr<int64_t>(), dx.data_ptr<T>(), L.O, K, L.R, L.I);
      });
    return grads(dx);
  });
}

}  // namespace

ValuesIndices sort(const Tensor& x, int64_t dim, bool descending) {
  check_input(x, "sort");
  const Rows L = rows_of(x.shape(), checked_dim(x, dim, "sort"));
  const Tensor xc = x.detach().contiguous();
  ValuesIndices r{empty(x.shape(), x.dtype()), empty(x.shape(), kInt64)};
  if (x.numel() > 0)
    visit_numeric(x.dtype(), [&]<typename T>() {
      kernels::sort_forward(xc.data_ptr<T>(), r.values.data_ptr<T>(), r.indices.data_ptr<int64_t>(), L.O, L.R, L.I,
                            descending);
    });
  record_scatter("sort", x, r, L, L.R);
  return r;
}

Tensor argsort(const Tensor& x, int64_t dim, bool descending) {
  check_input(x, "argsort");
  checked_dim(x, dim, "argsort");
  return sort(x.detach(), dim, descending).indices;
}

ValuesIndices topk(const Tensor& x, int64_t k, int64_t dim, bool largest, bool sorted) {
  check_input(x, "topk");
  const int64_t d = checked_dim(x, dim, "topk");
  const Rows L = rows_of(x.shape(), d);
  SG_CHECK(k >= 0 && k <= L.R,
           "topk: k = {} is out of range for dim {} of size {} (tensor of shape {}; expected k in [0, {}])", k, dim,
           L.R, x.shape(), L.R);
  Shape out_shape = x.shape();
  if (x.dim() > 0) out_shape[d] = k;
  const int64_t K = x.dim() > 0 ? k : 1;  // 0-dim: the element itself, even for k = 0 (see sort.h)
  const Tensor xc = x.detach().contiguous();
  ValuesIndices r{empty(out_shape, x.dtype()), empty(out_shape, kInt64)};
  if (r.values.numel() > 0)
    visit_numeric(x.dtype(), [&]<typename T>() {
      kernels::topk_forward(xc.data_ptr<T>(), r.values.data_ptr<T>(), r.indices.data_ptr<int64_t>(), L.O, L.R, L.I, K,
                            largest, sorted);
    });
  record_scatter("topk", x, r, L, K);
  return r;
}

Tensor cumsum(const Tensor& x, int64_t dim) {
  check_input(x, "cumsum");
  const Rows L = rows_of(x.shape(), checked_dim(x, dim, "cumsum"));
  const Tensor xc = x.detach().contiguous();
  Tensor y = empty(x.shape(), x.dtype());
  if (x.numel() > 0)
    visit_numeric(x.dtype(), [&]<typename T>() {
      kernels::cumsum_forward(xc.data_ptr<T>(), y.data_ptr<T>(), L.O, L.R, L.I);
    });
  if (any_requires_grad({x}))
    record("cumsum", {x}, y, [L](const Tensor& dy) {
      const Tensor dyc = dy.contiguous();
      Tensor dx = empty(dy.shape(), dy.dtype());
      if (dx.numel() > 0)
        visit_floating(dy.dtype(), [&]<typename T>() {
          kernels::cumsum_backward(dyc.data_ptr<T>(), dx.data_ptr<T>(), L.O, L.R, L.I);
        });
      return grads(dx);
    });
  return y;
}

namespace {
// Every weight finite and >= 0, a positive one in every row, and without replacement at
// least S of them; errors name the row (for (N, C)) and the entry.
template <typename T>
void check_weights(const T* w, int64_t N, int64_t C, int64_t S, bool replacement, const Shape& shape) {
  const bool batched = shape.size() == 2;
  auto at = [&](int64_t n, int64_t c) { return batched ? fmt::format("[{}, {}]", n, c) : fmt::format("[{}]", c); };
  auto row = [&](int64_t n) { return batched ? fmt::format("row {} of the weights", n) : std::string("the weights"); };
  for (int64_t n = 0; n < N; ++n) {
    int64_t positive = 0;
    for (int64_t c = 0; c < C; ++c) {
      const T v = w[n * C + c];
      SG_CHECK(std::isfinite(v), "multinomial: weights of shape {} hold {} at {} (expected finite weights >= 0)", shape,
               v, at(n, c));
      SG_CHECK(v >= 0, "multinomial: weights of shape {} hold a negative weight {} at {}", shape, v, at(n, c));
      positive += v > 0;
    }
    SG_CHECK(positive > 0, "multinomial: {} (shape {}) {} no positive weight: nothing can be drawn", row(n), shape,
             batched ? "has" : "have");
    SG_CHECK(replacement || S <= positive,
             "multinomial: cannot draw {} samples without replacement from {} (shape {}): only {} of its weights are "
             "non-zero",
             S, row(n), shape, positive);
  }
}
}  // namespace

Tensor multinomial(const Tensor& probs, int64_t num_samples, bool replacement, Generator& gen) {
  check_defined("multinomial", probs, "weights");
  SG_CHECK(probs.dim() == 1 || probs.dim() == 2,
           "multinomial: expected weights of shape (C) or (N, C), got a {}-d tensor of shape {}", probs.dim(),
           probs.shape());
  refuse_bfloat16("multinomial", probs.dtype());
  SG_CHECK(is_floating(probs.dtype()), "multinomial: expected float32 or float64 weights, got {} of shape {}",
           probs.dtype(), probs.shape());
  SG_CHECK(num_samples >= 0, "multinomial: num_samples must be >= 0, got {} (weights of shape {})", num_samples,
           probs.shape());
  const int64_t N = probs.dim() == 2 ? probs.shape()[0] : 1, C = probs.shape().back();
  const Tensor wc = probs.detach().contiguous();
  Tensor out = empty(probs.dim() == 2 ? Shape{N, num_samples} : Shape{num_samples}, kInt64);
  visit_floating(probs.dtype(), [&]<typename T>() {
    const T* w = N > 0 && C > 0 ? wc.data_ptr<T>() : nullptr;
    check_weights(w, N, C, num_samples, replacement, probs.shape());
    if (out.numel() > 0) kernels::multinomial_forward(w, N, C, num_samples, replacement, gen, out.data_ptr<int64_t>());
  });
  return out;
}

// ---- Tensor's method forms ----
ValuesIndices Tensor::sort(int64_t dim, bool descending) const { return sg::sort(*this, dim, descending); }
Tensor Tensor::argsort(int64_t dim, bool descending) const { return sg::argsort(*this, dim, descending); }
ValuesIndices Tensor::topk(int64_t k, int64_t dim, bool largest, bool sorted) const {
  return sg::topk(*this, k, dim, largest, sorted);
}
Tensor Tensor::cumsum(int64_t dim) const { return sg::cumsum(*this, dim); }

}  // namespace sg
