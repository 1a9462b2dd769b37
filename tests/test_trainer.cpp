// The shared MNIST trainer loop (examples/trainer.h) on a small synthetic data set: it
// stops at the first non-finite loss without touching the last good checkpoint, refuses
// to resume from a diverged checkpoint or from metadata that does not fit the run, and
// refuses flags that would overflow (epochs x steps, huge warmups, NaN), and caps
// --threads at the cores with a message.
#include <filesystem>
#include <fstream>

#include "examples/trainer.h"
#include "test_util.h"

namespace {

using sg::Tensor;
using sgtest::check_error;
namespace fs = std::filesystem;

constexpr int64_t kSamples = 64, kFeatures = 8;

// Synthetic (64, 8) inputs with labels 0..9; `nan_at` puts a NaN in that sample.
trainer::Data make_data(int64_t batch_size, std::optional<int64_t> nan_at = std::nullopt) {
  sg::Generator gen(7);
  Tensor x = sg::randn({kSamples, kFeatures}, gen);
  if (nan_at) x.set({*nan_at, 3}, std::nan(""));
  const Tensor y = sg::randint(0, 10, {kSamples}, gen);
  sg::data::TensorDataset train(x, y), test(x.detach(), y);
  return trainer::Data{sg::data::DatasetKind::Mnist,
                       sg::data::DataLoader(std::move(train), {.batch_size = batch_size, .shuffle = false}),
                       std::move(test)};
}

std::shared_ptr<sg::nn::Sequential> make_model() {
  sg::Generator gen(3);
  auto net = std::make_shared<sg::nn::Sequential>();
  net->push_back(std::make_shared<sg::nn::Linear>(kFeatures, 10, gen));
  return net;
}

std::string scratch(const char* name) {
  fs::create_directories("trainer_scratch");
  const fs::path p = fs::path("trainer_scratch") / name;
  fs::remove(p);
  return p.string();
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

trainer::Flags flags_for(const std::string& save) {
  return trainer::Flags{.epochs = 2, .batch_size = 16, .lr = 1e-2, .warmup_epochs = 0.5, .save = save};
}

// The command lines of the two trainers, parsed as their main() does.
struct CommandLine {
  trainer::Flags flags;
  std::vector<int64_t> hidden = {512, 256};
  double dropout = 0.0;
  models::VitConfig vit;
};
CommandLine parse_mlp(std::vector<std::string> args) {
  CommandLine c;
  CLI::App app{"t", "mnist_mlp"};
  trainer::add_flags(app, c.flags);
  trainer::add_mlp_flags(app, c.hidden, c.dropout);
  std::reverse(args.begin(), args.end());  // CLI11 takes the arguments last first
  app.parse(args);
  return c;
}
CommandLine parse_vit(std::vector<std::string> args) {
  CommandLine c;
  CLI::App app{"t", "mnist_transformer"};
  trainer::add_flags(app, c.flags);
  trainer::add_vit_flags(app, c.vit);
  std::reverse(args.begin(), args.end());
  app.parse(args);
  return c;
}

// The message of the CLI::ValidationError that parsing `args` throws ("" when none).
std::string flag_error(const std::vector<std::string>& args, bool vit = false) {
  try {
    vit ? parse_vit(args) : parse_mlp(args);
  } catch (const CLI::ValidationError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("a NaN in the data stops training at that step, naming it, and leaves the checkpoint alone") {
  const std::string ck = scratch("nan_data.safetensors");
  {  // a good run writes the checkpoint
    trainer::Data data = make_data(16);
    auto net = make_model();
    trainer::fit(*net, flags_for(ck), data, "test");
  }
  const std::string good = read_all(ck);
  REQUIRE(!good.empty());
  trainer::Data data = make_data(16, /*nan_at=*/50);  // sample 50: step 4 of 4 (no shuffling)
  auto net = make_model();
  check_error([&] { trainer::fit(*net, flags_for(ck), data, "test"); },
              {"training diverged", "the loss is nan at epoch 1/2, step 4/4", "no checkpoint was written by this run"});
  CHECK(read_all(ck) == good);
}

TEST_CASE("the last good checkpoint is named when a later epoch diverges, and stays as it was") {
  // Diverge in epoch 2 only: the NaN goes in after epoch 1 (the data set shares storage).
  const std::string ck = scratch("later.safetensors");
  trainer::Data data = make_data(16);
  auto net = make_model();
  trainer::Flags f = flags_for(ck);
  f.epochs = 1;
  trainer::fit(*net, f, data, "test");  // epoch 1 of a 1-epoch run
  const std::string good = read_all(ck);
  // A 3-epoch run whose data turns bad after its first epoch.
  trainer::Flags g = flags_for(ck);
  g.epochs = 3;
  auto net2 = make_model();
  trainer::Data data2 = make_data(16);
  struct Poison : sg::nn::Module {
    std::shared_ptr<sg::nn::Sequential> inner;
    int64_t calls = 0;
    explicit Poison(std::shared_ptr<sg::nn::Sequential> m) : inner(register_module("inner", std::move(m))) {}
    Tensor forward(const Tensor& x) override {
      // 4 training steps and 1 evaluation per epoch: from the second epoch on, NaN logits.
      const Tensor logits = inner->forward(x);
      return ++calls > 5 ? logits * std::nan("") : logits;
    }
  } poisoned(net2);
  check_error([&] { trainer::fit(poisoned, g, data2, "test"); },
              {"the loss is nan at epoch 2/3, step 1/4", ck + " holds the model after epoch 1"});
  CHECK(read_all(ck) != good);  // this run's epoch 1 replaced the 1-epoch run's file
  CHECK(sg::load_safetensors(ck).metadata.at("epoch") == "1");
  CHECK(sg::load_safetensors(ck).metadata.at("epochs") == "3");
}

TEST_CASE("save_checkpoint refuses a non-finite state; --resume refuses a checkpoint holding one, by name") {
  const std::string ck = scratch("nan_weight.safetensors");
  trainer::Data data = make_data(16);
  auto net = make_model();
  trainer::Flags f = flags_for(ck);
  trainer::fit(*net, f, data, "test");
  const std::string good = read_all(ck);

  sg::optim::AdamW opt(net->parameters(), {.lr = 1e-2});
  {
    sg::NoGradGuard no_grad;
    net->named_parameters()[0].second.set({2, 5}, INFINITY);
  }
  check_error([&] { sg::optim::save_checkpoint(ck, {*net, opt}); },
              {"save_checkpoint", "not saved", "tensor '0.weight' [10, 8]: 1 of 80 values are not finite",
               "flat index 21, is inf"});
  CHECK(read_all(ck) == good);

  // A file with a NaN weight written behind save_checkpoint's back.
  sg::SafetensorsFile file = sg::load_safetensors(ck);
  for (auto& [name, t] : file.tensors)
    if (name == "0.bias") t.set({4}, std::nan(""));
  sg::save_safetensors(ck, file.tensors, file.metadata);
  auto fresh = make_model();
  trainer::Flags r = flags_for("");
  r.resume = ck;
  check_error([&] { trainer::fit(*fresh, r, data, "test"); },
              {"load_checkpoint", ck, "not finite", "tensor '0.bias' [10]: 1 of 10 values", "is nan"});
}

TEST_CASE("--resume checks the metadata: the run, --epochs, and an integer epoch within the run") {
  const std::string ck = scratch("meta.safetensors");
  trainer::Data data = make_data(16);
  {
    auto net = make_model();
    trainer::fit(*net, flags_for(ck), data, "test");
  }
  const sg::SafetensorsFile file = sg::load_safetensors(ck);
  auto with = [&](const std::string& key, const std::optional<std::string>& value) {
    std::map<std::string, std::string> meta = file.metadata;
    if (value) meta[key] = *value;
    else meta.erase(key);
    const std::string path = scratch("meta_edit.safetensors");
    sg::save_safetensors(path, file.tensors, meta);
    return path;
  };
  auto resume = [&](const std::string& path, int64_t epochs = 2) {
    auto net = make_model();
    trainer::Flags f = flags_for("");
    f.epochs = epochs;
    f.resume = path;
    return trainer::fit(*net, f, data, "test");
  };
  check_error([&] { resume(with("epoch", "7")); }, {"'epoch' is 7, past its run's 2 epochs"});
  {  // a one-epoch run says "1 epoch"
    std::map<std::string, std::string> meta = file.metadata;
    meta["epochs"] = "1";
    meta["epoch"] = "2";
    const std::string path = scratch("meta_one_epoch.safetensors");
    sg::save_safetensors(path, file.tensors, meta);
    check_error([&] { resume(path, 1); }, {"'epoch' is 2, past its run's 1 epoch"});
  }
  check_error([&] { resume(with("epoch", "-1")); }, {"'epoch' is '-1', not a non-negative integer"});
  check_error([&] { resume(with("epoch", "two")); }, {"meta_edit.safetensors", "'epoch' is 'two', not a"});
  check_error([&] { resume(with("epoch", "1x")); }, {"'epoch' is '1x'"});
  check_error([&] { resume(with("epoch", "")); }, {"'epoch' is ''"});
  check_error([&] { resume(with("epoch", std::nullopt)); }, {"no 'epoch' field"});
  check_error([&] { resume(with("epochs", "x")); }, {"'epochs' is 'x'"});
  check_error([&] { resume(with("run", "other")); }, {"the checkpoint is from other, not test"});
  check_error([&] { resume(ck, 3); }, {"had --epochs 2, this one 3"});
  // A finished run resumes to nothing left to train and reports its accuracy.
  CHECK(resume(ck).test_accuracy > 0.0);
  CHECK(resume(with("epoch", "1")).test_accuracy > 0.0);
}

TEST_CASE("flags: NaN, infinities and huge values are refused by name; products never overflow") {
  auto parse = [](std::vector<std::string> args) {
    trainer::Flags f;
    CLI::App app{"t", "t"};
    trainer::add_flags(app, f);
    std::reverse(args.begin(), args.end());  // CLI11 takes the arguments last first
    app.parse(args);
    return f;
  };
  for (const char* bad : {"nan", "inf", "-1", "1e300", "abc"}) {
    CAPTURE(bad);
    for (const char* flag : {"--warmup-epochs", "--lr", "--weight-decay", "--min-accuracy"}) {
      CAPTURE(flag);
      try {
        parse({flag, bad});
        FAIL_CHECK("accepted");
      } catch (const CLI::ValidationError& e) {
        CHECK(std::string(e.what()).find(flag) != std::string::npos);
        CHECK(std::string(e.what()).find(std::string(bad) == "abc" ? "'abc' is not a number" : "not a finite number") !=
              std::string::npos);
      }
    }
  }
  CHECK(parse({"--warmup-epochs", "2.5", "--lr", "3e-4"}).warmup_epochs == 2.5);

  trainer::Data data = make_data(16);
  auto net = make_model();
  trainer::Flags f = flags_for("");
  f.epochs = INT64_MAX;
  check_error([&] { trainer::fit(*net, f, data, "test"); },
              {"--epochs 9223372036854775807", "4 steps are more steps than int64 can count"});
  // A batch larger than the data set is one batch per epoch; a warmup longer than the run
  // is capped at half of it.
  trainer::Data one_batch = make_data(INT64_MAX);
  CHECK(one_batch.train.num_batches() == 1);
  f.epochs = 2;
  f.warmup_epochs = 1e9;
  CHECK(trainer::fit(*net, f, one_batch, "test").test_accuracy >= 0.0);
}

TEST_CASE("flags: integer flags name the flag and the rule; 'abc' is not a number (no 300-digit bounds)") {
  CHECK(flag_error({"--epochs", "0"}) == "--epochs: 0 is not a positive integer (it must be at least 1)");
  CHECK(flag_error({"--epochs", "abc"}) == "--epochs: 'abc' is not a number");
  CHECK(flag_error({"--epochs", "1.5"}) == "--epochs: 1.5 is not a positive integer");
  CHECK(flag_error({"--epochs", "nan"}) == "--epochs: nan is not a positive integer");
  CHECK(flag_error({"--epochs", ""}) == "--epochs: '' is not a number");
  CHECK(flag_error({"--epochs", "99999999999999999999"}) ==
        "--epochs: 99999999999999999999 is not a positive integer (it must be at most 9223372036854775807)");
  CHECK(flag_error({"--batch-size", "-3"}) == "--batch-size: -3 is not a positive integer (it must be at least 1)");
  CHECK(flag_error({"--hidden", "0"}) == "--hidden: 0 is not a positive integer (it must be at least 1)");
  CHECK(flag_error({"--hidden", "128,x"}) == "--hidden: 'x' is not a number");
  CHECK(flag_error({"--threads", "-1"}) == "--threads: -1 is not a non-negative integer (it must be at least 0)");
  CHECK(flag_error({"--seed", "-1"}) == "--seed: -1 is not a non-negative integer (it must be at least 0)");
  CHECK(flag_error({"--seed", "seven"}) == "--seed: 'seven' is not a number");
  CHECK(flag_error({"--shift", "9"}) == "--shift: 9 is not an integer from 0 to 8 (it must be at most 8)");
  CHECK(flag_error({"--dropout", "2"}) == "--dropout: 2 is not a finite number in [0, 1]");
  CHECK(flag_error({"--dim", "0"}, true) == "--dim: 0 is not a positive integer (it must be at least 1)");
  CHECK(flag_error({"--heads", "abc"}, true) == "--heads: 'abc' is not a number");
  CHECK(flag_error({"--mlp-ratio", "-2"}, true) == "--mlp-ratio: -2 is not a positive integer (it must be at least 1)");
  CHECK(flag_error({"--patch", "3"}, true) == "--patch: 3 is not one of 2, 4, 7, 14");
  CHECK(flag_error({"--patch", "abc"}, true) == "--patch: 'abc' is not a number");
  // Good values still parse, into the option's type.
  const CommandLine mlp = parse_mlp({"--epochs", "3", "--batch-size", "+64", "--hidden", "32,16", "--threads", "0",
                                     "--seed", "18446744073709551615", "--shift", "8", "--dropout", "0.5"});
  CHECK(mlp.flags.epochs == 3);
  CHECK(mlp.flags.batch_size == 64);
  CHECK(mlp.hidden == std::vector<int64_t>{32, 16});
  CHECK(mlp.flags.seed == UINT64_MAX);
  CHECK(mlp.flags.shift == 8);
  CHECK(mlp.dropout == 0.5);
  const CommandLine vit = parse_vit({"--patch", "4", "--dim", "32", "--heads", "2", "--depth", "1", "--pool", "cls"});
  CHECK(vit.vit.patch == 4);
  CHECK(vit.vit.dim == 32);
  CHECK(vit.vit.pool == "cls");
}

TEST_CASE("--threads beyond the cores is capped at the cores") {
  const int before = sg::get_num_threads();
  trainer::set_threads(1000);
  CHECK(sg::get_num_threads() == omp_get_num_procs());
  trainer::set_threads(1);
  CHECK(sg::get_num_threads() == 1);
  sg::set_num_threads(before);
}
