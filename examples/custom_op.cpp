// A user-defined op with its own forward and analytic backward (PyTorch's
// autograd::Function shape), checked with sg::gradcheck and used in a graph.
//
// Swish(x) = x * sigmoid(beta * x)
//   d/dx = s + beta * x * s * (1 - s),   s = sigmoid(beta * x)
#include <softgrad.h>

#include <cstdio>

struct Swish : sg::Function<Swish> {
  static sg::Tensor forward(sg::Context& ctx, const sg::Tensor& x, double beta) {
    sg::Tensor s = sg::sigmoid(x * beta);
    ctx.save_for_backward({x, s});
    ctx.saved_data["beta"] = beta;
    return x * s;
  }
  static std::vector<sg::Tensor> backward(sg::Context& ctx, const sg::Tensor& dy) {
    const auto saved = ctx.get_saved_variables();
    const sg::Tensor &x = saved[0], &s = saved[1];
    const double beta = std::any_cast<double>(ctx.saved_data["beta"]);
    return {dy * (s + beta * x * s * (1.0 - s))};
  }
};

int main() {
  sg::Generator gen(0);
  // 1. gradcheck in float64: the analytic backward must match central differences.
  sg::Tensor x = sg::randn({4, 5}, gen, sg::kFloat64).requires_grad_();
  const std::string report =
      sg::gradcheck_report([](const std::vector<sg::Tensor>& in) { return Swish::apply(in[0], 1.5); }, {x});
  fmt::print("gradcheck Swish: {}\n", report.empty() ? "passed" : report);

  // 2. Use it inside a graph like any built-in op.
  sg::Tensor w = sg::randn({5, 3}, gen, sg::kFloat64).requires_grad_();
  sg::Tensor loss = sg::mean(Swish::apply(sg::matmul(x, w), 1.0));
  loss.backward();
  fmt::print("loss = {:.6f}, grad_fn = {}\n", loss.item<double>(), loss.grad_fn()->name());
  fmt::print("dloss/dw =\n{}\n", w.grad());
  return report.empty() ? 0 : 1;
}
