#include "nn/sequential.h"

namespace sg::nn {

Sequential::Sequential(std::initializer_list<std::shared_ptr<Module>> modules) : ModuleList("Sequential") {
  for (const auto& m : modules) push_back(m);
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (const auto& m : modules()) h = m->forward(h);
  return h;
}

}  // namespace sg::nn
