#include "nn/serialize.h"

#include <fmt/format.h>

#include <cstring>
#include <map>
#include <set>
#include <vector>

#include "core/autograd.h"
#include "ops/elementwise.h"

namespace sg::nn {

namespace {
// Whether src's values load into dst: the same dtype, or bfloat16 into float32/float64
// (exact widening).
bool loads_into(const Tensor& src, const Tensor& dst) {
  return src.dtype() == dst.dtype() || (src.dtype() == kBFloat16 && is_floating(dst.dtype()));
}

// Bitwise equality of two tensors of one shape and dtype.
bool same_values(const Tensor& a, const Tensor& b) {
  const Tensor ca = a.detach().contiguous(), cb = b.detach().contiguous();
  return std::memcmp(ca.raw_data(), cb.raw_data(), ca.nbytes()) == 0;
}

// Every registered parameter, then buffer, under every name, tied ones included (as
// PyTorch's state_dict): the module's own handles.
NamedTensors registered_tensors(const Module& module) {
  NamedTensors out = module.named_parameters(true, false);
  for (auto& entry : module.named_buffers(true, false)) out.push_back(std::move(entry));
  return out;
}

NamedTensors detached(const NamedTensors& list) {
  NamedTensors out;
  for (const auto& [name, t] : list) out.emplace_back(name, t.detach());
  return out;
}
}  // namespace

NamedTensors state_dict(const Module& module) { return detached(registered_tensors(module)); }

void load_state_dict(Module& module, const NamedTensors& state, bool strict) {
  // The module's handles (their identity shows ties) and detached views of them to copy into.
  const NamedTensors registered = registered_tensors(module);
  const NamedTensors own = detached(registered);

  // Check everything first; collect every problem instead of stopping at the first.
  std::vector<std::string> problems;
  std::map<std::string, const Tensor*> given;
  for (const auto& [name, t] : state) {
    if (!given.emplace(name, &t).second) problems.push_back(fmt::format("key given twice: {}", name));
    else if (!t.defined()) problems.push_back(fmt::format("undefined tensor: {}", name));
  }
  std::set<std::string> own_names;
  std::vector<std::string> missing, mismatched;
  for (const auto& [name, dst] : own) {
    own_names.insert(name);
    const auto it = given.find(name);
    if (it == given.end()) {
      if (strict) missing.push_back(fmt::format("missing key: {}", name));
      continue;
    }
    const Tensor& src = *it->second;
    if (!src.defined()) continue;  // already reported
    if (src.shape() != dst.shape())
      mismatched.push_back(fmt::format("shape mismatch: {}: checkpoint {}, module {}", name, src.shape(), dst.shape()));
    if (!loads_into(src, dst))
      mismatched.push_back(fmt::format("dtype mismatch: {}: checkpoint {}, module {}", name, src.dtype(), dst.dtype()));
  }
  // Tied names (one tensor under several names) must be given the same values.
  std::map<const TensorImpl*, std::string> first_name;
  for (size_t i = 0; i < own.size(); ++i) {
    const auto& [name, dst] = own[i];
    const auto [it, inserted] = first_name.emplace(registered[i].second.impl().get(), name);
    const auto a = given.find(it->second), b = given.find(name);
    if (inserted || a == given.end() || b == given.end()) continue;
    const Tensor &ta = *a->second, &tb = *b->second;
    if (!ta.defined() || !tb.defined() || ta.shape() != dst.shape() || tb.shape() != dst.shape() ||
        !loads_into(ta, dst) || !loads_into(tb, dst))
      continue;  // reported above
    if (!same_values(ta.to(dst.dtype()), tb.to(dst.dtype())))
      mismatched.push_back(fmt::format("tied parameters differ: {} and {} are one tensor in the module, but the "
                                       "state gives them different values",
                                       it->second, name));
  }
  std::vector<std::string> unexpected;
  if (strict)
    for (const auto& [name, _] : state)
      if (!own_names.count(name)) unexpected.push_back(fmt::format("unexpected key: {}", name));

  problems.insert(problems.begin(), unexpected.begin(), unexpected.end());
  problems.insert(problems.begin(), missing.begin(), missing.end());
  problems.insert(problems.end(), mismatched.begin(), mismatched.end());
  if (!problems.empty())
    fail("load_state_dict({}): the state does not match the module, nothing was loaded ({} problem{}):\n  {}",
         module.type_name(), problems.size(), problems.size() == 1 ? "" : "s", fmt::join(problems, "\n  "));

  // A source that shares storage with the module (e.g. its own state_dict under other names)
  // could be overwritten before it is read: copy those sources out first.
  NoGradGuard no_grad;
  std::set<const Storage*> module_storage;
  for (const auto& [_, dst] : own) module_storage.insert(dst.impl()->storage.get());
  std::map<std::string, Tensor> sources;
  for (const auto& [name, src] : state) {
    if (!own_names.count(name)) continue;
    sources.emplace(name, module_storage.count(src.impl()->storage.get()) ? src.detach().clone() : src.detach());
  }
  for (const auto& [name, dst] : own) {
    const auto it = sources.find(name);
    if (it == sources.end()) continue;  // missing and not strict
    Tensor target = dst;
    copy_(target, it->second);
  }
}

void save(const Module& module, const std::string& path, const std::map<std::string, std::string>& metadata) {
  save_safetensors(path, state_dict(module), metadata);
}

void load(Module& module, const std::string& path, bool strict) {
  SafetensorsFile file = load_safetensors(path);
  try {
    load_state_dict(module, file.tensors, strict);
  } catch (const Error& e) {
    fail("nn::load: '{}': {}", path, e.what());
  }
}

}  // namespace sg::nn
