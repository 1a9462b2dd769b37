// Trains a tiny MLP (2 -> 32 -> 32 -> 3, tanh) on a three-arm spiral with plain SGD,
// written only with softgrad's core ops. It stands in for the MNIST trainers that come
// later and exercises the whole engine: matmul, broadcasting, reductions, gather,
// backward and in-place updates under NoGradGuard.
#include <softgrad.h>

#include <cmath>
#include <numbers>

namespace {

// Points on three interleaved spiral arms with a little noise: x (N, 2), labels (N).
void make_spiral(int64_t per_class, sg::Generator& gen, sg::Tensor& x, sg::Tensor& y) {
  const int64_t classes = 3, n = per_class * classes;
  x = sg::empty({n, 2});
  y = sg::empty({n}, sg::kInt64);
  for (int64_t c = 0; c < classes; ++c)
    for (int64_t i = 0; i < per_class; ++i) {
      const double r = static_cast<double>(i) / per_class;
      const double theta = 4.0 * r + 2.0 * std::numbers::pi * c / classes + 0.2 * gen.normal();
      const int64_t k = c * per_class + i;
      x.set({k, 0}, static_cast<float>(r * std::cos(theta)));
      x.set({k, 1}, static_cast<float>(r * std::sin(theta)));
      y.set({k}, c);
    }
}

sg::Tensor init(const sg::Shape& shape, sg::Generator& gen) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(shape[0]));  // PyTorch Linear's default range
  sg::Tensor w = (sg::rand(shape, gen) * 2.0 - 1.0) * bound;
  return w.requires_grad_();
}

}  // namespace

int main() {
  sg::Generator gen(7);
  sg::Tensor x, y;
  make_spiral(200, gen, x, y);
  std::vector<sg::Tensor> params = {init({2, 32}, gen), init({1, 32}, gen), init({32, 32}, gen),
                                    init({1, 32}, gen), init({32, 3}, gen), init({1, 3}, gen)};
  auto forward = [&](const sg::Tensor& in) {
    sg::Tensor h = sg::tanh(sg::matmul(in, params[0]) + params[1]);
    h = sg::tanh(sg::matmul(h, params[2]) + params[3]);
    return sg::matmul(h, params[4]) + params[5];
  };

  const double lr = 0.5;
  for (int step = 0; step <= 2000; ++step) {
    sg::Tensor loss = sg::cross_entropy(forward(x), y);
    for (sg::Tensor& p : params) p.zero_grad();
    loss.backward();
    {
      sg::NoGradGuard no_grad;
      for (sg::Tensor& p : params) sg::add_(p, p.grad(), -lr);
    }
    if (step % 400 == 0) fmt::print("step {:4d}  loss {:.4f}\n", step, loss.item<float>());
  }
  sg::NoGradGuard no_grad;
  const double acc = sg::mean(sg::eq(sg::argmax(forward(x), 1), y).to(sg::kFloat32)).item<double>();
  fmt::print("train accuracy {:.1f}%\n", 100.0 * acc);
  return acc > 0.9 ? 0 : 1;
}
