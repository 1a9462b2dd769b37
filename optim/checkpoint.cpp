#include "optim/checkpoint.h"

#include <algorithm>
#include <bit>

#include "core/safetensors.h"
#include "nn/serialize.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/shape.h"

namespace sg::optim {

namespace {

constexpr std::string_view kOptimizerPrefix = "optimizer/", kSchedulerPrefix = "scheduler/",
                           kGeneratorPrefix = "generator/";

void append_prefixed(NamedTensors& out, std::string_view prefix, const NamedTensors& part) {
  for (const auto& [name, t] : part) out.emplace_back(std::string(prefix) + name, t);
}

// A generator's state words as int64 [7] (the bit patterns; uint64 has no safetensors
// dtype that every reader supports), and back.
Tensor generator_tensor(const Generator& gen) {
  const Generator::State s = gen.state();
  std::vector<int64_t> words(s.size());
  for (size_t i = 0; i < s.size(); ++i) words[i] = std::bit_cast<int64_t>(s[i]);
  return from_vector(words, {static_cast<int64_t>(words.size())});
}

Generator::State generator_state(const std::string& path, const std::string& name, const Tensor& t) {
  Generator::State s{};
  SG_CHECK(t.dtype() == kInt64 && t.dim() == 1 && t.size(0) == static_cast<int64_t>(s.size()),
           "load_checkpoint: {}: generator state '{}' must be int64 [{}], got {} {}", path, name, s.size(), t.dtype(),
           t.shape());
  const int64_t* w = t.data_ptr<int64_t>();
  for (size_t i = 0; i < s.size(); ++i) s[i] = std::bit_cast<uint64_t>(w[i]);
  return s;
}

// One line per floating tensor (bfloat16 included) holding NaN or an infinity: a diverged run, which a
// checkpoint must neither replace a good one with nor continue from.
std::vector<std::string> non_finite_tensors(const NamedTensors& tensors) {
  std::vector<std::string> problems;
  for (const auto& [name, t] : tensors) {
    if (!is_floating_point(t.dtype()) || t.numel() == 0) continue;  // bfloat16 too
    const Tensor finite = isfinite(t).reshape({-1}).to(kInt64);
    const int64_t bad = t.numel() - sum(finite).item<int64_t>();
    if (bad == 0) continue;
    const int64_t first = argmin(finite, 0).item<int64_t>();
    problems.push_back(fmt::format("tensor '{}' {}: {} of {} values are not finite (the first, at flat index {}, is {})",
                                   name, t.shape(), bad, t.numel(), first,
                                   select(t.reshape({-1}), 0, first).item<double>()));
  }
  return problems;
}

}  // namespace

void save_checkpoint(const std::string& path, const TrainingState& state,
                     const std::map<std::string, std::string>& metadata) {
  SG_CHECK(!metadata.contains("format"), "save_checkpoint: {}: the metadata key 'format' is reserved", path);
  NamedTensors tensors = nn::state_dict(state.model);
  append_prefixed(tensors, kOptimizerPrefix, state.optimizer.state_dict());
  if (state.scheduler) append_prefixed(tensors, kSchedulerPrefix, state.scheduler->state_dict());
  for (const auto& [name, gen] : state.model.named_generators())
    tensors.emplace_back(std::string(kGeneratorPrefix) + name, generator_tensor(*gen));
  const std::vector<std::string> bad = non_finite_tensors(tensors);
  SG_CHECK(bad.empty(),
           "save_checkpoint: {}: not saved (any earlier file there is kept): the training state is not finite, "
           "the run has diverged: {}",
           path, fmt::join(bad, "; "));
  std::map<std::string, std::string> meta = metadata;
  meta["format"] = kCheckpointFormat;
  save_safetensors(path, tensors, meta);
}

std::map<std::string, std::string> load_checkpoint(const std::string& path, const TrainingState& state) {
  SafetensorsFile file = load_safetensors(path);
  const auto format = file.metadata.find("format");
  SG_CHECK(format != file.metadata.end() && format->second == kCheckpointFormat,
           "load_checkpoint: {}: not a softgrad training checkpoint (metadata format is '{}', expected '{}'); "
           "a weights-only file loads with nn::load",
           path, format == file.metadata.end() ? "<missing>" : format->second, kCheckpointFormat);
  file.metadata.erase(format);

  const std::vector<std::string> bad = non_finite_tensors(file.tensors);
  SG_CHECK(bad.empty(), "load_checkpoint: {}: the training state in the file is not finite (a diverged run cannot "
           "continue; resume from an earlier checkpoint): {}", path, fmt::join(bad, "; "));

  NamedTensors model, optimizer, scheduler;
  std::map<std::string, Tensor> generators;
  for (auto& [name, t] : file.tensors) {
    if (name.starts_with(kOptimizerPrefix))
      optimizer.emplace_back(name.substr(kOptimizerPrefix.size()), t);
    else if (name.starts_with(kSchedulerPrefix))
      scheduler.emplace_back(name.substr(kSchedulerPrefix.size()), t);
    else if (name.starts_with(kGeneratorPrefix))
      generators.emplace(name.substr(kGeneratorPrefix.size()), t);
    else
      model.emplace_back(name, t);
  }
  SG_CHECK(!optimizer.empty(), "load_checkpoint: {}: the file holds no optimizer state", path);
  SG_CHECK(scheduler.empty() == (state.scheduler == nullptr),
           "load_checkpoint: {}: the file {} scheduler state but the run {} a scheduler", path,
           scheduler.empty() ? "holds no" : "holds", state.scheduler ? "has" : "has no");

  // Check every part before changing anything that has no all-or-nothing load of its own.
  const auto named_gens = state.model.named_generators();
  std::vector<std::string> problems;
  for (const auto& [name, gen] : named_gens)
    if (!generators.contains(name)) problems.push_back(fmt::format("missing generator '{}'", name));
  for (const auto& entry : generators) {
    const std::string& name = entry.first;  // (clang 14 cannot capture a structured binding)
    const bool known = std::any_of(named_gens.begin(), named_gens.end(), [&](const auto& g) { return g.first == name; });
    if (!known) problems.push_back(fmt::format("unexpected generator '{}'", name));
  }
  SG_CHECK(problems.empty(), "load_checkpoint: {}: {}", path, fmt::join(problems, "; "));
  std::vector<Generator::State> gen_states;
  for (const auto& [name, gen] : named_gens) gen_states.push_back(generator_state(path, name, generators.at(name)));

  try {
    nn::load_state_dict(state.model, model);
    state.optimizer.load_state_dict(optimizer);
    if (state.scheduler) state.scheduler->load_state_dict(scheduler);
  } catch (const Error& e) {
    throw Error(fmt::format("load_checkpoint: {}: {}", path, e.what()));
  }
  for (size_t i = 0; i < named_gens.size(); ++i) named_gens[i].second->set_state(gen_states[i]);
  return file.metadata;
}

}  // namespace sg::optim
