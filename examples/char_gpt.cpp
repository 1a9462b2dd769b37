// A character-level GPT: a small causal transformer trained on any text file, then sampled
// with temperature and top-k. Everything a PyTorch user reaches for in nanoGPT: a ModuleList
// of blocks (PyTorch's dotted names, "h.0.self_attn.in_proj_weight"), the token embedding
// tied to the output head, AdamW, warmup then cosine decay, gradient clipping, sampling.
//
//   build/examples/char_gpt                                  # trains on the GPL-3 text
//   build/examples/char_gpt --text my.txt --steps 2000 --prompt "To be" --top-k 10
//
// Tokens are the bytes present in the text (vocab of at most 256). The model:
//   tokens (B, T) -> wte (V, E) + wpe (T_max, E) -> h[0..L) causal pre-norm blocks (GELU)
//   -> ln_f -> lm_head (E -> V, weight tied to wte) -> logits (B, T, V)
#include <CLI/CLI.hpp>
#include <softgrad.h>

#include <cmath>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "examples/trainer.h"  // finite_in, integer_in, set_threads

namespace {

struct GptConfig {
  int64_t vocab = 0, block_size = 64, n_layer = 2, n_head = 4, n_embd = 64;
  double dropout = 0.0;
};

class CharGpt : public sg::nn::Module {
 public:
  CharGpt(const GptConfig& c, sg::Generator& gen) : Module("CharGpt"), config(c) {
    wte = register_module("wte", std::make_shared<sg::nn::Embedding>(c.vocab, c.n_embd, gen));
    wpe = register_module("wpe", std::make_shared<sg::nn::Embedding>(c.block_size, c.n_embd, gen));
    h = register_module("h", std::make_shared<sg::nn::ModuleList>());
    for (int64_t i = 0; i < c.n_layer; ++i)
      h->push_back(std::make_shared<sg::nn::TransformerEncoderLayer>(
          c.n_embd, c.n_head, gen,
          sg::nn::TransformerEncoderLayerOptions{.dim_feedforward = 4 * c.n_embd,
                                                 .dropout = c.dropout,
                                                 .activation = sg::nn::Activation::GELU,
                                                 .batch_first = true,
                                                 .norm_first = true}));
    ln_f = register_module("ln_f", std::make_shared<sg::nn::LayerNorm>(c.n_embd));
    lm_head = register_module("lm_head", std::make_shared<sg::nn::Linear>(c.n_embd, c.vocab, gen,
                                                                          sg::nn::LinearOptions{.bias = false}));
    // GPT-2's small init for the embeddings (N(0, 0.02)), then the tie: one matrix, one
    // gradient from both uses, counted and updated once.
    sg::nn::init::normal_(wte->weight, 0.0, 0.02, gen);
    sg::nn::init::normal_(wpe->weight, 0.0, 0.02, gen);
    lm_head->weight = wte->weight;
  }

  // tokens (B, T) int64, T <= block_size -> logits (B, T, V)
  sg::Tensor forward(const sg::Tensor& tokens) override {
    const int64_t T = tokens.size(1);
    SG_CHECK(T <= config.block_size, "CharGpt: sequence of {} tokens is longer than the block size {}", T,
             config.block_size);
    sg::Tensor x = (*wte)(tokens) + (*wpe)(sg::arange(T));
    for (const auto& block : h->as<sg::nn::TransformerEncoderLayer>()) x = (*block)(x, {.is_causal = true});
    return (*lm_head)((*ln_f)(x));
  }

  const GptConfig config;
  std::shared_ptr<sg::nn::Embedding> wte, wpe;
  std::shared_ptr<sg::nn::ModuleList> h;
  std::shared_ptr<sg::nn::LayerNorm> ln_f;
  std::shared_ptr<sg::nn::Linear> lm_head;
};

// The text as token ids, and the vocabulary (the bytes it contains, in byte order).
struct Corpus {
  std::vector<unsigned char> vocab;  // id -> byte
  std::vector<int64_t> id_of;        // byte -> id, -1 when absent
  std::vector<int64_t> ids;
};

Corpus read_corpus(const std::string& path, int64_t min_tokens) {
  std::ifstream in(path, std::ios::binary);
  SG_CHECK(in, "char_gpt: cannot open --text '{}'", path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  SG_CHECK(static_cast<int64_t>(text.size()) >= min_tokens,
           "char_gpt: --text '{}' has {} bytes; training and validation windows of --block-size need at least {}", path,
           text.size(), min_tokens);
  Corpus c;
  c.id_of.assign(256, -1);
  for (unsigned char b : text) c.id_of[b] = 0;
  for (int b = 0; b < 256; ++b)
    if (c.id_of[b] == 0) {
      c.id_of[b] = static_cast<int64_t>(c.vocab.size());
      c.vocab.push_back(static_cast<unsigned char>(b));
    }
  c.ids.reserve(text.size());
  for (unsigned char b : text) c.ids.push_back(c.id_of[b]);
  return c;
}

// B random windows of T + 1 tokens from ids[begin, end): inputs (B, T) and targets (B, T),
// the inputs shifted by one.
void random_batch(const std::vector<int64_t>& ids, int64_t begin, int64_t end, int64_t B, int64_t T,
                  sg::Generator& gen, sg::Tensor& x, sg::Tensor& y) {
  x = sg::empty({B, T}, sg::kInt64);
  y = sg::empty({B, T}, sg::kInt64);
  int64_t* px = x.data_ptr<int64_t>();
  int64_t* py = y.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t start = begin + static_cast<int64_t>(gen.next_u64() % static_cast<uint64_t>(end - begin - T));
    for (int64_t t = 0; t < T; ++t) {
      px[b * T + t] = ids[start + t];
      py[b * T + t] = ids[start + t + 1];
    }
  }
}

sg::Tensor lm_loss(CharGpt& model, const sg::Tensor& x, const sg::Tensor& y) {
  const sg::Tensor logits = model(x);  // (B, T, V)
  return sg::cross_entropy(logits.reshape({-1, logits.size(-1)}), y.reshape({-1}));
}

// Mean loss over `batches` random validation batches, without gradients, in eval mode.
double evaluate(CharGpt& model, const Corpus& c, int64_t begin, int64_t end, int64_t B, int64_t T, sg::Generator& gen,
                int batches) {
  sg::NoGradGuard no_grad;
  model.eval();
  double total = 0;
  for (int i = 0; i < batches; ++i) {
    sg::Tensor x, y;
    random_batch(c.ids, begin, end, B, T, gen, x, y);
    total += lm_loss(model, x, y).item<double>();
  }
  model.train();
  return total / batches;
}

// Appends n tokens to `context`, each drawn from softmax(logits / temperature) restricted to
// the top_k most likely tokens (top_k = 0: all of them).
std::vector<int64_t> sample(CharGpt& model, std::vector<int64_t> context, int64_t n, double temperature,
                            int64_t top_k, sg::Generator& gen) {
  sg::NoGradGuard no_grad;
  model.eval();
  const int64_t block = model.config.block_size;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t start = std::max<int64_t>(0, static_cast<int64_t>(context.size()) - block);
    const std::vector<int64_t> window(context.begin() + start, context.end());
    const sg::Tensor tokens = sg::from_vector(window, {1, static_cast<int64_t>(window.size())});
    sg::Tensor logits = model(tokens).select(1, -1).select(0, 0) / temperature;  // (V)
    if (top_k > 0 && top_k < logits.size(0)) {
      const sg::Tensor kth = sg::topk(logits, top_k).values.select(0, top_k - 1);
      logits = logits.masked_fill(logits < kth, -std::numeric_limits<double>::infinity());
    }
    const sg::Tensor next = sg::multinomial(logits.softmax(0), 1, /*replacement=*/false, gen);
    context.push_back(next.item<int64_t>());
  }
  model.train();
  return context;
}

std::string decode(const Corpus& c, const std::vector<int64_t>& ids) {
  std::string out;
  for (int64_t id : ids) out += static_cast<char>(c.vocab[static_cast<size_t>(id)]);
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  std::string text_path = "/usr/share/common-licenses/GPL-3", prompt = "The ";
  GptConfig config;
  int64_t steps = 300, batch_size = 16, sample_chars = 300, top_k = 10, warmup = -1;
  double lr = 3e-3, weight_decay = 0.1, clip = 1.0, temperature = 0.8, max_loss = 0.0;
  int threads = 0;
  uint64_t seed = 1337;

  CLI::App app{"Trains a small character-level GPT on a text file, then samples from it"};
  app.add_option("--text", text_path, "Text file to learn (any bytes)")->check(CLI::ExistingFile)->capture_default_str();
  app.add_option("--steps", steps, "Optimizer steps")->check(trainer::integer_in<int64_t>(1, 10'000'000))->capture_default_str();
  app.add_option("--batch-size", batch_size, "Windows per step")->check(trainer::integer_in<int64_t>(1, 65536))->capture_default_str();
  app.add_option("--block-size", config.block_size, "Context length T")->check(trainer::integer_in<int64_t>(1, 4096))->capture_default_str();
  app.add_option("--layers", config.n_layer, "Transformer blocks")->check(trainer::integer_in<int64_t>(1, 64))->capture_default_str();
  app.add_option("--heads", config.n_head, "Attention heads")->check(trainer::integer_in<int64_t>(1, 64))->capture_default_str();
  app.add_option("--embd", config.n_embd, "Embedding width (a multiple of --heads)")->check(trainer::integer_in<int64_t>(1, 4096))->capture_default_str();
  app.add_option("--dropout", config.dropout, "Dropout in every block")->check(trainer::finite_in(0.0, 0.99))->capture_default_str();
  app.add_option("--lr", lr, "Peak learning rate (AdamW; linear warmup, then cosine decay to lr/10)")->check(trainer::finite_in(0.0, 10.0))->capture_default_str();
  app.add_option("--weight-decay", weight_decay, "AdamW's decoupled weight decay")->check(trainer::finite_in(0.0, 10.0))->capture_default_str();
  app.add_option("--warmup", warmup, "Steps of linear warmup (default: a tenth of --steps)")->check(trainer::integer_in<int64_t>(0, 10'000'000));
  app.add_option("--clip", clip, "Clip the gradient's total norm to this (0: off)")->check(trainer::finite_in(0.0, 1e6))->capture_default_str();
  app.add_option("--prompt", prompt, "Text the sample starts from (bytes outside the vocabulary are dropped)")->capture_default_str();
  app.add_option("--sample-chars", sample_chars, "Characters to sample after training")->check(trainer::integer_in<int64_t>(0, 1'000'000))->capture_default_str();
  app.add_option("--temperature", temperature, "Sampling temperature")->check(trainer::finite_in(1e-3, 100.0))->capture_default_str();
  app.add_option("--top-k", top_k, "Sample among the k most likely characters (0: all)")->check(trainer::integer_in<int64_t>(0, 256))->capture_default_str();
  app.add_option("--threads", threads, "Threads (0: all cores)")->check(trainer::integer_in<int>(0, 4096))->capture_default_str();
  app.add_option("--seed", seed, "Seed for init, batches and sampling")->capture_default_str();
  app.add_option("--max-loss", max_loss, "Exit with status 1 when the final validation loss is higher (0: no check)")->check(trainer::finite_in(0.0, 100.0));
  CLI11_PARSE(app, argc, argv);
  SG_CHECK(config.n_embd % config.n_head == 0, "char_gpt: --embd {} is not a multiple of --heads {}", config.n_embd,
           config.n_head);
  if (warmup < 0) warmup = steps / 10;
  SG_CHECK(warmup < steps, "char_gpt: --warmup {} must be shorter than --steps {}", warmup, steps);
  trainer::set_threads(threads);

  // 90% of the text trains, the last 10% validates; each part must hold a window.
  const Corpus corpus = read_corpus(text_path, 10 * (config.block_size + 2));
  const int64_t n = static_cast<int64_t>(corpus.ids.size()), split = n * 9 / 10;
  config.vocab = static_cast<int64_t>(corpus.vocab.size());
  sg::Generator gen(seed);
  CharGpt model(config, gen);
  fmt::print("char_gpt: {} ({} bytes, vocabulary {}), {} parameters (the head shares wte's)\n", text_path, n,
             config.vocab, model.num_parameters());

  sg::optim::AdamW opt(model.parameters(), {.lr = lr, .betas = {0.9, 0.95}, .weight_decay = weight_decay});
  sg::optim::WarmupCosine schedule(opt, warmup, steps, lr / 10);
  const int64_t B = batch_size, T = config.block_size;
  const int64_t report_every = std::max<int64_t>(1, steps / 10);
  for (int64_t step = 1; step <= steps; ++step) {
    sg::Tensor x, y;
    random_batch(corpus.ids, 0, split, B, T, gen, x, y);
    opt.zero_grad();
    const sg::Tensor loss = lm_loss(model, x, y);
    loss.backward();
    const double norm = clip > 0 ? sg::optim::clip_grad_norm_(model.parameters(), clip) : 0.0;
    opt.step();
    schedule.step();
    const double value = loss.item<double>();
    SG_CHECK(std::isfinite(value), "char_gpt: the loss is {} at step {}: training diverged (try a lower --lr)", value,
             step);
    if (step % report_every == 0 || step == 1)
      fmt::print("step {:5d}/{}  loss {:.4f}  grad norm {:.3f}  lr {:.2e}\n", step, steps, value, norm,
                 opt.param_groups()[0].lr);
  }
  const double val_loss = evaluate(model, corpus, split, n, B, T, gen, 8);
  fmt::print("validation loss {:.4f} (uniform guessing: {:.4f})\n", val_loss, std::log(static_cast<double>(config.vocab)));

  std::vector<int64_t> context;
  for (unsigned char b : prompt)
    if (corpus.id_of[b] >= 0) context.push_back(corpus.id_of[b]);
  if (context.empty()) context.push_back(corpus.ids[0]);
  const std::vector<int64_t> text = sample(model, context, sample_chars, temperature, top_k, gen);
  fmt::print("sample (temperature {}, top-k {}):\n{}\n", temperature, top_k, decode(corpus, text));
  if (max_loss > 0 && val_loss > max_loss) {
    fmt::print(stderr, "char_gpt: validation loss {:.4f} is above --max-loss {}\n", val_loss, max_loss);
    return 1;
  }
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "error: {}\n", e.what());
  return 1;
}
