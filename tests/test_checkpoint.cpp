// Training checkpoints (optim/checkpoint.h): a run stopped after an epoch and resumed
// from its checkpoint into freshly built objects continues with exactly the losses of an
// uninterrupted run with the same seed (dropout and shuffling included).
#include <filesystem>

#include "test_util.h"

namespace {

using sg::Tensor;
using sgtest::check_error;

constexpr int64_t kSamples = 96, kFeatures = 12, kClasses = 3, kEpochs = 4;

sg::data::TensorDataset make_dataset() {
  sg::Generator gen(123);
  return sg::data::TensorDataset(sg::randn({kSamples, kFeatures}, gen), sg::randint(0, kClasses, {kSamples}, gen));
}

// Everything a run owns, built from one seed.
struct Run {
  sg::Generator gen;
  std::shared_ptr<sg::nn::Sequential> model;
  std::unique_ptr<sg::optim::AdamW> opt;
  std::unique_ptr<sg::optim::WarmupCosine> sched;
  sg::data::DataLoader loader;

  explicit Run(uint64_t init_seed, int64_t hidden = 16)
      : gen(init_seed), model(std::make_shared<sg::nn::Sequential>()),
        loader(make_dataset(), {.batch_size = 16, .shuffle = true, .seed = 5}) {
    model->push_back(std::make_shared<sg::nn::Linear>(kFeatures, hidden, gen));
    model->push_back(std::make_shared<sg::nn::ReLU>());
    model->push_back(std::make_shared<sg::nn::Dropout>(0.3, gen));
    model->push_back(std::make_shared<sg::nn::Linear>(hidden, kClasses, gen));
    opt = std::make_unique<sg::optim::AdamW>(model->parameters(), sg::optim::AdamWOptions{.lr = 1e-2});
    sched = std::make_unique<sg::optim::WarmupCosine>(*opt, 5, kEpochs * loader.num_batches());
  }
  sg::optim::TrainingState state() { return {*model, *opt, sched.get()}; }

  // The trainers' loop, epochs [from, to); returns every step's loss.
  std::vector<float> train(int64_t from, int64_t to) {
    std::vector<float> losses;
    for (int64_t epoch = from; epoch < to; ++epoch) {
      loader.set_epoch(epoch);
      for (const sg::data::Batch& b : loader) {
        Tensor loss = sg::cross_entropy(model->forward(b.x), b.y);
        opt->zero_grad();
        loss.backward();
        opt->step();
        sched->step();
        losses.push_back(loss.item<float>());
      }
    }
    return losses;
  }
};

std::string scratch_file(const char* name) {
  std::filesystem::create_directories("checkpoint_scratch");
  return (std::filesystem::path("checkpoint_scratch") / name).string();
}

}  // namespace

TEST_CASE("a resumed run continues with the uninterrupted run's losses, bit for bit") {
  Run straight(1);
  const std::vector<float> expected = straight.train(0, kEpochs);

  const std::string path = scratch_file("resume.safetensors");
  Run first(1);
  std::vector<float> losses = first.train(0, 2);
  sg::optim::save_checkpoint(path, first.state(), {{"epoch", "2"}});

  Run resumed(77);  // different init: everything must come from the file
  const auto meta = sg::optim::load_checkpoint(path, resumed.state());
  CHECK(meta.at("epoch") == "2");
  CHECK_FALSE(meta.contains("format"));
  const std::vector<float> rest = resumed.train(2, kEpochs);
  losses.insert(losses.end(), rest.begin(), rest.end());

  REQUIRE(losses.size() == expected.size());
  for (size_t i = 0; i < losses.size(); ++i) CHECK_MESSAGE(losses[i] == expected[i], "step " << i);
  const auto a = straight.model->named_parameters(), b = resumed.model->named_parameters();
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i].second.to_vector<float>() == b[i].second.to_vector<float>());
  CHECK(straight.opt->param_groups()[0].lr == resumed.opt->param_groups()[0].lr);
}

TEST_CASE("without restoring the dropout generator the resumed losses differ (the test above can fail)") {
  Run straight(1);
  const std::vector<float> expected = straight.train(0, kEpochs);
  Run first(1);
  first.train(0, 2);
  const std::string path = scratch_file("no_generator.safetensors");
  sg::optim::save_checkpoint(path, first.state());

  Run resumed(77);
  sg::optim::load_checkpoint(path, resumed.state());
  for (const auto& [name, gen] : resumed.model->named_generators()) gen->manual_seed(0);  // spoil the restore
  const std::vector<float> rest = resumed.train(2, kEpochs);
  CHECK(std::vector<float>(expected.begin() + static_cast<std::ptrdiff_t>(expected.size() - rest.size()),
                           expected.end()) != rest);
}

TEST_CASE("a checkpoint holds the weights under the model's own names, beside the training state") {
  Run run(1);
  run.train(0, 1);
  const std::string path = scratch_file("names.safetensors");
  sg::optim::save_checkpoint(path, run.state(), {{"epoch", "1"}});
  const sg::SafetensorsFile file = sg::load_safetensors(path);
  std::vector<std::string> names;
  for (const auto& [name, t] : file.tensors) names.push_back(name);
  for (const char* want : {"0.weight", "0.bias", "3.weight", "3.bias", "optimizer/state.0.exp_avg",
                           "optimizer/param_groups.0.lr", "generator/2.generator"})
    CHECK_MESSAGE(std::find(names.begin(), names.end(), want) != names.end(), want);
  CHECK(file.metadata.at("format") == sg::optim::kCheckpointFormat);

  // The weights alone load into a fresh model (the other entries are unexpected keys).
  Run other(9);
  sg::nn::load(*other.model, path, /*strict=*/false);
  CHECK(other.model->named_parameters()[0].second.to_vector<float>() ==
        run.model->named_parameters()[0].second.to_vector<float>());
}

TEST_CASE("loading a checkpoint checks the file and the model") {
  Run run(1);
  const std::string path = scratch_file("checked.safetensors");
  sg::optim::save_checkpoint(path, run.state());

  Run wider(1, /*hidden=*/20);
  check_error([&] { sg::optim::load_checkpoint(path, wider.state()); },
              {"load_checkpoint", path, "0.weight: checkpoint [16, 12], module [20, 12]"});

  const std::string weights_only = scratch_file("weights_only.safetensors");
  sg::nn::save(*run.model, weights_only);
  check_error([&] { sg::optim::load_checkpoint(weights_only, run.state()); },
              {"load_checkpoint", weights_only, "not a softgrad training checkpoint"});

  check_error([&] { sg::optim::save_checkpoint(path, run.state(), {{"format", "mine"}}); },
              {"save_checkpoint", "'format' is reserved"});

  sg::optim::TrainingState no_schedule{*run.model, *run.opt, nullptr};
  check_error([&] { sg::optim::load_checkpoint(path, no_schedule); }, {"holds scheduler state but the run has no"});
}
