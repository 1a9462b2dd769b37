// optim::Optimizer: parameter groups, zero_grad, and the state dict (see optimizer.h).
#include "optim/optimizer.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <set>

#include "core/safetensors.h"
#include "ops/shape.h"

namespace sg::optim {

Optimizer::Optimizer(std::string name, std::vector<ParamGroup> groups, double default_lr, double default_weight_decay)
    : name_(std::move(name)), groups_(std::move(groups)) {
  SG_CHECK(!groups_.empty(), "{}: got no parameter groups", name_);
  std::set<const TensorImpl*> seen;
  for (size_t g = 0; g < groups_.size(); ++g) {
    ParamGroup& group = groups_[g];
    SG_CHECK(!group.params.empty(), "{}: param group {} has no parameters", name_, g);
    if (std::isnan(group.lr)) group.lr = default_lr;
    if (std::isnan(group.weight_decay)) group.weight_decay = default_weight_decay;
    SG_CHECK(group.lr >= 0.0, "{}: invalid lr {} in param group {}; expected a value >= 0", name_, group.lr, g);
    SG_CHECK(group.weight_decay >= 0.0, "{}: invalid weight_decay {} in param group {}; expected a value >= 0", name_,
             group.weight_decay, g);
    for (size_t i = 0; i < group.params.size(); ++i) {
      const Tensor& p = group.params[i];
      SG_CHECK(p.defined(), "{}: parameter {} of param group {} is undefined", name_, i, g);
      SG_CHECK(is_floating(p.dtype()) && p.requires_grad() && p.is_leaf(),
               "{}: parameter {} of param group {} ({} {}) must be a floating leaf tensor that requires grad{}", name_,
               i, g, p.dtype(), p.shape(), p.is_leaf() ? "" : " (it was computed by an op: detach() it first)");
      SG_CHECK(p.is_contiguous(), "{}: parameter {} of param group {} (shape {}, strides {}) is not contiguous", name_,
               i, g, p.shape(), p.strides());
      SG_CHECK(seen.insert(p.impl().get()).second,
               "{}: parameter {} of param group {} (shape {}) is listed more than once (in this group or an earlier "
               "one)",
               name_, i, g, p.shape());
      params_.push_back(p);
    }
  }
  state_.resize(params_.size());
}

void Optimizer::zero_grad() {
  for (ParamGroup& group : groups_)
    for (Tensor& p : group.params) p.zero_grad();
}

void Optimizer::check_groups_unchanged() const {
  size_t count = 0;
  bool same = true;
  for (const ParamGroup& group : groups_)
    for (const Tensor& p : group.params) {
      same = same && count < params_.size() && params_[count].impl() == p.impl();
      ++count;
    }
  SG_CHECK(same && count == params_.size(),
           "{}.step: the parameter lists of param_groups() were changed after construction (they held {}, now {}); "
           "build a new optimizer instead",
           name_, plural(params_.size(), "parameter"), count);
}

Tensor Optimizer::contiguous_grad(const Tensor& param) const {
  const Tensor g = param.grad();
  SG_CHECK(g.shape() == param.shape() && g.dtype() == param.dtype(),
           "{}.step: gradient {} {} does not match its parameter {} {}", name_, g.dtype(), g.shape(), param.dtype(),
           param.shape());
  return g.is_contiguous() ? g : contiguous(g);  // backward always leaves a contiguous one
}

void Optimizer::init_state(ParamState& state, const ParamGroup& group, const Tensor& param) const {
  if (state.initialized) return;
  state.buffers.clear();
  for (size_t b = 0; b < buffer_names(group).size(); ++b) state.buffers.push_back(zeros(param.shape(), param.dtype()));
  state.step = 0;
  state.initialized = true;
}

void Optimizer::bump_version(const Tensor& param) { ++param.impl()->storage->version; }

// ---- state dict --------------------------------------------------------------------------
namespace {

Tensor scalar_f64(double v) { return scalar_tensor(v, kFloat64); }
Tensor scalar_i64(int64_t v) { return from_vector<int64_t>({v}, {}); }
Tensor snapshot(const Tensor& t) { return clone(t.detach()); }

std::string describe(const Tensor& t) { return fmt::format("{} {}", t.dtype(), t.shape()); }

// "state.<i>.<key>" -> (i, key); false for anything else.
bool parse_state_name(const std::string& name, int64_t& index, std::string& key) {
  const std::string prefix = "state.";
  if (name.rfind(prefix, 0) != 0) return false;
  const size_t dot = name.find('.', prefix.size());
  if (dot == std::string::npos || dot == prefix.size() || dot + 1 == name.size()) return false;
  const char* begin = name.data() + prefix.size();
  const char* end = name.data() + dot;
  if (*begin == '0' && end - begin > 1) return false;  // one spelling per index
  auto [ptr, ec] = std::from_chars(begin, end, index);
  if (ec != std::errc() || ptr != end || index < 0) return false;
  key = name.substr(dot + 1);
  return true;
}

}  // namespace

NamedTensors Optimizer::state_dict() const {
  NamedTensors out;
  int64_t index = 0;
  for (size_t g = 0; g < groups_.size(); ++g) {
    const ParamGroup& group = groups_[g];
    const std::string prefix = fmt::format("param_groups.{}.", g);
    out.emplace_back(prefix + "lr", scalar_f64(group.lr));
    out.emplace_back(prefix + "weight_decay", scalar_f64(group.weight_decay));
    std::vector<int64_t> ids(group.params.size());
    for (int64_t& id : ids) id = index++;
    out.emplace_back(prefix + "params", from_vector(ids, {static_cast<int64_t>(ids.size())}));
  }
  for (const OptionValue& o : shared_options())
    out.emplace_back("options." + o.name,
                     o.dtype == kInt64 ? scalar_i64(static_cast<int64_t>(o.value)) : scalar_f64(o.value));
  index = 0;
  for (const ParamGroup& group : groups_) {
    const std::vector<std::string> names = buffer_names(group);
    for (size_t k = 0; k < group.params.size(); ++k, ++index) {
      const ParamState& s = state_[index];
      if (!s.initialized) continue;
      const std::string prefix = fmt::format("state.{}.", index);
      if (counts_steps()) out.emplace_back(prefix + "step", scalar_i64(s.step));
      for (size_t b = 0; b < names.size(); ++b) out.emplace_back(prefix + names[b], snapshot(s.buffers[b]));
    }
  }
  return out;
}

void Optimizer::load_state_dict(const NamedTensors& named) {
  std::vector<std::string> problems;
  std::map<std::string, Tensor> by_name;
  for (const auto& [name, t] : named) {
    if (!t.defined())
      problems.push_back(fmt::format("{}: undefined tensor", name));
    else if (!by_name.emplace(name, t).second)
      problems.push_back(fmt::format("{}: given more than once", name));
  }
  std::set<std::string> used;
  // Finds `name` with the expected dtype and shape; records a problem otherwise.
  auto take = [&](const std::string& name, Dtype dtype, const Shape& shape, const std::string& why = "") -> Tensor {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      problems.push_back(fmt::format("missing: {}", name));
      return Tensor();
    }
    used.insert(name);
    const Tensor& t = it->second;
    if (t.dtype() != dtype || t.shape() != shape) {
      problems.push_back(fmt::format("{}: got {}, expected {} {}{}", name, describe(t), dtype, shape, why));
      return Tensor();
    }
    return t;
  };

  // Groups: the same number, each with the same parameters; lr and weight_decay >= 0.
  std::vector<std::pair<double, double>> lr_wd(groups_.size(), {0.0, 0.0});
  int64_t index = 0;
  for (size_t g = 0; g < groups_.size(); ++g) {
    const ParamGroup& group = groups_[g];
    const std::string prefix = fmt::format("param_groups.{}.", g);
    const int64_t n = static_cast<int64_t>(group.params.size());
    std::vector<int64_t> want(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k) want[k] = index + k;
    index += n;
    auto it = by_name.find(prefix + "params");
    const bool other_count =
        it != by_name.end() && it->second.dtype() == kInt64 && it->second.dim() == 1 && it->second.size(0) != n;
    if (other_count) {
      used.insert(it->first);
      problems.push_back(fmt::format("{}params: param group {} has {} in the checkpoint, {} here", prefix, g,
                                     plural(it->second.size(0), "parameter"), n));
    } else if (Tensor ids = take(prefix + "params", kInt64, {n}); ids.defined() && ids.to_vector<int64_t>() != want) {
      problems.push_back(fmt::format("{}params: the checkpoint lists parameters {}, expected {}", prefix,
                                     ids.to_vector<int64_t>(), want));
    }
    for (auto [key, slot] : {std::pair{"lr", &lr_wd[g].first}, std::pair{"weight_decay", &lr_wd[g].second}}) {
      if (Tensor t = take(prefix + key, kFloat64, {}); t.defined()) {
        *slot = t.item<double>();
        if (!(*slot >= 0.0)) problems.push_back(fmt::format("{}{}: {} is not >= 0", prefix, key, *slot));
      }
    }
  }
  // Shared options: equal to this optimizer's.
  for (const OptionValue& o : shared_options()) {
    const std::string name = "options." + o.name;
    if (Tensor t = take(name, o.dtype, {}); t.defined()) {
      const double got = t.item<double>();
      if (got != o.value)
        problems.push_back(
            fmt::format("{}: the checkpoint has {}, this optimizer {} (options are not loaded; build "
                        "the optimizer with the checkpoint's)",
                        name, got, o.value));
    }
  }
  // Per-parameter state: for each parameter, every entry or none.
  std::map<int64_t, std::set<std::string>> state_keys;
  for (const auto& [name, t] : by_name) {
    int64_t i = 0;
    std::string key;
    if (parse_state_name(name, i, key)) state_keys[i].insert(key);
  }
  std::vector<ParamState> new_state(state_.size());
  index = 0;
  for (const ParamGroup& group : groups_) {
    const std::vector<std::string> names = buffer_names(group);
    for (const Tensor& param : group.params) {
      const int64_t i = index++;
      if (!state_keys.count(i)) continue;  // no state yet for this parameter
      const std::string prefix = fmt::format("state.{}.", i);
      ParamState& s = new_state[static_cast<size_t>(i)];
      s.initialized = true;
      if (counts_steps())
        if (Tensor t = take(prefix + "step", kInt64, {}); t.defined()) {
          s.step = t.item<int64_t>();
          if (s.step < 0) problems.push_back(fmt::format("{}step: {} is negative", prefix, s.step));
        }
      const std::string why = fmt::format(" (parameter {} is {})", i, describe(param));
      for (const std::string& b : names)
        if (Tensor t = take(prefix + b, param.dtype(), param.shape(), why); t.defined())
          s.buffers.push_back(snapshot(t));
    }
  }
  for (const auto& [name, t] : by_name)
    if (!used.count(name)) {
      int64_t i = 0;
      std::string key;
      if (parse_state_name(name, i, key) && i >= index)
        problems.push_back(fmt::format("unexpected: {} (this optimizer has {})", name, plural(index, "parameter")));
      else
        problems.push_back(fmt::format("unexpected: {}", name));
    }
  if (by_name.count(fmt::format("param_groups.{}.params", groups_.size())))
    problems.push_back(
        fmt::format("the checkpoint has more than the {} param groups of this optimizer", groups_.size()));

  if (!problems.empty()) {
    std::string msg =
        fmt::format("{}.load_state_dict: the state dict does not fit this optimizer ({} problem{}):", name_,
                    problems.size(), problems.size() == 1 ? "" : "s");
    for (const std::string& p : problems) msg += "\n  " + p;
    throw Error(msg);
  }
  for (size_t g = 0; g < groups_.size(); ++g) {
    groups_[g].lr = lr_wd[g].first;
    groups_[g].weight_decay = lr_wd[g].second;
  }
  state_ = std::move(new_state);
}

// ---- files -------------------------------------------------------------------------------------
void save(const Optimizer& opt, const std::string& path) { save_safetensors(path, opt.state_dict()); }

void load(Optimizer& opt, const std::string& path) { opt.load_state_dict(load_safetensors(path).tensors); }

}  // namespace sg::optim
