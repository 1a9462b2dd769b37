// A complete program using the installed softgrad package (see CMakeLists.txt beside it).
#include <softgrad.h>

int main() {
  sg::Generator gen(42);
  sg::Tensor x = sg::randn({2, 3}, gen, sg::kFloat64).requires_grad_();
  sg::Tensor w = sg::randn({3, 2}, gen, sg::kFloat64).requires_grad_();

  sg::Tensor loss = sg::sum(sg::exp(sg::matmul(x, w)) * 0.5);  // records a graph
  loss.backward();                                              // fills x.grad(), w.grad()

  fmt::print("loss = {}\n", loss.item<double>());
  fmt::print("dx =\n{}\n", x.grad());
  fmt::print("dw =\n{}\n", w.grad());
  return 0;
}
