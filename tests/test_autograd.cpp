// The autograd engine: accumulation, retain_graph, graph lifetime, grad mode, leaves,
// saved-tensor versioning and user-defined ops.
#include "test_util.h"

using sg::Tensor;
using sgtest::check_error;
using sgtest::check_values;

namespace {

// y = x^3 with an analytic backward, counting how often backward runs.
struct Cube : sg::Function<Cube> {
  static inline int backward_calls = 0;
  static Tensor forward(sg::Context& ctx, const Tensor& x) {
    ctx.save_for_backward({x});
    return x * x * x;
  }
  static std::vector<Tensor> backward(sg::Context& ctx, const Tensor& dy) {
    ++backward_calls;
    Tensor x = ctx.get_saved_variables()[0];
    return {dy * 3.0 * x * x};
  }
};

// A custom op that returns a gradient of the wrong shape.
struct BadShape : sg::Function<BadShape> {
  static Tensor forward(sg::Context&, const Tensor& x) { return x * 2.0; }
  static std::vector<Tensor> backward(sg::Context&, const Tensor& dy) { return {sg::sum(dy)}; }
};

// A custom op with a tensor and a non-tensor argument; backward returns two gradients
// for one tensor input.
struct TooMany : sg::Function<TooMany> {
  static Tensor forward(sg::Context& ctx, const Tensor& x, double k) {
    ctx.saved_data["k"] = k;
    return x * k;
  }
  static std::vector<Tensor> backward(sg::Context& ctx, const Tensor& dy) {
    const double k = std::any_cast<double>(ctx.saved_data["k"]);
    return {dy * k, dy};
  }
};

}  // namespace

TEST_CASE("backward of a scalar seeds ones and fills leaf gradients") {
  Tensor x = sg::tensor({1.0, -2.0, 3.0}, sg::kFloat64).requires_grad_();
  Tensor y = sg::sum(x * x);
  CHECK(!y.is_leaf());
  CHECK(x.is_leaf());
  y.backward();
  check_values(x.grad(), {2.0, -4.0, 6.0});
  CHECK(!y.grad().defined());  // non-leaf gradients are not kept by default
}

TEST_CASE("gradients accumulate across backward calls until zero_grad") {
  Tensor x = sg::tensor({1.0, 2.0}, sg::kFloat64).requires_grad_();
  sg::sum(x * 3.0).backward();
  sg::sum(x * 3.0).backward();
  check_values(x.grad(), {6.0, 6.0});
  x.zero_grad();
  CHECK(!x.grad().defined());
  sg::sum(x * x).backward();
  check_values(x.grad(), {2.0, 4.0});
}

TEST_CASE("a diamond graph runs every node once and sums both paths") {
  Cube::backward_calls = 0;
  Tensor x = sg::tensor({1.0, 2.0}, sg::kFloat64).requires_grad_();
  Tensor c = Cube::apply(x);      // one node used by two branches
  Tensor y = sg::sum(c * 2.0 + c * 5.0);  // d/dx = 7 * 3x^2
  y.backward();
  CHECK(Cube::backward_calls == 1);
  check_values(x.grad(), {21.0, 84.0});
}

TEST_CASE("backward with an explicit gradient; non-scalar without one throws") {
  Tensor x = sg::tensor({1.0, 2.0, 3.0}, sg::kFloat64).requires_grad_();
  Tensor y = x * x;
  check_error([&] { y.backward(); }, {"backward", "one-element", "[3]"});
  check_error([&] { y.backward(sg::ones({2}, sg::kFloat64)); }, {"backward", "[2]", "[3]"});
  check_error([&] { y.backward(sg::ones({3}, sg::kFloat32)); }, {"backward", "float32", "float64"});
  y.backward(sg::tensor({1.0, 0.5, 0.0}, sg::kFloat64));
  check_values(x.grad(), {2.0, 2.0, 0.0});
}

TEST_CASE("a second backward through freed buffers throws unless retain_graph") {
  Tensor x = sg::tensor({1.0, 2.0}, sg::kFloat64).requires_grad_();
  Tensor y = sg::sum(sg::exp(x));
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();  // buffers were retained
  const double e1 = std::exp(1.0), e2 = std::exp(2.0);
  check_values(x.grad(), {2 * e1, 2 * e2});
  check_error([&] { y.backward(); }, {"sum", "second time", "retain_graph", "output shape []"});
}

TEST_CASE("backward on a tensor that does not require grad throws") {
  Tensor x = sg::tensor({1.0, 2.0}, sg::kFloat64);
  check_error([&] { sg::sum(x).backward(); }, {"backward", "does not require grad"});
}

TEST_CASE("the graph is freed with its last tensor: no ownership cycles") {
  std::weak_ptr<sg::Node> node, inner;
  std::weak_ptr<sg::TensorImpl> leaf_alive;
  {
    Tensor x = sg::tensor({1.0, 2.0}, sg::kFloat64).requires_grad_();
    leaf_alive = x.impl();
    Tensor e = sg::exp(x);  // exp saves its own output: the classic cycle risk
    inner = e.grad_fn();
    Tensor y = sg::sum(e * x);
    node = y.grad_fn();
    CHECK(!node.expired());
  }
  CHECK(node.expired());
  CHECK(inner.expired());
  CHECK(leaf_alive.expired());
}

TEST_CASE("a 100000-op chain runs backward and is freed without overflowing the stack") {
  Tensor x = sg::tensor({1.0}, sg::kFloat64).requires_grad_();
  std::weak_ptr<sg::Node> first;
  {
    Tensor y = x;
    for (int i = 0; i < 100000; ++i) {
      y = y * 1.0;
      if (i == 0) first = y.grad_fn();
    }
    sg::sum(y).backward();
  }
  CHECK(first.expired());
  check_values(x.grad(), {1.0});
}

TEST_CASE("NoGradGuard records nothing and restores the previous mode") {
  Tensor x = sg::tensor({1.0, 2.0}, sg::kFloat64).requires_grad_();
  CHECK(sg::GradMode::is_enabled());
  {
    sg::NoGradGuard g;
    CHECK(!sg::GradMode::is_enabled());
    Tensor y = x * 2.0;
    CHECK(!y.requires_grad());
    CHECK(y.is_leaf());
    {
      sg::NoGradGuard nested;
    }
    CHECK(!sg::GradMode::is_enabled());
  }
  CHECK(sg::GradMode::is_enabled());
  CHECK((x * 2.0).requires_grad());
}

TEST_CASE("detach shares data but stops gradients") {
  Tensor x = sg::tensor({1.0, 2.0}, sg::kFloat64).requires_grad_();
  Tensor d = x.detach();
  CHECK(!d.requires_grad());
  CHECK(d.data_ptr<double>() == x.data_ptr<double>());
  sg::sum(x * d).backward();  // d is a constant: grad = d
  check_values(x.grad(), {1.0, 2.0});
}

TEST_CASE("leaf vs non-leaf; retain_grad keeps an intermediate gradient") {
  Tensor x = sg::tensor({1.0, 2.0}, sg::kFloat64).requires_grad_();
  Tensor h = x * 3.0;
  h.retain_grad();
  sg::sum(h * h).backward();
  CHECK(!h.is_leaf());
  check_values(h.grad(), {6.0, 12.0});
  check_values(x.grad(), {18.0, 36.0});
  check_error([&] { h.requires_grad_(false); }, {"requires_grad_", "non-leaf"});
  check_error([&] { sg::tensor({1, 2}).requires_grad_(); }, {"requires_grad_", "int64"});
}

TEST_CASE("modifying a saved tensor in place makes backward throw") {
  Tensor x = sg::tensor({1.0, 2.0}, sg::kFloat64).requires_grad_();
  Tensor y = sg::exp(x);  // saves y
  Tensor loss = sg::sum(y);
  {
    sg::NoGradGuard g;
    sg::mul_(y, 2.0);
  }
  check_error([&] { loss.backward(); }, {"exp", "output shape [2]", "modified in place"});
}

TEST_CASE("in-place ops refuse tensors that require grad while grad mode is on") {
  Tensor w = sg::tensor({1.0, 2.0}, sg::kFloat64).requires_grad_();
  check_error([&] { sg::mul_(w, 2.0); }, {"mul_", "requires grad"});
  {
    sg::NoGradGuard g;  // the optimizer's situation
    sg::mul_(w, 2.0);
  }
  check_values(w, {2.0, 4.0});
}

TEST_CASE("custom Function: gradcheck, non-tensor arguments and error reporting") {
  sg::Generator gen(3);
  sgtest::check_gradients([](const std::vector<Tensor>& in) { return Cube::apply(in[0]); },
                          {sgtest::leaf({4, 3}, gen)});
  Tensor x = sgtest::leaf({3}, gen);
  check_error([&] { sg::sum(BadShape::apply(x)).backward(); }, {"BadShape", "[]", "[3]"});
  check_error([&] { sg::sum(TooMany::apply(x, 2.0)).backward(); }, {"TooMany", "returned 2 gradients for 1 input"});
}

TEST_CASE("grad_fn names the op that made the tensor") {
  Tensor x = sg::tensor({1.0, 2.0}, sg::kFloat64).requires_grad_();
  CHECK(sg::exp(x).grad_fn()->name() == "exp");
  CHECK(Cube::apply(x).grad_fn()->name().find("Cube") != std::string::npos);
  CHECK(x.grad_fn() == nullptr);
}

TEST_CASE("post-accumulate-grad hooks: once per backward, after a leaf's last contribution, before earlier layers") {
  // x -> (w1) -> h -> (w2) -> y, and w2 used twice: its hook must see both contributions.
  Tensor x = sg::tensor({1.0, 2.0}, sg::kFloat64);
  Tensor w1 = sg::tensor({3.0, -1.0}, sg::kFloat64).requires_grad_();
  Tensor w2 = sg::tensor({0.5, 2.0}, sg::kFloat64).requires_grad_();
  std::vector<std::string> events;
  std::vector<double> w2_seen;
  w1.register_post_accumulate_grad_hook([&](const Tensor& t) {
    events.push_back("w1");
    CHECK(t.is_same(w1));
  });
  const int64_t h2 = w2.register_post_accumulate_grad_hook([&](const Tensor& t) {
    events.push_back("w2");
    w2_seen = t.grad().to_vector<double>();
  });
  auto loss_of = [&] {
    const Tensor h = sg::exp(x * w1);  // the first layer
    return sg::sum(h * w2 + sg::mul(w2, w2));
  };
  loss_of().backward();
  // w2's gradient was final when its hook ran: h + 2 w2, the value backward leaves.
  CHECK(w2_seen == w2.grad().to_vector<double>());
  CHECK(events == std::vector<std::string>{"w2", "w1"});
  // Once per backward: a second backward fires each hook once more, with the sum.
  events.clear();
  loss_of().backward();
  CHECK(events == std::vector<std::string>{"w2", "w1"});
  CHECK(w2_seen == w2.grad().to_vector<double>());
  w2.remove_hook(h2);
  events.clear();
  loss_of().backward();
  CHECK(events == std::vector<std::string>{"w1"});
  // A leaf that is itself the root fires too; a leaf the graph does not reach does not.
  events.clear();
  w1.backward(sg::ones({2}, sg::kFloat64));
  CHECK(events == std::vector<std::string>{"w1"});
  events.clear();
  sg::sum(w2 * 2.0).backward();
  CHECK(events.empty());
  check_error([&] { x.register_post_accumulate_grad_hook([](const Tensor&) {}); },
              {"register_post_accumulate_grad_hook", "leaf that requires grad"});
  check_error([&] { sg::exp(w1).register_post_accumulate_grad_hook([](const Tensor&) {}); },
              {"register_post_accumulate_grad_hook"});
}

TEST_CASE("queue_backward_callback runs after the whole backward, in order; outside a backward it is an error") {
  Tensor a = sg::tensor({1.0, 2.0}, sg::kFloat64).requires_grad_();
  Tensor b = sg::tensor({3.0}, sg::kFloat64).requires_grad_();
  std::vector<std::string> events;
  a.register_post_accumulate_grad_hook([&](const Tensor&) {
    events.push_back("a ready");
    sg::queue_backward_callback([&] {
      events.push_back("first callback");
      CHECK(b.grad().defined());  // every gradient is in by now
      sg::queue_backward_callback([&] { events.push_back("queued by a callback"); });
    });
    sg::queue_backward_callback([&] { events.push_back("second callback"); });
  });
  b.register_post_accumulate_grad_hook([&](const Tensor&) { events.push_back("b ready"); });
  // a is consumed last in backward order (its node is the first op), b at the end.
  sg::sum(sg::exp(a) * 2.0).add(sg::sum(b)).backward();
  REQUIRE(events.size() == 5);
  CHECK(events[2] == "first callback");
  CHECK(events[3] == "second callback");
  CHECK(events[4] == "queued by a callback");
  check_error([] { sg::queue_backward_callback([] {}); }, {"queue_backward_callback", "outside a backward"});
}
