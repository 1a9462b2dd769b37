// Tensor creation, element access, conversions and view semantics.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#include "test_util.h"

namespace {

using sg::Shape;
using sg::Tensor;
using sgtest::check_error;
using sgtest::check_values;

bool shares_storage(const Tensor& a, const Tensor& b) { return a.impl()->storage == b.impl()->storage; }

// 0, 1, 2, ... as float32 in the given shape.
Tensor iota(const Shape& shape) {
  std::vector<float> v(static_cast<size_t>(sg::shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  return sg::from_vector(v, shape);
}

}  // namespace

// ---- creation ----

TEST_CASE("zeros ones full") {
  Tensor z = sg::zeros({2, 3});
  CHECK(z.shape() == Shape{2, 3});
  CHECK(z.dtype() == sg::kFloat32);
  CHECK(z.is_contiguous());
  check_values(z, std::vector<double>(6, 0.0));

  Tensor o = sg::ones({4}, sg::kFloat64);
  CHECK(o.dtype() == sg::kFloat64);
  check_values(o, {1, 1, 1, 1});

  Tensor f = sg::full({2, 2}, -2.5);
  check_values(f, {-2.5, -2.5, -2.5, -2.5});
  Tensor fi = sg::full({3}, 7, sg::kInt64);
  CHECK(fi.to_vector<int64_t>() == std::vector<int64_t>{7, 7, 7});
  Tensor fb = sg::full({2}, 1, sg::kBool);
  CHECK(fb.to_vector<bool>() == std::vector<bool>{true, true});

  Tensor s = sg::scalar_tensor(4.5);
  CHECK(s.dim() == 0);
  CHECK(s.numel() == 1);
  CHECK(s.item<float>() == 4.5f);

  Tensor like = sg::ones_like(sg::zeros({3, 1}, sg::kFloat64));
  CHECK(like.shape() == Shape{3, 1});
  CHECK(like.dtype() == sg::kFloat64);
  check_values(like, {1, 1, 1});
  CHECK(sg::zeros({0, 4}).numel() == 0);
  check_error([] { sg::zeros({2, -1}); }, {"[2, -1]"});
}

TEST_CASE("arange") {
  Tensor a = sg::arange(5);
  CHECK(a.dtype() == sg::kInt64);
  CHECK(a.to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3, 4});

  Tensor f = sg::arange(0.0, 1.0, 0.25, sg::kFloat32);
  CHECK(f.dtype() == sg::kFloat32);
  check_values(f, {0, 0.25, 0.5, 0.75});  // end excluded

  Tensor g = sg::arange(1.0, 2.0, 0.3, sg::kFloat64);  // 1, 1.3, 1.6, 1.9: ceil((end - start) / step)
  CHECK(g.numel() == 4);
  check_values(g, {1.0, 1.3, 1.6, 1.9}, 1e-12);

  Tensor neg = sg::arange(5.0, 0.0, -2.0);
  CHECK(neg.to_vector<int64_t>() == std::vector<int64_t>{5, 3, 1});
  Tensor negf = sg::arange(1.0, -1.0, -0.5, sg::kFloat64);
  check_values(negf, {1.0, 0.5, 0.0, -0.5});

  CHECK(sg::arange(3.0, 3.0).numel() == 0);
  check_error([] { sg::arange(0.0, 1.0, 0.0); }, {"arange", "step=0"});
  check_error([] { sg::arange(0.0, 5.0, -1.0); }, {"arange", "-1"});
}

TEST_CASE("linspace") {
  Tensor l = sg::linspace(0.0, 1.0, 5);
  CHECK(l.dtype() == sg::kFloat32);
  check_values(l, {0, 0.25, 0.5, 0.75, 1.0});

  // Endpoints are exact even when the step is not representable.
  Tensor m = sg::linspace(-1.1, 3.3, 7, sg::kFloat64);
  const auto v = m.to_vector<double>();
  CHECK(v.front() == -1.1);
  CHECK(v.back() == 3.3);
  for (size_t i = 0; i < v.size(); ++i) CHECK(v[i] == doctest::Approx(-1.1 + 4.4 * static_cast<double>(i) / 6.0));
  Tensor m32 = sg::linspace(-1.1, 3.3, 8);
  CHECK(m32.to_vector<float>().front() == -1.1f);
  CHECK(m32.to_vector<float>().back() == 3.3f);

  // One step gives the start (as PyTorch); none gives an empty tensor.
  check_values(sg::linspace(2.0, 5.0, 1), {2.0});
  CHECK(sg::linspace(2.0, 5.0, 0).numel() == 0);
  check_error([] { sg::linspace(0.0, 1.0, -1); }, {"linspace", "-1"});
}

TEST_CASE("tensor from initializer lists") {
  Tensor i = sg::tensor({1, 2, 3});
  CHECK(i.dtype() == sg::kInt64);
  CHECK(i.to_vector<int64_t>() == std::vector<int64_t>{1, 2, 3});
  Tensor i64 = sg::tensor({int64_t{1} << 40, int64_t{-5}});
  CHECK(i64.dtype() == sg::kInt64);
  CHECK(i64.to_vector<int64_t>() == std::vector<int64_t>{int64_t{1} << 40, -5});

  Tensor f = sg::tensor({1.5, -2.0});
  CHECK(f.dtype() == sg::kFloat32);
  CHECK(f.shape() == Shape{2});
  check_values(f, {1.5, -2.0});
  Tensor d = sg::tensor({0.1}, sg::kFloat64);
  CHECK(d.dtype() == sg::kFloat64);
  CHECK(d.item<double>() == 0.1);  // not rounded through float32

  Tensor b = sg::tensor({true, false});
  CHECK(b.dtype() == sg::kBool);
  CHECK(b.to_vector<bool>() == std::vector<bool>{true, false});

  Tensor m = sg::tensor({{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}});
  CHECK(m.shape() == Shape{2, 3});
  CHECK(m.dtype() == sg::kFloat32);
  CHECK(m.at<float>({1, 0}) == 4.0f);
  check_error([] { sg::tensor({{1.0, 2.0}, {3.0}}); }, {"tensor", "ragged", "2", "1"});
}

TEST_CASE("from_vector") {
  Tensor t = sg::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(t.dtype() == sg::kFloat64);
  CHECK(t.shape() == Shape{2, 3});
  CHECK(t.at<double>({1, 2}) == 6.0);
  check_error([] { sg::from_vector(std::vector<float>{1, 2, 3, 4, 5}, {2, 3}); }, {"from_vector", "5", "[2, 3]"});
}

TEST_CASE("plural: messages count in the right number (1 value, 2 values)") {
  CHECK(sg::plural(1, "thread") == "1 thread");
  CHECK(sg::plural(0, "thread") == "0 threads");
  CHECK(sg::plural(int64_t{2}, "epoch") == "2 epochs");
  CHECK(sg::plural(size_t{1}, "class") == "1 class");
  CHECK(sg::plural(3, "class") == "3 classes");
  CHECK(sg::plural(2, "box") == "2 boxes");
  CHECK(sg::plural(2, "batch", "batches") == "2 batches");
  CHECK(sg::plural(3, "epoch") == "3 epochs");
  CHECK(sg::plural(1, "index", "indices") == "1 index");
  CHECK(sg::plural(-1, "index", "indices") == "-1 indices");
  CHECK(sg::plural(uint64_t{1}, "trailing byte") == "1 trailing byte");
  // Messages that used to say "1 values", "1 elements", "1 indices".
  check_error([] { sg::from_vector(std::vector<float>{1}, {2, 3}); },
              {"from_vector: got 1 value for shape [2, 3] (6 elements)"});
  check_error([] { sg::from_vector(std::vector<float>{1, 2}, {1}); }, {"got 2 values for shape [1] (1 element)"});
  check_error([] { sg::zeros({2, 3}).at<float>({1}); }, {"at: 1 index for a tensor of shape [2, 3]"});
  check_error([] { sg::tensor({{1.0, 2.0}, {3.0}}); }, {"rows of 2 values and of 1 value"});
}

TEST_CASE("rand and randn are reproducible per seed") {
  sg::Generator g1(7), g2(7), g3(8);
  const auto a = sg::rand({100}, g1).to_vector<float>();
  const auto b = sg::rand({100}, g2).to_vector<float>();
  const auto c = sg::rand({100}, g3).to_vector<float>();
  CHECK(a == b);
  CHECK(a != c);
  for (float x : a) {
    CHECK(x >= 0.0f);
    CHECK(x < 1.0f);
  }
  // The stream continues: a second draw from the same generator differs from the first.
  CHECK(sg::rand({100}, g1).to_vector<float>() != a);

  sg::Generator h1(3), h2(3), h3(4);
  const auto n1 = sg::randn({50}, h1, sg::kFloat64).to_vector<double>();
  CHECK(n1 == sg::randn({50}, h2, sg::kFloat64).to_vector<double>());
  CHECK(n1 != sg::randn({50}, h3, sg::kFloat64).to_vector<double>());
  check_error([&] { sg::rand({2}, g1, sg::kInt64); }, {"rand", "int64"});
}

TEST_CASE("a generator's state restores it exactly, cached normal included") {
  sg::Generator g(21);
  g.normal();  // leaves one normal cached
  const sg::Generator::State saved = g.state();
  const auto expect = sg::randn({33}, g, sg::kFloat64).to_vector<double>();
  const uint64_t expect_u = g.next_u64();

  sg::Generator h(999);
  h.set_state(saved);
  CHECK(h.seed() == 21);
  CHECK(sg::randn({33}, h, sg::kFloat64).to_vector<double>() == expect);
  CHECK(h.next_u64() == expect_u);

  sg::Generator::State bad = saved;
  bad[5] = 2;
  check_error([&] { h.set_state(bad); }, {"Generator::set_state: the spare flag must be 0 or 1, got 2"});
  check_error([&] { h.set_state({1, 0, 0, 0, 0, 0, 0}); }, {"xoshiro state is all zero"});
}

TEST_CASE("randn mean and std") {
  sg::Generator gen(123);
  const auto v = sg::randn({100000}, gen, sg::kFloat64).to_vector<double>();
  double mean = 0;
  for (double x : v) mean += x;
  mean /= static_cast<double>(v.size());
  double var = 0;
  for (double x : v) var += (x - mean) * (x - mean);
  const double sd = std::sqrt(var / static_cast<double>(v.size() - 1));
  // Standard errors: 0.0032 for the mean, 0.0022 for the std; these bounds are ~6 sigma.
  CHECK(std::abs(mean) < 0.02);
  CHECK(std::abs(sd - 1.0) < 0.015);

  // Uniform: mean 1/2, variance 1/12.
  const auto u = sg::rand({100000}, gen, sg::kFloat64).to_vector<double>();
  double um = 0;
  for (double x : u) um += x;
  um /= static_cast<double>(u.size());
  CHECK(std::abs(um - 0.5) < 0.006);
}

TEST_CASE("randint range") {
  sg::Generator gen(5);
  Tensor r = sg::randint(-3, 4, {2000}, gen);
  CHECK(r.dtype() == sg::kInt64);
  std::vector<int> counts(7, 0);
  for (int64_t x : r.to_vector<int64_t>()) {
    REQUIRE(x >= -3);
    REQUIRE(x < 4);
    ++counts[static_cast<size_t>(x + 3)];
  }
  for (int c : counts) CHECK(c > 200);  // every value in [-3, 4) turns up (expected ~286)
  check_error([&] { sg::randint(5, 5, {2}, gen); }, {"randint", "5"});
}

// ---- element access and conversions ----

TEST_CASE("item") {
  CHECK(sg::scalar_tensor(2.5, sg::kFloat64).item<double>() == 2.5);
  CHECK(sg::tensor({-4.0}).item<float>() == -4.0f);  // one element, 1-D
  CHECK(sg::tensor({3.7}).item<int64_t>() == 3);     // converted to the asked type
  CHECK(sg::tensor({9}).item<double>() == 9.0);
  check_error([] { sg::zeros({2, 3}).item<float>(); }, {"item", "[2, 3]", "6"});
}

TEST_CASE("int works as an element type, through int64 and checked (it used to fail to link)") {
  // Any other type (short, unsigned, uint8_t, ...) is a compile-time error naming the
  // supported ones: tests/compile_fail/element_type.cpp, run by ctest.
  CHECK(sg::tensor({7}).item<int>() == 7);
  CHECK(sg::tensor({-2.9}).item<int>() == -2);  // converted toward zero, as item<int64_t>
  CHECK(sg::tensor({true}).item<int>() == 1);
  const Tensor v = sg::from_vector(std::vector<int>{1, -2, 3, 4, 5, 6}, {2, 3});
  CHECK(v.dtype() == sg::kInt64);
  CHECK(v.to_vector<int64_t>() == std::vector<int64_t>{1, -2, 3, 4, 5, 6});
  CHECK(v.to_vector<int>() == std::vector<int>{1, -2, 3, 4, 5, 6});
  CHECK(v.at<int>({1, -1}) == 6);
  CHECK(sg::tensor({1.5, -0.5, 2.0}).to_vector<int>() == std::vector<int>{1, 0, 2});
  CHECK(sg::zeros({0}).to_vector<int>().empty());
  Tensor w = v.clone();
  w.set({0, 0}, 40);
  CHECK(w.at<int>({0, 0}) == 40);
  // Values outside int's range throw instead of wrapping.
  const Tensor big = sg::from_vector(std::vector<int64_t>{1, int64_t{1} << 40}, {2});
  check_error([&] { (void)big.to_vector<int>(); }, {"to_vector", "1099511627776", "int (int32)"});
  check_error([&] { (void)big.at<int>({1}); }, {"at", "1099511627776", "int (int32)"});
  check_error([] { (void)sg::tensor({int64_t{-3000000000}}).item<int>(); }, {"item", "-3000000000", "int (int32)"});
  check_error([] { (void)sg::tensor({3e9}, sg::kFloat64).item<int>(); }, {"item", "int (int32)"});
  check_error([&] { (void)v.at<int>({2, 0}); }, {"at", "index 2"});
  check_error([] { (void)sg::zeros({2}).at<int>({0}); }, {"data_ptr", "float32", "int64"});
}

TEST_CASE("at with negative indices and bounds") {
  Tensor t = iota({2, 3});
  CHECK(t.at<float>({0, 0}) == 0.0f);
  CHECK(t.at<float>({1, 2}) == 5.0f);
  CHECK(t.at<float>({-1, -1}) == 5.0f);
  CHECK(t.at<float>({-2, 1}) == 1.0f);
  t.set({1, -3}, 42.0f);  // writes through the reference
  check_values(t, {0, 1, 2, 42, 4, 5});
  check_error([&] { t.at<float>({0, 3}); }, {"at", "3", "[2, 3]"});
  check_error([&] { t.at<float>({-3, 0}); }, {"at", "-3", "[2, 3]"});
  check_error([&] { t.at<float>({0}); }, {"at", "[2, 3]"});
  check_error([&] { t.at<double>({0, 0}); }, {"float32", "float64"});
}

TEST_CASE("data_ptr checks the dtype") {
  Tensor t = sg::zeros({3});
  CHECK(t.data_ptr<float>() != nullptr);
  check_error([&] { t.data_ptr<double>(); }, {"data_ptr", "float32", "float64"});
  check_error([&] { sg::arange(3).data_ptr<float>(); }, {"data_ptr", "int64", "float32"});
}

TEST_CASE("to_vector and to(dtype)") {
  Tensor t = sg::tensor({2.7, -2.7, 0.0, 0.5});
  CHECK(t.to_vector<double>() == std::vector<double>{2.7f, -2.7f, 0.0, 0.5});
  // float -> int64 truncates toward zero; -> bool is "nonzero" (as PyTorch).
  Tensor i = t.to(sg::kInt64);
  CHECK(i.dtype() == sg::kInt64);
  CHECK(i.to_vector<int64_t>() == std::vector<int64_t>{2, -2, 0, 0});
  Tensor b = t.to(sg::kBool);
  CHECK(b.dtype() == sg::kBool);
  CHECK(b.to_vector<bool>() == std::vector<bool>{true, true, false, true});
  Tensor d = sg::tensor({1, -3}).to(sg::kFloat64);
  CHECK(d.dtype() == sg::kFloat64);
  CHECK(d.to_vector<double>() == std::vector<double>{1.0, -3.0});
  Tensor fb = sg::tensor({true, false}).to(sg::kFloat32);
  CHECK(fb.to_vector<float>() == std::vector<float>{1.0f, 0.0f});
  // float64 -> float32 rounds.
  CHECK(sg::tensor({0.1}, sg::kFloat64).to(sg::kFloat32).item<float>() == 0.1f);
  // to_vector of a transposed view walks logical order.
  CHECK(iota({2, 3}).t().to_vector<float>() == std::vector<float>{0, 3, 1, 4, 2, 5});
  CHECK(sg::zeros({0}).to_vector<float>().empty());
}

// ---- autograd flags ----

TEST_CASE("detach shares storage and drops grad") {
  Tensor x = iota({3}).requires_grad_();
  Tensor d = x.detach();
  CHECK(shares_storage(d, x));
  CHECK_FALSE(d.requires_grad());
  CHECK(d.is_leaf());
  CHECK(x.requires_grad());
  d.set({1}, 10.0f);
  CHECK(x.at<float>({1}) == 10.0f);
}

TEST_CASE("requires_grad_ only on floating tensors") {
  check_error([] { sg::arange(3).requires_grad_(); }, {"requires_grad_", "int64"});
  check_error([] { sg::tensor({true}).requires_grad_(); }, {"requires_grad_", "bool"});
  Tensor x = sg::zeros({2}, sg::kFloat64).requires_grad_();
  CHECK(x.requires_grad());
  x.requires_grad_(false);
  CHECK_FALSE(x.requires_grad());
  sg::arange(3).requires_grad_(false);  // turning it off is always fine
}

TEST_CASE("set_num_threads") {
  const int before = sg::get_num_threads();
  CHECK(before >= 1);
  sg::set_num_threads(1);
  CHECK(sg::get_num_threads() == 1);
  sg::set_num_threads(2);
  CHECK(sg::get_num_threads() == 2);
  sg::set_num_threads(before);
  CHECK(sg::get_num_threads() == before);
  check_error([] { sg::set_num_threads(0); }, {"set_num_threads", "0"});
}

// ---- views share storage ----

TEST_CASE("reshape and view share storage") {
  Tensor base = iota({2, 3});
  Tensor r = base.reshape({3, 2});
  CHECK(r.shape() == Shape{3, 2});
  CHECK(shares_storage(r, base));
  r.set({2, 1}, -1.0f);
  CHECK(base.at<float>({1, 2}) == -1.0f);

  Tensor v = base.view({6});
  CHECK(shares_storage(v, base));
  CHECK(base.reshape({-1, 2}).shape() == Shape{3, 2});
  v.set({0}, 100.0f);
  CHECK(base.at<float>({0, 0}) == 100.0f);

  // A transposed view cannot be flattened without a copy: view throws, reshape copies.
  Tensor tr = base.t();
  check_error([&] { tr.view({6}); }, {"view", "[6]", "[3, 2]"});
  Tensor flat = tr.reshape({6});
  CHECK_FALSE(shares_storage(flat, base));
  check_values(flat, {100, 3, 1, 4, 2, -1});
  check_error([&] { base.reshape({4}); }, {"reshape", "[4]", "[2, 3]"});
}

TEST_CASE("transpose and permute share storage") {
  Tensor base = iota({2, 3, 4});
  Tensor tr = base.transpose(0, 2);
  CHECK(tr.shape() == Shape{4, 3, 2});
  CHECK(shares_storage(tr, base));
  CHECK_FALSE(tr.is_contiguous());
  CHECK(tr.at<float>({3, 1, 0}) == base.at<float>({0, 1, 3}));
  tr.set({3, 2, 1}, -7.0f);
  CHECK(base.at<float>({1, 2, 3}) == -7.0f);

  Tensor p = base.permute({1, 2, 0});
  CHECK(p.shape() == Shape{3, 4, 2});
  CHECK(shares_storage(p, base));
  CHECK(p.at<float>({2, 1, 1}) == base.at<float>({1, 2, 1}));
  p.set({0, 0, 1}, 55.0f);
  CHECK(base.at<float>({1, 0, 0}) == 55.0f);

  Tensor m = iota({2, 3});
  CHECK(m.is_contiguous());
  CHECK_FALSE(m.t().is_contiguous());
  CHECK(m.t().t().is_contiguous());
}

TEST_CASE("narrow squeeze unsqueeze expand share storage") {
  Tensor base = iota({4, 3});
  Tensor n = base.narrow(0, 1, 2);
  CHECK(n.shape() == Shape{2, 3});
  CHECK(shares_storage(n, base));
  check_values(n, {3, 4, 5, 6, 7, 8});
  n.set({1, 1}, -1.0f);
  CHECK(base.at<float>({2, 1}) == -1.0f);
  Tensor nc = base.narrow(1, 2, 1);
  CHECK_FALSE(nc.is_contiguous());
  check_values(nc, {2, 5, 8, 11});
  check_error([&] { base.narrow(0, 3, 2); }, {"narrow", "[4, 3]"});

  Tensor col = iota({3, 1});
  Tensor s = col.squeeze(1);
  CHECK(s.shape() == Shape{3});
  CHECK(shares_storage(s, col));
  s.set({2}, 9.5f);
  CHECK(col.at<float>({2, 0}) == 9.5f);
  CHECK(col.squeeze(0).shape() == Shape{3, 1});  // size 3: left alone, as PyTorch

  Tensor u = s.unsqueeze(0);
  CHECK(u.shape() == Shape{1, 3});
  CHECK(s.unsqueeze(-1).shape() == Shape{3, 1});
  CHECK(shares_storage(u, col));
  u.set({0, 0}, -3.0f);
  CHECK(col.at<float>({0, 0}) == -3.0f);

  Tensor row = sg::tensor({1.0, 2.0, 3.0});
  Tensor e = row.expand({2, 3});
  CHECK(e.shape() == Shape{2, 3});
  CHECK(e.stride(0) == 0);
  CHECK(shares_storage(e, row));
  check_values(e, {1, 2, 3, 1, 2, 3});
  row.set({1}, 20.0f);  // one element of the base shows up in every expanded row
  check_values(e, {1, 20, 3, 1, 20, 3});
  check_error([&] { row.expand({2, 4}); }, {"expand", "[3]", "[2, 4]"});
}

TEST_CASE("contiguous and clone copy") {
  Tensor base = iota({2, 3});
  CHECK(shares_storage(base.contiguous(), base));  // already contiguous: no copy

  Tensor tr = base.t();
  Tensor c = tr.contiguous();
  CHECK(c.is_contiguous());
  CHECK(c.shape() == Shape{3, 2});
  CHECK_FALSE(shares_storage(c, base));
  CHECK(c.strides() == sg::Strides{2, 1});
  check_values(c, {0, 3, 1, 4, 2, 5});
  // Its raw memory is in the new row-major order.
  const float* p = c.data_ptr<float>();
  CHECK(std::vector<float>(p, p + 6) == std::vector<float>{0, 3, 1, 4, 2, 5});
  c.set({0, 0}, 99.0f);
  CHECK(base.at<float>({0, 0}) == 0.0f);

  Tensor cl = base.clone();
  CHECK_FALSE(shares_storage(cl, base));
  cl.set({1, 1}, 99.0f);
  CHECK(base.at<float>({1, 1}) == 4.0f);
}

TEST_CASE("shapes whose byte size overflows are rejected, not allocated short") {
  check_error([] { sg::empty({int64_t{1} << 61}, sg::kFloat64); }, {"empty", "2305843009213693952", "float64"});
  check_error([] { sg::ones({int64_t{1} << 62}); }, {"empty", "float32"});
  check_error([] { sg::zeros({int64_t{1} << 40, int64_t{1} << 40}); }, {"more elements than int64"});
}

TEST_CASE("a zero dim does not hide an overflow of the other dims (their strides would overflow)") {
  const int64_t big = int64_t{1} << 62, huge = int64_t{1} << 32;
  check_error([&] { sg::empty({0, big, big}); }, {"[0, 4611686018427387904, 4611686018427387904]", "more elements"});
  check_error([&] { sg::zeros({0, huge, huge, huge}); }, {"more elements than int64"});
  check_error([&] { sg::empty({2, -3}); }, {"negative"});
  // Empty shapes that fit are fine, and have the usual strides.
  const Tensor e = sg::empty({0, 1 << 20, 1 << 20});
  CHECK(e.numel() == 0);
  CHECK(e.strides() == sg::Strides{int64_t{1} << 40, 1 << 20, 1});
}

TEST_CASE("copies write the destination without reading it: bool and strided copies") {
  // The destination of a copy is uninitialised memory (a bool there may hold 190); the
  // sanitizer build fails if the copy loads it. (The release build cannot see the read.)
  const Tensor t = sg::ones({3, 4}, sg::kBool).transpose(0, 1).contiguous();
  CHECK(t.to_vector<bool>() == std::vector<bool>(12, true));
  CHECK(sg::tensor({0.0, 2.5, -1.0}).to(sg::kBool).to_vector<bool>() == std::vector<bool>{false, true, true});
  const Tensor m = sg::tensor({true, false, true, true, false, false}).reshape({2, 3}).transpose(0, 1);
  CHECK(m.contiguous().to_vector<int64_t>() == std::vector<int64_t>{1, 1, 0, 0, 1, 0});
  CHECK(m.to(sg::kFloat32).to_vector<float>() == std::vector<float>{1, 1, 0, 0, 1, 0});
}

TEST_CASE("float to int64 conversions refuse NaN, infinities and values out of range (C++ UB)") {
  for (sg::Dtype dt : {sg::kFloat32, sg::kFloat64}) {
    CAPTURE(dt);
    for (double bad : {std::nan(""), double(INFINITY), -double(INFINITY), 9.3e18, -9.3e18, 1e30}) {
      CAPTURE(bad);
      const Tensor x = sg::tensor({1.0, bad, 3.0}, dt);
      check_error([&] { x.to(sg::kInt64); }, {"converting", "to int64", "cannot be converted"});
      check_error([&] { x.transpose(0, 0).to_vector<int64_t>(); }, {"cannot be converted"});
      check_error([&] { sg::select(x, 0, 1).item<int64_t>(); }, {"item", "cannot be converted"});
    }
    // The ends of the range convert exactly.
    CHECK(sg::tensor({-9223372036854775808.0, 9.2e18, -0.5, 2.75}, dt).to(sg::kInt64).to_vector<int64_t>() ==
          std::vector<int64_t>{INT64_MIN, dt == sg::kFloat64 ? int64_t{9200000000000000000} : int64_t{9200000267938955264},
                               0, 2});
  }
  check_error([] { sg::full({2}, std::nan(""), sg::kInt64); }, {"full", "nan", "cannot be converted"});
  check_error([] { sg::tensor({1e19}, sg::kInt64); }, {"tensor", "cannot be converted"});
  Tensor i = sg::zeros({3}, sg::kInt64);
  check_error([&] { i.set({0}, 1e300); }, {"set", "cannot be converted"});
  check_error([&] { sg::fill_(i, -INFINITY); }, {"fill_", "cannot be converted"});
  check_error([&] { sg::masked_fill(i, sg::tensor({true, false, true}), 1e20); }, {"masked_fill", "cannot be converted"});
  CHECK(i.to_vector<int64_t>() == std::vector<int64_t>{0, 0, 0});  // nothing was written
}

TEST_CASE("AddressSanitizer sees softgrad's own buffers: bytes past a tensor and cached buffers are poisoned") {
#if defined(__SANITIZE_ADDRESS__)
  // Mapped (>= 256 KiB) buffers are rounded up to 64 KiB and reused from a cache after
  // their tensor dies; small ones to 64 bytes. Neither slack nor a cached buffer may be
  // addressable, or ASan would miss out-of-bounds reads and use-after-free there.
  const int64_t n = 300 * 1024 / 4 + 3;  // 307212 bytes of float32
  Tensor big = sg::empty({n});
  auto* p = static_cast<char*>(big.raw_data());
  CHECK_FALSE(__asan_address_is_poisoned(p));
  CHECK_FALSE(__asan_address_is_poisoned(p + 4 * n - 1));
  CHECK(__asan_address_is_poisoned(p + 4 * n));
  big = Tensor();  // back to the cache
  CHECK(__asan_address_is_poisoned(p));
  Tensor again = sg::zeros({n});  // the same size takes the cached buffer back
  CHECK(again.raw_data() == p);
  CHECK_FALSE(__asan_address_is_poisoned(p + 4 * n - 1));
  CHECK(__asan_address_is_poisoned(p + 4 * n));
  Tensor small = sg::empty({3});
  auto* q = static_cast<char*>(small.raw_data());
  CHECK_FALSE(__asan_address_is_poisoned(q + 11));
  CHECK(__asan_address_is_poisoned(q + 12));
  sg::empty_cache();
#else
  MESSAGE("AddressSanitizer is off in this build: the sanitizer build (.ci/run) checks this");
#endif
}

TEST_CASE("rand float32 stays in [0, 1)") {
  sg::Generator gen(0);
  const std::vector<float> v = sg::rand({1 << 22}, gen).to_vector<float>();
  CHECK(*std::max_element(v.begin(), v.end()) < 1.0f);
  CHECK(*std::min_element(v.begin(), v.end()) >= 0.0f);
}

TEST_CASE("randint covers the full int64 range without overflow") {
  sg::Generator gen(1);
  const int64_t lo = std::numeric_limits<int64_t>::min(), hi = std::numeric_limits<int64_t>::max();
  const std::vector<int64_t> v = sg::randint(lo, hi, {1000}, gen).to_vector<int64_t>();
  CHECK(std::any_of(v.begin(), v.end(), [](int64_t x) { return x < 0; }));
  CHECK(std::any_of(v.begin(), v.end(), [](int64_t x) { return x > 0; }));
}

TEST_CASE("arange refuses fractional values for an integer dtype and absurd lengths") {
  check_error([] { sg::arange(0.0, 1.0, 0.25); }, {"arange", "0.25", "int64", "kFloat32"});
  check_error([] { sg::arange(0.0, 1e300); }, {"arange", "too many"});
  check_values(sg::arange(0.0, 1.0, 0.25, sg::kFloat64), {0, 0.25, 0.5, 0.75});
}

TEST_CASE("set() is a tracked in-place write; at() only reads") {
  Tensor x = sg::tensor({1.0, 2.0}, sg::kFloat64).requires_grad_();
  check_error([&] { x.set({0}, 5.0); }, {"set", "[2]", "requires grad"});
  {
    sg::NoGradGuard g;
    x.set({0}, 5.0);
  }
  CHECK(x.at<double>({0}) == 5.0);
  Tensor y = sg::exp(x);  // saves y
  const uint64_t before = y.impl()->storage->version;
  {
    sg::NoGradGuard g;
    y.set({0}, 100.0);
  }
  CHECK(y.impl()->storage->version == before + 1);
  check_error([&] { sg::sum(y).backward(); }, {"exp", "modified in place"});
  Tensor i = sg::zeros({2}, sg::kInt64);
  i.set({1}, int64_t{7});
  CHECK(i.at<int64_t>({1}) == 7);
}

TEST_CASE("set_grad stores a private copy: no cycle through history, no aliasing") {
  std::weak_ptr<sg::TensorImpl> alive;
  {
    Tensor x = sg::ones({2}, sg::kFloat64).requires_grad_();
    alive = x.impl();
    Tensor y = x * x;
    x.set_grad(y);  // a gradient with history must not keep the graph (and x) alive
  }
  CHECK(alive.expired());
  Tensor x = sg::ones({2}, sg::kFloat64).requires_grad_();
  x.set_grad(sg::expand(sg::zeros({1}, sg::kFloat64), {2}));  // one element seen twice
  sg::sum(x * 3.0).backward();
  check_values(x.grad(), {3.0, 3.0});
}

TEST_CASE("memory stats count live storage, the peak, and the reuse cache") {
  using sg::Tensor;
  const int64_t n = int64_t{3} << 20;  // 12 MiB of float32: a mapped, cacheable buffer
  const int64_t bytes = n * 4;
  sg::empty_cache();
  const sg::MemoryStats before = sg::memory_stats();
  CHECK(before.cached_bytes == 0);
  {
    Tensor a = sg::empty({n});
    sg::reset_peak_memory();
    CHECK(sg::memory_stats().current_bytes == before.current_bytes + bytes);
    {
      Tensor b = sg::full({n}, 7.0);
      CHECK(sg::memory_stats().peak_bytes == before.current_bytes + 2 * bytes);
    }
    // b's buffer went to the cache; a zeros() of the same size reuses it and must clear it
    CHECK(sg::memory_stats().cached_bytes >= bytes);
    Tensor z = sg::zeros({n});
    CHECK(sg::memory_stats().cached_bytes == 0);
    const float* pz = z.data_ptr<float>();
    int64_t nonzero = 0;
    for (int64_t i = 0; i < n; ++i) nonzero += pz[i] != 0.0f;
    CHECK(nonzero == 0);
  }
  CHECK(sg::memory_stats().current_bytes == before.current_bytes);
  CHECK(sg::memory_stats().cached_bytes > 0);
  sg::empty_cache();
  CHECK(sg::memory_stats().cached_bytes == 0);
}

TEST_CASE("mid-size buffers (256 KiB to 2 MiB) are cached and reused too, cleared when asked") {
  using sg::Tensor;
  sg::empty_cache();
  const int64_t n = 100000;  // 400 KB of float32: mapped in 64 KiB steps (448 KiB)
  { Tensor a = sg::full({n}, 3.0); }
  CHECK(sg::memory_stats().cached_bytes == 448 * 1024);
  Tensor z = sg::zeros({n - 1000});  // 396 KB: the same 448 KiB mapping
  CHECK(sg::memory_stats().cached_bytes == 0);
  { Tensor small = sg::empty({1000}); }  // 4 KB: malloc'd, never cached
  CHECK(sg::memory_stats().cached_bytes == 0);
  CHECK(sg::sum(sg::abs(z)).item<double>() == 0.0);
}

TEST_CASE("the reuse cache makes room for new sizes by dropping the oldest buffers") {
  using sg::Tensor;
  constexpr int64_t kMiB = int64_t{1} << 20;
  constexpr int64_t kLimit = 512 * kMiB;  // MappingCache's kCacheLimit
  sg::empty_cache();
  {  // 40 buffers of 16 MiB freed together: 640 MiB, more than the cache keeps
    std::vector<Tensor> old;
    for (int k = 0; k < 40; ++k) old.push_back(sg::empty({4 * kMiB}));  // never touched: no page is faulted in
  }
  CHECK(sg::memory_stats().cached_bytes == kLimit);
  const int64_t odd = 6 * kMiB;  // 24 MiB: a size the full cache does not hold
  { Tensor fresh = sg::empty({odd}); }
  // Kept (two 16 MiB buffers made room) rather than unmapped: the next one reuses it.
  CHECK(sg::memory_stats().cached_bytes == kLimit - 2 * 16 * kMiB + 4 * odd);
  Tensor again = sg::empty({odd});
  CHECK(sg::memory_stats().cached_bytes == kLimit - 2 * 16 * kMiB);
  sg::empty_cache();
  CHECK(sg::memory_stats().cached_bytes == 0);
}

TEST_CASE("an undefined tensor passed to an op is reported under the op's name and the argument's role") {
  const Tensor U;  // default-constructed: no impl
  sg::Generator gen(0);
  const Tensor x = sg::ones({2, 3}), w = sg::ones({4, 3}), idx = sg::tensor({0, 1});
  const Tensor mask = sg::tensor({true, false}), labels = sg::tensor({0, 2}), q = sg::ones({1, 2, 4});
  Tensor y = sg::zeros({2, 3}), undefined_self;
  struct Case {
    std::string op, role;
    std::function<void()> call;
  };
  const std::vector<Case> cases = {
      // elementwise, and the operators that forward to them
      {"add", "first operand", [&] { sg::add(U, x); }},
      {"add", "second operand", [&] { sg::add(x, U); }},
      {"sub", "first operand", [&] { sg::sub(U, x); }},
      {"mul", "second operand", [&] { sg::mul(x, U); }},
      {"div", "first operand", [&] { sg::div(U, x); }},
      {"pow", "first operand", [&] { sg::pow(U, x); }},
      {"pow", "input", [&] { sg::pow(U, 2.0); }},
      {"neg", "input", [&] { sg::neg(U); }},
      {"exp", "input", [&] { sg::exp(U); }},
      {"log", "input", [&] { sg::log(U); }},
      {"sqrt", "input", [&] { sg::sqrt(U); }},
      {"abs", "input", [&] { sg::abs(U); }},
      {"relu", "input", [&] { sg::relu(U); }},
      {"tanh", "input", [&] { sg::tanh(U); }},
      {"sigmoid", "input", [&] { sg::sigmoid(U); }},
      {"gelu", "input", [&] { sg::gelu(U); }},
      {"gelu", "input", [&] { sg::gelu(U, sg::GeluApprox::Tanh); }},
      {"clamp", "input", [&] { sg::clamp(U, 0.0, 1.0); }},
      {"eq", "first operand", [&] { sg::eq(U, x); }},
      {"ne", "second operand", [&] { sg::ne(x, U); }},
      {"lt", "first operand", [&] { sg::lt(U, x); }},
      {"le", "first operand", [&] { sg::le(U, x); }},
      {"gt", "first operand", [&] { sg::gt(U, x); }},
      {"ge", "first operand", [&] { sg::ge(U, x); }},
      {"isfinite", "input", [&] { sg::isfinite(U); }},
      {"isnan", "input", [&] { sg::isnan(U); }},
      {"isinf", "input", [&] { sg::isinf(U); }},
      {"where", "condition", [&] { sg::where(U, x, x); }},
      {"where", "second operand", [&] { sg::where(x > 0.0, x, U); }},
      {"masked_fill", "input", [&] { sg::masked_fill(U, mask, 0.0); }},
      {"masked_fill", "mask", [&] { sg::masked_fill(x, U, 0.0); }},
      {"add_", "tensor written in place", [&] { sg::add_(undefined_self, x); }},
      {"add_", "tensor added", [&] { sg::add_(y, U); }},
      {"mul_", "tensor written in place", [&] { sg::mul_(undefined_self, 2.0); }},
      {"fill_", "tensor written in place", [&] { sg::fill_(undefined_self, 2.0); }},
      {"zero_", "tensor written in place", [&] { sg::zero_(undefined_self); }},
      {"copy_", "source", [&] { sg::copy_(y, U); }},
      {"add", "first operand", [&] { (void)(U + x); }},
      {"add", "tensor operand", [&] { (void)(U + 1.0); }},
      {"mul", "tensor operand", [&] { (void)(2.0 * U); }},
      {"neg", "input", [&] { (void)(-U); }},
      {"lt", "tensor operand", [&] { (void)(U < 1.0); }},
      // reductions
      {"sum", "input", [&] { sg::sum(U); }},
      {"sum", "input", [&] { sg::sum(U, {0}); }},
      {"mean", "input", [&] { sg::mean(U); }},
      {"mean", "input", [&] { sg::mean(U, {0}, true); }},
      {"var", "input", [&] { sg::var(U); }},
      {"var", "input", [&] { sg::var(U, {0}); }},
      {"max", "input", [&] { sg::max(U); }},
      {"min", "input", [&] { sg::min(U, 0); }},
      {"argmax", "input", [&] { sg::argmax(U); }},
      {"argmax", "input", [&] { sg::argmax(U, 1); }},
      {"argmin", "input", [&] { sg::argmin(U, 1); }},
      {"sum_to", "input", [&] { sg::sum_to(U, {1}); }},
      // shape
      {"reshape", "input", [&] { sg::reshape(U, {6}); }},
      {"reshape", "input", [&] { U.reshape({6}); }},
      {"view", "input", [&] { sg::view(U, {6}); }},
      {"flatten", "input", [&] { sg::flatten(U); }},
      {"transpose", "input", [&] { U.transpose(0, 1); }},
      {"t", "input", [&] { sg::t(U); }},
      {"permute", "input", [&] { sg::permute(U, {1, 0}); }},
      {"narrow", "input", [&] { sg::narrow(U, 0, 0, 1); }},
      {"slice", "input", [&] { sg::slice(U, 0, 0, 1); }},
      {"select", "input", [&] { sg::select(U, 0, 0); }},
      {"squeeze", "input", [&] { sg::squeeze(U); }},
      {"squeeze", "input", [&] { U.squeeze(0); }},
      {"unsqueeze", "input", [&] { U.unsqueeze(0); }},
      {"expand", "input", [&] { sg::expand(U, {2, 3}); }},
      {"contiguous", "input", [&] { U.contiguous(); }},
      {"clone", "input", [&] { U.clone(); }},
      {"to", "input", [&] { U.to(sg::kFloat64); }},
      {"cat", "tensor at position 1 of the list", [&] { sg::cat({x, U}); }},
      {"stack", "tensor at position 0 of the list", [&] { sg::stack({U, x}); }},
      {"index_select", "input", [&] { sg::index_select(U, 0, idx); }},
      {"index_select", "index", [&] { sg::index_select(x, 0, U); }},
      {"gather", "index", [&] { sg::gather(x, 1, U); }},
      // matmul, the softmax family, losses, layers' ops
      {"matmul", "first operand", [&] { sg::matmul(U, w); }},
      {"matmul", "second operand", [&] { sg::matmul(x, U); }},
      {"linear", "input", [&] { sg::linear(U, w); }},
      {"linear", "weight", [&] { sg::linear(x, U); }},
      {"softmax", "input", [&] { sg::softmax(U, 0); }},
      {"log_softmax", "input", [&] { sg::log_softmax(U, -1); }},
      {"cross_entropy", "input", [&] { sg::cross_entropy(U, labels); }},
      {"cross_entropy", "target", [&] { sg::cross_entropy(x, U); }},
      {"nll_loss", "input", [&] { sg::nll_loss(U, labels); }},
      {"nll_loss", "target", [&] { sg::nll_loss(x, U); }},
      {"scaled_dot_product_attention", "query (q)", [&] { sg::scaled_dot_product_attention(U, q, q); }},
      {"scaled_dot_product_attention", "value (v)", [&] { sg::scaled_dot_product_attention(q, q, U); }},
      {"layer_norm", "input", [&] { sg::layer_norm(U, {3}); }},
      {"dropout", "input", [&] { sg::dropout(U, 0.5, true, gen); }},
      {"embedding", "weight", [&] { sg::embedding(U, idx); }},
      {"embedding", "indices tensor", [&] { sg::embedding(w, U); }},
  };
  for (const Case& c : cases) {
    CAPTURE(c.op);
    CAPTURE(c.role);
    check_error(c.call, {c.op + ": the " + c.role + " is an undefined tensor (a default-constructed Tensor)"});
  }
  // The accessors themselves are the backstop: they name themselves.
  check_error([&] { (void)U.shape(); }, {"Tensor::shape: the tensor is undefined (a default-constructed Tensor)"});
  check_error([&] { (void)U.item<float>(); }, {"Tensor::item: the tensor is undefined"});
  check_error([&] { (void)U.to_vector<double>(); }, {"Tensor::to_vector: the tensor is undefined"});
  check_error([&] { U.backward(); }, {"backward: the output is an undefined tensor (a default-constructed Tensor)"});
}
