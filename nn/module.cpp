#include "nn/module.h"

#include <fmt/format.h>

#include "core/autograd.h"

namespace sg::nn {

void Module::check_new_name(const std::string& name, const char* what) const {
  SG_CHECK(!name.empty() && name.find('.') == std::string::npos,
           "{}: cannot register {} '{}': names are non-empty and contain no '.'", type_name_, what, name);
  auto taken = [&](const auto& list) {
    for (const auto& [n, _] : list)
      if (n == name) return true;
    return false;
  };
  SG_CHECK(!taken(params_) && !taken(buffers_) && !taken(children_) && !taken(generators_),
           "{}: cannot register {} '{}': the name is already registered", type_name_, what, name);
}

Tensor Module::register_parameter(std::string name, Tensor t, bool requires_grad) {
  check_new_name(name, "parameter");
  SG_CHECK(t.defined() && is_floating(t.dtype()), "{}: parameter '{}' must be a defined float32 or float64 tensor",
           type_name_, name);
  SG_CHECK(t.is_leaf(), "{}: parameter '{}' must be a leaf tensor (detach() it)", type_name_, name);
  if (requires_grad) t.requires_grad_();
  params_.emplace_back(std::move(name), t);
  return t;
}

Tensor Module::register_buffer(std::string name, Tensor t) {
  check_new_name(name, "buffer");
  SG_CHECK(t.defined(), "{}: buffer '{}' is undefined", type_name_, name);
  buffers_.emplace_back(std::move(name), t);
  return t;
}

void Module::register_generator(std::string name, Generator& gen) {
  check_new_name(name, "generator");
  generators_.emplace_back(std::move(name), &gen);
}

void Module::collect_generators(const std::string& prefix, bool recurse,
                                std::vector<std::pair<std::string, Generator*>>& out) const {
  for (const auto& [name, gen] : generators_) out.emplace_back(prefix + name, gen);
  if (!recurse) return;
  for (const auto& [name, child] : children_) child->collect_generators(prefix + name + ".", true, out);
}

std::vector<std::pair<std::string, Generator*>> Module::named_generators(bool recurse) const {
  std::vector<std::pair<std::string, Generator*>> out;
  collect_generators("", recurse, out);
  return out;
}

Tensor Module::forward(const Tensor&) {
  fail("{}: forward(x) with one input is not supported (this module's forward takes other arguments)",
       type_name_);
}

void Module::collect(const std::string& prefix, bool params, bool recurse, NamedTensors& out) const {
  for (const auto& [name, t] : params ? params_ : buffers_) out.emplace_back(prefix + name, t);
  if (!recurse) return;
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", params, true, out);
}

NamedTensors Module::named_parameters(bool recurse) const {
  NamedTensors out;
  collect("", true, recurse, out);
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [_, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}

NamedTensors Module::named_buffers(bool recurse) const {
  NamedTensors out;
  collect("", false, recurse, out);
  return out;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [_, child] : children_) child->train(on);
}

void Module::zero_grad() {
  for (auto& [_, t] : named_parameters()) t.zero_grad();
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const auto& [_, t] : named_parameters()) n += t.numel();
  return n;
}

void Module::print_tree(std::string& out, int indent) const {
  out += type_name_ + "(" + extra_repr();
  if (!children_.empty()) {
    out += "\n";
    for (const auto& [name, child] : children_) {
      out += fmt::format("{:{}}({}): ", "", indent + 2, name);
      child->print_tree(out, indent + 2);
      out += "\n";
    }
    out += fmt::format("{:{}}", "", indent);
  }
  out += ")";
}

std::string Module::summary() const {
  std::string out;
  print_tree(out, 0);
  out += fmt::format("\nparameters: {}", num_parameters());
  return out;
}

}  // namespace sg::nn
