#include "nn/module.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "core/autograd.h"

namespace sg::nn {

void Module::check_new_name(const std::string& name, const char* what) const {
  SG_CHECK(!name.empty() && name.find('.') == std::string::npos,
           "{}: cannot register {} '{}': names are non-empty and contain no '.' (for numbered children use "
           "nn::ModuleList: register_module(\"h\", list) names them h.0, h.1, ...)",
           type_name_, what, name);
  auto taken = [&](const auto& list) {
    return std::any_of(list.begin(), list.end(), [&](const auto& entry) {
      if constexpr (requires { entry.name; }) return entry.name == name;
      else return entry.first == name;
    });
  };
  SG_CHECK(!taken(params_) && !taken(buffers_) && !taken(children_) && !taken(generators_),
           "{}: cannot register {} '{}': the name is already registered", type_name_, what, name);
}

Tensor Module::add_slot(std::vector<Slot>& slots, Slot slot, bool param) {
  const char* what = param ? "parameter" : "buffer";
  check_new_name(slot.name, what);
  const Tensor& t = slot.get();
  SG_CHECK(t.defined(), "{}: {} '{}' is undefined", type_name_, what, slot.name);
  if (param) {
    SG_CHECK(is_floating(t.dtype()), "{}: parameter '{}' must be a float32 or float64 tensor, got {}", type_name_,
             slot.name, t.dtype());
    SG_CHECK(t.is_leaf(), "{}: parameter '{}' must be a leaf tensor (detach() it)", type_name_, slot.name);
    if (slot.requires_grad) Tensor(t).requires_grad_();
  }
  slots.push_back(std::move(slot));
  return slots.back().get();
}

Tensor Module::register_parameter(std::string name, Tensor* member, bool requires_grad) {
  SG_CHECK(member != nullptr, "{}: register_parameter('{}'): the member pointer is null", type_name_, name);
  return add_slot(params_, {.name = std::move(name), .member = member, .requires_grad = requires_grad}, true);
}

Tensor Module::register_parameter(std::string name, Tensor t, bool requires_grad) {
  return add_slot(params_, {.name = std::move(name), .value = std::move(t), .requires_grad = requires_grad}, true);
}

Tensor Module::register_buffer(std::string name, Tensor* member) {
  SG_CHECK(member != nullptr, "{}: register_buffer('{}'): the member pointer is null", type_name_, name);
  return add_slot(buffers_, {.name = std::move(name), .member = member}, false);
}

Tensor Module::register_buffer(std::string name, Tensor t) {
  return add_slot(buffers_, {.name = std::move(name), .value = std::move(t)}, false);
}

// A bound member may have been assigned anything since registration: check it as
// registration would, and give it the registration's requires_grad (PyTorch's Parameter).
Tensor Module::checked_parameter(const Slot& slot) const {
  const Tensor& t = slot.get();
  SG_CHECK(t.defined(), "{}: parameter '{}' was replaced by an undefined tensor", type_name_, slot.name);
  SG_CHECK(is_floating(t.dtype()), "{}: parameter '{}' was replaced by a {} tensor (parameters are float32 or float64)",
           type_name_, slot.name, t.dtype());
  SG_CHECK(t.is_leaf(),
           "{}: parameter '{}' was replaced by a tensor computed by an op (not a leaf); assign a leaf "
           "(detach() it) or another module's parameter to tie them",
           type_name_, slot.name);
  if (slot.requires_grad && !t.requires_grad()) Tensor(t).requires_grad_();
  return t;
}

std::pair<const Module*, std::string> Module::owner_of(const std::string& dotted, const char* what) const {
  const Module* owner = this;
  std::string rest = dotted;
  for (size_t dot; (dot = rest.find('.')) != std::string::npos; rest = rest.substr(dot + 1)) {
    const std::string child = rest.substr(0, dot);
    const Module* next = nullptr;
    for (const auto& [n, m] : owner->children_)
      if (n == child) next = m.get();
    SG_CHECK(next != nullptr, "{}: no {} '{}': '{}' has no child module '{}'", type_name_, what, dotted,
             owner->type_name_, child);
    owner = next;
  }
  return {owner, rest};
}

const Module::Slot* Module::find_slot(const std::vector<Slot>& slots, const std::string& name) const {
  for (const Slot& slot : slots)
    if (slot.name == name) return &slot;
  return nullptr;
}

Tensor Module::get_parameter(const std::string& name) const {
  const auto [owner, last] = owner_of(name, "parameter");
  const Slot* slot = owner->find_slot(owner->params_, last);
  SG_CHECK(slot != nullptr, "{}: no parameter '{}'", type_name_, name);
  return owner->checked_parameter(*slot);
}

Tensor Module::get_buffer(const std::string& name) const {
  const auto [owner, last] = owner_of(name, "buffer");
  const Slot* slot = owner->find_slot(owner->buffers_, last);
  SG_CHECK(slot != nullptr, "{}: no buffer '{}'", type_name_, name);
  return slot->get();
}

void Module::set_parameter(const std::string& name, Tensor t) {
  const auto [owner, last] = owner_of(name, "parameter");
  Slot* slot = const_cast<Slot*>(owner->find_slot(owner->params_, last));
  SG_CHECK(slot != nullptr, "{}: set_parameter: no parameter '{}'", type_name_, name);
  SG_CHECK(t.defined() && is_floating(t.dtype()) && t.is_leaf(),
           "{}: set_parameter('{}'): the new tensor must be a defined float32 or float64 leaf tensor{}", type_name_,
           name, t.defined() ? fmt::format(" (got a {} {})", t.is_leaf() ? "leaf" : "non-leaf", t.dtype()) : "");
  if (slot->requires_grad) t.requires_grad_();
  (slot->member ? *slot->member : slot->value) = std::move(t);
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
  for (const Slot& slot : params ? params_ : buffers_)
    out.emplace_back(prefix + slot.name, params ? checked_parameter(slot) : slot.get());
  if (!recurse) return;
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", params, true, out);
}

namespace {
NamedTensors without_duplicates(NamedTensors all) {
  std::set<const TensorImpl*> seen;
  NamedTensors out;
  for (auto& [name, t] : all)
    if (seen.insert(t.impl().get()).second) out.emplace_back(std::move(name), std::move(t));
  return out;
}
}  // namespace

NamedTensors Module::named_parameters(bool recurse, bool remove_duplicate) const {
  NamedTensors out;
  collect("", true, recurse, out);
  return remove_duplicate ? without_duplicates(std::move(out)) : out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [_, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}

NamedTensors Module::named_buffers(bool recurse, bool remove_duplicate) const {
  NamedTensors out;
  collect("", false, recurse, out);
  return remove_duplicate ? without_duplicates(std::move(out)) : out;
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
