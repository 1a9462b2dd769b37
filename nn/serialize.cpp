#include "nn/serialize.h"

#include <fmt/format.h>

#include <map>
#include <set>
#include <vector>

#include "core/autograd.h"
#include "ops/elementwise.h"

namespace sg::nn {

NamedTensors state_dict(const Module& module) {
  NamedTensors out;
  for (auto& list : {module.named_parameters(), module.named_buffers()})
    for (const auto& [name, t] : list) out.emplace_back(name, t.detach());
  return out;
}

void load_state_dict(Module& module, const NamedTensors& state, bool strict) {
  const NamedTensors own = state_dict(module);

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
    if (src.dtype() != dst.dtype())
      mismatched.push_back(fmt::format("dtype mismatch: {}: checkpoint {}, module {}", name, src.dtype(), dst.dtype()));
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
