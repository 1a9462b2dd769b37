// Tensor printing against PyTorch 1.13. The expected strings were produced by PyTorch's
// own layout code (torch._tensor_str._tensor_str and _add_suffixes, default options) on
// the same values, with softgrad's suffix spelling ("dtype=float64", not
// "dtype=torch.float64"; grad_fn names are softgrad's node names).
#include <limits>
#include <sstream>

#include "test_util.h"

namespace {

using sg::Shape;
using sg::Tensor;

// ((i * 37) % 101 - 50) / 8: exact in binary, mixed signs, mostly non-integers.
std::vector<double> pattern(int64_t n) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = static_cast<double>((i * 37) % 101 - 50) / 8.0;
  return v;
}

Tensor pattern_tensor(const Shape& shape, sg::Dtype dtype = sg::kFloat32, double scale = 1.0) {
  std::vector<double> v = pattern(sg::shape_numel(shape));
  for (double& x : v) x *= scale;
  return sg::from_vector(v, shape).to(dtype);
}

Tensor floats(const std::vector<double>& v) {
  std::vector<float> f(v.begin(), v.end());
  return sg::from_vector(f, {static_cast<int64_t>(f.size())});
}

constexpr double kNan = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

}  // namespace

TEST_CASE("print float layouts") {
  CHECK(sg::to_string(sg::tensor({1.5, -2.25, 3.0, 0.125})) == "tensor([ 1.5000, -2.2500,  3.0000,  0.1250])");
  CHECK(sg::to_string(sg::tensor({{1.0, -2.5}, {3.0, 4.0}})) == "tensor([[ 1.0000, -2.5000],\n"
        "        [ 3.0000,  4.0000]])");
  CHECK(sg::to_string(pattern_tensor({2, 2, 3})) == "tensor([[[-6.2500, -1.6250,  3.0000],\n"
        "         [-5.0000, -0.3750,  4.2500]],\n"
        "\n"
        "        [[-3.7500,  0.8750,  5.5000],\n"
        "         [-2.5000,  2.1250, -5.8750]]])");
  CHECK(sg::to_string(sg::tensor({1.23456, 0.99999, 10.5})) == "tensor([ 1.2346,  1.0000, 10.5000])");
}

TEST_CASE("print integer-valued floats") {
  CHECK(sg::to_string(sg::tensor({1.0, 2.0, -3.0, 100.0})) == "tensor([  1.,   2.,  -3., 100.])");
  CHECK(sg::to_string(sg::zeros({3})) == "tensor([0., 0., 0.])");
  CHECK(sg::to_string(sg::tensor({-0.0, 0.0, 5.0})) == "tensor([-0., 0., 5.])");
}

TEST_CASE("print scientific notation") {
  CHECK(sg::to_string(sg::tensor({1e5, 1.0, 0.5})) == "tensor([1.0000e+05, 1.0000e+00, 5.0000e-01])");
  CHECK(sg::to_string(sg::tensor({1e-5, -0.5, 2.0})) == "tensor([ 1.0000e-05, -5.0000e-01,  2.0000e+00])");
  CHECK(sg::to_string(sg::tensor({1e9, 1.0})) == "tensor([1.0000e+09, 1.0000e+00])");
  CHECK(sg::to_string(floats({kNan, 123456.0, -0.001})) == "tensor([        nan,  1.2346e+05, -1.0000e-03])");
}

TEST_CASE("print nan and inf") {
  CHECK(sg::to_string(floats({kNan, kInf, -kInf, 1.5})) == "tensor([   nan,    inf,   -inf, 1.5000])");
  CHECK(sg::to_string(floats({kNan, 1.0, -2.0})) == "tensor([nan,  1., -2.])");
  CHECK(sg::to_string(floats({-kNan, kInf})) == "tensor([nan, inf])");  // a negative nan still prints "nan"
}

TEST_CASE("print int64 and bool") {
  CHECK(sg::to_string(sg::tensor({1, -20, 300})) == "tensor([  1, -20, 300])");
  CHECK(sg::to_string(sg::from_vector(std::vector<int64_t>{1, 2, -30, 4}, {2, 2})) == "tensor([[  1,   2],\n"
        "        [-30,   4]])");
  CHECK(sg::to_string(sg::tensor({true, false, true})) == "tensor([ True, False,  True])");
}

TEST_CASE("print 0-d and empty tensors") {
  CHECK(sg::to_string(sg::scalar_tensor(3.5)) == "tensor(3.5000)");
  CHECK(sg::to_string(sg::scalar_tensor(7, sg::kInt64)) == "tensor(7)");
  CHECK(sg::to_string(sg::scalar_tensor(-0.25, sg::kFloat64)) == "tensor(-0.2500, dtype=float64)");
  CHECK(sg::to_string(sg::zeros({0})) == "tensor([])");
  CHECK(sg::to_string(sg::zeros({2, 0})) == "tensor([], size=(2, 0))");
  CHECK(sg::to_string(sg::zeros({0}, sg::kInt64)) == "tensor([], dtype=int64)");
  CHECK(sg::to_string(Tensor()) == "tensor(undefined)");
}

TEST_CASE("print summarizes more than 1000 elements") {
  CHECK(sg::to_string(pattern_tensor({2000})) == "tensor([-6.2500, -1.6250,  3.0000,  ...,  1.0000,  5.6250, -2.3750])");
  CHECK(sg::to_string(pattern_tensor({40, 40})) == "tensor([[-6.2500, -1.6250,  3.0000,  ...,  0.7500,  5.3750, -2.6250],\n"
        "        [ 2.0000, -6.0000, -1.3750,  ..., -3.6250,  1.0000,  5.6250],\n"
        "        [-2.3750,  2.2500, -5.7500,  ...,  4.6250, -3.3750,  1.2500],\n"
        "        ...,\n"
        "        [-4.0000,  0.6250,  5.2500,  ...,  3.0000, -5.0000, -0.3750],\n"
        "        [ 4.2500, -3.7500,  0.8750,  ..., -1.3750,  3.2500, -4.7500],\n"
        "        [-0.1250,  4.5000, -3.5000,  ..., -5.7500, -1.1250,  3.5000]])");
  CHECK(sg::to_string(pattern_tensor({5, 5, 50})) == "tensor([[[-6.2500, -1.6250,  3.0000,  ..., -3.5000,  1.1250,  5.7500],\n"
        "         [-2.2500,  2.3750, -5.6250,  ...,  0.5000,  5.1250, -2.8750],\n"
        "         [ 1.7500, -6.2500, -1.6250,  ...,  4.5000, -3.5000,  1.1250],\n"
        "         [ 5.7500, -2.2500,  2.3750,  ..., -4.1250,  0.5000,  5.1250],\n"
        "         [-2.8750,  1.7500, -6.2500,  ..., -0.1250,  4.5000, -3.5000]],\n"
        "\n"
        "        [[ 1.1250,  5.7500, -2.2500,  ...,  3.8750, -4.1250,  0.5000],\n"
        "         [ 5.1250, -2.8750,  1.7500,  ..., -4.7500, -0.1250,  4.5000],\n"
        "         [-3.5000,  1.1250,  5.7500,  ..., -0.7500,  3.8750, -4.1250],\n"
        "         [ 0.5000,  5.1250, -2.8750,  ...,  3.2500, -4.7500, -0.1250],\n"
        "         [ 4.5000, -3.5000,  1.1250,  ..., -5.3750, -0.7500,  3.8750]],\n"
        "\n"
        "        [[-4.1250,  0.5000,  5.1250,  ..., -1.3750,  3.2500, -4.7500],\n"
        "         [-0.1250,  4.5000, -3.5000,  ...,  2.6250, -5.3750, -0.7500],\n"
        "         [ 3.8750, -4.1250,  0.5000,  ..., -6.0000, -1.3750,  3.2500],\n"
        "         [-4.7500, -0.1250,  4.5000,  ..., -2.0000,  2.6250, -5.3750],\n"
        "         [-0.7500,  3.8750, -4.1250,  ...,  2.0000, -6.0000, -1.3750]],\n"
        "\n"
        "        [[ 3.2500, -4.7500, -0.1250,  ...,  6.0000, -2.0000,  2.6250],\n"
        "         [-5.3750, -0.7500,  3.8750,  ..., -2.6250,  2.0000, -6.0000],\n"
        "         [-1.3750,  3.2500, -4.7500,  ...,  1.3750,  6.0000, -2.0000],\n"
        "         [ 2.6250, -5.3750, -0.7500,  ...,  5.3750, -2.6250,  2.0000],\n"
        "         [-6.0000, -1.3750,  3.2500,  ..., -3.2500,  1.3750,  6.0000]],\n"
        "\n"
        "        [[-2.0000,  2.6250, -5.3750,  ...,  0.7500,  5.3750, -2.6250],\n"
        "         [ 2.0000, -6.0000, -1.3750,  ...,  4.7500, -3.2500,  1.3750],\n"
        "         [ 6.0000, -2.0000,  2.6250,  ..., -3.8750,  0.7500,  5.3750],\n"
        "         [-2.6250,  2.0000, -6.0000,  ...,  0.1250,  4.7500, -3.2500],\n"
        "         [ 1.3750,  6.0000, -2.0000,  ...,  4.1250, -3.8750,  0.7500]]])");
  CHECK(sg::to_string(sg::arange(2000).reshape({2, 1000})) == "tensor([[   0,    1,    2,  ...,  997,  998,  999],\n"
        "        [1000, 1001, 1002,  ..., 1997, 1998, 1999]])");
  // 1000 elements exactly is not summarized.
  CHECK(sg::to_string(sg::zeros({1000})).find("...") == std::string::npos);
}

TEST_CASE("print wraps long rows at 80 columns") {
  CHECK(sg::to_string(pattern_tensor({30})) == "tensor([-6.2500, -1.6250,  3.0000, -5.0000, -0.3750,  4.2500, -3.7500,  0.8750,\n"
        "         5.5000, -2.5000,  2.1250, -5.8750, -1.2500,  3.3750, -4.6250,  0.0000,\n"
        "         4.6250, -3.3750,  1.2500,  5.8750, -2.1250,  2.5000, -5.5000, -0.8750,\n"
        "         3.7500, -4.2500,  0.3750,  5.0000, -3.0000,  1.6250])");
  CHECK(sg::to_string(pattern_tensor({3, 20})) == "tensor([[-6.2500, -1.6250,  3.0000, -5.0000, -0.3750,  4.2500, -3.7500,  0.8750,\n"
        "          5.5000, -2.5000,  2.1250, -5.8750, -1.2500,  3.3750, -4.6250,  0.0000,\n"
        "          4.6250, -3.3750,  1.2500,  5.8750],\n"
        "        [-2.1250,  2.5000, -5.5000, -0.8750,  3.7500, -4.2500,  0.3750,  5.0000,\n"
        "         -3.0000,  1.6250,  6.2500, -1.7500,  2.8750, -5.1250, -0.5000,  4.1250,\n"
        "         -3.8750,  0.7500,  5.3750, -2.6250],\n"
        "        [ 2.0000, -6.0000, -1.3750,  3.2500, -4.7500, -0.1250,  4.5000, -3.5000,\n"
        "          1.1250,  5.7500, -2.2500,  2.3750, -5.6250, -1.0000,  3.6250, -4.3750,\n"
        "          0.2500,  4.8750, -3.1250,  1.5000]])");
  CHECK(sg::to_string(pattern_tensor({8}, sg::kFloat64, 3.0)) == "tensor([-18.7500,  -4.8750,   9.0000, -15.0000,  -1.1250,  12.7500, -11.2500,\n"
        "          2.6250], dtype=float64)");
}

TEST_CASE("print suffixes") {
  CHECK(sg::to_string(sg::tensor({1.0, 2.5}, sg::kFloat64)) == "tensor([1.0000, 2.5000], dtype=float64)");
  CHECK(sg::to_string(sg::tensor({1.0, 2.0}).requires_grad_()) == "tensor([1., 2.], requires_grad=True)");
  CHECK(sg::to_string(sg::tensor({{0.5, 1.0}}, sg::kFloat64).requires_grad_()) == "tensor([[0.5000, 1.0000]], dtype=float64, requires_grad=True)");
  // The suffixes move to their own line when they would pass 80 columns.
  CHECK(sg::to_string(pattern_tensor({7}, sg::kFloat64, 3.0).requires_grad_()) == "tensor([-18.7500,  -4.8750,   9.0000, -15.0000,  -1.1250,  12.7500, -11.2500],\n"
        "       dtype=float64, requires_grad=True)");

  Tensor x = sg::tensor({1.0, 2.0}).requires_grad_();
  Tensor y = sg::tensor({2.0, 4.0});
  sg::record("Scale", {x}, y, [](const Tensor& dy) { return sg::grads(dy); });
  REQUIRE(y.grad_fn() != nullptr);
  CHECK(sg::to_string(y) == "tensor([2., 4.], grad_fn=<Scale>)");
}

TEST_CASE("print non-contiguous views by logical index") {
  Tensor base = sg::from_vector(std::vector<float>{0.0f, 0.25f, 0.5f, 0.75f, 1.0f, 1.25f}, {2, 3});
  Tensor tr = base.t();
  REQUIRE_FALSE(tr.is_contiguous());
  CHECK(sg::to_string(tr) == "tensor([[0.0000, 0.7500],\n"
        "        [0.2500, 1.0000],\n"
        "        [0.5000, 1.2500]])");
  // A view with a storage offset and a step: row 1 of base, every other column.
  Tensor v = sg::slice(sg::select(base, 0, 1), 0, 0, 3, 2);
  CHECK(sg::to_string(v) == "tensor([0.7500, 1.2500])");
}

TEST_CASE("print through fmt and ostream") {
  Tensor t = sg::tensor({{1.0, -2.5}, {3.0, 4.0}});
  std::ostringstream os;
  os << t;
  CHECK(os.str() == sg::to_string(t));
  CHECK(fmt::format("{}", t) == sg::to_string(t));
  CHECK(fmt::format("x = {}", sg::tensor({1, 2})) == "x = tensor([1, 2])");
}
