// The process group and DistributedDataParallel. CTest runs this suite twice: alone (a
// world of one: every collective is the identity) and under `mpirun -np 2` (CMakeLists.txt,
// distributed/mpirun_np2), where each case runs on both ranks at once. Each expectation is
// written for any world size W, so the same case checks both.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "tests/test_util.h"

namespace dist = sg::distributed;
using sg::Tensor;

namespace {

// MPI_Init before doctest's main and MPI_Finalize after it (a no-op without mpirun).
dist::Session session;

// A float64 (or float32) two-layer perceptron, 6 -> 16 (GELU) -> 3, the same on every rank.
std::shared_ptr<sg::nn::Sequential> small_mlp(uint64_t seed, sg::Dtype dtype = sg::kFloat64) {
  sg::Generator gen(seed);
  auto net = std::make_shared<sg::nn::Sequential>();
  net->push_back(std::make_shared<sg::nn::Linear>(6, 16, gen, sg::nn::LinearOptions{.dtype = dtype}));
  net->push_back(std::make_shared<sg::nn::GELU>());
  net->push_back(std::make_shared<sg::nn::Linear>(16, 3, gen, sg::nn::LinearOptions{.dtype = dtype}));
  return net;
}

// 96 samples of 6 features and 3 classes, the same on every rank.
sg::data::TensorDataset small_data(sg::Dtype dtype = sg::kFloat64) {
  sg::Generator gen(7);
  const Tensor x = sg::randn({96, 6}, gen, dtype);
  const Tensor y = sg::randint(0, 3, {96}, gen);
  return sg::data::TensorDataset(x, y);
}

// Trains `model` for `steps` steps of AdamW (the optimizer is the caller's, so a resume
// can continue it), starting at global step `first_step`, on the loader's batches.
void train_steps(sg::nn::Module& model, sg::optim::Optimizer& opt, sg::data::DataLoader& loader, int first_step,
                 int steps) {
  int step = 0;
  for (int64_t epoch = 0; step < first_step + steps; ++epoch) {
    loader.set_epoch(epoch);
    for (const sg::data::Batch& b : loader) {
      if (step >= first_step + steps) break;
      if (step++ < first_step) continue;
      const Tensor loss = sg::cross_entropy(model.forward(b.x), b.y);
      opt.zero_grad();
      loss.backward();
      opt.step();
    }
  }
}

double max_abs_difference_of(const Tensor& a, const Tensor& b) {
  return sg::max(sg::abs(a - b)).to(sg::kFloat64).item<double>();
}

double max_abs_difference(sg::nn::Module& a, sg::nn::Module& b) {
  const auto pa = a.parameters(), pb = b.parameters();
  REQUIRE(pa.size() == pb.size());
  double worst = 0.0;
  for (size_t i = 0; i < pa.size(); ++i) worst = std::max(worst, max_abs_difference_of(pa[i], pb[i]));
  return worst;
}

}  // namespace

TEST_CASE("the process group: ranks, world size, and a world of one without mpirun") {
  const int W = dist::world_size(), r = dist::rank();
  CHECK(W >= 1);
  CHECK(r >= 0);
  CHECK(r < W);
  CHECK(dist::is_main() == (r == 0));
  if (std::getenv("OMPI_COMM_WORLD_SIZE") == nullptr) {
    CHECK(W == 1);
    CHECK(dist::thread_level() == "none");
  } else if (dist::compiled_with_mpi()) {
    CHECK(W == std::atoi(std::getenv("OMPI_COMM_WORLD_SIZE")));
    MESSAGE("rank ", r, " of ", W, ", MPI thread level ", dist::thread_level());
  }
  dist::barrier();
}

TEST_CASE("all_reduce: sum, mean and max of float32, float64 and int64; broadcast from every root; metrics") {
  const int W = dist::world_size(), r = dist::rank();
  const double sum_ranks = W * (W - 1) / 2.0;  // 0 + 1 + ... + W - 1
  for (const sg::Dtype dtype : {sg::kFloat32, sg::kFloat64}) {
    CAPTURE(dtype);
    Tensor t = sg::from_vector(std::vector<double>{1.0 + r, -2.0 * r, 0.5}, {3}).to(dtype);
    dist::all_reduce(t, dist::ReduceOp::Sum);
    CHECK(t.to_vector<double>() == std::vector<double>{W + sum_ranks, -2.0 * sum_ranks, 0.5 * W});
    Tensor m = sg::from_vector(std::vector<double>{2.0 * r, 4.0}, {2}).to(dtype);
    dist::all_reduce(m, dist::ReduceOp::Mean);
    CHECK(m.to_vector<double>() == std::vector<double>{2.0 * sum_ranks / W, 4.0});
    Tensor x = sg::from_vector(std::vector<double>{double(r), -double(r)}, {2}).to(dtype);
    dist::all_reduce(x, dist::ReduceOp::Max);
    CHECK(x.to_vector<double>() == std::vector<double>{W - 1.0, 0.0});
  }
  // int64 beyond float's exact range: the sum must be exact.
  const int64_t big = (int64_t{1} << 53) + 1;
  Tensor i = sg::from_vector(std::vector<int64_t>{big, r}, {2});
  dist::all_reduce(i, dist::ReduceOp::Sum);
  CHECK(i.to_vector<int64_t>() == std::vector<int64_t>{big * W, static_cast<int64_t>(sum_ranks)});
  std::vector<int64_t> v = {r, 1};
  dist::all_reduce(v, dist::ReduceOp::Max);
  CHECK(v == std::vector<int64_t>{W - 1, 1});
  std::vector<double> d = {0.25 * r};
  dist::all_reduce(d, dist::ReduceOp::Sum);
  CHECK(d[0] == 0.25 * sum_ranks);

  for (int root = 0; root < W; ++root) {
    Tensor b = sg::full({2, 3}, 10.0 * r + 1, sg::kFloat64);
    dist::broadcast(b, root);
    CHECK(b.to_vector<double>() == std::vector<double>(6, 10.0 * root + 1));
    Tensor bi = sg::full({4}, double(r), sg::kInt64);
    dist::broadcast(bi, root);
    CHECK(bi.to_vector<int64_t>() == std::vector<int64_t>(4, root));
  }

  dist::Metrics metrics;
  metrics.add("loss_sum", 1.5 * (r + 1)).add("seen", 64);
  metrics.all_reduce();
  CHECK(metrics["loss_sum"] == 1.5 * (W + sum_ranks));
  CHECK(metrics["seen"] == 64.0 * W);
  CHECK_THROWS_WITH_AS(metrics["nope"], "Metrics: no field 'nope'", sg::Error);
}

TEST_CASE("collectives refuse bad input by name, on every rank alike") {
  const int W = dist::world_size();
  Tensor ints = sg::zeros({2}, sg::kInt64);
  CHECK_THROWS_WITH_AS(dist::all_reduce(ints, dist::ReduceOp::Mean),
                       "all_reduce: dtype int64 is not supported (float32, float64)", sg::Error);
  Tensor strided = sg::zeros({4, 4}, sg::kFloat64).transpose(0, 1);
  CHECK_THROWS_WITH_AS(dist::all_reduce(strided), "all_reduce: the tensor [4, 4] must be contiguous (it is written in place)",
                       sg::Error);
  CHECK_THROWS_WITH_AS(dist::broadcast(sg::zeros({1}, sg::kBool), 0),
                       "broadcast: dtype bool is not supported (float32, float64 or int64)", sg::Error);
  const std::string bad_root = fmt::format("broadcast: root {} is not a rank of this world of {}", W, W);
  CHECK_THROWS_WITH_AS(dist::broadcast(sg::zeros({1}), W), bad_root.c_str(), sg::Error);
  dist::Metrics twice;
  twice.add("a", 1);
  CHECK_THROWS_WITH_AS(twice.add("a", 2), "Metrics::add: 'a' was already added", sg::Error);
  if (W > 1) {
    // Sizes that differ between ranks: every rank gets the error (none waits for data).
    Tensor t = sg::zeros({3 + dist::rank()}, sg::kFloat64);
    CHECK_THROWS_WITH_AS(dist::all_reduce(t), doctest::Contains("all_reduce: the ranks disagree"), sg::Error);
    dist::Metrics differ;
    differ.add(dist::rank() == 0 ? "loss" : "seen", 1.0);
    CHECK_THROWS_WITH_AS(differ.all_reduce(), doctest::Contains("the ranks added different fields"), sg::Error);
  }
}

TEST_CASE("DDP: W ranks with batch b equal one process with batch W*b (float64 to 1e-12, float32 to 1e-5), 20 steps") {
  const int W = dist::world_size();
  for (const sg::Dtype dtype : {sg::kFloat64, sg::kFloat32}) {
    CAPTURE(dtype);
    const sg::data::TensorDataset data = small_data(dtype);
    // One process, the global batch of W * 8 (computed on every rank: it is the reference).
    auto single = small_mlp(3, dtype);
    sg::optim::AdamW single_opt(single->parameters(), {.lr = 1e-2});
    sg::data::DataLoader global(data, {.batch_size = 8 * W, .shuffle = true, .seed = 5});
    train_steps(*single, single_opt, global, 0, 20);

    // W ranks, each its shard of batch 8. Another seed on ranks > 0: the broadcast must fix it.
    auto net = small_mlp(dist::rank() == 0 ? 3 : 99, dtype);
    // Small buckets, so that several reductions start during backward.
    dist::DistributedDataParallel ddp(net, {.first_bucket_bytes = 8, .bucket_bytes = 64});
    CHECK(ddp.stats().buckets >= 3);
    sg::optim::AdamW opt(net->parameters(), {.lr = 1e-2});
    sg::data::DataLoader shard(data, {.batch_size = 8, .shuffle = true, .seed = 5, .rank = dist::rank(), .world_size = W});
    train_steps(ddp, opt, shard, 0, 20);

    const double diff = max_abs_difference(*single, *net);
    MESSAGE(fmt::format("{} after 20 steps on {} ranks: max |single - ddp| = {:.3g}", dtype, W, diff));
    CHECK(diff <= (dtype == sg::kFloat64 ? 1e-12 : 1e-5));
    CHECK(ddp.stats().backwards == 20);
    if (W > 1) CHECK(ddp.stats().buckets_started_in_backward > 0);
    // And not vacuously: the model moved.
    CHECK(max_abs_difference(*single, *small_mlp(3, dtype)) > 1e-3);
  }
}

TEST_CASE("DDP: overlapped, non-overlapped and communication-thread reductions give the same model, bit for bit") {
  const int W = dist::world_size();
  const sg::data::TensorDataset data = small_data();
  std::vector<std::vector<double>> results;
  const std::vector<dist::DdpOptions> variants = {
      {.first_bucket_bytes = 8, .bucket_bytes = 64, .overlap = true, .progress = dist::Progress::Hooks},
      {.first_bucket_bytes = 8, .bucket_bytes = 64, .overlap = false, .progress = dist::Progress::Hooks},
      {.first_bucket_bytes = 8, .bucket_bytes = 64, .overlap = true, .progress = dist::Progress::Thread},
  };
  for (const dist::DdpOptions& options : variants) {
    auto net = small_mlp(11);
    dist::DistributedDataParallel ddp(net, options);
    sg::optim::AdamW opt(net->parameters(), {.lr = 1e-2});
    sg::data::DataLoader shard(data, {.batch_size = 8, .shuffle = true, .seed = 1, .rank = dist::rank(), .world_size = W});
    train_steps(ddp, opt, shard, 0, 10);
    std::vector<double> flat;
    for (const Tensor& p : net->parameters()) {
      const auto v = p.to_vector<double>();
      flat.insert(flat.end(), v.begin(), v.end());
    }
    results.push_back(flat);
    if (!options.overlap) CHECK(ddp.stats().buckets_started_in_backward == 0);
  }
  CHECK(results[0] == results[1]);
  CHECK(results[0] == results[2]);
}

TEST_CASE("DDP: a parameter without a gradient is zero-filled (no rank waits for it), or an error naming it") {
  const int W = dist::world_size(), r = dist::rank();
  sg::Generator gen(4);
  auto net = std::make_shared<sg::nn::Sequential>();
  net->push_back(std::make_shared<sg::nn::Linear>(3, 2, gen, sg::nn::LinearOptions{.dtype = sg::kFloat64}));
  const Tensor x = sg::ones({4, 3}, sg::kFloat64);
  {
    dist::DistributedDataParallel ddp(net, {.unused = dist::UnusedParameters::ZeroFill});
    // Rank 0 uses only the weight; the others use the bias too.
    const Tensor w = net->get_parameter("0.weight"), b = net->get_parameter("0.bias");
    Tensor y = sg::matmul(x, w.transpose(0, 1));
    if (r > 0) y = y + b;
    sg::sum(y).backward();
    // d sum / d bias = 4 per output on each rank that used it: the mean over ranks. In a
    // world of one nobody used it: no gradient, as without DDP.
    if (W > 1) {
      REQUIRE(b.grad().defined());
      CHECK(b.grad().to_vector<double>() == std::vector<double>(2, 4.0 * (W - 1) / W));
    } else {
      CHECK_FALSE(b.grad().defined());
    }
    CHECK(w.grad().to_vector<double>() == std::vector<double>(6, 4.0));
    // No rank uses the bias: its gradient stays undefined everywhere (the optimizer skips it).
    net->zero_grad();
    sg::sum(sg::matmul(x, w.transpose(0, 1))).backward();
    CHECK_FALSE(b.grad().defined());
    CHECK(w.grad().to_vector<double>() == std::vector<double>(6, 4.0));
  }
  net->zero_grad();
  {
    dist::DistributedDataParallel ddp(net, {.unused = dist::UnusedParameters::Error});
    const Tensor w = net->get_parameter("0.weight");
    CHECK_THROWS_WITH_AS(sg::sum(sg::matmul(x, w.transpose(0, 1))).backward(),
                         doctest::Contains("got no gradient in this backward: 0.bias"), sg::Error);
  }
}

TEST_CASE("DDP: a frozen parameter (requires_grad false) is broadcast but never reduced; buffers are broadcast") {
  struct Scaled : sg::nn::Module {
    Tensor w, frozen, stat;
    Scaled() : Module("Scaled") {
      w = sg::full({3}, 1.0 + dist::rank(), sg::kFloat64);
      frozen = sg::full({3}, 5.0 + dist::rank(), sg::kFloat64);
      stat = sg::full({2}, 7.0 + dist::rank(), sg::kFloat64);
      register_parameter("w", &w);
      register_parameter("frozen", &frozen, /*requires_grad=*/false);
      register_buffer("stat", &stat);
    }
    Tensor forward(const Tensor& x) override { return x * w * frozen; }
  };
  auto net = std::make_shared<Scaled>();
  dist::DistributedDataParallel ddp(net);
  CHECK(net->w.to_vector<double>() == std::vector<double>(3, 1.0));  // rank 0's values everywhere
  CHECK(net->frozen.to_vector<double>() == std::vector<double>(3, 5.0));
  CHECK(net->stat.to_vector<double>() == std::vector<double>(2, 7.0));
  const Tensor x = sg::full({3}, double(dist::rank() + 1), sg::kFloat64);
  sg::sum(ddp(x)).backward();
  // d/dw = x * frozen = 5 (r + 1); the mean over ranks 5 (W + 1) / 2.
  CHECK(net->w.grad().to_vector<double>() == std::vector<double>(3, 5.0 * (dist::world_size() + 1) / 2.0));
  CHECK_FALSE(net->frozen.grad().defined());
}

TEST_CASE("DDP: two wrapped models in one backward reduce on their own communicators (hooks and threads)") {
  for (const dist::Progress progress : {dist::Progress::Hooks, dist::Progress::Thread}) {
    auto a = small_mlp(31), b = small_mlp(32);
    dist::DistributedDataParallel da(a, {.first_bucket_bytes = 8, .bucket_bytes = 64, .progress = progress});
    dist::DistributedDataParallel db(b, {.first_bucket_bytes = 8, .bucket_bytes = 64, .progress = progress});
    sg::Generator gen(40 + static_cast<uint64_t>(dist::rank()));  // other data on each rank
    const Tensor x = sg::randn({4, 6}, gen, sg::kFloat64);
    // Rank 0 runs b's layers first in backward, the others a's: the buckets of the two models
    // start in different orders on different ranks.
    auto twice = [](const Tensor& t) { return sg::cat({t, t}, 1); };  // (4, 3) -> (4, 6)
    const Tensor y = dist::rank() == 0 ? b->forward(twice(a->forward(x))) : a->forward(twice(b->forward(x)));
    sg::sum(y * y).backward();
    for (const Tensor& p : a->parameters()) {
      const Tensor local = p.grad().clone();
      Tensor check = local.clone();
      dist::all_reduce(check, dist::ReduceOp::Max);  // every rank holds the same averaged gradient
      CHECK(max_abs_difference_of(local, check) == 0.0);
    }
  }
}

TEST_CASE("DDP: set_sync(false) accumulates locally; the next synchronized backward averages the sum") {
  const int W = dist::world_size(), r = dist::rank();
  sg::Generator gen(4);
  auto net = std::make_shared<sg::nn::Sequential>();
  net->push_back(std::make_shared<sg::nn::Linear>(2, 1, gen, sg::nn::LinearOptions{.bias = false, .dtype = sg::kFloat64}));
  dist::DistributedDataParallel ddp(net);
  const Tensor w = net->get_parameter("0.weight");
  const Tensor x = sg::full({1, 2}, double(r + 1), sg::kFloat64);
  ddp.set_sync(false);
  sg::sum(ddp(x)).backward();  // local: r + 1
  CHECK(w.grad().to_vector<double>() == std::vector<double>(2, r + 1.0));
  ddp.set_sync(true);
  sg::sum(ddp(x)).backward();  // local sum 2 (r + 1); mean over ranks 2 * (W + 1) / 2
  CHECK(w.grad().to_vector<double>() == std::vector<double>(2, W + 1.0));
}

TEST_CASE("DDP: resuming from a checkpoint on every rank continues exactly as the uninterrupted run") {
  const int W = dist::world_size();
  const sg::data::TensorDataset data = small_data();
  auto loader = [&] {
    return sg::data::DataLoader(data, {.batch_size = 8, .shuffle = true, .seed = 2, .rank = dist::rank(), .world_size = W});
  };
  const std::string path = fmt::format("ddp_resume_w{}.safetensors", W);
  auto run_a = small_mlp(21);
  std::vector<double> uninterrupted;
  {
    dist::DistributedDataParallel ddp(run_a);
    sg::optim::AdamW opt(run_a->parameters(), {.lr = 1e-2});
    sg::data::DataLoader l = loader();
    train_steps(ddp, opt, l, 0, 7);
    if (dist::is_main()) sg::optim::save_checkpoint(path, {*run_a, opt}, {{"step", "7"}});
    dist::barrier();  // the file exists before anyone reads it
    train_steps(ddp, opt, l, 7, 8);
  }
  auto run_b = small_mlp(12345);  // other weights: the checkpoint must replace them all
  {
    sg::optim::AdamW opt(run_b->parameters(), {.lr = 1e-2});
    CHECK(sg::optim::load_checkpoint(path, {*run_b, opt}).at("step") == "7");
    dist::DistributedDataParallel ddp(run_b);
    sg::data::DataLoader l = loader();
    train_steps(ddp, opt, l, 7, 8);
  }
  CHECK(max_abs_difference(*run_a, *run_b) == 0.0);
  dist::barrier();
  if (dist::is_main()) std::filesystem::remove(path);
}

namespace {
struct FailInBackward : sg::Function<FailInBackward> {
  static Tensor forward(sg::Context&, const Tensor& x) { return x * 1.0; }
  static std::vector<Tensor> backward(sg::Context&, const Tensor&) { throw sg::Error("backward failed on purpose"); }
};
}  // namespace

TEST_CASE("DDP: after a backward that threw halfway (some buckets already started), the next one is right") {
  sg::Generator gen(8);
  auto net = std::make_shared<sg::nn::Sequential>();
  net->push_back(std::make_shared<sg::nn::Linear>(6, 16, gen, sg::nn::LinearOptions{.dtype = sg::kFloat64}));
  net->push_back(std::make_shared<sg::nn::Linear>(16, 3, gen, sg::nn::LinearOptions{.dtype = sg::kFloat64}));
  dist::DistributedDataParallel ddp(net, {.first_bucket_bytes = 8, .bucket_bytes = 64});
  const Tensor x = sg::randn({5, 6}, gen, sg::kFloat64) + double(dist::rank());  // other data on each rank
  auto loss_of = [&](const std::vector<Tensor>& p, bool fail) {
    Tensor h = sg::matmul(x, p[0].transpose(0, 1)) + p[1];
    if (fail) h = FailInBackward::apply(h);  // the second layer's buckets start before this throws
    return sg::sum(sg::gelu(sg::matmul(h, p[2].transpose(0, 1)) + p[3]));
  };
  const std::vector<Tensor> params = net->parameters();
  CHECK_THROWS_WITH_AS(loss_of(params, true).backward(), doctest::Contains("backward failed on purpose"), sg::Error);
  CHECK(ddp.stats().backwards == 0);
  net->zero_grad();
  loss_of(params, false).backward();
  CHECK(ddp.stats().backwards == 1);  // this backward's reductions ran to the end
  // The expected gradients: each rank's own, averaged over ranks.
  std::vector<Tensor> copies;
  for (const Tensor& p : params) copies.push_back(p.detach().clone().requires_grad_());
  loss_of(copies, false).backward();
  for (size_t i = 0; i < params.size(); ++i) {
    CAPTURE(i);
    const Tensor expected = copies[i].grad().clone();
    dist::all_reduce(expected, dist::ReduceOp::Mean);
    CHECK(max_abs_difference_of(params[i].grad(), expected) <= 1e-15);
  }
}

// Run only under mpirun by distributed/rank_failure_aborts_the_job (skipped otherwise): rank
// 1 fails while rank 0 waits in a collective for it. The job must end with the message
// rather than hang; ctest's timeout would catch a hang.
TEST_CASE("a rank that throws takes the job down with its message" * doctest::skip()) {
  try {
    if (dist::rank() == 1) throw sg::Error("rank 1 failed on purpose");
    Tensor t = sg::ones({4});
    dist::all_reduce(t);  // rank 0 waits here for a rank that never comes
    std::this_thread::sleep_for(std::chrono::seconds(30));
  } catch (const std::exception& e) {
    fmt::print(stderr, "rank {}: error: {}\n", dist::rank(), e.what());
    dist::abort(3);
  }
  FAIL("rank 0 outlived rank 1's failure");
}
