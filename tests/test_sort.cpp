// Sorting, selection and sampling: gradchecks of sort/topk values and cumsum, the order
// rules (stable ties, NaN largest, topk ties by index), 0-dim and empty tensors, the fast
// kernels against the naive ones, multinomial's statistics and reproducibility, and the
// error messages. Values against PyTorch are in test_reference_sort.cpp.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "test_util.h"

using sg::Shape;
using sg::Tensor;
using sgtest::check_error;
using sgtest::check_values;
using sgtest::GradCase;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();
using I64s = std::vector<int64_t>;

// sum(values * w) for a w fixed per position: differentiable even with ties in x as long
// as w is equal over the positions each tie group occupies (a nudged tied element changes
// places with its twins, and they carry the same weight).
Tensor weighted(const Tensor& values, const std::vector<double>& w) {
  return sg::sum(sg::mul(values, sg::from_vector(w, values.shape())));
}

// A float64 leaf holding `v` (shape `shape`) that requires grad.
Tensor leaf_of(const std::vector<double>& v, const Shape& shape) {
  return sg::from_vector(v, shape).requires_grad_();
}

// Random values with many ties (a few distinct levels) and, for floating types, NaNs.
template <typename T> std::vector<T> tie_heavy(int64_t n, sg::Generator& gen, int levels) {
  std::vector<T> v(static_cast<size_t>(n));
  for (T& e : v) {
    const int64_t level = static_cast<int64_t>(gen.below(static_cast<uint64_t>(levels + 1)));
    if constexpr (std::is_floating_point_v<T>)
      e = level == levels ? std::numeric_limits<T>::quiet_NaN() : static_cast<T>(level - levels / 2) * T(0.5);
    else
      e = level - levels / 2;
  }
  // a signed zero among the zeros: equal to 0.0, so its place follows its index
  if constexpr (std::is_floating_point_v<T>)
    for (T& e : v)
      if (e == 0 && gen.below(2) == 0) e = -e;
  return v;
}

// Bitwise equality (so -0.0 differs from 0.0 and NaN equals NaN).
template <typename T> bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return false;
  return true;
}

struct Layout {
  int64_t O, R, I;
};
const Layout kLayouts[] = {{1, 1, 1}, {1, 7, 1},  {3, 16, 1}, {2, 5, 3},   {1, 33, 4}, {4, 64, 1},
                           {2, 2, 9}, {1, 0, 3},  {0, 5, 2},  {1, 300, 2}, {5, 1, 5},  {1, 1000, 1}};

}  // namespace

// ============================================================================================
// gradchecks (float64)
// ============================================================================================

TEST_CASE("gradcheck sort values") {
  auto f = [](int64_t dim, bool descending) {
    return [=](const std::vector<Tensor>& in) { return sg::sort(in[0], dim, descending).values; };
  };
  sgtest::run_grad_cases({
      {"0-d", {{}}, f(0, false)},
      {"0-d dim -1 descending", {{}}, f(-1, true)},
      {"1-D", {{7}}, f(0, false)},
      {"1-D descending", {{7}}, f(-1, true)},
      {"2-D dim 1", {{3, 5}}, f(1, false)},
      {"2-D dim 0 descending", {{4, 3}}, f(0, true)},
      {"3-D dim 1", {{2, 4, 3}}, f(1, false)},
      {"3-D dim -1 descending", {{2, 3, 5}}, f(-1, true)},
      {"4-D dim 2", {{2, 1, 4, 2}}, f(2, false)},
      {"2-D noncontig dim 0", {{3, 4}}, f(0, false), -1, 1, true},
      {"2-D noncontig dim -1 descending", {{3, 4}}, f(-1, true), -1, 1, true},
      {"3-D noncontig dim 1", {{2, 4, 3}}, f(1, true), -1, 1, true},
      {"1-D noncontig", {{6}}, f(0, false), -1, 1, true},
      {"empty", {{0, 3}}, f(0, false)},
  });
}

TEST_CASE("gradcheck topk values") {
  auto f = [](int64_t k, int64_t dim, bool largest, bool sorted) {
    return [=](const std::vector<Tensor>& in) { return sg::topk(in[0], k, dim, largest, sorted).values; };
  };
  sgtest::run_grad_cases({
      {"0-d k 1", {{}}, f(1, 0, true, true)},
      {"1-D k 3", {{7}}, f(3, 0, true, true)},
      {"1-D k 3 smallest", {{7}}, f(3, -1, false, true)},
      {"1-D k 0", {{7}}, f(0, 0, true, true)},
      {"1-D k = size", {{5}}, f(5, 0, false, true)},
      {"2-D dim 1 k 2", {{3, 5}}, f(2, 1, true, true)},
      {"2-D dim 0 k 3 unsorted", {{4, 3}}, f(3, 0, true, false)},
      {"3-D dim 1 k 2 smallest unsorted", {{2, 4, 3}}, f(2, 1, false, false)},
      {"3-D dim -1 k 4", {{2, 3, 5}}, f(4, -1, true, true)},
      {"2-D noncontig dim 0 k 2", {{3, 4}}, f(2, 0, true, true), -1, 1, true},
      {"3-D noncontig dim -1 k 1 smallest", {{2, 3, 4}}, f(1, -1, false, true), -1, 1, true},
  });
}

TEST_CASE("gradcheck cumsum") {
  auto f = [](int64_t dim) { return [=](const std::vector<Tensor>& in) { return sg::cumsum(in[0], dim); }; };
  sgtest::run_grad_cases({
      {"0-d", {{}}, f(0)},
      {"0-d dim -1", {{}}, f(-1)},
      {"1-D", {{6}}, f(0)},
      {"2-D dim 0", {{4, 3}}, f(0)},
      {"2-D dim -1", {{3, 5}}, f(-1)},
      {"3-D dim 1", {{2, 4, 3}}, f(1)},
      {"4-D dim 3", {{2, 1, 3, 4}}, f(3)},
      {"2-D noncontig dim 0", {{3, 4}}, f(0), -1, 1, true},
      {"3-D noncontig dim 2", {{2, 3, 4}}, f(2), -1, 1, true},
      {"1-D noncontig", {{5}}, f(0), -1, 1, true},
      {"empty", {{2, 0}}, f(0)},
  });
}

TEST_CASE("gradcheck sort and topk with ties (weights equal over each tie group)") {
  // x = [0.5, -0.25, 0.5, 0.1, -0.25, 0.5]: sorted [-0.25 -0.25 0.1 0.5 0.5 0.5]
  const std::vector<double> x = {0.5, -0.25, 0.5, 0.1, -0.25, 0.5};
  auto check = [](const sg::TensorFn& fn, const Tensor& in) { sgtest::check_gradients(fn, {in}); };
  check([](const std::vector<Tensor>& in) { return weighted(sg::sort(in[0]).values, {2, 2, -1, 3, 3, 3}); },
        leaf_of(x, {6}));
  check([](const std::vector<Tensor>& in) { return weighted(sg::sort(in[0], 0, true).values, {3, 3, 3, -1, 2, 2}); },
        leaf_of(x, {6}));
  // top 4: [0.5 0.5 0.5 0.1]; bottom 3: [-0.25 -0.25 0.1] (no tie straddles the cut)
  check([](const std::vector<Tensor>& in) { return weighted(sg::topk(in[0], 4).values, {1.5, 1.5, 1.5, -2}); },
        leaf_of(x, {6}));
  check([](const std::vector<Tensor>& in) { return weighted(sg::topk(in[0], 3, 0, false).values, {4, 4, 1}); },
        leaf_of(x, {6}));
  // Along dim 0 of a (3, 2) view: columns [0.5, 0.5, -0.25] and [-0.25, 0.1, 0.5].
  check([](const std::vector<Tensor>& in) {
    return weighted(sg::sort(in[0].reshape({3, 2}), 0).values, {7, 5, -1, -2, -1, 3});
  }, leaf_of(x, {6}));
}

TEST_CASE("sort and topk backward: ties send the gradient to the stable order's element") {
  // x = [1, 0, 1, 0]: ascending indices [1, 3, 0, 2], so dx[indices[p]] = dy[p].
  Tensor x = leaf_of({1, 0, 1, 0}, {4});
  sg::ValuesIndices s = sg::sort(x);
  CHECK(s.indices.to_vector<int64_t>() == I64s{1, 3, 0, 2});
  s.values.backward(sg::tensor({10.0, 20.0, 30.0, 40.0}, sg::kFloat64));
  check_values(x.grad(), {30, 10, 40, 20}, 0, 0);

  Tensor y = leaf_of({2, 5, 5, 1, 5}, {5});
  sg::ValuesIndices t = sg::topk(y, 2);  // the first two 5s: indices 1, 2
  CHECK(t.indices.to_vector<int64_t>() == I64s{1, 2});
  t.values.backward(sg::tensor({3.0, 4.0}, sg::kFloat64));
  check_values(y.grad(), {0, 3, 4, 0, 0}, 0, 0);
}

// ============================================================================================
// order rules, dtypes, shapes
// ============================================================================================

TEST_CASE("sort: stable, NaN largest, -0.0 equal to 0.0 (PyTorch 1.13's stable=True answer)") {
  // torch.sort(x, stable=True) and torch.sort(x, descending=True, stable=True) printed these.
  for (sg::Dtype dt : {sg::kFloat64, sg::kFloat32}) {
    CAPTURE(dt);
    Tensor x = sg::tensor({3, kNaN, 1, 3, kNaN, -0.0, 0.0, 1}, dt);
    sg::ValuesIndices a = sg::sort(x);
    CHECK(a.indices.to_vector<int64_t>() == I64s{5, 6, 2, 7, 0, 3, 1, 4});
    check_values(a.values, {-0.0, 0, 1, 1, 3, 3, kNaN, kNaN}, 0, 0);
    CHECK(std::signbit(a.values.to(sg::kFloat64).at<double>({0})));
    CHECK_FALSE(std::signbit(a.values.to(sg::kFloat64).at<double>({1})));
    sg::ValuesIndices d = sg::sort(x, 0, true);
    CHECK(d.indices.to_vector<int64_t>() == I64s{1, 4, 0, 3, 2, 7, 5, 6});
    check_values(d.values, {kNaN, kNaN, 3, 3, 1, 1, -0.0, 0}, 0, 0);
    CHECK(std::signbit(d.values.to(sg::kFloat64).at<double>({6})));
    CHECK(sg::argsort(x).to_vector<int64_t>() == a.indices.to_vector<int64_t>());
    CHECK(sg::argsort(x, -1, true).to_vector<int64_t>() == d.indices.to_vector<int64_t>());
  }
}

TEST_CASE("sort along each dim of a 3-D tensor and of non-contiguous views") {
  sg::Generator gen(5);
  Tensor x = sg::randn({3, 4, 5}, gen, sg::kFloat64);
  for (int64_t dim : {0, 1, 2, -1, -2, -3}) {
    CAPTURE(dim);
    for (bool desc : {false, true}) {
      sg::ValuesIndices r = sg::sort(x, dim, desc);
      CHECK(r.values.shape() == x.shape());
      CHECK(r.indices.dtype() == sg::kInt64);
      // values are x gathered at indices, and ordered along dim
      check_values(r.values, sg::gather(x, dim, r.indices).to_vector<double>(), 0, 0);
      Tensor next = sg::narrow(r.values, dim, 1, x.size(dim) - 1), prev = sg::narrow(r.values, dim, 0, x.size(dim) - 1);
      CHECK(sg::sum(desc ? sg::gt(next, prev) : sg::lt(next, prev)).item<int64_t>() == 0);
    }
  }
  // transposed, sliced and expanded views sort like their contiguous copies
  Tensor base = sg::randn({6, 8}, gen, sg::kFloat64);
  const Tensor column = sg::tensor({2.0, -1.0, 0.5}, sg::kFloat64).reshape({3, 1});
  for (const Tensor& v : {base.t(), sg::slice(base, 1, 1, 8, 3), column.expand({3, 4})}) {
    CAPTURE(v.shape());
    for (int64_t dim : {0, 1}) {
      sg::ValuesIndices a = sg::sort(v, dim, true), b = sg::sort(v.contiguous(), dim, true);
      check_values(a.values, b.values.to_vector<double>(), 0, 0);
      CHECK(a.indices.to_vector<int64_t>() == b.indices.to_vector<int64_t>());
    }
  }
}

TEST_CASE("int64: sort, argsort, topk and cumsum are exact over the whole range") {
  const int64_t lo = std::numeric_limits<int64_t>::min(), hi = std::numeric_limits<int64_t>::max();
  Tensor x = sg::from_vector<int64_t>({5, hi, -3, lo, 5, 0, lo}, {7});
  sg::ValuesIndices a = sg::sort(x);
  CHECK(a.values.dtype() == sg::kInt64);
  CHECK(a.values.to_vector<int64_t>() == I64s{lo, lo, -3, 0, 5, 5, hi});
  CHECK(a.indices.to_vector<int64_t>() == I64s{3, 6, 2, 5, 0, 4, 1});
  CHECK(sg::sort(x, 0, true).indices.to_vector<int64_t>() == I64s{1, 0, 4, 5, 2, 3, 6});
  CHECK(sg::argsort(x, 0, true).to_vector<int64_t>() == I64s{1, 0, 4, 5, 2, 3, 6});
  sg::ValuesIndices t = sg::topk(x, 3);
  CHECK(t.values.to_vector<int64_t>() == I64s{hi, 5, 5});
  CHECK(t.indices.to_vector<int64_t>() == I64s{1, 0, 4});
  CHECK(sg::topk(x, 2, 0, false).indices.to_vector<int64_t>() == I64s{3, 6});
  // cumsum wraps around like every int64 sum: 2^62 + 2^62 = -2^63
  const int64_t h = int64_t{1} << 62;
  CHECK(sg::cumsum(sg::from_vector<int64_t>({h, h, 1, lo}, {4}), 0).to_vector<int64_t>() == I64s{h, lo, lo + 1, 1});
  CHECK_FALSE(a.values.requires_grad());
}

TEST_CASE("topk: best first, ties by lower index, unsorted keeps index order, k = 0 and k = size") {
  Tensor x = sg::tensor({{0.3, 0.9, 0.3, -1.0, 0.9}, {4.0, 3.0, 2.0, 1.0, 0.0}}, sg::kFloat64);
  sg::ValuesIndices r = sg::topk(x, 3);
  CHECK(r.values.shape() == Shape{2, 3});
  check_values(r.values, {0.9, 0.9, 0.3, 4, 3, 2}, 0, 0);
  CHECK(r.indices.to_vector<int64_t>() == I64s{1, 4, 0, 0, 1, 2});
  r = sg::topk(x, 3, -1, false);
  check_values(r.values, {-1, 0.3, 0.3, 0, 1, 2}, 0, 0);
  CHECK(r.indices.to_vector<int64_t>() == I64s{3, 0, 2, 4, 3, 2});
  r = sg::topk(x, 3, 1, true, false);  // the same three, in the order they appear in x
  check_values(r.values, {0.3, 0.9, 0.9, 4, 3, 2}, 0, 0);
  CHECK(r.indices.to_vector<int64_t>() == I64s{0, 1, 4, 0, 1, 2});
  r = sg::topk(x, 1, 0);  // along dim 0: the larger of each column
  check_values(r.values, {4, 3, 2, 1, 0.9}, 0, 0);
  CHECK(r.indices.to_vector<int64_t>() == I64s{1, 1, 1, 1, 0});
  CHECK(sg::topk(x, 0).values.shape() == Shape{2, 0});
  CHECK(sg::topk(x, 0).indices.shape() == Shape{2, 0});
  sg::ValuesIndices all = sg::topk(x, 5), s = sg::sort(x, -1, true);
  CHECK(all.indices.to_vector<int64_t>() == s.indices.to_vector<int64_t>());
  all = sg::topk(x, 5, -1, false);
  CHECK(all.indices.to_vector<int64_t>() == sg::sort(x).indices.to_vector<int64_t>());
  CHECK(sg::topk(x, 5, -1, true, false).indices.to_vector<int64_t>() == I64s{0, 1, 2, 3, 4, 0, 1, 2, 3, 4});
}

TEST_CASE("topk: NaN is the largest value") {
  Tensor x = sg::tensor({1.0, kNaN, 3.0, kNaN, 2.0}, sg::kFloat64);
  sg::ValuesIndices r = sg::topk(x, 3);
  check_values(r.values, {kNaN, kNaN, 3}, 0, 0);
  CHECK(r.indices.to_vector<int64_t>() == I64s{1, 3, 2});
  r = sg::topk(x, 4, 0, false);  // smallest: NaN only once every number is taken
  check_values(r.values, {1, 2, 3, kNaN}, 0, 0);
  CHECK(r.indices.to_vector<int64_t>() == I64s{0, 4, 2, 1});
}

TEST_CASE("0-dim tensors: one element along dim 0 or -1 (as PyTorch)") {
  for (sg::Dtype dt : {sg::kFloat64, sg::kFloat32, sg::kInt64}) {
    CAPTURE(dt);
    Tensor x = sg::scalar_tensor(2.0, dt);
    for (int64_t dim : {0, -1}) {
      sg::ValuesIndices s = sg::sort(x, dim, true);
      CHECK(s.values.shape() == Shape{});
      CHECK(s.values.item<double>() == 2.0);
      CHECK(s.indices.shape() == Shape{});
      CHECK(s.indices.item<int64_t>() == 0);
      CHECK(sg::argsort(x, dim).shape() == Shape{});
      CHECK(sg::cumsum(x, dim).shape() == Shape{});
      CHECK(sg::cumsum(x, dim).item<double>() == 2.0);
      for (int64_t k : {0, 1}) {  // PyTorch 1.13: the element itself for k = 0 too
        sg::ValuesIndices t = sg::topk(x, k, dim);
        CHECK(t.values.shape() == Shape{});
        CHECK(t.values.item<double>() == 2.0);
        CHECK(t.indices.item<int64_t>() == 0);
      }
    }
    check_error([&] { sg::sort(x, 1); }, {"sort", "dim 1", "[]", "[-1, 0]"});
    check_error([&] { sg::topk(x, 2); }, {"topk", "k = 2", "[]"});
    check_error([&] { sg::cumsum(x, -2); }, {"cumsum", "dim -2", "[]"});
  }
  Tensor x = sg::scalar_tensor(1.5, sg::kFloat64).requires_grad_();
  (sg::sort(x).values * 3.0).backward();
  CHECK(x.grad().item<double>() == 3.0);
}

TEST_CASE("empty tensors: empty results, empty gradients") {
  Tensor x = sg::zeros({0, 3}, sg::kFloat64).requires_grad_();
  for (int64_t dim : {0, 1}) {
    sg::ValuesIndices s = sg::sort(x, dim);
    CHECK(s.values.shape() == Shape{0, 3});
    CHECK(s.indices.shape() == Shape{0, 3});
    CHECK(sg::cumsum(x, dim).shape() == Shape{0, 3});
    CHECK(sg::topk(x, 0, dim).values.shape() == (dim == 0 ? Shape{0, 3} : Shape{0, 0}));
  }
  CHECK(sg::topk(x, 3, 1).values.shape() == Shape{0, 3});
  sg::sum(sg::sort(x, 1).values).backward();
  CHECK(x.grad().shape() == Shape{0, 3});
  Tensor y = sg::zeros({2, 0}, sg::kFloat32);
  CHECK(sg::topk(y, 0, 1).values.shape() == Shape{2, 0});
  CHECK(sg::argsort(y, 1).shape() == Shape{2, 0});
  CHECK(sg::cumsum(y, 1).shape() == Shape{2, 0});
  check_error([&] { sg::topk(y, 1, 1); }, {"topk", "k = 1", "size 0", "[2, 0]"});
}

TEST_CASE("cumsum: values, float32 accumulates in double, backward is the reversed cumsum") {
  Tensor x = sg::tensor({{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}}, sg::kFloat64);
  check_values(sg::cumsum(x, 1), {1, 3, 6, 4, 9, 15}, 0, 0);
  check_values(sg::cumsum(x, 0), {1, 2, 3, 5, 7, 9}, 0, 0);
  check_values(sg::cumsum(x.t(), 1), {1, 5, 2, 7, 3, 9}, 0, 0);
  check_values(sg::cumsum(sg::tensor({1.0, kNaN, 2.0}, sg::kFloat64), 0), {1, kNaN, kNaN}, 0, 0);
  // 2^24 + 1 + 1 + 1 + 1 in float32: a float accumulator sticks at 2^24 (each +1 rounds
  // away); the double one rounds each partial sum once: 2^24, 2^24, 2^24+2, 2^24+4, 2^24+4.
  const double t24 = 16777216.0;
  Tensor f = sg::tensor({t24, 1, 1, 1, 1}, sg::kFloat32);
  check_values(sg::cumsum(f, 0), {t24, t24, t24 + 2, t24 + 4, t24 + 4}, 0, 0);
  // backward: dx[j] = sum_{i >= j} dy[i]
  Tensor z = sg::tensor({{1.0, 2.0, 3.0, 4.0}, {0.5, 0.5, 0.5, 0.5}}, sg::kFloat64).requires_grad_();
  sg::cumsum(z, 1).backward(sg::tensor({{1.0, 10.0, 100.0, 1000.0}, {1.0, 2.0, 3.0, 4.0}}, sg::kFloat64));
  check_values(z.grad(), {1111, 1110, 1100, 1000, 10, 9, 7, 4}, 0, 0);
  // wide rows over several column strips, and long ones: against a plain double loop
  sg::Generator gen(9);
  for (const Shape& shape : {Shape{3, 2500}, Shape{2500, 3}, Shape{2, 7, 1500}}) {
    CAPTURE(shape);
    Tensor r = sg::randn(shape, gen, sg::kFloat32);
    for (int64_t dim = 0; dim < static_cast<int64_t>(shape.size()); ++dim) {
      CAPTURE(dim);
      const Tensor moved = sg::transpose(r, dim, -1).contiguous();
      const int64_t R = shape[dim], rows = r.numel() / R;
      const std::vector<float> v = moved.to_vector<float>();
      std::vector<float> want(v.size());
      for (int64_t row = 0; row < rows; ++row) {
        double acc = 0;
        for (int64_t j = 0; j < R; ++j) want[row * R + j] = static_cast<float>(acc += v[row * R + j]);
      }
      CHECK(sg::transpose(sg::cumsum(r, dim), dim, -1).contiguous().to_vector<float>() == want);
    }
  }
}

// ============================================================================================
// fast kernels against the naive ones
// ============================================================================================

template <typename T> void check_sort_kernels(sg::Generator& gen) {
  for (const Layout& L : kLayouts) {
    for (int levels : {3, 40}) {
      CAPTURE(L.O);
      CAPTURE(L.R);
      CAPTURE(L.I);
      CAPTURE(levels);
      const int64_t n = L.O * L.R * L.I;
      const std::vector<T> x = tie_heavy<T>(n, gen, levels);
      for (bool desc : {false, true}) {
        std::vector<T> v1(x.size()), v2(x.size());
        std::vector<int64_t> i1(x.size()), i2(x.size());
        sg::kernels::sort_forward(x.data(), v1.data(), i1.data(), L.O, L.R, L.I, desc);
        sg::kernels::sort_forward_naive(x.data(), v2.data(), i2.data(), L.O, L.R, L.I, desc);
        CHECK(same_bits(v1, v2));
        CHECK(i1 == i2);
      }
      for (int64_t K : {int64_t{0}, int64_t{1}, L.R / 2, L.R - 1, L.R}) {
        if (K < 0 || K > L.R) continue;
        for (bool largest : {true, false})
          for (bool sorted : {true, false}) {
            const size_t m = static_cast<size_t>(L.O * K * L.I);
            std::vector<T> v1(m), v2(m);
            std::vector<int64_t> i1(m), i2(m);
            sg::kernels::topk_forward(x.data(), v1.data(), i1.data(), L.O, L.R, L.I, K, largest, sorted);
            sg::kernels::topk_forward_naive(x.data(), v2.data(), i2.data(), L.O, L.R, L.I, K, largest, sorted);
            CHECK(same_bits(v1, v2));
            CHECK(i1 == i2);
          }
      }
    }
  }
}

TEST_CASE("sort and topk kernels match the naive ones (ties, NaN, signed zeros, every layout)") {
  sg::Generator gen(11);
  check_sort_kernels<double>(gen);
  check_sort_kernels<float>(gen);
  check_sort_kernels<int64_t>(gen);
}

TEST_CASE("sort runs rows in parallel with the same answer as the naive kernel") {
  // 4096 rows of 64: enough work for parallel_for to use every thread
  sg::Generator gen(12);
  const int64_t O = 4096, R = 64;
  const std::vector<float> x = tie_heavy<float>(O * R, gen, 20);
  std::vector<float> v1(x.size()), v2(x.size());
  std::vector<int64_t> i1(x.size()), i2(x.size());
  sg::kernels::sort_forward(x.data(), v1.data(), i1.data(), O, R, 1, true);
  sg::kernels::sort_forward_naive(x.data(), v2.data(), i2.data(), O, R, 1, true);
  CHECK(same_bits(v1, v2));
  CHECK(i1 == i2);
}

// ============================================================================================
// multinomial
// ============================================================================================

namespace {
// Counts of each category among out's entries (a C-category histogram).
std::vector<int64_t> histogram(const std::vector<int64_t>& out, int64_t C) {
  std::vector<int64_t> h(static_cast<size_t>(C), 0);
  for (int64_t c : out) {
    REQUIRE(c >= 0);
    REQUIRE(c < C);
    ++h[c];
  }
  return h;
}

// count ~ Binomial(n, p): |count - n p| <= 5 sigma, sigma = sqrt(n p (1 - p)). A correct
// sampler fails one such check with probability 5.7e-7 (two-sided normal tail at 5 sigma),
// and the seeds are fixed, so a failure means a wrong distribution, not bad luck. p = 0
// allows no draw at all.
void check_binomial(int64_t count, int64_t n, double p, const std::string& what) {
  CAPTURE(what);
  CAPTURE(count);
  CAPTURE(p);
  const double sigma = std::sqrt(static_cast<double>(n) * p * (1 - p));
  CHECK(std::abs(static_cast<double>(count) - static_cast<double>(n) * p) <= 5 * sigma);
}
}  // namespace

TEST_CASE("multinomial with replacement: frequencies follow the weights, zero weights never drawn") {
  // 20000 draws: for p = 0.1, sigma = sqrt(20000 * 0.1 * 0.9) = 42 draws, so the 5-sigma
  // band is 2000 +- 212 (about +-1.1 percentage points).
  const int64_t n = 20000;
  sg::Generator gen(2024);
  const std::vector<double> w = {1, 0, 2, 3, 4};  // not normalised
  for (sg::Dtype dt : {sg::kFloat64, sg::kFloat32}) {
    CAPTURE(dt);
    Tensor out = sg::multinomial(sg::from_vector(w, {5}).to(dt), n, true, gen);
    CHECK(out.dtype() == sg::kInt64);
    CHECK(out.shape() == Shape{n});
    const std::vector<int64_t> h = histogram(out.to_vector<int64_t>(), 5);
    CHECK(h[1] == 0);
    for (int64_t c = 0; c < 5; ++c) check_binomial(h[c], n, w[c] / 10.0, fmt::format("category {}", c));
  }
  // (N, C): each row its own distribution; a row with one positive weight always draws it.
  Tensor probs = sg::tensor({{0.0, 0.0, 5.0, 0.0}, {0.25, 0.25, 0.25, 0.25}, {0.9, 0.0, 0.0, 0.1}}, sg::kFloat64);
  Tensor out = sg::multinomial(probs, n, true, gen);
  CHECK(out.shape() == Shape{3, n});
  const std::vector<int64_t> h0 = histogram(sg::select(out, 0, 0).to_vector<int64_t>(), 4);
  CHECK(h0[2] == n);
  const std::vector<int64_t> h1 = histogram(sg::select(out, 0, 1).to_vector<int64_t>(), 4);
  for (int64_t c = 0; c < 4; ++c) check_binomial(h1[c], n, 0.25, fmt::format("row 1 category {}", c));
  const std::vector<int64_t> h2 = histogram(sg::select(out, 0, 2).to_vector<int64_t>(), 4);
  CHECK(h2[1] + h2[2] == 0);
  check_binomial(h2[3], n, 0.1, "row 2 category 3");
}

TEST_CASE("multinomial: huge and tiny weights neither overflow nor vanish") {
  const int64_t n = 20000;
  sg::Generator gen(3);
  // float64 weights whose sum overflows: still 1/2 each (sigma = 71 draws).
  Tensor big = sg::multinomial(sg::tensor({1e308, 0.0, 1e308}, sg::kFloat64), n, true, gen);
  const std::vector<int64_t> h = histogram(big.to_vector<int64_t>(), 3);
  CHECK(h[1] == 0);
  check_binomial(h[0], n, 0.5, "1e308");
  // the smallest float32 denormal against zeros: the only category that can be drawn
  Tensor tiny = sg::from_vector<float>({0.0f, std::numeric_limits<float>::denorm_min(), 0.0f}, {3});
  for (bool replacement : {true, false}) {
    const std::vector<int64_t> t = sg::multinomial(tiny, replacement ? 50 : 1, replacement, gen).to_vector<int64_t>();
    CHECK(std::all_of(t.begin(), t.end(), [](int64_t c) { return c == 1; }));
  }
}

TEST_CASE("multinomial without replacement: distinct rows that follow successive sampling") {
  // 20000 rows of weights w = [1, 2, 0, 3, 4] (a stride-0 expanded view), 4 draws each: every
  // row is a permutation of the four positive categories. The first draw has P(c) = w_c / 10;
  // the second P(j) = sum_{i != j} (w_i / 10) * w_j / (10 - w_i). Each frequency is checked
  // within 5 binomial sigmas (see check_binomial; sigma <= 71 draws here).
  const int64_t n = 20000, C = 5, S = 4;
  const std::vector<double> w = {1, 2, 0, 3, 4};
  sg::Generator gen(77);
  Tensor probs = sg::from_vector(w, {1, C}).expand({n, C});
  Tensor out = sg::multinomial(probs, S, false, gen);
  CHECK(out.shape() == Shape{n, S});
  const std::vector<int64_t> v = out.to_vector<int64_t>();
  std::vector<int64_t> first(C, 0), second(C, 0);
  int64_t bad_rows = 0;
  for (int64_t r = 0; r < n; ++r) {
    const std::set<int64_t> row(v.begin() + r * S, v.begin() + (r + 1) * S);
    bad_rows += row != std::set<int64_t>{0, 1, 3, 4};
    ++first[v[r * S]];
    ++second[v[r * S + 1]];
  }
  CHECK(bad_rows == 0);
  for (int64_t c = 0; c < C; ++c) {
    check_binomial(first[c], n, w[c] / 10.0, fmt::format("first draw {}", c));
    double p2 = 0;
    for (int64_t i = 0; i < C; ++i)
      if (i != c) p2 += (w[i] / 10.0) * w[c] / (10.0 - w[i]);
    check_binomial(second[c], n, p2, fmt::format("second draw {}", c));
  }
  // Fewer draws than positive weights: still distinct in every row, never the zero weight.
  Tensor few = sg::multinomial(sg::tensor({{0.0, 1.0, 1.0, 1.0, 5.0, 0.0}, {3.0, 0.0, 0.0, 2.0, 0.5, 1.0}},
                                          sg::kFloat32),
                               3, false, gen);
  for (int64_t r = 0; r < 2; ++r) {
    const std::vector<int64_t> row = sg::select(few, 0, r).to_vector<int64_t>();
    CHECK(std::set<int64_t>(row.begin(), row.end()).size() == 3);
    for (int64_t c : row) CHECK((r == 0 ? (c >= 1 && c <= 4) : (c != 1 && c != 2)));
  }
}

TEST_CASE("multinomial is reproducible from the seed and matches the naive kernel") {
  sg::Generator wgen(1);
  Tensor probs = sg::rand({6, 9}, wgen, sg::kFloat64);
  for (int64_t c : {0, 4, 8}) probs.set({2, c}, 0.0);  // zeros in a row
  for (bool replacement : {true, false}) {
    CAPTURE(replacement);
    const int64_t S = replacement ? 50 : 6;
    sg::Generator g1(42), g2(42), g3(43);
    const Tensor a = sg::multinomial(probs, S, replacement, g1);
    const Tensor b = sg::multinomial(probs, S, replacement, g2);
    const Tensor c = sg::multinomial(probs, S, replacement, g3);
    CHECK(a.to_vector<int64_t>() == b.to_vector<int64_t>());
    CHECK(a.to_vector<int64_t>() != c.to_vector<int64_t>());
    // The generator moved on: the next call differs.
    CHECK(sg::multinomial(probs, S, replacement, g1).to_vector<int64_t>() != a.to_vector<int64_t>());
    // A transposed (non-contiguous) copy of the weights gives the same samples.
    sg::Generator g4(42);
    const Tensor strided = probs.t().contiguous().t();
    CHECK(sg::multinomial(strided, S, replacement, g4).to_vector<int64_t>() == a.to_vector<int64_t>());
    // The naive kernel, from the same seed, draws exactly the same.
    for (sg::Dtype dt : {sg::kFloat64, sg::kFloat32}) {
      const Tensor p = probs.to(dt);
      sg::Generator gf(7), gn(7);
      std::vector<int64_t> fast(static_cast<size_t>(6 * S)), naive(fast.size());
      sg::visit_floating(dt, [&]<typename T>() {
        sg::kernels::multinomial_forward(p.data_ptr<T>(), 6, 9, S, replacement, gf, fast.data());
        sg::kernels::multinomial_forward_naive(p.data_ptr<T>(), 6, 9, S, replacement, gn, naive.data());
      });
      CHECK(fast == naive);
      CHECK(gf.state() == gn.state());
    }
  }
  // 1-D weights with many categories, fast against naive
  Tensor wide = sg::rand({1000}, wgen, sg::kFloat64);
  for (bool replacement : {true, false}) {
    sg::Generator gf(8), gn(8);
    std::vector<int64_t> fast(300), naive(300);
    sg::kernels::multinomial_forward(wide.data_ptr<double>(), 1, 1000, 300, replacement, gf, fast.data());
    sg::kernels::multinomial_forward_naive(wide.data_ptr<double>(), 1, 1000, 300, replacement, gn, naive.data());
    CHECK(fast == naive);
  }
}

TEST_CASE("multinomial: shapes, num_samples = 0, no rows") {
  sg::Generator gen(0);
  Tensor p = sg::tensor({0.2, 0.8}, sg::kFloat64);
  CHECK(sg::multinomial(p, 0, true, gen).shape() == Shape{0});
  CHECK(sg::multinomial(p, 0, false, gen).shape() == Shape{0});
  CHECK(sg::multinomial(p, 2, false, gen).shape() == Shape{2});
  Tensor q = sg::ones({3, 4}, sg::kFloat32);
  CHECK(sg::multinomial(q, 0, false, gen).shape() == Shape{3, 0});
  CHECK(sg::multinomial(q, 7, true, gen).shape() == Shape{3, 7});
  CHECK(sg::multinomial(sg::zeros({0, 4}), 2, false, gen).shape() == Shape{0, 2});
  CHECK(sg::multinomial(sg::ones({1, 1}, sg::kFloat64), 3, true, gen).to_vector<int64_t>() == I64s{0, 0, 0});
}

TEST_CASE("multinomial errors name the op, the shape and the bad value or row") {
  sg::Generator gen(0);
  auto w = [](std::initializer_list<double> v) { return sg::tensor(v, sg::kFloat64); };
  check_error([&] { sg::multinomial(w({0.5, -0.25, 1}), 1, true, gen); },
              {"multinomial", "negative", "-0.25", "[3]", "[1]"});
  check_error([&] { sg::multinomial(w({0.5, kNaN}), 1, true, gen); }, {"multinomial", "nan", "[2]", "[1]"});
  check_error([&] { sg::multinomial(w({INFINITY, 1}), 1, false, gen); }, {"multinomial", "inf", "[2]", "[0]"});
  check_error([&] { sg::multinomial(w({0, 0, 0}), 1, true, gen); }, {"multinomial", "[3]", "no positive weight"});
  check_error([&] { sg::multinomial(sg::tensor({{1.0, 2.0}, {0.0, 0.0}}), 1, true, gen); },
              {"multinomial", "row 1", "[2, 2]", "no positive weight"});
  check_error([&] { sg::multinomial(sg::tensor({{1.0, -2.0}, {0.0, 1.0}}), 1, true, gen); },
              {"multinomial", "-2", "[0, 1]", "[2, 2]"});
  check_error([&] { sg::multinomial(sg::zeros({2, 0}), 1, true, gen); }, {"multinomial", "row 0", "[2, 0]"});
  check_error([&] { sg::multinomial(w({1, 2}), -1, true, gen); }, {"multinomial", "num_samples", "-1", "[2]"});
  check_error([&] { sg::multinomial(w({1, 0, 2}), 3, false, gen); },
              {"multinomial", "3 samples without replacement", "[3]", "only 2"});
  check_error([&] { sg::multinomial(sg::tensor({{1.0, 1.0, 1.0}, {0.0, 1.0, 0.0}}), 2, false, gen); },
              {"multinomial", "row 1", "[2, 3]", "only 1"});
  check_error([&] { sg::multinomial(sg::scalar_tensor(1.0), 1, true, gen); }, {"multinomial", "0-d", "[]"});
  check_error([&] { sg::multinomial(sg::ones({2, 2, 2}), 1, true, gen); }, {"multinomial", "3-d", "[2, 2, 2]"});
  check_error([&] { sg::multinomial(sg::tensor({1, 2}), 1, true, gen); }, {"multinomial", "int64", "[2]"});
  check_error([&] { sg::multinomial(sg::tensor({true, false}), 1, true, gen); }, {"multinomial", "bool", "[2]"});
  // a refused call draws nothing: the generator is where it was
  sg::Generator g1(5), g2(5);
  CHECK_THROWS_AS(sg::multinomial(w({1, -1}), 1, true, g1), sg::Error);
  CHECK(g1.state() == g2.state());
}

// ============================================================================================
// errors
// ============================================================================================

TEST_CASE("sort, argsort, topk and cumsum errors name the op, the shape and the bad value") {
  Tensor x = sg::zeros({2, 3});
  check_error([&] { sg::sort(x, 2); }, {"sort", "dim 2", "[2, 3]", "[-2, 1]"});
  check_error([&] { sg::sort(x, -3, true); }, {"sort", "dim -3", "[2, 3]"});
  check_error([&] { sg::argsort(x, 5); }, {"argsort", "dim 5", "[2, 3]"});
  check_error([&] { sg::topk(x, 1, 2); }, {"topk", "dim 2", "[2, 3]"});
  check_error([&] { sg::cumsum(x, -3); }, {"cumsum", "dim -3", "[2, 3]"});
  check_error([&] { sg::topk(x, 4); }, {"topk", "k = 4", "size 3", "[2, 3]", "[0, 3]"});
  check_error([&] { sg::topk(x, -1, 0); }, {"topk", "k = -1", "size 2", "[2, 3]", "[0, 2]"});
  Tensor b = sg::tensor({true, false, true});
  check_error([&] { sg::sort(b); }, {"sort", "bool", "[3]"});
  check_error([&] { sg::argsort(b); }, {"argsort", "bool", "[3]"});
  check_error([&] { sg::topk(b, 1); }, {"topk", "bool", "[3]"});
  check_error([&] { sg::cumsum(b, 0); }, {"cumsum", "bool", "[3]"});
  check_error([&] { sg::sort(Tensor()); }, {"sort", "undefined"});
}
