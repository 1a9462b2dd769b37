#include "nn/sequential.h"

namespace sg::nn {

Sequential::Sequential(std::initializer_list<std::shared_ptr<Module>> modules) : Module("Sequential") {
  for (const auto& m : modules) push_back(m);
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (const auto& m : modules_) h = m->forward(h);
  return h;
}

const std::shared_ptr<Module>& Sequential::operator[](size_t i) const {
  SG_CHECK(i < modules_.size(), "Sequential: index {} is out of range for {}", i, plural(modules_.size(), "module"));
  return modules_[i];
}

}  // namespace sg::nn
