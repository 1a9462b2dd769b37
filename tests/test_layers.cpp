// layers: the ops layer_norm, dropout and embedding (float64 gradchecks, fast kernels
// against the naive references, values against compositions of plain ops, errors) and the
// nn layers built on them (ReLU, GELU, Softmax, LogSoftmax, Dropout, LayerNorm, Embedding,
// Sequential, CrossEntropyLoss, TransformerEncoderLayer): names, init, reprs, train/eval,
// named_generators, and the encoder layer end to end. PyTorch's numbers for the same ops
// and layer are in tests/test_reference_layers.cpp.
#include <cmath>
#include <limits>
#include <numbers>
#include <string>
#include <vector>

#include "ops/attention_kernels.h"
#include "ops/normalization_kernels.h"
#include "tests/test_util.h"

using sg::Shape;
using sg::Tensor;
using sgtest::check_close;
using sgtest::check_error;
using sgtest::GradCase;

namespace {

std::vector<std::string> names(const sg::nn::NamedTensors& list) {
  std::vector<std::string> out;
  for (const auto& [n, _] : list) out.push_back(n);
  return out;
}

double max_abs(const Tensor& t) { return t.numel() == 0 ? 0.0 : sg::max(sg::abs(t)).item<double>(); }

// layer_norm composed from plain ops: (x - mean) / sqrt(var + eps) * w + b over the last
// `k` dims (the biased variance).
Tensor composed_layer_norm(const Tensor& x, int64_t k, const Tensor& w, const Tensor& b, double eps) {
  std::vector<int64_t> dims;
  for (int64_t d = x.dim() - k; d < x.dim(); ++d) dims.push_back(d);
  const Tensor centered = x - sg::mean(x, dims, true);
  Tensor y = centered / sg::sqrt(sg::var(x, dims, true, 0) + eps);
  if (w.defined()) y = y * w;
  if (b.defined()) y = y + b;
  return y;
}

}  // namespace

// ============================================================================================
// layer_norm
// ============================================================================================

TEST_CASE("layer_norm gradcheck: affine or not, multi-dim normalized_shape, strided input") {
  auto ln = [](Shape normalized, int affine) {  // affine: 0 none, 1 weight+bias, 2 weight only, 3 bias only
    return [normalized, affine](const std::vector<Tensor>& in) {
      const Tensor w = affine == 1 || affine == 2 ? in[1] : Tensor();
      const Tensor b = affine == 1 ? in[2] : affine == 3 ? in[1] : Tensor();
      return sg::layer_norm(in[0], normalized, w, b);
    };
  };
  sgtest::run_grad_cases({
      GradCase{"(4, 5) no affine", {{4, 5}}, ln({5}, 0)},
      GradCase{"(4, 5) weight and bias", {{4, 5}, {5}, {5}}, ln({5}, 1)},
      GradCase{"(3, 6) weight only", {{3, 6}, {6}}, ln({6}, 2)},
      GradCase{"(3, 6) bias only", {{3, 6}, {6}}, ln({6}, 3)},
      GradCase{"(2, 3, 4) over (3, 4) with affine", {{2, 3, 4}, {3, 4}, {3, 4}}, ln({3, 4}, 1)},
      GradCase{"(2, 3, 4) over (3, 4) no affine", {{2, 3, 4}}, ln({3, 4}, 0)},
      GradCase{"(7) one row", {{7}, {7}, {7}}, ln({7}, 1)},
      GradCase{"(3, 1) rows of one element", {{3, 1}, {1}, {1}}, ln({1}, 1)},
      GradCase{"(2, 2, 17) rows of 17 (a vector tail)", {{2, 2, 17}, {17}, {17}}, ln({17}, 1)},
      GradCase{"(3, 70) rows past the register path", {{3, 70}, {70}, {70}}, ln({70}, 1)},
      GradCase{"(4, 5) non-contiguous", {{4, 5}, {5}, {5}}, ln({5}, 1), -1.0, 1.0, true},
      GradCase{"(3, 4, 6) non-contiguous over (4, 6)", {{3, 4, 6}}, ln({4, 6}, 0), -1.0, 1.0, true},
  });
}

TEST_CASE("layer_norm values equal the composition of plain ops (float64 and float32)") {
  sg::Generator gen(1);
  for (const sg::Dtype dtype : {sg::kFloat64, sg::kFloat32}) {
    CAPTURE(dtype);
    const double tol = dtype == sg::kFloat64 ? 1e-12 : 2e-6;
    const Tensor x = (sg::randn({3, 4, 10}, gen, dtype) * 3.0 + 5.0);  // an offset: the mean matters
    const Tensor w = sg::randn({10}, gen, dtype), b = sg::randn({10}, gen, dtype);
    check_close(sg::layer_norm(x, {10}, w, b), composed_layer_norm(x, 1, w, b, 1e-5), tol, tol);
    check_close(sg::layer_norm(x, {4, 10}, Tensor(), Tensor(), 0.1), composed_layer_norm(x, 2, {}, {}, 0.1), tol,
                tol);
    // A transposed (non-contiguous) input gives the same as its contiguous copy.
    const Tensor xt = sg::randn({10, 6}, gen, dtype).t();
    check_close(sg::layer_norm(xt, {10}, w, b), sg::layer_norm(xt.contiguous(), {10}, w, b), 0.0, 0.0);
  }
  // A hand-computed row: x = (1, 2, 3, 4), mean 2.5, var 1.25.
  const Tensor y = sg::layer_norm(sg::tensor({1.0, 2.0, 3.0, 4.0}, sg::kFloat64), {4}, Tensor(), Tensor(), 0.0);
  const double s = 1.0 / std::sqrt(1.25);
  sgtest::check_values(y, {-1.5 * s, -0.5 * s, 0.5 * s, 1.5 * s}, 1e-15, 0.0);
}

TEST_CASE("layer_norm fast kernels match the naive reference (float32 and float64, every path)") {
  sg::Generator gen(2);
  auto run = [&]<typename T>(int64_t N, int64_t C, bool affine, double tol) {
    CAPTURE(N);
    CAPTURE(C);
    CAPTURE(affine);
    const sg::Dtype dt = sg::dtype_of<T>;
    const Tensor x = sg::randn({N, C}, gen, dt) * 2.0 + 0.5, g = sg::randn({N, C}, gen, dt);
    const Tensor w = sg::randn({C}, gen, dt), b = sg::randn({C}, gen, dt);
    const T* wp = affine ? w.data_ptr<T>() : nullptr;
    const T* bp = affine ? b.data_ptr<T>() : nullptr;
    Tensor y = sg::empty({N, C}, dt), y0 = sg::empty({N, C}, dt);
    Tensor mean = sg::empty({N}, dt), mean0 = sg::empty({N}, dt), rstd = sg::empty({N}, dt), rstd0 = sg::empty({N}, dt);
    const sg::kernels::LayerNormDims dims{N, C};
    sg::kernels::layer_norm_forward<T>(x.data_ptr<T>(), wp, bp, y.data_ptr<T>(), mean.data_ptr<T>(),
                                       rstd.data_ptr<T>(), dims, 1e-5);
    sg::kernels::layer_norm_forward_naive<T>(x.data_ptr<T>(), wp, bp, y0.data_ptr<T>(), mean0.data_ptr<T>(),
                                             rstd0.data_ptr<T>(), dims, 1e-5);
    check_close(y, y0, tol, tol);
    check_close(mean, mean0, tol, tol);
    check_close(rstd, rstd0, tol, tol);
    Tensor dx = sg::empty({N, C}, dt), dx0 = sg::empty({N, C}, dt);
    Tensor dw = sg::empty({C}, dt), dw0 = sg::empty({C}, dt), db = sg::empty({C}, dt), db0 = sg::empty({C}, dt);
    sg::kernels::layer_norm_backward<T>(x.data_ptr<T>(), wp, mean0.data_ptr<T>(), rstd0.data_ptr<T>(), g.data_ptr<T>(),
                                        dx.data_ptr<T>(), dw.data_ptr<T>(), db.data_ptr<T>(), dims);
    sg::kernels::layer_norm_backward_naive<T>(x.data_ptr<T>(), wp, mean0.data_ptr<T>(), rstd0.data_ptr<T>(),
                                              g.data_ptr<T>(), dx0.data_ptr<T>(), dw0.data_ptr<T>(), db0.data_ptr<T>(),
                                              dims);
    // dx = rstd * (a difference of terms of size |g w|): its rounding scales with rstd (316
    // for C = 1, where var = 0 and rstd = 1 / sqrt(eps)).
    const double dx_tol = tol * std::max(1.0, max_abs(rstd0));
    check_close(dx, dx0, dx_tol, dx_tol);
    // dw and db sum N rows: the allowance grows with sqrt(N).
    const double sum_tol = tol * std::sqrt(static_cast<double>(N));
    check_close(dw, dw0, sum_tol, sum_tol);
    check_close(db, db0, sum_tol, sum_tol);
    // Only dx, or only the parameters: the same numbers.
    Tensor dx_only = sg::empty({N, C}, dt), dw_only = sg::empty({C}, dt);
    sg::kernels::layer_norm_backward<T>(x.data_ptr<T>(), wp, mean0.data_ptr<T>(), rstd0.data_ptr<T>(),
                                        g.data_ptr<T>(), dx_only.data_ptr<T>(), nullptr, nullptr, dims);
    check_close(dx_only, dx, 0.0, 0.0);
    sg::kernels::layer_norm_backward<T>(x.data_ptr<T>(), wp, mean0.data_ptr<T>(), rstd0.data_ptr<T>(),
                                        g.data_ptr<T>(), nullptr, dw_only.data_ptr<T>(), nullptr, dims);
    check_close(dw_only, dw, 0.0, 0.0);
  };
  // C: 1, a vector tail, 1 to 4 vectors (the register paths: float32 1, 1, 1, 2, 2, 3, 4
  // vectors, float64 1, 1, 2, 3, 4, 5, 8), past them, long rows. N: 1, odd, and enough rows
  // for the kernels to split over threads (and flush the dweight/dbias partials).
  for (const int64_t C : {1, 3, 16, 17, 30, 40, 64, 65, 100, 1000, 5000})
    for (const int64_t N : {1, 7, 600}) {
      if (N * C > 700000) continue;
      run.operator()<float>(N, C, true, 2e-5);
      run.operator()<double>(N, C, N != 7, 1e-12);
    }
  run.operator()<float>(6400, 64, true, 2e-5);  // the transformer trainer's shape
}

TEST_CASE("layer_norm: only the inputs that require grad get one; saved input is watched") {
  sg::Generator gen(3);
  const Tensor x = sg::randn({4, 6}, gen, sg::kFloat64).requires_grad_();
  const Tensor w = sg::randn({6}, gen, sg::kFloat64);  // constant weight
  const Tensor b = sg::randn({6}, gen, sg::kFloat64).requires_grad_();
  const Tensor g = sg::randn({4, 6}, gen, sg::kFloat64);
  sg::sum(sg::layer_norm(x, {6}, w, b) * g).backward();
  CHECK(x.grad().defined());
  CHECK(!w.grad().defined());
  check_close(b.grad(), sg::sum(g, {0}), 1e-14, 1e-15);
  // The gradient of the sum of a normalized row is 0 (the mean is subtracted).
  const Tensor x2 = sg::randn({3, 5}, gen, sg::kFloat64).requires_grad_();
  sg::sum(sg::layer_norm(x2, {5})).backward();
  CHECK(max_abs(x2.grad()) < 1e-12);
  // Writing into x after the forward makes backward throw.
  Tensor x3 = sg::randn({2, 4}, gen, sg::kFloat64);
  const Tensor wl = sg::ones({4}, sg::kFloat64).requires_grad_();
  const Tensor y = sg::layer_norm(x3, {4}, wl);
  {
    sg::NoGradGuard no_grad;
    sg::fill_(x3, 1.0);
  }
  check_error([&] { sg::sum(y).backward(); }, {"modified in place"});
}

TEST_CASE("layer_norm errors name the shapes and the bad value") {
  sg::Generator gen(4);
  const Tensor x = sg::randn({2, 3, 4}, gen);
  check_error([&] { sg::layer_norm(x, {}); }, {"layer_norm", "at least one dim", "[2, 3, 4]"});
  check_error([&] { sg::layer_norm(x, {3}); }, {"layer_norm", "[2, 3, 4]", "does not end with normalized_shape [3]"});
  check_error([&] { sg::layer_norm(x, {2, 3, 4, 5}); }, {"layer_norm", "[2, 3, 4, 5]"});
  check_error([&] { sg::layer_norm(x, {4}, sg::ones({3})); }, {"layer_norm", "weight of shape [3]", "[4]"});
  check_error([&] { sg::layer_norm(x, {3, 4}, sg::ones({3, 4}), sg::ones({12})); }, {"bias of shape [12]", "[3, 4]"});
  check_error([&] { sg::layer_norm(x, {4}, sg::ones({4}, sg::kFloat64)); }, {"weight is float64", "float32"});
  check_error([&] { sg::layer_norm(sg::ones({2, 4}, sg::kInt64), {4}); }, {"layer_norm", "int64", "[2, 4]"});
  check_error([&] { sg::layer_norm(x, {4}, Tensor(), Tensor(), -1e-5); }, {"layer_norm", "eps", "-1e-05"});
}

// ============================================================================================
// dropout
// ============================================================================================

TEST_CASE("dropout gradcheck with a fixed mask (one seed per call)") {
  for (const double p : {0.2, 0.5, 0.9}) {
    CAPTURE(p);
    auto fn = [p](const std::vector<Tensor>& in) {
      sg::Generator gen(77);  // the same seed on every call: the same mask
      return sg::dropout(in[0], p, true, gen);
    };
    sgtest::run_grad_cases({GradCase{"(5, 7)", {{5, 7}}, fn}, GradCase{"(4, 6) strided", {{4, 6}}, fn, -1, 1, true}});
  }
}

TEST_CASE("dropout keeps about 1 - p of the entries and scales them by 1 / (1 - p)") {
  sg::Generator gen(5);
  const int64_t n = 1 << 20;
  for (const sg::Dtype dtype : {sg::kFloat32, sg::kFloat64})
    for (const double p : {0.1, 0.5, 0.75}) {
      CAPTURE(dtype);
      CAPTURE(p);
      const Tensor x = sg::ones({n}, dtype).requires_grad_();
      const Tensor y = sg::dropout(x, p, true, gen);
      const std::vector<double> v = y.to_vector<double>();
      int64_t kept = 0;
      for (double e : v) {
        if (e == 0.0) continue;
        ++kept;
        if (std::abs(e - 1.0 / (1.0 - p)) > 1e-6 * e) {
          FAIL_CHECK("a kept value is " << e << ", expected 1 / (1 - p) = " << 1.0 / (1.0 - p));
          break;
        }
      }
      const double kept_fraction = static_cast<double>(kept) / n;
      const double sigma = std::sqrt(p * (1 - p) / n);
      CHECK(std::abs(kept_fraction - (1 - p)) < 5 * sigma);
      CHECK(std::abs(sg::mean(y).item<double>() - 1.0) < 5 * sigma / (1 - p) + 1e-6);  // the same bound on the mean
      // Every quarter of the tensor keeps its share too (no drift along the index).
      for (int64_t q = 0; q < 4; ++q) {
        int64_t k = 0;
        for (int64_t i = q * n / 4; i < (q + 1) * n / 4; ++i) k += v[static_cast<size_t>(i)] != 0.0;
        CHECK(std::abs(static_cast<double>(k) / (n / 4) - (1 - p)) < 10 * sigma);
      }
      // Backward reuses the mask: with x = 1, dx of sum(y) is y itself.
      sg::sum(y).backward();
      check_close(x.grad(), y, 0.0, 0.0);
    }
}

TEST_CASE("dropout: kernel equals the keep rule entry by entry; masks differ per call, repeat per seed") {
  sg::Generator gen(6);
  const Tensor x = sg::randn({37, 129}, gen);
  sg::Generator a(9), b(9);
  const Tensor ya = sg::dropout(x, 0.3, true, a), yb = sg::dropout(x, 0.3, true, b);
  check_close(ya, yb, 0.0, 0.0);
  const Tensor ya2 = sg::dropout(x, 0.3, true, a);
  CHECK(max_abs(ya - ya2) > 0.1);  // the next call draws a new seed
  // The kernel against dropout_keep itself, from the seed a fresh Generator(9) draws first.
  const uint64_t seed = sg::Generator(9).next_u64();
  const uint32_t threshold = sg::kernels::dropout_threshold(0.3);
  const float scale = static_cast<float>(sg::kernels::dropout_keep_scale(threshold));
  const std::vector<float> xv = x.to_vector<float>(), yv = ya.to_vector<float>();
  int64_t bad = 0;
  for (size_t i = 0; i < xv.size(); ++i)
    bad += yv[i] != (sg::kernels::dropout_keep(seed, i, threshold) ? xv[i] * scale : 0.0f);
  CHECK(bad == 0);
  // Strided input: the same as its contiguous copy (the mask follows the logical index).
  const Tensor xt = sg::randn({129, 37}, gen).t();
  sg::Generator c(4), d(4);
  check_close(sg::dropout(xt, 0.5, true, c), sg::dropout(xt.contiguous(), 0.5, true, d), 0.0, 0.0);
}

TEST_CASE("dropout: eval and p = 0 return x itself, p = 1 gives zeros and zero gradients") {
  sg::Generator gen(7);
  const Tensor x = sg::randn({3, 4}, gen).requires_grad_();
  const uint64_t before = sg::Generator(gen).next_u64();
  CHECK(sg::dropout(x, 0.5, false, gen).impl() == x.impl());
  CHECK(sg::dropout(x, 0.0, true, gen).impl() == x.impl());
  CHECK(gen.next_u64() == before);  // neither drew from the generator
  const Tensor y = sg::dropout(x, 1.0, true, gen);
  CHECK(max_abs(y) == 0.0);
  sg::sum(y * 3.0).backward();
  CHECK(max_abs(x.grad()) == 0.0);
  CHECK(x.grad().shape() == Shape{3, 4});
}

TEST_CASE("dropout errors") {
  sg::Generator gen(8);
  const Tensor x = sg::randn({2, 3}, gen);
  check_error([&] { sg::dropout(x, -0.1, true, gen); }, {"dropout", "[0, 1]", "-0.1", "[2, 3]"});
  check_error([&] { sg::dropout(x, 1.5, true, gen); }, {"dropout", "1.5"});
  check_error([&] { sg::dropout(x, std::nan(""), false, gen); }, {"dropout", "nan"});
  check_error([&] { sg::dropout(sg::ones({2}, sg::kInt64), 0.5, true, gen); }, {"dropout", "int64"});
  check_error([&] { sg::nn::Dropout(2.0, gen); }, {"Dropout", "[0, 1]", "2"});
}

// ============================================================================================
// embedding
// ============================================================================================

TEST_CASE("embedding gradcheck: repeated indices, any index shape, padding_idx") {
  const Tensor idx = sg::tensor({3, 0, 3, 2, 3, 1});  // 3 three times
  const Tensor idx2d = idx.reshape({2, 3});
  const Tensor idx0d = sg::tensor({2}).reshape({});
  sgtest::run_grad_cases({
      GradCase{"1-D indices", {{5, 4}}, [&](const std::vector<Tensor>& in) { return sg::embedding(in[0], idx); }},
      GradCase{"2-D indices", {{4, 3}}, [&](const std::vector<Tensor>& in) { return sg::embedding(in[0], idx2d); }},
      GradCase{"0-dim index", {{4, 3}}, [&](const std::vector<Tensor>& in) { return sg::embedding(in[0], idx0d); }},
      // Row 3 gets no gradient although the output reads it (PyTorch's rule): the check
      // multiplies the lookups of row 3 by 0, so that the numerical gradient there is 0 too.
      GradCase{"padding_idx 3", {{4, 3}},
               [&](const std::vector<Tensor>& in) {
                 const Tensor not_pad = sg::ne(idx2d, sg::tensor({3})).to(sg::kFloat64).unsqueeze(-1);
                 return sg::embedding(in[0], idx2d, {.padding_idx = 3}) * not_pad;
               }},
      GradCase{"strided weight", {{5, 4}}, [&](const std::vector<Tensor>& in) { return sg::embedding(in[0], idx); },
               -1, 1, true},
  });
}

TEST_CASE("embedding values and the scatter-added gradient") {
  sg::Generator gen(9);
  const Tensor w = sg::randn({6, 3}, gen, sg::kFloat64).requires_grad_();
  const Tensor idx = sg::tensor({4, 1, 4, 5}).reshape({2, 2});
  const Tensor y = sg::embedding(w, idx);
  CHECK(y.shape() == Shape{2, 2, 3});
  check_close(y, sg::index_select(w, 0, idx.reshape({4})).reshape({2, 2, 3}), 0.0, 0.0);
  const Tensor g = sg::randn({2, 2, 3}, gen, sg::kFloat64);
  sg::sum(y * g).backward();
  const Tensor dw = w.grad();
  check_close(sg::select(dw, 0, 4), sg::select(sg::select(g, 0, 0), 0, 0) + sg::select(sg::select(g, 0, 1), 0, 0),
              1e-15, 0.0);
  check_close(sg::select(dw, 0, 1), sg::select(sg::select(g, 0, 0), 0, 1), 0.0, 0.0);
  CHECK(max_abs(sg::select(dw, 0, 0)) == 0.0);  // never looked up
  // padding_idx: the forward reads the row, the backward leaves it at 0 (negative counts from the end).
  const Tensor w2 = sg::randn({6, 3}, gen, sg::kFloat64).requires_grad_();
  const Tensor y2 = sg::embedding(w2, idx, {.padding_idx = -2});  // row 4
  check_close(y2, y.detach() * 0.0 + sg::embedding(w2.detach(), idx), 0.0, 0.0);
  sg::sum(y2 * g).backward();
  CHECK(max_abs(sg::select(w2.grad(), 0, 4)) == 0.0);
  CHECK(max_abs(sg::select(w2.grad(), 0, 5)) > 0.0);
}

TEST_CASE("embedding: many lookups (threads split the rows) match a plain loop") {
  sg::Generator gen(10);
  const int64_t V = 50, D = 64, n = 4096;
  for (const sg::Dtype dtype : {sg::kFloat32, sg::kFloat64}) {
    CAPTURE(dtype);
    const Tensor w = sg::randn({V, D}, gen, dtype).requires_grad_();
    const Tensor idx = sg::randint(0, V, {n}, gen);
    const Tensor g = sg::randn({n, D}, gen, dtype);
    sg::sum(sg::embedding(w, idx, {.padding_idx = 7}) * g).backward();
    std::vector<double> want(static_cast<size_t>(V * D), 0.0);
    const std::vector<int64_t> iv = idx.to_vector<int64_t>();
    const std::vector<double> gv = g.to_vector<double>();
    for (int64_t i = 0; i < n; ++i)
      if (iv[i] != 7)
        for (int64_t j = 0; j < D; ++j) want[iv[i] * D + j] += gv[i * D + j];
    check_close(w.grad(), sg::from_vector(want, {V, D}).to(dtype), dtype == sg::kFloat32 ? 1e-5 : 1e-12, 1e-5);
  }
}

TEST_CASE("embedding errors name the bad index, its position and V") {
  sg::Generator gen(11);
  const Tensor w = sg::randn({10, 4}, gen);
  check_error([&] { sg::embedding(w, sg::tensor({1, 2, 12, 3}).reshape({2, 2})); },
              {"embedding", "index 12", "position [1, 0]", "10 embeddings", "[10, 4]"});
  check_error([&] { sg::embedding(w, sg::tensor({-1})); }, {"embedding", "index -1", "10 embeddings"});
  check_error([&] { sg::embedding(w, sg::tensor({1.0, 2.0})); }, {"embedding", "int64", "float32"});
  check_error([&] { sg::embedding(sg::randn({10}, gen), sg::tensor({1})); }, {"embedding", "2-D", "[10]"});
  check_error([&] { sg::embedding(w, sg::tensor({1}), {.padding_idx = 10}); }, {"padding_idx 10", "10 embeddings"});
  check_error([&] { sg::nn::Embedding(10, 4, gen, {.padding_idx = -11}); }, {"Embedding", "padding_idx -11"});
  check_error([&] { sg::nn::Embedding(0, 4, gen); }, {"Embedding", "positive", "0"});
}

// ============================================================================================
// nn layers
// ============================================================================================

TEST_CASE("ReLU, GELU (both forms), Softmax, LogSoftmax modules: the ops, gradchecked") {
  sg::Generator gen(12);
  const Tensor x = sg::randn({3, 5}, gen, sg::kFloat64);
  sg::nn::ReLU relu;
  sg::nn::GELU gelu, gelu_tanh(sg::GeluApprox::Tanh);
  sg::nn::Softmax softmax(1);
  sg::nn::LogSoftmax log_softmax(0);
  check_close(relu.forward(x), sg::relu(x), 0.0, 0.0);
  check_close(gelu.forward(x), sg::gelu(x), 0.0, 0.0);
  check_close(gelu_tanh.forward(x), sg::gelu(x, sg::GeluApprox::Tanh), 0.0, 0.0);
  check_close(softmax.forward(x), sg::softmax(x, 1), 0.0, 0.0);
  check_close(log_softmax.forward(x), sg::log_softmax(x, 0), 0.0, 0.0);
  // gelu's two forms: x * Phi(x) and 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).
  const std::vector<double> xv = x.to_vector<double>(), erf_form = gelu.forward(x).to_vector<double>(),
                            tanh_form = gelu_tanh.forward(x).to_vector<double>();
  for (size_t i = 0; i < xv.size(); ++i) {
    const double v = xv[i];
    CHECK(erf_form[i] == doctest::Approx(0.5 * v * std::erfc(-v / std::sqrt(2.0))).epsilon(1e-14));
    CHECK(tanh_form[i] ==
          doctest::Approx(0.5 * v * (1 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * (v + 0.044715 * v * v * v)))).epsilon(1e-14));
  }
  sgtest::run_grad_cases({
      GradCase{"GELU none", {{4, 5}}, [&](const std::vector<Tensor>& in) { return gelu.forward(in[0]); }, -3, 3},
      GradCase{"GELU tanh", {{4, 5}}, [&](const std::vector<Tensor>& in) { return gelu_tanh.forward(in[0]); }, -3, 3},
      GradCase{"Softmax", {{4, 5}}, [&](const std::vector<Tensor>& in) { return softmax.forward(in[0]); }},
  });
  CHECK(relu.summary() == "ReLU()\nparameters: 0");
  CHECK(gelu.extra_repr() == "approximate='none'");
  CHECK(gelu_tanh.extra_repr() == "approximate='tanh'");
  CHECK(softmax.extra_repr() == "dim=1");
  CHECK(log_softmax.extra_repr() == "dim=0");
}

TEST_CASE("nn::Dropout: active in training only, its own generator, reproducible from the seed") {
  sg::Generator gen(13);
  const Tensor x = sg::ones({1000});
  sg::Generator g1(5), g2(5);
  sg::nn::Dropout d1(0.5, g1), d2(0.5, g2);
  const Tensor a = d1.forward(x), b = d1.forward(x);
  CHECK(max_abs(a - b) > 0.5);                         // a new mask each call
  check_close(d2.forward(x), a, 0.0, 0.0);             // same construction seed, same masks
  CHECK(g1.next_u64() == sg::Generator(g2).next_u64());  // construction drew once from each
  CHECK(max_abs(a) == 2.0);
  d1.eval();
  CHECK(d1.forward(x).impl() == x.impl());
  d1.train();
  CHECK(max_abs(d1.forward(x) - x) > 0.5);
  CHECK(d1.extra_repr() == "p=0.5");
  CHECK(d1.num_parameters() == 0);
  CHECK(d1.named_generators().size() == 1);
  CHECK(d1.named_generators()[0].first == "generator");
}

TEST_CASE("nn::LayerNorm: PyTorch's names, init, options and repr; forward is the op") {
  sg::Generator gen(14);
  sg::nn::LayerNorm ln(8);
  CHECK(names(ln.named_parameters()) == std::vector<std::string>{"weight", "bias"});
  check_close(ln.weight, sg::ones({8}), 0.0, 0.0);
  check_close(ln.bias, sg::zeros({8}), 0.0, 0.0);
  CHECK(ln.extra_repr() == "(8,), eps=1e-05, elementwise_affine=true");
  sg::nn::LayerNorm ln2({2, 3}, {.eps = 1e-3, .elementwise_affine = false, .dtype = sg::kFloat64});
  CHECK(ln2.num_parameters() == 0);
  CHECK(ln2.extra_repr() == "(2, 3), eps=0.001, elementwise_affine=false");
  sg::nn::LayerNorm ln3(4, {.bias = false, .dtype = sg::kFloat64});
  CHECK(names(ln3.named_parameters()) == std::vector<std::string>{"weight"});
  CHECK(ln3.extra_repr() == "(4,), eps=1e-05, elementwise_affine=true, bias=false");
  const Tensor x = sg::randn({5, 2, 3}, gen, sg::kFloat64);
  check_close(ln2.forward(x), sg::layer_norm(x, {2, 3}, Tensor(), Tensor(), 1e-3), 0.0, 0.0);
  sg::nn::init::normal_(ln3.weight, 0, 1, gen);
  sgtest::run_grad_cases({GradCase{"LayerNorm(4, bias=false) with its weight", {{3, 4}},
                                   [&](const std::vector<Tensor>& in) { return ln3.forward(in[0]); }}});
  check_error([&] { sg::nn::LayerNorm(Shape{}); }, {"LayerNorm", "at least one dim"});
  check_error([&] { ln.forward(sg::randn({2, 7}, gen)); }, {"layer_norm", "[2, 7]", "[8]"});
}

TEST_CASE("nn::Embedding: N(0, 1) init, padding row zero and frozen, repr") {
  sg::Generator gen(15);
  sg::nn::Embedding emb(200, 100, gen, {.padding_idx = -1});
  CHECK(emb.padding_idx == 199);
  CHECK(names(emb.named_parameters()) == std::vector<std::string>{"weight"});
  CHECK(emb.weight.shape() == Shape{200, 100});
  CHECK(max_abs(sg::select(emb.weight, 0, 199)) == 0.0);
  CHECK(sg::mean(emb.weight).item<double>() == doctest::Approx(0.0).epsilon(0.01));
  CHECK(std::sqrt(sg::var(emb.weight).item<double>()) == doctest::Approx(1.0).epsilon(0.02));
  const Tensor idx = sg::tensor({199, 3, 3, 0}).reshape({2, 2});
  const Tensor y = emb.forward(idx);
  CHECK(y.shape() == Shape{2, 2, 100});
  sg::sum(y).backward();
  CHECK(max_abs(sg::select(emb.weight.grad(), 0, 199)) == 0.0);
  check_close(sg::select(emb.weight.grad(), 0, 3), sg::full({100}, 2.0), 0.0, 0.0);
  CHECK(emb.extra_repr() == "200, 100, padding_idx=199");
  CHECK(sg::nn::Embedding(10, 3, gen).extra_repr() == "10, 3");
}

TEST_CASE("nn::CrossEntropyLoss is cross_entropy with its options; weight registered as a buffer") {
  sg::Generator gen(16);
  const Tensor logits = sg::randn({6, 4}, gen, sg::kFloat64), target = sg::tensor({0, 3, 1, 1, 2, 0});
  const Tensor weight = sg::tensor({1.0, 2.0, 0.5, 1.5}, sg::kFloat64);
  sg::nn::CrossEntropyLoss plain;
  check_close(plain.forward(logits, target), sg::cross_entropy(logits, target), 0.0, 0.0);
  sg::nn::CrossEntropyLoss opts({.weight = weight, .ignore_index = 1, .label_smoothing = 0.1});
  check_close(opts.forward(logits, target),
              sg::cross_entropy(logits, target, {.weight = weight, .ignore_index = 1, .label_smoothing = 0.1}), 0.0,
              0.0);
  CHECK(names(opts.named_buffers()) == std::vector<std::string>{"weight"});
  CHECK(plain.named_buffers().empty());
  CHECK(plain.summary() == "CrossEntropyLoss()\nparameters: 0");
  check_error([&] { plain.forward(logits); }, {"CrossEntropyLoss: forward(x) with one input is not supported"});
  check_error([&] { sg::nn::CrossEntropyLoss({.label_smoothing = 1.5}); }, {"CrossEntropyLoss", "1.5"});
}

TEST_CASE("nn::Sequential chains its modules, names them 0, 1, ... and prints PyTorch's tree") {
  sg::Generator gen(17);
  auto fc1 = std::make_shared<sg::nn::Linear>(4, 6, gen, sg::nn::LinearOptions{.dtype = sg::kFloat64});
  auto fc2 = std::make_shared<sg::nn::Linear>(6, 3, gen, sg::nn::LinearOptions{.dtype = sg::kFloat64});
  sg::nn::Sequential net({fc1, std::make_shared<sg::nn::ReLU>(), fc2});
  CHECK(net.size() == 3);
  CHECK(names(net.named_parameters()) == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"});
  const Tensor x = sg::randn({5, 4}, gen, sg::kFloat64);
  check_close(net.forward(x), fc2->forward(sg::relu(fc1->forward(x))), 0.0, 0.0);
  // push_back returns the typed module; the new one is "3".
  auto soft = net.push_back(std::make_shared<sg::nn::LogSoftmax>(1));
  CHECK(soft->dim == 1);
  CHECK(net[3].get() == soft.get());
  check_close(net.forward(x), sg::log_softmax(fc2->forward(sg::relu(fc1->forward(x))), 1), 0.0, 0.0);
  CHECK(net.summary() ==
        "Sequential(\n"
        "  (0): Linear(in_features=4, out_features=6, bias=true)\n"
        "  (1): ReLU()\n"
        "  (2): Linear(in_features=6, out_features=3, bias=true)\n"
        "  (3): LogSoftmax(dim=1)\n"
        ")\n"
        "parameters: 51");
  std::vector<Tensor> inputs = {sgtest::leaf({3, 4}, gen)};
  for (const Tensor& p : net.parameters()) inputs.push_back(p);
  sgtest::check_gradients([&](const std::vector<Tensor>& in) { return net.forward(in[0]); }, inputs);
  // An empty Sequential returns its input; nesting names the children with dots.
  sg::nn::Sequential empty;
  CHECK(empty.forward(x).impl() == x.impl());
  sg::nn::Sequential outer({std::make_shared<sg::nn::Sequential>(
      std::initializer_list<std::shared_ptr<sg::nn::Module>>{std::make_shared<sg::nn::LayerNorm>(4)})});
  CHECK(names(outer.named_parameters()) == std::vector<std::string>{"0.0.weight", "0.0.bias"});
  CHECK(outer.summary() == "Sequential(\n  (0): Sequential(\n    (0): LayerNorm((4,), eps=1e-05, elementwise_affine=true)\n  "
                           ")\n)\nparameters: 8");
  // Errors: an index out of range, a null module, a module without a one-input forward.
  check_error([&] { net[4]; }, {"Sequential", "index 4", "4 modules"});
  check_error([&] { net.push_back(std::shared_ptr<sg::nn::ReLU>()); }, {"Sequential", "null"});
  sg::nn::Sequential bad({std::make_shared<sg::nn::MultiHeadAttention>(4, 2, gen)});
  check_error([&] { bad.forward(sg::randn({2, 3, 4}, gen)); },
              {"MultiHeadAttention: forward(x) with one input is not supported"});
}

// ============================================================================================
// TransformerEncoderLayer
// ============================================================================================

namespace {

// Small layer in float64 with random biases and norm parameters (their PyTorch init of
// zeros and ones would hide a swapped bias or norm).
std::shared_ptr<sg::nn::TransformerEncoderLayer> small_layer(sg::Generator& gen, sg::nn::TransformerEncoderLayerOptions o) {
  o.dtype = sg::kFloat64;
  auto layer = std::make_shared<sg::nn::TransformerEncoderLayer>(4, 2, gen, o);
  for (auto& [name, p] : layer->named_parameters())
    if (name.ends_with("bias") || name.starts_with("norm")) sg::nn::init::uniform_(p, -0.5, 0.5, gen);
  return layer;
}

}  // namespace

TEST_CASE("TransformerEncoderLayer: PyTorch's names and order, init, repr") {
  sg::Generator gen(18);
  sg::nn::TransformerEncoderLayer layer(8, 2, gen, {.dim_feedforward = 16});
  CHECK(names(layer.named_parameters()) ==
        std::vector<std::string>{"self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
                                 "self_attn.out_proj.bias", "linear1.weight", "linear1.bias", "linear2.weight",
                                 "linear2.bias", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"});
  CHECK(layer.linear1->weight.shape() == Shape{16, 8});
  CHECK(layer.linear2->weight.shape() == Shape{8, 16});
  CHECK(layer.num_parameters() == 3 * 64 + 24 + 64 + 8 + 128 + 16 + 128 + 8 + 4 * 8);
  check_close(layer.norm1->weight, sg::ones({8}), 0.0, 0.0);
  // PyTorch's defaults: post-norm, ReLU, (T, B, E) layout, dropout 0.1, feed-forward 2048.
  CHECK(!layer.self_attn->options.batch_first);
  CHECK(layer.dropout->p == 0.1);
  const sg::nn::TransformerEncoderLayerOptions defaults;
  CHECK((defaults.activation == sg::nn::Activation::ReLU && !defaults.norm_first && !defaults.batch_first &&
         defaults.dim_feedforward == 2048 && defaults.dropout == 0.1 && defaults.layer_norm_eps == 1e-5));
  const std::string s = layer.summary();
  CHECK(s.find("TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, activation=relu, norm_first=false, "
               "batch_first=false\n") == 0);
  CHECK(s.find("  (self_attn): MultiHeadAttention(embed_dim=8, num_heads=2, dropout=0.1") != std::string::npos);
  CHECK(s.find("  (linear1): Linear(in_features=8, out_features=16, bias=true)\n  (dropout): Dropout(p=0.1)\n") !=
        std::string::npos);
  CHECK(s.find("  (norm2): LayerNorm((8,), eps=1e-05, elementwise_affine=true)\n  (dropout1): Dropout(p=0.1)\n") !=
        std::string::npos);
  sg::nn::TransformerEncoderLayer nobias(8, 2, gen, {.dim_feedforward = 16, .bias = false});
  CHECK(names(nobias.named_parameters()) ==
        std::vector<std::string>{"self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight",
                                 "linear2.weight", "norm1.weight", "norm2.weight"});
}

TEST_CASE("TransformerEncoderLayer equals its formula from the submodules (pre-norm, post-norm, relu, masks)") {
  sg::Generator gen(19);
  const Tensor x = sg::randn({2, 5, 4}, gen, sg::kFloat64);
  std::vector<bool> pad(10, false);
  pad[4] = pad[8] = pad[9] = true;
  const sg::nn::AttentionMasks masks{.key_padding_mask = sg::from_vector(pad, {2, 5}), .is_causal = true};
  for (const bool norm_first : {true, false})
    for (const auto act : {sg::nn::Activation::GELU, sg::nn::Activation::ReLU}) {
      CAPTURE(norm_first);
      auto L = small_layer(gen, {.dim_feedforward = 6,
                                 .dropout = 0.0,
                                 .activation = act,
                                 .batch_first = true,
                                 .norm_first = norm_first});
      auto sa = [&](const Tensor& h) { return L->self_attn->forward(h, h, h, masks); };
      auto ff = [&](const Tensor& h) {
        const Tensor a = L->linear1->forward(h);
        return L->linear2->forward(act == sg::nn::Activation::GELU ? sg::gelu(a) : sg::relu(a));
      };
      auto ln = [](const sg::nn::LayerNorm& n, const Tensor& h) {
        return composed_layer_norm(h, 1, n.weight, n.bias, 1e-5);
      };
      Tensor want;
      if (norm_first) {
        const Tensor h = x + sa(ln(*L->norm1, x));
        want = h + ff(ln(*L->norm2, h));
      } else {
        const Tensor h = ln(*L->norm1, x + sa(x));
        want = ln(*L->norm2, h + ff(h));
      }
      check_close(L->forward(x, masks), want, 1e-12, 1e-12);
      // The masks matter, and the one-input forward is the maskless one.
      CHECK(max_abs(L->forward(x) - L->forward(x, masks)) > 1e-3);
      check_close(L->forward(x), L->forward(x, {}), 0.0, 0.0);
    }
}

TEST_CASE("TransformerEncoderLayer gradcheck end to end in float64 (input and every parameter)") {
  sg::Generator gen(20);
  for (const bool norm_first : {true, false}) {
    CAPTURE(norm_first);
    auto L = small_layer(gen, {.dim_feedforward = 6, .dropout = 0.0, .batch_first = true, .norm_first = norm_first});
    std::vector<Tensor> inputs = {sgtest::leaf({2, 3, 4}, gen)};
    for (const Tensor& p : L->parameters()) inputs.push_back(p);  // perturbed in place: the layer sees it
    sgtest::check_gradients(
        [&](const std::vector<Tensor>& in) { return L->forward(in[0], {.is_causal = norm_first}); }, inputs);
  }
  // Unbatched (T, E) input and the (T, B, E) layout.
  auto L = small_layer(gen, {.dim_feedforward = 6, .dropout = 0.0, .batch_first = false});
  const Tensor x = sg::randn({3, 2, 4}, gen, sg::kFloat64);  // (T, B, E)
  const Tensor y = L->forward(x);
  check_close(sg::select(y, 1, 1), L->forward(sg::select(x, 1, 1)), 1e-12, 1e-12);
}

TEST_CASE("TransformerEncoderLayer dropout: training draws masks, eval is deterministic; named_generators") {
  sg::Generator gen(21);
  auto make = [](uint64_t seed) {
    sg::Generator g(seed);
    return std::make_shared<sg::nn::TransformerEncoderLayer>(8, 2, g,
                                                             sg::nn::TransformerEncoderLayerOptions{.dim_feedforward = 16,
                                                                                                    .dropout = 0.3});
  };
  const Tensor x = sg::randn({2, 5, 8}, gen);
  auto a = make(1), b = make(1);
  const Tensor t1 = a->forward(x), t2 = a->forward(x);
  CHECK(max_abs(t1 - t2) > 1e-3);
  check_close(b->forward(x), t1, 0.0, 0.0);
  a->eval();
  check_close(a->forward(x), a->forward(x), 0.0, 0.0);
  // Every generator, named like the parameters; inside a Sequential they gain its prefix.
  sg::nn::Sequential stack({make(2), make(3)});
  const auto gens = stack.named_generators();
  std::vector<std::string> gen_names;
  for (const auto& [name, g] : gens) gen_names.push_back(name);
  CHECK(gen_names == std::vector<std::string>{"0.self_attn.dropout_generator", "0.dropout.generator",
                                              "0.dropout1.generator", "0.dropout2.generator",
                                              "1.self_attn.dropout_generator", "1.dropout.generator",
                                              "1.dropout1.generator", "1.dropout2.generator"});
  for (size_t i = 0; i < gens.size(); ++i)
    for (size_t j = i + 1; j < gens.size(); ++j) CHECK(gens[i].second != gens[j].second);
  CHECK(stack.named_generators(false).empty());
  // Reseeding every named generator of two copies makes their dropout masks equal: the
  // list covers every generator forward draws from.
  auto c = make(4), d = make(5);
  sg::NoGradGuard no_grad;
  for (auto& [name, p] : d->named_parameters()) {
    Tensor dst = p;
    for (auto& [n2, q] : c->named_parameters())
      if (n2 == name) sg::copy_(dst, q);
  }
  CHECK(max_abs(c->forward(x) - d->forward(x)) > 1e-3);
  for (auto* m : {c.get(), d.get()}) {
    uint64_t s = 100;
    for (auto& [name, g] : m->named_generators()) g->manual_seed(s++);
  }
  check_close(c->forward(x), d->forward(x), 0.0, 0.0);
}

TEST_CASE("TransformerEncoderLayer errors name the shapes") {
  sg::Generator gen(22);
  sg::nn::TransformerEncoderLayer layer(8, 2, gen, {.dim_feedforward = 16});
  check_error([&] { layer.forward(sg::randn({2, 5, 6}, gen)); }, {"TransformerEncoderLayer", "d_model = 8", "[2, 5, 6]"});
  check_error([&] { layer.forward(sg::randn({8}, gen)); }, {"TransformerEncoderLayer", "[8]"});
  check_error([&] { layer.forward(sg::randn({2, 5, 8}, gen, sg::kFloat64)); },
              {"TransformerEncoderLayer", "float32", "float64"});
  check_error([&] { sg::nn::TransformerEncoderLayer(10, 3, gen); }, {"MultiHeadAttention", "10", "3"});
  check_error([&] { sg::nn::TransformerEncoderLayer(8, 2, gen, {.dropout = 1.0}); },
              {"TransformerEncoderLayer", "dropout", "[0, 1)"});
  check_error([&] { layer.forward(sg::randn({2, 5, 8}, gen), {.key_padding_mask = sg::zeros({2, 4}, sg::kBool)}); },
              {"key_padding_mask", "[2, 4]"});
}

TEST_CASE("Module: the default one-input forward throws; generators share the name space") {
  sg::Generator gen(23);
  sg::nn::MultiHeadAttention mha(4, 2, gen);
  sg::nn::Module& base = mha;
  check_error([&] { base.forward(sg::randn({2, 3, 4}, gen)); },
              {"MultiHeadAttention: forward(x) with one input is not supported"});
  struct Twice : sg::nn::Module {
    sg::Generator g{1};
    Twice() : Module("Twice") { register_generator("g", g); }
    void again() { register_generator("g", g); }
  };
  Twice t;
  check_error([&] { t.again(); }, {"Twice", "generator 'g'", "already registered"});
}
