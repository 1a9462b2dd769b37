// Reductions: gradchecks, forward values against hand-computed numbers and against a naive
// reference reduction (every layout the fast paths distinguish), NaN/ties/empty semantics,
// accuracy and determinism of the float32 sum, and error messages.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "test_util.h"

using sg::Shape;
using sg::Tensor;
using sgtest::GradCase;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---- the naive reference: one plain loop per output element, in double ----

enum class Kind { Sum, Mean, Var, Max, Min };

struct NaiveResult {
  std::vector<double> values;
  std::vector<int64_t> index;  // Max/Min: position of the first extremum within the reduced elements
};

// The elements each output reduces, in the order the reduced dims enumerate them.
std::vector<std::vector<double>> naive_groups(const Tensor& x, const std::vector<int64_t>& dims) {
  const Shape& s = x.shape();
  const int64_t nd = x.dim();
  std::vector<bool> red(static_cast<size_t>(nd), false);
  for (int64_t d : dims)
    if (nd > 0) red[static_cast<size_t>(d < 0 ? d + nd : d)] = true;
  const std::vector<double> v = x.to_vector<double>();
  int64_t out_n = 1;
  for (int64_t d = 0; d < nd; ++d)
    if (!red[d]) out_n *= s[d];
  std::vector<std::vector<double>> groups(static_cast<size_t>(out_n));
  for (int64_t l = 0; l < x.numel(); ++l) {
    int64_t rem = l, o = 0, ostride = 1;
    for (int64_t d = nd - 1; d >= 0; --d) {
      const int64_t c = rem % s[d];
      rem /= s[d];
      if (!red[d]) {
        o += c * ostride;
        ostride *= s[d];
      }
    }
    groups[o].push_back(v[l]);
  }
  return groups;
}

NaiveResult naive_reduce(const std::vector<std::vector<double>>& groups, Kind kind, int64_t correction = 1) {
  NaiveResult r;
  for (const auto& g : groups) {
    const double n = static_cast<double>(g.size());
    double sum = 0;
    for (double e : g) sum += e;
    switch (kind) {
      case Kind::Sum: r.values.push_back(sum); break;
      case Kind::Mean: r.values.push_back(sum / n); break;
      case Kind::Var: {
        double ss = 0;
        for (double e : g) ss += (e - sum / n) * (e - sum / n);
        r.values.push_back(ss / std::max(0.0, n - static_cast<double>(correction)));
        break;
      }
      case Kind::Max:
      case Kind::Min: {
        size_t best = 0;
        for (size_t i = 1; i < g.size() && !std::isnan(g[best]); ++i) {
          const bool better = std::isnan(g[i]) || (kind == Kind::Max ? g[i] > g[best] : g[i] < g[best]);
          if (better) best = i;
        }
        r.values.push_back(g[best]);
        r.index.push_back(static_cast<int64_t>(best));
        break;
      }
    }
  }
  return r;
}

// Compares every reduction of x over `dims` (both keepdim settings) with the reference.
void check_against_naive(const Tensor& x, const std::vector<int64_t>& dims, double rtol) {
  CAPTURE(fmt::format("shape {} strides {} dtype {} dims {}", x.shape(), x.strides(), x.dtype(), dims));
  Shape keep = x.shape(), drop;
  for (int64_t d = 0; d < x.dim(); ++d) {
    const bool r = std::find_if(dims.begin(), dims.end(), [&](int64_t e) { return (e + x.dim()) % x.dim() == d; }) !=
                   dims.end();
    if (r) keep[d] = 1;
    else drop.push_back(x.shape()[d]);
  }
  const auto groups = naive_groups(x, dims);
  const bool floating = sg::is_floating(x.dtype());
  const NaiveResult sum = naive_reduce(groups, Kind::Sum), mean = naive_reduce(groups, Kind::Mean),
                    var1 = naive_reduce(groups, Kind::Var), var0 = naive_reduce(groups, Kind::Var, 0);
  for (bool keepdim : {false, true}) {
    const Shape& out_shape = keepdim ? keep : drop;
    Tensor s = sg::sum(x, dims, keepdim);
    REQUIRE(s.shape() == out_shape);
    sgtest::check_values(s, sum.values, rtol, 1e-9);
    if (floating) {
      sgtest::check_values(sg::mean(x, dims, keepdim), mean.values, rtol, 1e-9);
      sgtest::check_values(sg::var(x, dims, keepdim), var1.values, rtol * 10, 1e-9);
      sgtest::check_values(sg::var(x, dims, keepdim, 0), var0.values, rtol * 10, 1e-9);
    }
  }
  if (dims.size() == 1) {
    const NaiveResult mx = naive_reduce(groups, Kind::Max), mn = naive_reduce(groups, Kind::Min);
    for (bool keepdim : {false, true}) {
      sg::ValuesIndices a = sg::max(x, dims[0], keepdim), b = sg::min(x, dims[0], keepdim);
      REQUIRE(a.values.shape() == (keepdim ? keep : drop));
      REQUIRE(a.indices.dtype() == sg::kInt64);
      sgtest::check_values(a.values, mx.values, 0, 0);
      sgtest::check_values(b.values, mn.values, 0, 0);
      CHECK(a.indices.to_vector<int64_t>() == mx.index);
      CHECK(b.indices.to_vector<int64_t>() == mn.index);
      CHECK(sg::argmax(x, dims[0], keepdim).to_vector<int64_t>() == mx.index);
      CHECK(sg::argmin(x, dims[0], keepdim).to_vector<int64_t>() == mn.index);
    }
  }
}

// A float64 leaf (optionally non-contiguous) whose values are distinct and at least 2/n
// apart, so the numerical derivative of max/min is well defined.
Tensor distinct_leaf(const Shape& shape, sg::Generator& gen, bool noncontig) {
  Tensor x = noncontig ? sgtest::leaf_noncontig(shape, gen) : sgtest::leaf(shape, gen);
  const int64_t n = x.numel();
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  for (int64_t i = n - 1; i > 0; --i) std::swap(perm[i], perm[gen.below(static_cast<uint64_t>(i + 1))]);
  double* p = x.data_ptr<double>();
  for (int64_t j = 0; j < n; ++j) {
    int64_t off = 0, rem = j;
    for (int64_t d = x.dim() - 1; d >= 0; --d) {
      off += (rem % x.shape()[d]) * x.strides()[d];
      rem /= x.shape()[d];
    }
    p[off] = -1.0 + 2.0 * (static_cast<double>(perm[j]) + 0.5) / static_cast<double>(n);
  }
  return x;
}

void run_distinct_cases(const std::vector<GradCase>& cases, uint64_t seed = 7) {
  sg::Generator gen(seed);
  for (const GradCase& c : cases) {
    CAPTURE(c.label);
    std::vector<Tensor> inputs;
    for (const Shape& s : c.shapes) inputs.push_back(distinct_leaf(s, gen, c.noncontig));
    sgtest::check_gradients(c.fn, inputs);
  }
}

using Dims = std::vector<int64_t>;

}  // namespace

// ============================================================================================
// gradchecks
// ============================================================================================

TEST_CASE("gradcheck sum") {
  auto f = [](const std::vector<Tensor>& in) { return sg::sum(in[0]); };
  sgtest::run_grad_cases({
      {"0-d", {{}}, f},
      {"1-D", {{5}}, f},
      {"2-D", {{3, 4}}, f},
      {"3-D", {{2, 3, 4}}, f},
      {"4-D", {{2, 1, 3, 2}}, f},
      {"1-D noncontig", {{5}}, f, -1, 1, true},
      {"3-D noncontig", {{2, 3, 4}}, f, -1, 1, true},
      {"empty", {{0, 3}}, f},
  });
}

TEST_CASE("gradcheck sum_dims") {
  auto f = [](Dims dims, bool keepdim) {
    return [=](const std::vector<Tensor>& in) { return sg::sum(in[0], dims, keepdim); };
  };
  sgtest::run_grad_cases({
      {"0-d dim 0", {{}}, f({0}, false)},
      {"0-d dim -1 keepdim", {{}}, f({-1}, true)},
      {"1-D dim 0", {{5}}, f({0}, false)},
      {"2-D dim 1", {{3, 4}}, f({1}, false)},
      {"2-D dim 0 keepdim", {{3, 4}}, f({0}, true)},
      {"2-D dim -1 keepdim", {{3, 4}}, f({-1}, true)},
      {"3-D dims {0, 2}", {{2, 3, 4}}, f({0, 2}, false)},
      {"3-D dims {-1, 0} keepdim", {{2, 3, 4}}, f({-1, 0}, true)},
      {"3-D dim 1", {{2, 3, 4}}, f({1}, false)},
      {"4-D dims {1, 3}", {{2, 3, 2, 3}}, f({1, 3}, false)},
      {"4-D dims {0, 1, 2, 3} keepdim", {{2, 3, 2, 3}}, f({0, 1, 2, 3}, true)},
      {"4-D no dims", {{2, 1, 2, 3}}, f({}, false)},
      {"2-D noncontig dim 0", {{3, 4}}, f({0}, false), -1, 1, true},
      {"2-D noncontig dim -1 keepdim", {{3, 4}}, f({-1}, true), -1, 1, true},
      {"3-D noncontig dims {0, 1}", {{2, 3, 4}}, f({0, 1}, false), -1, 1, true},
      {"4-D noncontig dims {1, -1}", {{2, 3, 2, 3}}, f({1, -1}, true), -1, 1, true},
  });
}

TEST_CASE("gradcheck mean") {
  auto f = [](const std::vector<Tensor>& in) { return sg::mean(in[0]); };
  sgtest::run_grad_cases({
      {"0-d", {{}}, f},
      {"1-D", {{5}}, f},
      {"2-D", {{3, 4}}, f},
      {"3-D", {{2, 3, 4}}, f},
      {"4-D", {{2, 1, 3, 2}}, f},
      {"2-D noncontig", {{3, 4}}, f, -1, 1, true},
  });
}

TEST_CASE("gradcheck mean_dims") {
  auto f = [](Dims dims, bool keepdim) {
    return [=](const std::vector<Tensor>& in) { return sg::mean(in[0], dims, keepdim); };
  };
  sgtest::run_grad_cases({
      {"0-d dim 0", {{}}, f({0}, true)},
      {"1-D dim -1", {{5}}, f({-1}, false)},
      {"2-D dim 0", {{3, 4}}, f({0}, false)},
      {"2-D dim 1 keepdim", {{3, 4}}, f({1}, true)},
      {"3-D dims {2, 0}", {{2, 3, 4}}, f({2, 0}, false)},
      {"4-D dims {-3, -1} keepdim", {{2, 3, 2, 3}}, f({-3, -1}, true)},
      {"3-D noncontig dim 2", {{2, 3, 4}}, f({2}, false), -1, 1, true},
      {"2-D noncontig dims {0, 1}", {{3, 4}}, f({0, 1}, true), -1, 1, true},
  });
}

TEST_CASE("gradcheck var") {
  auto f = [](int64_t correction) {
    return [=](const std::vector<Tensor>& in) { return sg::var(in[0], sgtest::all_dims(in[0]), false, correction); };
  };
  sgtest::run_grad_cases({
      {"0-d correction 0", {{}}, f(0)},
      {"1-D", {{5}}, f(1)},
      {"1-D correction 0", {{5}}, f(0)},
      {"2-D", {{3, 4}}, f(1)},
      {"3-D correction 2", {{2, 3, 4}}, f(2)},
      {"4-D", {{2, 1, 3, 2}}, f(1)},
      {"2-D noncontig", {{3, 4}}, f(1), -1, 1, true},
  });
}

TEST_CASE("gradcheck var_dims") {
  auto f = [](Dims dims, bool keepdim, int64_t correction) {
    return [=](const std::vector<Tensor>& in) { return sg::var(in[0], dims, keepdim, correction); };
  };
  sgtest::run_grad_cases({
      {"0-d dim 0 correction 0", {{}}, f({0}, false, 0)},
      {"1-D dim 0", {{5}}, f({0}, false, 1)},
      {"2-D dim 1", {{3, 4}}, f({1}, false, 1)},
      {"2-D dim 0 keepdim", {{3, 4}}, f({0}, true, 1)},
      {"2-D dim -1 correction 0", {{3, 4}}, f({-1}, false, 0)},
      {"3-D dims {0, 2} keepdim", {{2, 3, 4}}, f({0, 2}, true, 1)},
      {"4-D dims {1, 2}", {{2, 3, 2, 3}}, f({1, 2}, false, 1)},
      {"3-D noncontig dim 1", {{2, 3, 4}}, f({1}, false, 1), -1, 1, true},
      {"2-D noncontig dim 0 keepdim", {{3, 4}}, f({0}, true, 1), -1, 1, true},
  });
}

TEST_CASE("gradcheck max_all") {
  auto f = [](const std::vector<Tensor>& in) { return sg::max(in[0]); };
  run_distinct_cases({
      {"0-d", {{}}, f},
      {"1-D", {{5}}, f},
      {"2-D", {{3, 4}}, f},
      {"3-D", {{2, 3, 4}}, f},
      {"4-D", {{2, 1, 3, 2}}, f},
      {"2-D noncontig", {{3, 4}}, f, -1, 1, true},
      {"1-D noncontig", {{6}}, f, -1, 1, true},
  });
}

TEST_CASE("gradcheck min_all") {
  auto f = [](const std::vector<Tensor>& in) { return sg::min(in[0]); };
  run_distinct_cases({
      {"0-d", {{}}, f},
      {"1-D", {{5}}, f},
      {"2-D", {{3, 4}}, f},
      {"3-D", {{2, 3, 4}}, f},
      {"4-D", {{2, 1, 3, 2}}, f},
      {"3-D noncontig", {{2, 3, 4}}, f, -1, 1, true},
  });
}

TEST_CASE("gradcheck max_dim") {
  auto f = [](int64_t dim, bool keepdim) {
    return [=](const std::vector<Tensor>& in) { return sg::max(in[0], dim, keepdim).values; };
  };
  run_distinct_cases({
      {"0-d dim 0", {{}}, f(0, false)},
      {"1-D dim 0", {{5}}, f(0, false)},
      {"2-D dim 1", {{3, 4}}, f(1, false)},
      {"2-D dim 0 keepdim", {{3, 4}}, f(0, true)},
      {"3-D dim -2", {{2, 3, 4}}, f(-2, false)},
      {"4-D dim 3 keepdim", {{2, 3, 2, 3}}, f(3, true)},
      {"2-D noncontig dim -1", {{3, 4}}, f(-1, false), -1, 1, true},
      {"3-D noncontig dim 0 keepdim", {{2, 3, 4}}, f(0, true), -1, 1, true},
  });
}

TEST_CASE("gradcheck min_dim") {
  auto f = [](int64_t dim, bool keepdim) {
    return [=](const std::vector<Tensor>& in) { return sg::min(in[0], dim, keepdim).values; };
  };
  run_distinct_cases({
      {"0-d dim -1", {{}}, f(-1, true)},
      {"1-D dim -1", {{5}}, f(-1, true)},
      {"2-D dim 0", {{3, 4}}, f(0, false)},
      {"3-D dim 2", {{2, 3, 4}}, f(2, false)},
      {"4-D dim -3 keepdim", {{2, 3, 2, 3}}, f(-3, true)},
      {"2-D noncontig dim 0", {{3, 4}}, f(0, false), -1, 1, true},
      {"3-D noncontig dim -1", {{2, 3, 4}}, f(-1, true), -1, 1, true},
  });
}

TEST_CASE("gradcheck sum_to") {
  auto f = [](Shape shape) {
    return [=](const std::vector<Tensor>& in) { return sg::sum_to(in[0], shape); };
  };
  sgtest::run_grad_cases({
      {"0-d to 0-d", {{}}, f({})},
      {"1-D to 0-d", {{5}}, f({})},
      {"2-D to 1-D", {{3, 4}}, f({4})},
      {"2-D to (1, 4)", {{3, 4}}, f({1, 4})},
      {"2-D to (3, 1)", {{3, 4}}, f({3, 1})},
      {"2-D to (1, 1)", {{3, 4}}, f({1, 1})},
      {"3-D to (3, 1)", {{2, 3, 4}}, f({3, 1})},
      {"4-D to (1, 3, 1, 2)", {{2, 3, 4, 2}}, f({1, 3, 1, 2})},
      {"4-D to (4, 2)", {{2, 3, 4, 2}}, f({4, 2})},
      {"3-D to itself", {{2, 3, 4}}, f({2, 3, 4})},
      {"2-D noncontig to 1-D", {{3, 4}}, f({4}), -1, 1, true},
      {"3-D noncontig to (2, 1, 4)", {{2, 3, 4}}, f({2, 1, 4}), -1, 1, true},
  });
}

// ============================================================================================
// forward values
// ============================================================================================

TEST_CASE("sum, mean, var: hand-computed values") {
  // x = [[1, 2, 3], [4, 5, 6]]
  for (sg::Dtype dt : {sg::kFloat32, sg::kFloat64}) {
    CAPTURE(dt);
    Tensor x = sg::tensor({{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}}, dt);
    Tensor s = sg::sum(x);
    CHECK(s.dim() == 0);
    CHECK(s.dtype() == dt);
    sgtest::check_values(s, {21});
    sgtest::check_values(sg::sum(x, {0}), {5, 7, 9});
    sgtest::check_values(sg::sum(x, {1}), {6, 15});
    sgtest::check_values(sg::sum(x, {-1}, true), {6, 15});
    CHECK(sg::sum(x, {-1}, true).shape() == Shape{2, 1});
    CHECK(sg::sum(x, {0, 1}).shape() == Shape{});
    CHECK(sg::sum(x, {1, 0}, true).shape() == Shape{1, 1});
    sgtest::check_values(sg::sum(x, {1, 0}, true), {21});
    sgtest::check_values(sg::mean(x), {3.5});
    sgtest::check_values(sg::mean(x, {0}), {2.5, 3.5, 4.5});
    sgtest::check_values(sg::mean(x, {1}, true), {2, 5});
    // var of [1..6] = 17.5 / 5 = 3.5; population variance 17.5 / 6
    sgtest::check_values(sg::var(x), {3.5});
    sgtest::check_values(sg::var(x, sgtest::all_dims(x), false, 0), {17.5 / 6});
    sgtest::check_values(sg::var(x, Dims{0}), {4.5, 4.5, 4.5});  // pairs 3 apart: 4.5 / 1
    sgtest::check_values(sg::var(x, Dims{1}), {1, 1});
    sgtest::check_values(sg::var(x, {1}, true, 0), {2.0 / 3, 2.0 / 3});
    sgtest::check_values(sg::var(x, {1}, false, 2), {2, 2});
    // The transposed view reduces the same elements.
    sgtest::check_values(sg::sum(x.t(), {0}), {6, 15});
    sgtest::check_values(sg::sum(x.t(), {1}), {5, 7, 9});
  }
}

TEST_CASE("sum over an empty dims list reduces nothing and returns a new tensor") {
  Tensor x = sg::tensor({{1.0, 2.0}, {3.0, 4.0}});
  Tensor s = sg::sum(x, {});
  CHECK(s.shape() == Shape{2, 2});
  CHECK(s.impl() != x.impl());
  sgtest::check_values(s, {1, 2, 3, 4});
  sgtest::check_values(sg::sum(x.t(), {}), {1, 3, 2, 4});
  sgtest::check_values(sg::mean(x, {}), {1, 2, 3, 4});
}

TEST_CASE("0-d tensors reduce to themselves") {
  Tensor x = sg::scalar_tensor(2.5, sg::kFloat64);
  for (Tensor y : {sg::sum(x), sg::sum(x, {0}), sg::sum(x, {-1}, true), sg::mean(x), sg::max(x), sg::min(x),
                   sg::max(x, 0).values, sg::min(x, -1, true).values}) {
    CHECK(y.dim() == 0);
    CHECK(y.item<double>() == 2.5);
  }
  CHECK(sg::max(x, 0).indices.item<int64_t>() == 0);
  CHECK(sg::argmax(x).item<int64_t>() == 0);
  CHECK(std::isnan(sg::var(x).item<double>()));  // one element, correction 1: 0 / 0
  CHECK(sg::var(x, sgtest::all_dims(x), false, 0).item<double>() == 0.0);
}

TEST_CASE("max and min: values and first indices") {
  // x = [[3, 1, 4], [1, 5, 9], [2, 6, 5]]
  Tensor x = sg::tensor({{3.0, 1.0, 4.0}, {1.0, 5.0, 9.0}, {2.0, 6.0, 5.0}});
  sgtest::check_values(sg::max(x), {9});
  sgtest::check_values(sg::min(x), {1});
  sg::ValuesIndices r = sg::max(x, 1);
  sgtest::check_values(r.values, {4, 9, 6});
  CHECK(r.indices.to_vector<int64_t>() == std::vector<int64_t>{2, 2, 1});
  r = sg::max(x, 0, true);
  CHECK(r.values.shape() == Shape{1, 3});
  sgtest::check_values(r.values, {3, 6, 9});
  CHECK(r.indices.to_vector<int64_t>() == std::vector<int64_t>{0, 2, 1});
  r = sg::min(x, -1);
  sgtest::check_values(r.values, {1, 1, 2});
  CHECK(r.indices.to_vector<int64_t>() == std::vector<int64_t>{1, 0, 0});
  r = sg::min(x, 0);  // column 0 has 1 at row 1
  sgtest::check_values(r.values, {1, 1, 4});
  CHECK(r.indices.to_vector<int64_t>() == std::vector<int64_t>{1, 0, 0});
  CHECK(sg::argmax(x).item<int64_t>() == 5);
  CHECK(sg::argmax(x, 1).to_vector<int64_t>() == std::vector<int64_t>{2, 2, 1});
  CHECK(sg::argmin(x, 0, true).shape() == Shape{1, 3});
  CHECK(sg::argmin(x, 0).to_vector<int64_t>() == std::vector<int64_t>{1, 0, 0});
  // Through a transposed view: the flattened index is in the view's logical order.
  CHECK(sg::argmax(x.t()).item<int64_t>() == 7);  // x.t()[2][1] = 9
  CHECK(sg::argmax(x.t(), 0).to_vector<int64_t>() == std::vector<int64_t>{2, 2, 1});
}

TEST_CASE("argmax and max(dim) take the first index on ties") {
  Tensor x = sg::tensor({{1.0, 3.0, 3.0, 0.0}, {7.0, 7.0, 7.0, 7.0}});
  CHECK(sg::argmax(x).item<int64_t>() == 4);
  CHECK(sg::argmax(x, 1).to_vector<int64_t>() == std::vector<int64_t>{1, 0});
  CHECK(sg::max(x, 1).indices.to_vector<int64_t>() == std::vector<int64_t>{1, 0});
  CHECK(sg::argmin(x, 1).to_vector<int64_t>() == std::vector<int64_t>{3, 0});
  Tensor col = sg::tensor({2.0, 5.0, 5.0}).reshape({3, 1}).expand({3, 4});  // stride-0 columns
  CHECK(sg::argmax(col, 0).to_vector<int64_t>() == std::vector<int64_t>{1, 1, 1, 1});
  // Ties across the blocks of a long row: the first block's index wins.
  Tensor big = sg::zeros({200000});
  big.set({150000}, 1.0f);
  big.set({199999}, 1.0f);
  big.set({70000}, 1.0f);
  CHECK(sg::argmax(big).item<int64_t>() == 70000);
}

TEST_CASE("max/min all-element gradient is shared evenly among ties") {
  Tensor x = sg::tensor({1.0, 3.0, 3.0}, sg::kFloat64).requires_grad_();
  sg::max(x).backward();
  sgtest::check_values(x.grad(), {0, 0.5, 0.5});
  Tensor y = sg::tensor({{2.0, 0.0}, {0.0, 0.0}}, sg::kFloat64).requires_grad_();
  (sg::min(y) * 6.0).backward();
  sgtest::check_values(y.grad(), {0, 2, 2, 2});
  // max along a dim: the whole gradient goes to the first index.
  Tensor z = sg::tensor({{1.0, 3.0, 3.0}, {5.0, 5.0, 2.0}}, sg::kFloat64).requires_grad_();
  sg::sum(sg::max(z, 1).values).backward();
  sgtest::check_values(z.grad(), {0, 1, 0, 1, 0, 0});
}

TEST_CASE("NaN propagates through max, min, argmax and sum") {
  Tensor x = sg::tensor({{1.0, kNaN, 3.0}, {4.0, 5.0, kNaN}, {7.0, 8.0, 9.0}}, sg::kFloat64);
  CHECK(std::isnan(sg::max(x).item<double>()));
  CHECK(std::isnan(sg::min(x).item<double>()));
  CHECK(sg::argmax(x).item<int64_t>() == 1);
  CHECK(std::isnan(sg::sum(x).item<double>()));
  sg::ValuesIndices r = sg::max(x, 1);
  sgtest::check_values(r.values, {kNaN, kNaN, 9});
  CHECK(r.indices.to_vector<int64_t>() == std::vector<int64_t>{1, 2, 2});
  r = sg::min(x, 0);
  sgtest::check_values(r.values, {1, kNaN, kNaN});
  CHECK(r.indices.to_vector<int64_t>() == std::vector<int64_t>{0, 0, 1});
  CHECK(sg::argmin(x, 1).to_vector<int64_t>() == std::vector<int64_t>{1, 2, 0});
  // NaN first, then larger numbers: the NaN still wins.
  Tensor f = sg::tensor({kNaN, 1.0, 100.0});
  CHECK(std::isnan(sg::max(f).item<float>()));
  CHECK(sg::argmax(f).item<int64_t>() == 0);
  // Long rows (vectorized, several blocks): a NaN anywhere wins, the first NaN is the index.
  for (int64_t at : {int64_t{0}, int64_t{5}, int64_t{80000}, int64_t{139997}}) {
    CAPTURE(at);
    Tensor big = sg::zeros({2, 140000});
    big.set({1, 1000}, 50.0f);
    big.set({1, at}, std::numeric_limits<float>::quiet_NaN());
    big.set({1, 139999}, std::numeric_limits<float>::quiet_NaN());
    CHECK(std::isnan(sg::max(big).item<float>()));
    CHECK(std::isnan(sg::min(big).item<float>()));
    CHECK(sg::argmax(big).item<int64_t>() == 140000 + at);
    CHECK(sg::argmax(big, 1).to_vector<int64_t>() == std::vector<int64_t>{0, at});
    CHECK(sg::argmin(big.to(sg::kFloat64), -1).to_vector<int64_t>() == std::vector<int64_t>{0, at});
    CHECK(sg::max(big.t(), 0).indices.to_vector<int64_t>() == std::vector<int64_t>{0, at});
  }
  // The gradient of a NaN maximum goes to the NaN (PyTorch's evenly_distribute_backward).
  Tensor g = sg::tensor({1.0, kNaN, 2.0}, sg::kFloat64).requires_grad_();
  sg::max(g).backward();
  sgtest::check_values(g.grad(), {0, 1, 0});
}

TEST_CASE("empty reductions: sum 0, mean NaN, max throws") {
  Tensor e = sg::zeros({0});
  CHECK(sg::sum(e).item<float>() == 0.0f);
  CHECK(std::isnan(sg::mean(e).item<float>()));
  CHECK(std::isnan(sg::var(e).item<float>()));
  Tensor e2 = sg::zeros({0, 3}, sg::kFloat64);
  Tensor s = sg::sum(e2, {0});
  CHECK(s.shape() == Shape{3});
  sgtest::check_values(s, {0, 0, 0});
  CHECK(sg::sum(e2, {1}).shape() == Shape{0});
  sgtest::check_values(sg::mean(e2, {0}, true), {kNaN, kNaN, kNaN});
  CHECK(sg::max(e2, 1).values.shape() == Shape{0});  // reduces size-3 rows: nothing to do
  CHECK(sg::sum(sg::zeros({0}, sg::kInt64)).item<int64_t>() == 0);
  sgtest::check_error([&] { sg::max(e); }, {"max", "empty", "[0]"});
  sgtest::check_error([&] { sg::min(e2); }, {"min", "empty", "[0, 3]"});
  sgtest::check_error([&] { sg::argmax(e2); }, {"argmax", "empty", "[0, 3]"});
  sgtest::check_error([&] { sg::max(e2, 0); }, {"max", "dim 0", "size 0", "[0, 3]"});
  sgtest::check_error([&] { sg::argmin(e2, -2); }, {"argmin", "dim -2", "size 0", "[0, 3]"});
}

TEST_CASE("int64 reductions stay exact") {
  Tensor x = sg::tensor({int64_t{1} << 53, int64_t{1}, int64_t{1}});  // 2^53 + 2 is not a double sum
  Tensor s = sg::sum(x);
  CHECK(s.dtype() == sg::kInt64);
  CHECK(s.item<int64_t>() == (int64_t{1} << 53) + 2);
  Tensor m = sg::arange(12).reshape({3, 4});  // [[0..3], [4..7], [8..11]]
  CHECK(sg::sum(m, {0}).to_vector<int64_t>() == std::vector<int64_t>{12, 15, 18, 21});
  CHECK(sg::sum(m, {1}, true).to_vector<int64_t>() == std::vector<int64_t>{6, 22, 38});
  CHECK(sg::max(m).item<int64_t>() == 11);
  CHECK(sg::min(m).item<int64_t>() == 0);
  sg::ValuesIndices r = sg::max(m, 0);
  CHECK(r.values.dtype() == sg::kInt64);
  CHECK(r.values.to_vector<int64_t>() == std::vector<int64_t>{8, 9, 10, 11});
  CHECK(r.indices.to_vector<int64_t>() == std::vector<int64_t>{2, 2, 2, 2});
  CHECK(sg::argmax(m).item<int64_t>() == 11);
  CHECK(sg::argmin(m, 1).to_vector<int64_t>() == std::vector<int64_t>{0, 0, 0});
  CHECK(sg::sum_to(m, {4}).to_vector<int64_t>() == std::vector<int64_t>{12, 15, 18, 21});
  // bool sums count the true values (as PyTorch: the result is int64).
  Tensor b = sg::tensor({true, false, true, true});
  CHECK(sg::sum(b).dtype() == sg::kInt64);
  CHECK(sg::sum(b).item<int64_t>() == 3);
}

TEST_CASE("sum_to: values and identity") {
  // x = [[1, 2, 3], [4, 5, 6]]
  Tensor x = sg::tensor({{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}});
  sgtest::check_values(sg::sum_to(x, {3}), {5, 7, 9});
  sgtest::check_values(sg::sum_to(x, {1, 3}), {5, 7, 9});
  sgtest::check_values(sg::sum_to(x, {2, 1}), {6, 15});
  sgtest::check_values(sg::sum_to(x, {1, 1}), {21});
  sgtest::check_values(sg::sum_to(x, {}), {21});
  CHECK(sg::sum_to(x, {2, 1}).shape() == Shape{2, 1});
  CHECK(sg::sum_to(x, {}).shape() == Shape{});
  CHECK(sg::sum_to(x, {2, 3}).impl() == x.impl());  // nothing to reduce: passes through
  // A broadcast (1, 3) -> (4, 2, 3) gradient sums back over both extra dims.
  Tensor g = sg::ones({4, 2, 3}, sg::kFloat64);
  sgtest::check_values(sg::sum_to(g, {1, 3}), {8, 8, 8});
  sgtest::check_values(sg::sum_to(g, {2, 1}), {12, 12});
  // Leading size-1 dims of x drop out.
  CHECK(sg::sum_to(sg::ones({1, 1, 3}), {3}).shape() == Shape{3});
}

// ============================================================================================
// fast paths vs the naive reference
// ============================================================================================

TEST_CASE("reductions match the naive reference on every layout") {
  sg::Generator gen(3);
  for (sg::Dtype dt : {sg::kFloat64, sg::kFloat32}) {
    const double rtol = dt == sg::kFloat32 ? 2e-6 : 1e-12;
    // contiguous, all dim sets of a 3-D tensor (leading, middle, trailing, K R K R patterns)
    Tensor x = sg::randn({5, 6, 7}, gen, dt);
    for (Dims dims : {Dims{0}, Dims{1}, Dims{2}, Dims{0, 1}, Dims{1, 2}, Dims{0, 2}, Dims{0, 1, 2}, Dims{-1}})
      check_against_naive(x, dims, rtol);
    // 4-D: interleaved reduced dims force the copy path
    Tensor y = sg::randn({3, 4, 5, 6}, gen, dt);
    for (Dims dims : {Dims{0, 2}, Dims{1, 3}, Dims{3, 0}, Dims{1, 2}, Dims{2}, Dims{0, 1, 3}})
      check_against_naive(y, dims, rtol);
    // transposed (dense, not contiguous)
    Tensor t = sg::randn({40, 33}, gen, dt).t();
    for (Dims dims : {Dims{0}, Dims{1}, Dims{0, 1}}) check_against_naive(t, dims, rtol);
    // permuted 3-D: memory order (2, 0, 1)
    Tensor p = sg::randn({6, 4, 5}, gen, dt).permute({1, 2, 0});
    for (Dims dims : {Dims{0}, Dims{1}, Dims{2}, Dims{0, 1}, Dims{1, 2}, Dims{0, 2}}) check_against_naive(p, dims, rtol);
    // sliced (gaps between rows) and expanded (stride 0)
    Tensor s = sg::slice(sg::randn({7, 20}, gen, dt), 1, 3, 17, 2);
    for (Dims dims : {Dims{0}, Dims{1}, Dims{0, 1}}) check_against_naive(s, dims, rtol);
    Tensor ex = sg::randn({3, 1, 5}, gen, dt).expand({3, 4, 5});
    for (Dims dims : {Dims{0}, Dims{1}, Dims{2}, Dims{1, 2}}) check_against_naive(ex, dims, rtol);
    // size-1 dims mixed in
    Tensor o = sg::randn({1, 5, 1, 3}, gen, dt);
    for (Dims dims : {Dims{0}, Dims{2}, Dims{1, 2}, Dims{0, 3}, Dims{1}}) check_against_naive(o, dims, rtol);
    // long rows (several blocks, in parallel), and wide column strips (several, in parallel)
    Tensor longrows = sg::randn({2, 70001}, gen, dt);
    for (Dims dims : {Dims{1}, Dims{0, 1}}) check_against_naive(longrows, dims, rtol);
    check_against_naive(sg::randn({140001}, gen, dt), {0}, rtol);
    Tensor wide = sg::randn({40, 5003}, gen, dt);
    for (Dims dims : {Dims{0}, Dims{1}}) check_against_naive(wide, dims, rtol);
    Tensor wide3 = sg::randn({2, 40, 2100}, gen, dt);
    for (Dims dims : {Dims{1}, Dims{0, 1}}) check_against_naive(wide3, dims, rtol);
    // var merges per-block moments: data far from zero, blocks of rows and of columns
    Tensor far = sg::randn({3, 70001}, gen, dt) + 1e4;
    for (Dims dims : {Dims{1}, Dims{0, 1}}) check_against_naive(far, dims, rtol);
    check_against_naive(sg::randn({100, 3000}, gen, dt) + 1e4, {0}, rtol);
  }
  Tensor i = sg::randint(-1000, 1000, {4, 5, 6}, gen);
  for (Dims dims : {Dims{0}, Dims{1}, Dims{2}, Dims{0, 2}}) check_against_naive(i, dims, 0);
  check_against_naive(i.permute({2, 0, 1}), {1}, 0);
}

TEST_CASE("var is accurate for data far from zero (two-pass)") {
  // 1e8 + {0, 1, 2, 3} in float64: a one-pass E[x^2] - E[x]^2 loses everything here.
  Tensor x = sg::tensor({1e8, 1e8 + 1, 1e8 + 2, 1e8 + 3}, sg::kFloat64);
  sgtest::check_values(sg::var(x), {5.0 / 3}, 1e-12);
  Tensor col = x.reshape({4, 1}).expand({4, 3});
  sgtest::check_values(sg::var(col, Dims{0}), {5.0 / 3, 5.0 / 3, 5.0 / 3}, 1e-12);
}

TEST_CASE("var backward on large inputs: dx = 2 (x - mean) / (n - 1) * g") {
  // Too large for gradcheck; these go through the blocked row and chunked column paths,
  // whose merged means are what the backward uses.
  sg::Generator gen(5);
  for (auto [shape, dim] : {std::pair<Shape, int64_t>{{3, 70001}, 1}, {{100, 3000}, 0}}) {
    CAPTURE(shape);
    Tensor x = (sg::randn(shape, gen, sg::kFloat64) + 1e4).detach().requires_grad_();
    sg::sum(sg::var(x, Dims{dim})).backward();
    const auto groups = naive_groups(x, {dim});
    std::vector<double> means;
    for (const auto& g : groups) means.push_back(std::accumulate(g.begin(), g.end(), 0.0) / static_cast<double>(g.size()));
    const std::vector<double> xv = x.to_vector<double>();
    const int64_t cols = shape[1], n = shape[dim];
    std::vector<double> expected;  // the first 4001: every block and chunk boundary of the means
    for (size_t k = 0; k <= 4000; ++k)
      expected.push_back(2 * (xv[k] - means[dim == 1 ? k / cols : k % cols]) / static_cast<double>(n - 1));
    const std::vector<double> got = x.grad().to_vector<double>();
    size_t bad = 0;
    while (bad < expected.size() && std::abs(got[bad] - expected[bad]) <= 1e-9 + 1e-6 * std::abs(expected[bad])) ++bad;
    if (bad < expected.size()) FAIL_CHECK(fmt::format("element {}: {} vs expected {}", bad, got[bad], expected[bad]));
  }
}

TEST_CASE("float32 sum: exact for 10M ones, accurate for random data, thread-count independent") {
  Tensor ones = sg::ones({10'000'000});
  CHECK(sg::sum(ones).item<float>() == 1e7f);
  CHECK(sg::mean(ones).item<float>() == 1.0f);

  sg::Generator gen(11);
  Tensor r = sg::rand({3'000'001}, gen);
  const float* p = r.data_ptr<float>();
  double ref = 0;
  for (int64_t i = 0; i < r.numel(); ++i) ref += static_cast<double>(p[i]);
  const float got = sg::sum(r).item<float>();
  CHECK(std::abs(got - ref) <= 1e-6 * std::abs(ref));
  // Mean of the data agrees too (and differs from a float32 accumulation, which drifts).
  CHECK(std::abs(sg::mean(r).item<float>() - ref / r.numel()) <= 1e-6 * ref / r.numel());

  // Every path (blocked rows, column strips, var's merged moments) gives the same bits
  // on one thread and on two.
  // (float64 for var, whose double result would otherwise be rounded to float32)
  const Tensor rows = r.narrow(0, 0, 3'000'000).reshape({3, 1'000'000});
  const Tensor cols = r.narrow(0, 0, 3'000'000).reshape({1000, 3000});  // strips 2048 or 1504 wide
  const Tensor rows64 = rows.to(sg::kFloat64), cols64 = cols.to(sg::kFloat64);
  auto results = [&] {
    return std::vector<std::vector<double>>{{sg::sum(r).item<double>()},
                                            sg::sum(rows, {1}).to_vector<double>(),
                                            sg::sum(cols, {0}).to_vector<double>(),
                                            sg::sum(cols64, {0}).to_vector<double>(),
                                            sg::var(rows64, Dims{1}).to_vector<double>(),
                                            sg::var(cols64, Dims{0}).to_vector<double>(),
                                            {sg::var(rows64).item<double>()}};
  };
  const int threads = sg::get_num_threads();
  sg::set_num_threads(1);
  const auto one = results();
  sg::set_num_threads(2);
  const auto two = results();
  sg::set_num_threads(threads);
  for (size_t k = 0; k < one.size(); ++k) {
    CAPTURE(k);
    CHECK(one[k] == two[k]);
  }
}

// ============================================================================================
// errors
// ============================================================================================

TEST_CASE("reduction errors name the op, the dim and the shape") {
  Tensor x = sg::zeros({2, 3});
  sgtest::check_error([&] { sg::sum(x, {2}); }, {"sum", "dim 2", "[2, 3]"});
  sgtest::check_error([&] { sg::sum(x, {-3}, true); }, {"sum", "dim -3", "[2, 3]"});
  sgtest::check_error([&] { sg::sum(x, {1, -1}); }, {"sum", "dim -1", "more than once", "[2, 3]"});
  sgtest::check_error([&] { sg::mean(x, {0, 0}); }, {"mean", "more than once", "[2, 3]"});
  sgtest::check_error([&] { sg::var(x, Dims{5}); }, {"var", "dim 5", "[2, 3]"});
  sgtest::check_error([&] { sg::max(x, 2); }, {"max", "dim 2", "[2, 3]"});
  sgtest::check_error([&] { sg::min(x, -3); }, {"min", "dim -3", "[2, 3]"});
  sgtest::check_error([&] { sg::argmax(x, 7); }, {"argmax", "dim 7", "[2, 3]"});
  sgtest::check_error([&] { sg::argmin(x, 2, true); }, {"argmin", "dim 2", "[2, 3]"});
  sgtest::check_error([&] { sg::sum(sg::scalar_tensor(1.0), {1}); }, {"sum", "dim 1", "[]"});
  sgtest::check_error([&] { sg::sum(sg::scalar_tensor(1.0), {0, -1}); }, {"sum", "more than once", "[]"});

  Tensor i = sg::zeros({2, 3}, sg::kInt64);
  sgtest::check_error([&] { sg::mean(i); }, {"mean", "int64", "[2, 3]"});
  sgtest::check_error([&] { sg::mean(i, {0}); }, {"mean", "int64", "[2, 3]"});
  sgtest::check_error([&] { sg::var(i); }, {"var", "int64", "[2, 3]"});
  sgtest::check_error([&] { sg::var(i, {1}, true); }, {"var", "int64", "[2, 3]"});
  Tensor b = sg::tensor({true, false});
  sgtest::check_error([&] { sg::max(b); }, {"max", "bool", "[2]"});
  sgtest::check_error([&] { sg::argmax(b, 0); }, {"argmax", "bool", "[2]"});
  sgtest::check_error([&] { sg::var(x, sgtest::all_dims(x), false, -1); }, {"var", "correction", "-1", "[2, 3]"});

  sgtest::check_error([&] { sg::sum_to(x, {4}); }, {"sum_to", "[2, 3]", "[4]"});
  sgtest::check_error([&] { sg::sum_to(x, {2, 2}); }, {"sum_to", "[2, 3]", "[2, 2]"});
  sgtest::check_error([&] { sg::sum_to(x, {1, 2, 3}); }, {"sum_to", "[2, 3]", "[1, 2, 3]"});
}

TEST_CASE("var(x, {1}) reduces dim 1 (no overload takes a braced dim as a correction)") {
  Tensor x = sg::tensor({{1.0, 2.0, 3.0}, {4.0, 6.0, 8.0}}, sg::kFloat64);
  Tensor v = sg::var(x, {1});
  CHECK(v.shape() == sg::Shape{2});
  sgtest::check_values(v, {1.0, 4.0});
}
