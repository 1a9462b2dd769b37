// matmul: gradients (float64 gradcheck), forward values against hand-computed numbers,
// an index-based reference of PyTorch's promotion/broadcast rules, and the triple-loop
// kernel (over transposed, permuted, strided and expanded layouts), and error messages.
#include <algorithm>
#include <cstdlib>
#include <vector>

#include "core/blas.h"
#include "tests/test_util.h"

using namespace sgtest;
using sg::Shape;
using sg::Tensor;

namespace {

Tensor mm(const std::vector<Tensor>& x) { return sg::matmul(x[0], x[1]); }

// PyTorch's matmul rules written out index by index on row-major copies of the operands:
// independent of strides, BLAS and the batch-offset code under test.
Tensor reference_matmul(const Tensor& a, const Tensor& b) {
  const bool a1 = a.dim() == 1, b1 = b.dim() == 1;
  Shape as = a.shape(), bs = b.shape();
  if (a1) as.insert(as.begin(), 1);
  if (b1) bs.push_back(1);
  const int64_t M = as[as.size() - 2], K = as.back(), N = bs.back();
  const Shape ab(as.begin(), as.end() - 2), bb(bs.begin(), bs.end() - 2);
  const size_t nd = std::max(ab.size(), bb.size());
  Shape batch(nd);
  for (size_t i = 0; i < nd; ++i) {
    const int64_t da = i < nd - ab.size() ? 1 : ab[i - (nd - ab.size())];
    const int64_t db = i < nd - bb.size() ? 1 : bb[i - (nd - bb.size())];
    batch[i] = std::max(da, db);
  }
  const auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  const int64_t nbatch = sg::shape_numel(batch);
  std::vector<double> out(nbatch * M * N, 0.0);
  for (int64_t bi = 0; bi < nbatch; ++bi) {
    // Unravel the batch index, then ravel it into each operand (size-1 dims pin to 0).
    std::vector<int64_t> idx(nd);
    for (int64_t r = bi, d = static_cast<int64_t>(nd) - 1; d >= 0; --d) {
      idx[d] = r % batch[d];
      r /= batch[d];
    }
    int64_t ia = 0, ib = 0;
    for (size_t d = 0; d < nd; ++d) {
      if (d >= nd - ab.size()) ia = ia * ab[d - (nd - ab.size())] + (ab[d - (nd - ab.size())] == 1 ? 0 : idx[d]);
      if (d >= nd - bb.size()) ib = ib * bb[d - (nd - bb.size())] + (bb[d - (nd - bb.size())] == 1 ? 0 : idx[d]);
    }
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k)
          out[(bi * M + m) * N + n] += va[(ia * M + m) * K + k] * vb[(ib * K + k) * N + n];
  }
  Shape os = batch;
  if (!a1) os.push_back(M);
  if (!b1) os.push_back(N);
  return sg::from_vector(out, os).to(a.dtype());
}

// Uniform in [-1, 1) (centred, so sums cancel and scaling errors show).
Tensor uniform(const Shape& shape, sg::Generator& gen, sg::Dtype dtype) {
  Tensor u = sg::rand(shape, gen, sg::kFloat64);
  double* p = u.data_ptr<double>();
  for (int64_t i = 0; i < u.numel(); ++i) p[i] = 2.0 * p[i] - 1.0;
  return u.to(dtype);
}

}  // namespace

TEST_CASE("gradcheck matmul") {
  auto ta = [](const std::vector<Tensor>& x) { return sg::matmul(x[0].t(), x[1]); };
  auto tb = [](const std::vector<Tensor>& x) { return sg::matmul(x[0], x[1].transpose(-1, -2)); };
  auto tab = [](const std::vector<Tensor>& x) { return sg::matmul(x[0].t(), x[1].t()); };
  auto perm = [](const std::vector<Tensor>& x) { return sg::matmul(x[0].permute({0, 2, 1, 3}), x[1]); };
  auto self = [](const std::vector<Tensor>& x) { return sg::matmul(x[0], x[0].t()); };
  run_grad_cases({
      {"(3,4)@(4,5)", {{3, 4}, {4, 5}}, mm},
      {"1-D@1-D", {{4}, {4}}, mm},
      {"1-D@2-D", {{4}, {4, 3}}, mm},
      {"2-D@1-D", {{3, 4}, {4}}, mm},
      {"1-D@3-D", {{4}, {2, 4, 3}}, mm},
      {"3-D@1-D", {{2, 3, 4}, {4}}, mm},
      {"(2,3,4)@(2,4,5)", {{2, 3, 4}, {2, 4, 5}}, mm},
      {"(2,1,3,4)@(5,4,2) broadcast", {{2, 1, 3, 4}, {5, 4, 2}}, mm},
      {"(3,4)@(2,4,5) 2-D against 3-D", {{3, 4}, {2, 4, 5}}, mm},
      {"(2,3,4)@(4,5) folded batches", {{2, 3, 4}, {4, 5}}, mm},
      {"(1,3,4)@(2,4,5) size-1 batch", {{1, 3, 4}, {2, 4, 5}}, mm},
      {"noncontig (3,4)@(4,5)", {{3, 4}, {4, 5}}, mm, -1.0, 1.0, true},
      {"noncontig (2,3,4)@(2,4,5)", {{2, 3, 4}, {2, 4, 5}}, mm, -1.0, 1.0, true},
      {"noncontig (2,3,4)@(4,5)", {{2, 3, 4}, {4, 5}}, mm, -1.0, 1.0, true},
      {"noncontig 1-D@2-D", {{4}, {4, 3}}, mm, -1.0, 1.0, true},
      {"noncontig 1-D@1-D", {{4}, {4}}, mm, -1.0, 1.0, true},
      {"a.t() @ b", {{4, 3}, {4, 5}}, ta},
      {"a @ b^T batched", {{2, 3, 4}, {2, 5, 4}}, tb},
      {"a.t() @ b.t()", {{4, 3}, {5, 4}}, tab},
      {"permuted 4-D @ 2-D", {{2, 3, 2, 4}, {4, 3}}, perm},
      {"x @ x.t() (same input twice)", {{3, 4}}, self},
      {"0-size K", {{3, 0}, {0, 4}}, mm},
      {"0-size K batched", {{2, 3, 0}, {0, 4}}, mm},
      {"0-size M", {{0, 4}, {4, 3}}, mm},
  });
}

TEST_CASE("matmul forward values") {
  SUBCASE("2-D by hand") {
    Tensor a = sg::tensor({{1.0, 2.0}, {3.0, 4.0}});
    Tensor b = sg::tensor({{5.0, 6.0}, {7.0, 8.0}});
    check_values(sg::matmul(a, b), {19, 22, 43, 50});
    check_values(sg::matmul(a.t(), b), {26, 30, 38, 44});
    check_values(sg::matmul(a, b.t()), {17, 23, 39, 53});
  }
  SUBCASE("1-D promotion by hand") {
    Tensor u = sg::tensor({1.0, 2.0, 3.0}, sg::kFloat64);
    Tensor v = sg::tensor({4.0, 5.0, 6.0}, sg::kFloat64);
    Tensor dot = sg::matmul(u, v);
    CHECK(dot.dim() == 0);
    CHECK(dot.item<double>() == 32.0);
    Tensor m = sg::tensor({{1.0, 0.0}, {0.0, 1.0}, {1.0, 1.0}}, sg::kFloat64);  // (3, 2)
    Tensor um = sg::matmul(u, m);
    CHECK(um.shape() == Shape{2});
    check_values(um, {4, 5});
    Tensor mu = sg::matmul(m.t(), u);
    CHECK(mu.shape() == Shape{2});
    check_values(mu, {4, 5});
  }
  SUBCASE("batched by hand: (2,1,2) @ (2,1), b shared by the batch") {
    Tensor a = sg::from_vector(std::vector<double>{1, 2, 3, 4}, {2, 1, 2});
    Tensor b = sg::from_vector(std::vector<double>{10, 100}, {2, 1});
    Tensor c = sg::matmul(a, b);
    CHECK(c.shape() == Shape{2, 1, 1});
    check_values(c, {210, 430});
  }
  SUBCASE("shapes and values follow PyTorch's rules (index-based reference)") {
    sg::Generator gen(3);
    const std::vector<std::pair<Shape, Shape>> cases = {
        {{3, 4}, {4, 5}},        {{4}, {4}},          {{4}, {4, 5}},          {{3, 4}, {4}},
        {{4}, {2, 4, 5}},        {{2, 3, 4}, {4}},    {{2, 3, 4}, {2, 4, 5}}, {{2, 1, 3, 4}, {5, 4, 6}},
        {{3, 4}, {2, 4, 5}},     {{2, 3, 4}, {4, 5}}, {{1, 3, 4}, {2, 4, 5}}, {{2, 1, 3, 4}, {1, 7, 4, 2}},
        {{3, 1, 2, 3}, {4, 3, 2}},
    };
    for (const auto& [sa, sb] : cases) {
      CAPTURE(sa);
      CAPTURE(sb);
      Tensor a = uniform(sa, gen, sg::kFloat64), b = uniform(sb, gen, sg::kFloat64);
      Tensor want = reference_matmul(a, b);
      check_close(sg::matmul(a, b), want, 1e-12, 1e-12);
      check_close(sg::matmul_naive(a, b), want, 1e-12, 1e-12);
    }
    // The shape from the contract: (2,1,3,4) @ (5,4,6) -> (2,5,3,6).
    CHECK(sg::matmul(sg::zeros({2, 1, 3, 4}), sg::zeros({5, 4, 6})).shape() == Shape{2, 5, 3, 6});
  }
  SUBCASE("PyTorch 1.13 values: arange(12).view(2,1,2,3) @ arange(18).view(3,3,2)") {
    Tensor a = sg::arange(0, 12, 1, sg::kFloat64).reshape({2, 1, 2, 3});
    Tensor b = sg::arange(0, 18, 1, sg::kFloat64).reshape({3, 3, 2});
    Tensor c = sg::matmul(a, b);
    CHECK(c.shape() == Shape{2, 3, 2, 2});
    // torch.matmul(torch.arange(12.).view(2,1,2,3), torch.arange(18.).view(3,3,2)).flatten()
    check_values(c, {10,  13,  28,  40,  28,  31,  100, 112, 46,  49,  172, 184,
                     46,  67,  64,  94,  172, 193, 244, 274, 298, 319, 424, 454});
  }
  SUBCASE("zero-size dims") {
    Tensor c = sg::matmul(sg::ones({3, 0}), sg::ones({0, 4}));
    CHECK(c.shape() == Shape{3, 4});
    check_values(c, std::vector<double>(12, 0.0));
    CHECK(sg::matmul(sg::ones({0, 4}), sg::ones({4, 3})).shape() == Shape{0, 3});
    CHECK(sg::matmul(sg::ones({3, 4}), sg::ones({4, 0})).shape() == Shape{3, 0});
    CHECK(sg::matmul(sg::ones({0, 3, 4}), sg::ones({4, 5})).shape() == Shape{0, 3, 5});
    CHECK(sg::matmul(sg::ones({2, 3, 0}), sg::ones({2, 0, 5})).shape() == Shape{2, 3, 5});
    Tensor d = sg::matmul(sg::ones({0}, sg::kFloat64), sg::ones({0}, sg::kFloat64));
    CHECK(d.dim() == 0);
    CHECK(d.item<double>() == 0.0);
  }
}

// The BLAS path (flags, leading dims, copies, batch offsets, threads, folding) against the
// triple loop, over layouts that take each branch.
TEST_CASE("matmul BLAS path matches the naive kernel") {
  sg::Generator gen(7);
  for (sg::Dtype dt : {sg::kFloat32, sg::kFloat64}) {
    CAPTURE(dt);
    const double rtol = dt == sg::kFloat32 ? 1e-5 : 1e-12, atol = dt == sg::kFloat32 ? 1e-5 : 1e-12;
    auto check = [&](const Tensor& a, const Tensor& b) {
      CAPTURE(a.shape());
      CAPTURE(a.strides());
      CAPTURE(b.shape());
      CAPTURE(b.strides());
      check_close(sg::matmul(a, b), sg::matmul_naive(a, b), rtol, atol);
    };
    const std::vector<std::array<int64_t, 3>> mkn = {{64, 128, 48}, {1, 17, 33}, {33, 1, 5}, {7, 300, 1}, {1, 1, 1}};
    for (const auto& [M, K, N] : mkn) {
      Tensor a = uniform({M, K}, gen, dt), b = uniform({K, N}, gen, dt);
      Tensor at = uniform({K, M}, gen, dt), bt = uniform({N, K}, gen, dt);
      check(a, b);                 // NoTrans, NoTrans
      check(at.t(), b);            // Trans, NoTrans: a transposed view, no copy
      check(a, bt.t());            // NoTrans, Trans
      check(at.t(), bt.t());       // Trans, Trans
      check(sg::select(a, 0, 0), b);  // 1-D @ 2-D
      check(a, sg::select(bt, 0, 0)); // 2-D @ 1-D
      check(sg::select(at, 1, 0), bt.t());  // strided 1-D @ transposed
      // Neither stride 1 (every other column): copied before BLAS.
      Tensor wide = uniform({M, 2 * K}, gen, dt);
      check(sg::slice(wide, 1, 0, 2 * K, 2), b);
      // A column-expanded operand (stride 0 in a matrix dim): copied before BLAS.
      check(a, sg::expand(uniform({K, 1}, gen, dt), {K, N}));
    }
    // Non-contiguous batch strides: a permuted 4-D tensor against 2-D, 3-D and 4-D.
    Tensor p = uniform({2, 5, 3, 4}, gen, dt).permute({0, 2, 1, 3});  // (2, 3, 5, 4)
    check(p, uniform({4, 6}, gen, dt));
    check(p, uniform({3, 4, 6}, gen, dt));
    check(p, uniform({2, 1, 4, 6}, gen, dt));
    check(p, uniform({2, 3, 6, 4}, gen, dt).transpose(-1, -2));
    // Fully permuted: both matrix dims strided inside a batch.
    check(uniform({4, 2, 5, 3}, gen, dt).permute({1, 3, 2, 0}), uniform({2, 1, 4, 2}, gen, dt));
    // Stride-0 batch dims (expand) on both sides.
    check(sg::expand(uniform({1, 6, 8}, gen, dt), {4, 6, 8}), uniform({4, 8, 3}, gen, dt));
    check(uniform({4, 6, 8}, gen, dt), sg::expand(uniform({8, 3}, gen, dt), {4, 8, 3}));
    // Batches folded into one GEMM (b shared, a's batches stacked) and not (a's rows padded).
    check(uniform({4, 8, 16}, gen, dt), uniform({16, 8}, gen, dt));
    check(sg::narrow(uniform({4, 9, 16}, gen, dt), 1, 0, 8), uniform({16, 8}, gen, dt));
    // Many small GEMMs: the batch is split over OpenMP threads.
    check(uniform({16, 32, 32}, gen, dt), uniform({16, 32, 32}, gen, dt));
    check(uniform({64, 8, 64}, gen, dt), uniform({64, 64, 8}, gen, dt).transpose(-1, -2).transpose(-1, -2));
    check(uniform({3, 64, 64}, gen, dt).transpose(-1, -2), uniform({1, 64, 64}, gen, dt));
    // Big GEMMs (> 256^3 multiply-adds): split over threads when the batch divides evenly,
    // else one at a time with OpenBLAS's threads.
    check(uniform({2, 260, 256}, gen, dt), uniform({2, 256, 256}, gen, dt));
    check(uniform({3, 260, 256}, gen, dt), uniform({3, 256, 256}, gen, dt).transpose(-1, -2));
  }
}

TEST_CASE("matmul gradient values") {
  // d(u . v)/du = v, d/dv = u.
  Tensor u = sg::tensor({1.0, 2.0, 3.0}, sg::kFloat64).requires_grad_();
  Tensor v = sg::tensor({4.0, 5.0, 6.0}, sg::kFloat64).requires_grad_();
  sg::matmul(u, v).backward();
  check_values(u.grad(), {4, 5, 6});
  check_values(v.grad(), {1, 2, 3});
  // A shared (2-D) b gets the sum over a's batch: dC = ones -> dB[k][n] = sum_{b,m} A[b][m][k].
  Tensor a = sg::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2});
  Tensor b = sg::zeros({2, 3}, sg::kFloat64).requires_grad_();
  sg::matmul(a, b).backward(sg::ones({2, 2, 3}, sg::kFloat64));
  check_values(b.grad(), {16, 16, 16, 20, 20, 20});
  CHECK_FALSE(a.grad().defined());
}

TEST_CASE("matmul errors") {
  check_error([] { sg::matmul(sg::zeros({2, 3}), sg::zeros({4, 5})); }, {"matmul", "[2, 3]", "[4, 5]"});
  check_error([] { sg::matmul(sg::zeros({3}), sg::zeros({4})); }, {"matmul", "[3]", "[4]"});
  check_error([] { sg::matmul(sg::zeros({2, 3, 4}), sg::zeros({5})); }, {"matmul", "[2, 3, 4]", "[5]"});
  check_error([] { sg::matmul(sg::zeros({2, 3}), sg::zeros({3, 4}, sg::kFloat64)); },
              {"matmul", "[2, 3]", "[3, 4]", "float32", "float64"});
  check_error([] { sg::matmul(sg::zeros({2, 3}, sg::kInt64), sg::zeros({3, 4}, sg::kInt64)); },
              {"matmul", "[2, 3]", "[3, 4]", "int64"});
  check_error([] { sg::matmul(sg::zeros({2, 3}, sg::kBool), sg::zeros({3, 4}, sg::kBool)); },
              {"matmul", "bool"});
  check_error([] { sg::matmul(sg::scalar_tensor(2.0), sg::zeros({3})); }, {"matmul", "[]", "[3]"});
  check_error([] { sg::matmul(sg::zeros({3, 2}), sg::scalar_tensor(2.0)); }, {"matmul", "[3, 2]", "[]"});
  check_error([] { sg::matmul(sg::zeros({2, 3, 4}), sg::zeros({3, 4, 5})); },
              {"matmul", "[2, 3, 4]", "[3, 4, 5]", "batch"});
  check_error([] { sg::matmul(sg::zeros({2, 2, 3, 4}), sg::zeros({3, 1, 4, 5})); },
              {"matmul", "[2, 2, 3, 4]", "[3, 1, 4, 5]"});
  check_error([] { sg::matmul(Tensor(), sg::zeros({3})); }, {"matmul"});
}

TEST_CASE("OpenBLAS runs kernels for this CPU, not the Prescott fallback") {
  // Debian's OpenBLAS 0.3.21 falls back to Prescott (SSE3) on CPU models it does not know;
  // core/blas.cpp replaces that with the AVX-512 / AVX2 kernels (sgemm ~6x faster here).
  const sg::BlasInfo& info = sg::blas_info();
  CAPTURE(info.core);
  CAPTURE(info.detected);
  __builtin_cpu_init();
  const bool user_choice = std::getenv("OPENBLAS_CORETYPE") != nullptr && !info.corrected;
  if (!user_choice && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) CHECK(info.core != "Prescott");
  CHECK(!info.core.empty());
}

TEST_CASE("gradcheck linear: one node for x W^T + b") {
  auto lin = [](const std::vector<Tensor>& x) { return sg::linear(x[0], x[1], x[2]); };
  auto no_bias = [](const std::vector<Tensor>& x) { return sg::linear(x[0], x[1]); };
  auto wt = [](const std::vector<Tensor>& x) { return sg::linear(x[0], x[1].t(), x[2]); };
  run_grad_cases({
      {"(3,4) W(5,4) b(5)", {{3, 4}, {5, 4}, {5}}, lin},
      {"(2,3,4) W(5,4) b(5)", {{2, 3, 4}, {5, 4}, {5}}, lin},
      {"1-D input", {{4}, {5, 4}, {5}}, lin},
      {"no bias", {{2, 3, 4}, {5, 4}}, no_bias},
      {"noncontig input and weight", {{3, 4}, {5, 4}, {5}}, lin, -1.0, 1.0, true},
      {"transposed weight view", {{3, 4}, {4, 5}, {5}}, wt},
      {"0-size K", {{3, 0}, {5, 0}, {5}}, lin},
      {"0 rows", {{0, 4}, {5, 4}, {5}}, lin},
  });
}

TEST_CASE("linear equals matmul + bias, and only the inputs that need a gradient get one") {
  sg::Generator gen(40);
  const Tensor x = sg::randn({2, 7, 33}, gen), w = sg::randn({19, 33}, gen), b = sg::randn({19}, gen);
  check_close(sg::linear(x, w, b), sg::matmul(x, w.t()) + b, 1e-5, 1e-5);
  check_close(sg::linear(x, w), sg::matmul(x, w.t()), 1e-5, 1e-5);
  check_close(sg::linear(sg::zeros({4, 0}), w.narrow(1, 0, 0), b), b.expand({4, 19}), 0, 0);

  Tensor wl = w.clone().requires_grad_(), bl = b.clone().requires_grad_();
  sg::sum(sg::linear(x, wl, bl)).backward();
  CHECK(wl.grad().is_contiguous());
  check_close(wl.grad(), sg::matmul(sg::ones({19, 14}), x.reshape({14, 33})), 1e-5, 1e-4);
  check_close(bl.grad(), sg::full({19}, 14.0), 0, 0);
}

TEST_CASE("linear errors") {
  check_error([] { sg::linear(sg::zeros({2, 3}), sg::zeros({4, 5})); }, {"linear", "[2, 3]", "[4, 5]", "3 features"});
  check_error([] { sg::linear(sg::zeros({2, 3}), sg::zeros({4, 3}), sg::zeros({5})); }, {"linear", "bias [5]", "[4, 3]"});
  check_error([] { sg::linear(sg::zeros({2, 3}), sg::zeros({4, 3}, sg::kFloat64)); }, {"linear", "float32", "float64"});
  check_error([] { sg::linear(sg::zeros({2, 3}), sg::zeros({3})); }, {"linear", "2-D weight", "[3]"});
}
