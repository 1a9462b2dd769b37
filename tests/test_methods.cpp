// Tensor's method forms (x.sum(), x.softmax(1), ...): each is the free function of the same
// name, values and gradients.
#include <functional>
#include <string>
#include <vector>

#include "tests/test_util.h"

using sg::Tensor;
using sgtest::check_close;

namespace {

struct MethodCase {
  std::string name;
  std::function<Tensor(const Tensor&)> method, free;
};

}  // namespace

TEST_CASE("method forms equal the free functions, values and gradients") {
  sg::Generator gen(1);
  const Tensor idx = sg::tensor({2, 0});
  const Tensor mask = sg::rand({3, 4}, gen) > 0.5;
  const Tensor other = sg::rand({3, 4}, gen, sg::kFloat64) + 0.5;
  const Tensor gather_idx = sg::randint(0, 4, {3, 2}, gen);
  const std::vector<MethodCase> cases = {
      {"sum()", [](const Tensor& x) { return x.sum(); }, [](const Tensor& x) { return sg::sum(x); }},
      {"sum(dims)", [](const Tensor& x) { return x.sum({1}, true); }, [](const Tensor& x) { return sg::sum(x, {1}, true); }},
      {"mean()", [](const Tensor& x) { return x.mean(); }, [](const Tensor& x) { return sg::mean(x); }},
      {"mean(dims)", [](const Tensor& x) { return x.mean({0}); }, [](const Tensor& x) { return sg::mean(x, {0}); }},
      {"var()", [](const Tensor& x) { return x.var(); }, [](const Tensor& x) { return sg::var(x); }},
      {"max()", [](const Tensor& x) { return x.max(); }, [](const Tensor& x) { return sg::max(x); }},
      {"max(dim)", [](const Tensor& x) { return x.max(1).values; }, [](const Tensor& x) { return sg::max(x, 1).values; }},
      {"min()", [](const Tensor& x) { return x.min(); }, [](const Tensor& x) { return sg::min(x); }},
      {"min(dim)", [](const Tensor& x) { return x.min(0, true).values; },
       [](const Tensor& x) { return sg::min(x, 0, true).values; }},
      {"select", [](const Tensor& x) { return x.select(1, 2); }, [](const Tensor& x) { return sg::select(x, 1, 2); }},
      {"index_select", [&](const Tensor& x) { return x.index_select(1, idx); },
       [&](const Tensor& x) { return sg::index_select(x, 1, idx); }},
      {"gather", [&](const Tensor& x) { return x.gather(1, gather_idx); },
       [&](const Tensor& x) { return sg::gather(x, 1, gather_idx); }},
      {"slice", [](const Tensor& x) { return x.slice(1, 0, 4, 2); }, [](const Tensor& x) { return sg::slice(x, 1, 0, 4, 2); }},
      {"flatten", [](const Tensor& x) { return x.flatten(); }, [](const Tensor& x) { return sg::flatten(x); }},
      {"squeeze()", [](const Tensor& x) { return x.unsqueeze(0).squeeze(); }, [](const Tensor& x) { return sg::squeeze(sg::unsqueeze(x, 0)); }},
      {"softmax", [](const Tensor& x) { return x.softmax(1); }, [](const Tensor& x) { return sg::softmax(x, 1); }},
      {"log_softmax", [](const Tensor& x) { return x.log_softmax(0); }, [](const Tensor& x) { return sg::log_softmax(x, 0); }},
      {"matmul", [](const Tensor& x) { return x.matmul(x.t()); }, [](const Tensor& x) { return sg::matmul(x, sg::t(x)); }},
      {"exp", [](const Tensor& x) { return x.exp(); }, [](const Tensor& x) { return sg::exp(x); }},
      {"log", [](const Tensor& x) { return (x + 2.0).log(); }, [](const Tensor& x) { return sg::log(x + 2.0); }},
      {"sqrt", [](const Tensor& x) { return (x + 2.0).sqrt(); }, [](const Tensor& x) { return sg::sqrt(x + 2.0); }},
      {"abs", [](const Tensor& x) { return x.abs(); }, [](const Tensor& x) { return sg::abs(x); }},
      {"neg", [](const Tensor& x) { return x.neg(); }, [](const Tensor& x) { return sg::neg(x); }},
      {"relu", [](const Tensor& x) { return x.relu(); }, [](const Tensor& x) { return sg::relu(x); }},
      {"tanh", [](const Tensor& x) { return x.tanh(); }, [](const Tensor& x) { return sg::tanh(x); }},
      {"sigmoid", [](const Tensor& x) { return x.sigmoid(); }, [](const Tensor& x) { return sg::sigmoid(x); }},
      {"gelu", [](const Tensor& x) { return x.gelu(); }, [](const Tensor& x) { return sg::gelu(x); }},
      {"pow", [](const Tensor& x) { return x.pow(3.0); }, [](const Tensor& x) { return sg::pow(x, 3.0); }},
      {"clamp", [](const Tensor& x) { return x.clamp(-0.5, std::nullopt); },
       [](const Tensor& x) { return sg::clamp(x, -0.5, std::nullopt); }},
      {"masked_fill", [&](const Tensor& x) { return x.masked_fill(mask, 0.25); },
       [&](const Tensor& x) { return sg::masked_fill(x, mask, 0.25); }},
      {"sort", [](const Tensor& x) { return x.sort(1, true).values; }, [](const Tensor& x) { return sg::sort(x, 1, true).values; }},
      {"topk", [](const Tensor& x) { return x.topk(2).values; }, [](const Tensor& x) { return sg::topk(x, 2).values; }},
      {"cumsum", [](const Tensor& x) { return x.cumsum(0); }, [](const Tensor& x) { return sg::cumsum(x, 0); }},
      {"add", [&](const Tensor& x) { return x.add(other); }, [&](const Tensor& x) { return x + other; }},
      {"sub", [&](const Tensor& x) { return x.sub(other); }, [&](const Tensor& x) { return x - other; }},
      {"mul", [&](const Tensor& x) { return x.mul(other); }, [&](const Tensor& x) { return x * other; }},
      {"div", [&](const Tensor& x) { return x.div(other); }, [&](const Tensor& x) { return x / other; }},
  };
  for (const MethodCase& c : cases) {
    CAPTURE(c.name);
    const Tensor a = sgtest::leaf({3, 4}, gen), b = a.detach().clone().requires_grad_();
    const Tensor ya = c.method(a), yb = c.free(b);
    check_close(ya, yb, 0.0, 0.0);
    ya.sum().backward();
    yb.sum().backward();
    check_close(a.grad(), b.grad(), 0.0, 0.0);
  }
  // Integer results.
  const Tensor x = sg::randn({3, 4}, gen);
  check_close(x.argmax(), sg::argmax(x), 0.0, 0.0);
  check_close(x.argmax(1, true), sg::argmax(x, 1, true), 0.0, 0.0);
  check_close(x.argmin(0), sg::argmin(x, 0), 0.0, 0.0);
  check_close(x.max(1).indices, sg::max(x, 1).indices, 0.0, 0.0);
  check_close(x.argsort(0), sg::argsort(x, 0), 0.0, 0.0);
  check_close(x.topk(3, 1, false).indices, sg::topk(x, 3, 1, false).indices, 0.0, 0.0);
  check_close(x.eq(x), sg::ones({3, 4}, sg::kBool), 0.0, 0.0);
  check_close(x.isfinite(), sg::isfinite(x), 0.0, 0.0);
  // Chaining reads left to right, as in LibTorch.
  check_close(x.relu().sum({1}).softmax(0), sg::softmax(sg::sum(sg::relu(x), {1}), 0), 0.0, 0.0);
  // Errors come from the op and name it.
  sgtest::check_error([&] { x.softmax(2); }, {"softmax", "dim"});
}
