// conv2d, unfold and fold: the im2col + GEMM convolution against the direct one over
// strides, padding ("same" and "valid" too), dilation and groups (depthwise included), odd
// sizes and non-contiguous inputs; float64 gradchecks of every op; fold as unfold's adjoint;
// errors that name the op and the shapes.
#include "ops/conv.h"
#include "ops/pooling.h"
#include "ops/batch_norm.h"
#include "nn/conv.h"
#include "tests/test_util.h"

using sg::Tensor;
using sgtest::check_error;

namespace {

struct Case {
  const char* name;
  sg::Shape x, w;
  sg::Conv2dOptions options;
  bool bias = true;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {"3x3 plain", {2, 3, 7, 6}, {4, 3, 3, 3}, {}},
      {"stride 2 padding 1", {2, 3, 7, 8}, {5, 3, 3, 3}, {.stride = 2, .padding = 1}},
      {"stride (2, 1) padding (0, 2)", {1, 2, 9, 5}, {3, 2, 3, 2}, {.stride = {2, 1}, .padding = {0, 2}}},
      {"dilation 2", {2, 2, 9, 9}, {3, 2, 3, 3}, {.padding = 2, .dilation = 2}},
      {"groups 2", {2, 4, 6, 5}, {6, 2, 3, 3}, {.padding = 1, .groups = 2}},
      {"depthwise", {2, 3, 5, 7}, {3, 1, 3, 3}, {.padding = 1, .groups = 3}},
      {"same, even kernel", {1, 2, 6, 5}, {3, 2, 4, 2}, {.padding = sg::Padding2d::same()}},
      {"same, dilated", {1, 2, 7, 7}, {2, 2, 3, 3}, {.padding = sg::Padding2d::same(), .dilation = {2, 1}}},
      {"valid, 1x1, no bias", {3, 4, 3, 3}, {2, 4, 1, 1}, {.padding = sg::Padding2d::valid()}, false},
      {"kernel = input", {2, 2, 4, 3}, {3, 2, 4, 3}, {}},
  };
  return all;
}

}  // namespace

TEST_CASE("conv2d equals the direct convolution (float32 and float64) over strides, padding, dilation and groups") {
  sg::Generator gen(1);
  for (const Case& c : cases()) {
    CAPTURE(c.name);
    for (const sg::Dtype dtype : {sg::kFloat64, sg::kFloat32}) {
      const Tensor x = sg::randn(c.x, gen, dtype), w = sg::randn(c.w, gen, dtype);
      const Tensor b = c.bias ? sg::randn({c.w[0]}, gen, dtype) : Tensor();
      const Tensor y = sg::conv2d(x, w, b, c.options), ref = sg::conv2d_naive(x, w, b, c.options);
      REQUIRE(y.shape() == ref.shape());
      const double tol = dtype == sg::kFloat64 ? 1e-12 : 1e-4;
      CHECK(sg::max(sg::abs(y - ref)).to(sg::kFloat64).item<double>() <= tol);
    }
  }
  // PyTorch's output sizes: 28x28 with 5x5 -> 24; stride 2 padding 1 on 7 -> 4; same keeps the size.
  CHECK(sg::conv2d(sg::zeros({1, 1, 28, 28}), sg::zeros({6, 1, 5, 5})).shape() == sg::Shape{1, 6, 24, 24});
  CHECK(sg::conv2d(sg::zeros({1, 1, 7, 7}), sg::zeros({1, 1, 3, 3}), {}, {.stride = 2, .padding = 1}).shape() ==
        sg::Shape{1, 1, 4, 4});
  CHECK(sg::conv2d(sg::zeros({1, 1, 6, 5}), sg::zeros({1, 1, 4, 2}), {}, {.padding = sg::Padding2d::same()}).shape() ==
        sg::Shape{1, 1, 6, 5});
}

TEST_CASE("conv2d: float64 gradcheck of input, weight and bias over every case, and non-contiguous inputs") {
  sg::Generator gen(2);
  for (const Case& c : cases()) {
    CAPTURE(c.name);
    std::vector<Tensor> inputs = {sgtest::leaf(c.x, gen), sgtest::leaf(c.w, gen)};
    if (c.bias) inputs.push_back(sgtest::leaf({c.w[0]}, gen));
    const sg::Conv2dOptions o = c.options;
    sgtest::check_gradients(
        [o](const std::vector<Tensor>& in) { return sg::conv2d(in[0], in[1], in.size() > 2 ? in[2] : Tensor(), o); },
        inputs);
  }
  // Non-contiguous input and weight (transposed views of their last two dims).
  sgtest::check_gradients([](const std::vector<Tensor>& in) { return sg::conv2d(in[0], in[1], in[2], {.padding = 1}); },
                          {sgtest::leaf_noncontig({2, 3, 5, 6}, gen), sgtest::leaf_noncontig({4, 3, 3, 2}, gen),
                           sgtest::leaf({4}, gen)});
}

TEST_CASE("unfold and fold: im2col values, gradchecks, and fold is unfold's adjoint") {
  sg::Generator gen(3);
  // unfold of a 1x1x3x3 ramp with a 2x2 kernel: each column is one 2x2 window, row-major.
  const Tensor ramp = sg::arange(0, 9, 1, sg::kFloat64).reshape({1, 1, 3, 3});
  CHECK(sg::unfold(ramp, 2).to_vector<double>() ==
        std::vector<double>{0, 1, 3, 4, 1, 2, 4, 5, 3, 4, 6, 7, 4, 5, 7, 8});
  const sg::UnfoldOptions o{.dilation = {1, 2}, .padding = 1, .stride = {2, 1}};
  sgtest::check_gradients([o](const std::vector<Tensor>& in) { return sg::unfold(in[0], {3, 2}, o); },
                          {sgtest::leaf({2, 2, 5, 6}, gen)});
  const Tensor cols = sg::unfold(sg::zeros({2, 2, 5, 6}, sg::kFloat64), {3, 2}, o);
  sgtest::check_gradients([o](const std::vector<Tensor>& in) { return sg::fold(in[0], {5, 6}, {3, 2}, o); },
                          {sgtest::leaf(cols.shape(), gen)});
  // <unfold(x), c> == <x, fold(c)> for random x and c.
  const Tensor x = sg::randn({2, 2, 5, 6}, gen, sg::kFloat64), c = sg::randn(cols.shape(), gen, sg::kFloat64);
  const double lhs = sg::sum(sg::unfold(x, {3, 2}, o) * c).item<double>();
  const double rhs = sg::sum(x * sg::fold(c, {5, 6}, {3, 2}, o)).item<double>();
  CHECK(std::abs(lhs - rhs) <= 1e-12 * std::max(1.0, std::abs(lhs)));
  // conv2d is unfold + matmul: the same numbers.
  const Tensor img = sg::randn({2, 3, 6, 5}, gen, sg::kFloat64), w = sg::randn({4, 3, 3, 3}, gen, sg::kFloat64);
  const Tensor via_unfold =
      sg::matmul(w.reshape({4, 27}), sg::unfold(img, 3, {.padding = 1})).reshape({2, 4, 6, 5});
  CHECK(sg::max(sg::abs(via_unfold - sg::conv2d(img, w, {}, {.padding = 1}))).item<double>() <= 1e-12);
}

TEST_CASE("conv2d, unfold, fold: errors name the op, the shapes and the bad value") {
  const Tensor x = sg::zeros({2, 3, 5, 5}), w = sg::zeros({4, 3, 3, 3});
  check_error([&] { sg::conv2d(sg::zeros({3, 5, 5}), w); }, {"conv2d", "(N, C, H, W)", "[3, 5, 5]"});
  check_error([&] { sg::conv2d(x, sg::zeros({4, 2, 3, 3})); }, {"conv2d", "[2, 3, 5, 5]", "3 channels", "[4, 2, 3, 3]"});
  check_error([&] { sg::conv2d(x, sg::zeros({4, 1, 3, 3}), {}, {.groups = 2}); },
              {"conv2d", "groups 2", "input channels 3"});
  check_error([&] { sg::conv2d(x, sg::zeros({4, 3, 7, 3})); }, {"conv2d", "larger than the padded input", "[4, 3, 7, 3]"});
  check_error([&] { sg::conv2d(x, w, {}, {.stride = 0}); }, {"conv2d", "stride must be >= 1"});
  check_error([&] { sg::conv2d(x, w, {}, {.padding = -1}); }, {"conv2d", "padding must be >= 0"});
  check_error([&] { sg::conv2d(x, w, {}, {.stride = 2, .padding = sg::Padding2d::same()}); },
              {"conv2d", "'same' needs stride 1"});
  check_error([&] { sg::conv2d(x, w, sg::zeros({3})); }, {"conv2d", "bias must be (4)", "[3]"});
  check_error([&] { sg::conv2d(x, w.to(sg::kFloat64)); }, {"conv2d", "weight is float64"});
  check_error([&] { sg::conv2d(x.to(sg::kInt64), w); }, {"conv2d", "int64"});
  check_error([&] { sg::unfold(x, 6); }, {"unfold", "larger than the padded input"});
  check_error([&] { sg::fold(sg::zeros({1, 10, 4}), {3, 3}, 2); }, {"fold", "not a multiple"});
  check_error([&] { sg::fold(sg::zeros({1, 4, 5}), {3, 3}, 2); }, {"fold", "5 columns", "2 x 2 = 4 blocks"});
}

TEST_CASE("max_pool2d: values, first-maximum indices, NaN, sizes with ceil_mode, and float64 gradcheck") {
  // 1x1x4x4 ramp, 2x2 windows: maxima 5 7 13 15 at their flat indices.
  const Tensor ramp = sg::arange(0, 16, 1, sg::kFloat64).reshape({1, 1, 4, 4});
  const auto [v, i] = sg::max_pool2d(ramp, 2);
  CHECK(v.to_vector<double>() == std::vector<double>{5, 7, 13, 15});
  CHECK(i.to_vector<int64_t>() == std::vector<int64_t>{5, 7, 13, 15});
  // Ties: the first maximum in row-major window order; a NaN wins.
  const Tensor ties = sg::from_vector(std::vector<double>{1, 3, 3, 0, 2, 2, NAN, 1}, {1, 1, 2, 4});
  const auto [tv, ti] = sg::max_pool2d(ties, 2);
  CHECK(ti.to_vector<int64_t>() == std::vector<int64_t>{1, 6});
  CHECK(std::isnan(tv.to_vector<double>()[1]));
  // Output sizes as PyTorch: 5 with k 2 s 2 -> 2 (floor) or 3 (ceil); padding 1 -> 3.
  CHECK(sg::max_pool2d(sg::zeros({1, 1, 5, 5}), 2).values.shape() == sg::Shape{1, 1, 2, 2});
  CHECK(sg::max_pool2d(sg::zeros({1, 1, 5, 5}), 2, {.ceil_mode = true}).values.shape() == sg::Shape{1, 1, 3, 3});
  CHECK(sg::max_pool2d(sg::zeros({1, 1, 5, 5}), 2, {.padding = 1}).values.shape() == sg::Shape{1, 1, 3, 3});
  // ceil_mode never starts a window in the right padding: 5 with k 2 s 2 p 1 -> 3 (not 4);
  // 6 with k 3 s 2 p 1 -> 4 (PyTorch 1.13's sizes).
  CHECK(sg::max_pool2d(sg::zeros({1, 1, 5, 5}), 2, {.padding = 1, .ceil_mode = true}).values.shape() ==
        sg::Shape{1, 1, 3, 3});
  CHECK(sg::max_pool2d(sg::zeros({1, 1, 6, 6}), 3, {.stride = 2, .padding = 1, .ceil_mode = true}).values.shape() ==
        sg::Shape{1, 1, 4, 4});
  sg::Generator gen(4);
  for (const sg::MaxPool2dOptions& o :
       {sg::MaxPool2dOptions{}, sg::MaxPool2dOptions{.stride = 1, .padding = 1},
        sg::MaxPool2dOptions{.stride = sg::Size2d{2, 1}, .dilation = 2, .ceil_mode = true}}) {
    sgtest::check_gradients([o](const std::vector<Tensor>& in) { return sg::max_pool2d(in[0], 3, o).values; },
                            {sgtest::leaf({2, 3, 7, 8}, gen)});
  }
  sgtest::check_gradients([](const std::vector<Tensor>& in) { return sg::max_pool2d(in[0], 2).values; },
                          {sgtest::leaf_noncontig({2, 2, 6, 5}, gen)});
}

TEST_CASE("avg_pool2d and adaptive_avg_pool2d: values with and without padding counted, and float64 gradcheck") {
  const Tensor ones = sg::ones({1, 1, 3, 3}, sg::kFloat64);
  // Padding 1, 3x3 windows, stride 1: the corner window holds 4 ones of 9 cells.
  CHECK(sg::avg_pool2d(ones, 3, {.stride = 1, .padding = 1}).to_vector<double>()[0] == 4.0 / 9.0);
  CHECK(sg::avg_pool2d(ones, 3, {.stride = 1, .padding = 1, .count_include_pad = false}).to_vector<double>()[0] == 1.0);
  const Tensor ramp = sg::arange(0, 16, 1, sg::kFloat64).reshape({1, 1, 4, 4});
  CHECK(sg::avg_pool2d(ramp, 2).to_vector<double>() == std::vector<double>{2.5, 4.5, 10.5, 12.5});
  // Adaptive: 4 -> 3 windows [0, 2), [1, 3), [2, 4) per dim; 4 -> 1 is the mean.
  CHECK(sg::adaptive_avg_pool2d(ramp, {1, 1}).to_vector<double>() == std::vector<double>{7.5});
  CHECK(sg::adaptive_avg_pool2d(ramp, {3, 3}).to_vector<double>()[0] == 2.5);
  CHECK(sg::adaptive_avg_pool2d(ramp, {3, 3}).to_vector<double>()[4] == 7.5);
  sg::Generator gen(5);
  for (const sg::AvgPool2dOptions& o :
       {sg::AvgPool2dOptions{}, sg::AvgPool2dOptions{.stride = 1, .padding = 1},
        sg::AvgPool2dOptions{.stride = 2, .padding = 1, .ceil_mode = true, .count_include_pad = false}}) {
    sgtest::check_gradients([o](const std::vector<Tensor>& in) { return sg::avg_pool2d(in[0], 3, o); },
                            {sgtest::leaf({2, 2, 7, 6}, gen)});
  }
  for (const sg::Size2d out : {sg::Size2d{1, 1}, sg::Size2d{3, 2}, sg::Size2d{5, 7}})
    sgtest::check_gradients([out](const std::vector<Tensor>& in) { return sg::adaptive_avg_pool2d(in[0], out); },
                            {sgtest::leaf_noncontig({2, 3, 5, 6}, gen)});
}

TEST_CASE("pooling errors name the op, the shapes and the bad value") {
  check_error([] { sg::max_pool2d(sg::zeros({1, 4, 4}), 2); }, {"max_pool2d", "(N, C, H, W)", "[1, 4, 4]"});
  check_error([] { sg::max_pool2d(sg::zeros({1, 1, 4, 4}), 2, {.padding = 2}); }, {"max_pool2d", "at most half"});
  check_error([] { sg::max_pool2d(sg::zeros({1, 1, 2, 2}), 3); }, {"max_pool2d", "too small", "[1, 1, 2, 2]"});
  check_error([] { sg::avg_pool2d(sg::zeros({1, 1, 4, 4}), 0); }, {"avg_pool2d", "kernel_size must be >= 1"});
  check_error([] { sg::avg_pool2d(sg::zeros({1, 1, 4, 4}).to(sg::kInt64), 2); }, {"avg_pool2d", "int64"});
  check_error([] { sg::adaptive_avg_pool2d(sg::zeros({1, 1, 4, 4}), {0, 1}); },
              {"adaptive_avg_pool2d", "output_size must be >= 1"});
}

TEST_CASE("batch_norm: training statistics, running statistics with momentum, eval mode, and float64 gradchecks") {
  sg::Generator gen(6);
  const Tensor x = sg::randn({4, 3, 2, 5}, gen, sg::kFloat64) * 2.0 + 1.0;
  Tensor rm = sg::zeros({3}, sg::kFloat64), rv = sg::ones({3}, sg::kFloat64);
  const Tensor w = sg::randn({3}, gen, sg::kFloat64), b = sg::randn({3}, gen, sg::kFloat64);
  const Tensor y = sg::batch_norm(x, rm, rv, w, b, {.training = true, .momentum = 0.1, .eps = 1e-5});
  // The reference from plain ops: statistics over (N, H, W) per channel.
  const Tensor mean = sg::mean(x, {0, 2, 3}, /*keepdim=*/true), var = sg::var(x, {0, 2, 3}, true, 0);
  const Tensor ref = (x - mean) / sg::sqrt(var + 1e-5) * w.reshape({1, 3, 1, 1}) + b.reshape({1, 3, 1, 1});
  CHECK(sg::max(sg::abs(y - ref)).item<double>() <= 1e-12);
  // Running statistics: 0.9 r + 0.1 stat, the variance unbiased (M = 40).
  const Tensor unbiased = sg::var(x, {0, 2, 3}, false, 1);
  CHECK(sg::max(sg::abs(rm - mean.reshape({3}) * 0.1)).item<double>() <= 1e-14);
  CHECK(sg::max(sg::abs(rv - (unbiased * 0.1 + 0.9))).item<double>() <= 1e-14);
  // Eval: the running statistics.
  const Tensor e = sg::batch_norm(x, rm, rv, w, b, {.training = false});
  const Tensor eref = (x - rm.reshape({1, 3, 1, 1})) / sg::sqrt(rv.reshape({1, 3, 1, 1}) + 1e-5) * w.reshape({1, 3, 1, 1}) +
                      b.reshape({1, 3, 1, 1});
  CHECK(sg::max(sg::abs(e - eref)).item<double>() <= 1e-12);
  // Gradchecks: training (statistics of the batch, running buffers updated on the side),
  // eval, (N, C) inputs, no affine, non-contiguous input.
  for (const bool training : {true, false}) {
    CAPTURE(training);
    sgtest::check_gradients(
        [&, training](const std::vector<Tensor>& in) {
          return sg::batch_norm(in[0], rm.clone(), rv.clone(), in[1], in[2], {.training = training});
        },
        {sgtest::leaf({3, 3, 2, 2}, gen), sgtest::leaf({3}, gen), sgtest::leaf({3}, gen)});
  }
  sgtest::check_gradients([](const std::vector<Tensor>& in) { return sg::batch_norm(in[0], {}, {}); },
                          {sgtest::leaf_noncontig({5, 4}, gen)});
  check_error([&] { sg::batch_norm(sg::zeros({4}), {}, {}); }, {"batch_norm", "(N, C)", "[4]"});
  check_error([&] { sg::batch_norm(sg::zeros({2, 3}), sg::zeros({4}), sg::ones({4})); },
              {"batch_norm", "running_mean must be (3)", "[4]"});
  check_error([&] { sg::batch_norm(sg::zeros({1, 3}), {}, {}); }, {"batch_norm", "more than 1 value per channel"});
  check_error([&] { sg::batch_norm(sg::zeros({2, 3}), {}, {}, {}, {}, {.training = false}); },
              {"batch_norm", "eval mode needs running_mean"});
}

TEST_CASE("nn: Conv2d, BatchNorm2d, pools and Flatten with PyTorch's names, init bounds, modes and a CNN that learns") {
  sg::Generator gen(7);
  sg::nn::Conv2d conv(3, 8, 3, gen, {.padding = 1});
  CHECK(conv.weight.shape() == sg::Shape{8, 3, 3, 3});
  const double bound = 1.0 / std::sqrt(27.0);
  CHECK(sg::max(sg::abs(conv.weight)).item<float>() <= bound);
  CHECK(sg::max(sg::abs(conv.bias)).item<float>() <= bound);
  CHECK(conv.summary().find("Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)") != std::string::npos);
  sg::nn::BatchNorm2d bn(8);
  std::vector<std::string> names;
  for (const auto& [name, t] : bn.named_buffers()) names.push_back(name);
  CHECK(names == std::vector<std::string>{"running_mean", "running_var", "num_batches_tracked"});
  const Tensor x = sg::randn({4, 8, 5, 5}, gen) * 3.0 + 2.0;
  const Tensor y = bn(x);
  CHECK(bn.num_batches_tracked.item<int64_t>() == 1);
  CHECK(std::abs(sg::mean(y).item<float>()) < 1e-5);  // normalized with the batch's statistics
  CHECK(sg::max(sg::abs(bn.running_mean - sg::mean(x, {0, 2, 3}) * 0.1)).item<float>() < 1e-5);
  bn.eval();
  const Tensor e = bn(x);  // the running statistics now: not normalized to 0
  CHECK(std::abs(sg::mean(e).item<float>()) > 0.5);
  CHECK(bn.num_batches_tracked.item<int64_t>() == 1);

  // A tiny CNN learns to tell a bright top half from a bright bottom half.
  auto net = std::make_shared<sg::nn::Sequential>();
  net->push_back(std::make_shared<sg::nn::Conv2d>(1, 4, 3, gen, sg::nn::Conv2dOptions{.padding = 1}));
  net->push_back(std::make_shared<sg::nn::BatchNorm2d>(4));
  net->push_back(std::make_shared<sg::nn::ReLU>());
  net->push_back(std::make_shared<sg::nn::MaxPool2d>(2));
  net->push_back(std::make_shared<sg::nn::AdaptiveAvgPool2d>(sg::Size2d{2, 1}));
  net->push_back(std::make_shared<sg::nn::Flatten>());
  net->push_back(std::make_shared<sg::nn::Linear>(8, 2, gen));
  sg::optim::AdamW opt(net->parameters(), {.lr = 0.05});
  const Tensor labels = sg::randint(0, 2, {32}, gen);
  Tensor images = sg::randn({32, 1, 8, 8}, gen) * 0.3;
  {
    const auto l = labels.to_vector<int64_t>();
    float* p = images.data_ptr<float>();  // a fresh tensor: nothing has saved it
    for (int64_t i = 0; i < 32; ++i)
      for (int64_t row = 0; row < 4; ++row)
        for (int64_t col = 0; col < 8; ++col) p[i * 64 + (row + (l[static_cast<size_t>(i)] == 0 ? 0 : 4)) * 8 + col] += 1;
  }
  double first = 0, last = 0;
  for (int step = 0; step < 60; ++step) {
    const Tensor loss = sg::cross_entropy(net->forward(images), labels);
    if (step == 0) first = loss.item<float>();
    last = loss.item<float>();
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  CHECK(last < 0.2 * first);
  net->eval();
  const Tensor acc = sg::mean(sg::eq(sg::argmax(net->forward(images), 1), labels).to(sg::kFloat32));
  CHECK(acc.item<float>() >= 0.9f);
}

TEST_CASE("nn::Unflatten: splits one dim as PyTorch's nn.Unflatten, and names a size mismatch") {
  sg::nn::Unflatten unflatten(1, {1, 28});
  CHECK(unflatten.forward(sg::zeros({5, 28, 28})).shape() == sg::Shape{5, 1, 28, 28});
  CHECK(sg::nn::Unflatten(-1, {2, 3}).forward(sg::zeros({4, 6})).shape() == sg::Shape{4, 2, 3});
  const Tensor x = sg::arange(0, 12, 1, sg::kFloat64).reshape({2, 6});
  CHECK(sg::nn::Unflatten(1, {3, 2}).forward(x).to_vector<double>() == x.to_vector<double>());
  check_error([&] { unflatten.forward(sg::zeros({5, 27, 28})); }, {"Unflatten", "[1, 28]", "size 27"});
  check_error([&] { unflatten.forward(sg::zeros({5})); }, {"Unflatten", "dim 1 is out of range"});
}
