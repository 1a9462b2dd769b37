#include "nn/module_list.h"

namespace sg::nn {

ModuleList::ModuleList(std::initializer_list<std::shared_ptr<Module>> modules) : Module("ModuleList") {
  for (const auto& m : modules) push_back(m);
}

const std::shared_ptr<Module>& ModuleList::operator[](size_t i) const {
  SG_CHECK(i < modules_.size(), "{}: index {} is out of range for {}", type_name(), i,
           plural(modules_.size(), "module"));
  return modules_[i];
}

Tensor ModuleList::forward(const Tensor&) {
  fail("{}: a ModuleList has no forward (as in PyTorch): iterate over its modules and call each one", type_name());
}

}  // namespace sg::nn
