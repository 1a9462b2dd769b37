// The integer ViT (nn::VisionTransformer -> QuantizedModel): three kinds of stage and their
// calibration. The residual stream is int32 at one scale for the whole model (its largest
// calibrated |x| maps to 2^22); everything that enters a product is int8 (uint8 for softmax
// probabilities).
//
//   vit_embed   int8 images -> patches -> patch_embed (int8 GEMM) -> int32 residual scale,
//               class token and position embedding added as int32
//   vit_layer   x += out_proj(attention(LN1(x)));  x += linear2(GELU(linear1(LN2(x))))
//               attention per head: Q K^T int8 x int8 -> int32, integer softmax -> uint8
//               (scale 1/256), P V uint8 x int8 -> int32, requantized to int8
//   vit_head    LN -> int8, class token or mean over tokens (an int32 sum requantized),
//               head -> int32 logits
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "core/autograd.h"
#include "core/error.h"
#include "core/onednn.h"
#include "nn/multihead_attention.h"
#include "nn/transformer.h"
#include "nn/vision_transformer.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "quant/stage.h"

namespace sg::quant {

namespace {

constexpr double kResidualRange = 4194304.0;  // 2^22: the residual stream's largest |x|

// ---- integer LayerNorm with its quantized affine parameters ----

struct QLayerNorm {
  int64_t n = 0;
  double gamma_scale = 1, out_scale = 1;  // wide: out_scale is the int32 output's fine scale
  bool wide = false;  // per-token: int32 output (layer_norm_s32), then each row its own int8 scale
  std::vector<int32_t> gamma, beta;  // gamma at gamma_scale, beta at out_scale
  FixedPoint to_output;              // 2^-kNormBits gamma_scale / out_scale, set by finish()
  double row_scale = 1;              // the int8 output's scale (wide: times each row's factor)

  QLayerNorm& finish() {
    to_output = to_fixed_point(std::ldexp(gamma_scale, -kNormBits) / out_scale);
    row_scale = wide ? out_scale / 127 : out_scale;
    return *this;
  }

  static QLayerNorm make(const nn::LayerNorm& ln, double out_scale, bool wide) {
    QLayerNorm q;
    q.wide = wide;
    const std::vector<double> g = ln.weight.defined() ? ln.weight.detach().to(kFloat64).to_vector<double>()
                                                      : std::vector<double>();
    q.n = ln.weight.defined() ? static_cast<int64_t>(g.size()) : 0;
    SG_CHECK(q.n > 0, "quantize: a LayerNorm without affine weights has no integer kernel here");
    const std::vector<double> b =
        ln.bias.defined() ? ln.bias.detach().to(kFloat64).to_vector<double>() : std::vector<double>(q.n, 0.0);
    double gmax = 0;
    for (double v : g) gmax = std::max(gmax, std::fabs(v));
    // gamma to 12 bits: the kernel's product (normalized value in 2^kNormBits units, up to
    // sqrt(n) of them) times gamma stays inside int32 for n up to 2^8.
    q.gamma_scale = gmax > 0 ? gmax / 4095.0 : 1.0;
    q.out_scale = out_scale;
    for (int64_t i = 0; i < q.n; ++i) {
      q.gamma.push_back(static_cast<int32_t>(std::round(g[i] / q.gamma_scale)));
      const double bq = std::round(b[i] / out_scale);
      SG_CHECK(std::fabs(bq) < 1073741824.0, "quantize: LayerNorm bias {} at output scale {:g} is beyond int32", b[i],
               out_scale);
      q.beta.push_back(static_cast<int32_t>(bq));
    }
    return q.finish();
  }
  LayerNormParams params() const {
    LayerNormParams p;
    p.n = n;
    p.gamma = gamma.data();
    p.beta = beta.data();
    p.to_output = to_output;
    return p;
  }
  // x (rows, n) int32 -> int8 at out_scale, or (wide) per token: row r at out_scale / 127 * factor
  IntTensor run(const IntTensor& x) const { return run(x.s32.data(), x.numel() / n, n, x.shape); }
  // `rows` rows of x, ld_in apart -> a contiguous `shape` (rows, n)
  IntTensor run(const int32_t* x, int64_t rows, int64_t ld_in, const Shape& shape) const {
    if (wide) return quantize_per_token(IntType::kS8, run_wide(x, rows, ld_in).data(), shape, row_scale);
    IntTensor y;
    y.type = IntType::kS8;
    y.shape = shape;
    y.scale = row_scale;
    y.s8.resize(static_cast<size_t>(rows * n));
    layer_norm_s8(x, rows, ld_in, params(), y.s8.data(), n);
    return y;
  }
  // wide: x (rows, n) int32 -> int32 at out_scale
  std::vector<int32_t> run_wide(const int32_t* x, int64_t rows, int64_t ld_in) const {
    std::vector<int32_t> y(static_cast<size_t>(rows * n));
    layer_norm_s32(x, rows, ld_in, params(), y.data(), n);
    return y;
  }
  void save(StageWriter& w) const {
    w.real("gamma_scale", gamma_scale);
    w.real("out_scale", out_scale);
    w.text("wide", wide ? "1" : "0");
    w.text("n", std::to_string(n));
    w.ints("gamma", gamma, {n});
    w.ints("beta", beta, {n});
  }
  static QLayerNorm load(const StageReader& r) {
    QLayerNorm q;
    q.gamma_scale = r.real("gamma_scale");
    q.out_scale = r.real("out_scale");
    q.wide = r.flag("wide");
    q.n = r.shape("n").at(0);
    q.gamma = r.s32("gamma", {q.n});
    q.beta = r.s32("beta", {q.n});
    return q.finish();
  }
  int64_t bytes() const { return 8 * n; }
};

void save_linear(StageWriter& w, const std::string& part, const LinearStage& l) {
  SubPrefix sub(w, part);
  l.save(w);
}
std::unique_ptr<LinearStage> load_linear(const StageReader& r, const std::string& part) {
  SubPrefix sub(r, part);
  std::unique_ptr<Stage> s = LinearStage::load(r);
  return std::unique_ptr<LinearStage>(static_cast<LinearStage*>(s.release()));
}

void add_into(std::vector<int32_t>& acc, const std::vector<int32_t>& x) {
  for (size_t i = 0; i < acc.size(); ++i) acc[i] += x[i];
}

// ---- vit_embed ----

class VitEmbedStage : public Stage {
 public:
  struct Fields {
    int64_t image_size = 28, patch = 7, dim = 64;
    double res_scale = 1;
    std::vector<int32_t> cls;  // (dim) at res_scale, empty without a class token
    std::vector<int32_t> pos;  // (tokens', dim) at res_scale
  };
  VitEmbedStage(Fields f, std::unique_ptr<LinearStage> proj) : f_(std::move(f)), proj_(std::move(proj)) {}

  std::string kind() const override { return "vit_embed"; }

  IntTensor run(const IntTensor& x) const override {
    const int64_t S = f_.image_size / f_.patch, P = f_.patch, T = S * S;
    SG_CHECK(x.type == IntType::kS8 && x.shape.size() == 3 && x.shape[1] == f_.image_size &&
                 x.shape[2] == f_.image_size,
             "quantized ViT: expected int8 images (B, {}, {}), got {}", f_.image_size, f_.image_size, x.shape);
    const int64_t B = x.shape[0];
    IntTensor patches;  // (B, T, P*P): patch (i, j) is token i * S + j
    patches.type = IntType::kS8;
    patches.shape = {B, T, P * P};
    patches.scale = x.scale;
    patches.s8.resize(x.s8.size());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < S; ++i)
        for (int64_t j = 0; j < S; ++j)
          for (int64_t u = 0; u < P; ++u)
            for (int64_t v = 0; v < P; ++v)
              patches.s8[((b * T + i * S + j) * P + u) * P + v] =
                  x.s8[(b * f_.image_size + i * P + u) * f_.image_size + j * P + v];
    const IntTensor e = proj_->run(patches);  // (B, T, dim) int32 at res_scale
    const bool cls = !f_.cls.empty();
    const int64_t Tp = T + (cls ? 1 : 0), D = f_.dim;
    IntTensor y;
    y.type = IntType::kS32;
    y.shape = {B, Tp, D};
    y.scale = f_.res_scale;
    y.s32.resize(static_cast<size_t>(B * Tp * D));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < Tp; ++t)
        for (int64_t c = 0; c < D; ++c) {
          const int32_t token = cls && t == 0 ? f_.cls[c] : e.s32[(b * T + t - (cls ? 1 : 0)) * D + c];
          y.s32[(b * Tp + t) * D + c] = token + f_.pos[t * D + c];
        }
    return y;
  }

  void save(StageWriter& w) const override {
    w.text("image_size", std::to_string(f_.image_size));
    w.text("patch", std::to_string(f_.patch));
    w.text("dim", std::to_string(f_.dim));
    w.real("res_scale", f_.res_scale);
    w.text("cls", f_.cls.empty() ? "0" : "1");
    if (!f_.cls.empty()) w.ints("cls_token", f_.cls, {f_.dim});
    w.ints("pos_embed", f_.pos, {static_cast<int64_t>(f_.pos.size()) / f_.dim, f_.dim});
    save_linear(w, "patch_embed.", *proj_);
  }
  static std::unique_ptr<Stage> load(const StageReader& r) {
    Fields f;
    f.image_size = r.shape("image_size").at(0);
    f.patch = r.shape("patch").at(0);
    f.dim = r.shape("dim").at(0);
    SG_CHECK(f.image_size % f.patch == 0, "QuantizedModel::load: {}patch {} does not divide image_size {}", r.prefix,
             f.patch, f.image_size);
    f.res_scale = r.real("res_scale");
    const std::string cls = r.text("cls");
    SG_CHECK(cls == "0" || cls == "1", "QuantizedModel::load: {}cls is '{}', not 0 or 1", r.prefix, cls);
    if (cls == "1") f.cls = r.s32("cls_token", {f.dim});
    const int64_t T = (f.image_size / f.patch) * (f.image_size / f.patch) + (cls == "1" ? 1 : 0);
    f.pos = r.s32("pos_embed", {T, f.dim});
    auto proj = load_linear(r, "patch_embed.");
    SG_CHECK(proj->fields().in == f.patch * f.patch && proj->fields().out == f.dim &&
                 proj->fields().output == LinearOutput::kS32,
             "QuantizedModel::load: {}patch_embed does not match patch {} and dim {}", r.prefix, f.patch, f.dim);
    return std::make_unique<VitEmbedStage>(std::move(f), std::move(proj));
  }
  int64_t parameter_bytes() const override {
    return proj_->parameter_bytes() + static_cast<int64_t>(4 * (f_.cls.size() + f_.pos.size()));
  }
  std::string describe() const override {
    return fmt::format("vit_embed: {}x{} patches of {} px -> {} (residual scale {:.4g}){}", f_.image_size / f_.patch,
                       f_.image_size / f_.patch, f_.patch, proj_->describe(), f_.res_scale,
                       f_.cls.empty() ? "" : ", class token");
  }

 private:
  Fields f_;
  std::unique_ptr<LinearStage> proj_;
};

}  // namespace

IntTensor int8_attention(const IntTensor& qkv, int64_t heads, const ExpParams& exp, FixedPoint requant,
                         double out_scale, double per_token_scale) {
  SG_CHECK(qkv.type == IntType::kS8 && qkv.shape.size() == 3 && qkv.shape[2] % (3 * heads) == 0,
           "int8_attention: expected int8 qkv (B, T, 3 dim) with dim a multiple of {} heads, got {}", heads,
           qkv.shape);
  const int64_t B = qkv.shape[0], T = qkv.shape[1], D = qkv.shape[2] / 3, H = heads, hd = D / H;
  // Scratch buffers, every element written before it is read (no zero fill).
  const int64_t n_scores = B * H * T * T, n_out = B * T * D;
  const auto scores = std::make_unique_for_overwrite<int32_t[]>(static_cast<size_t>(n_scores));
  // S = Q K^T per (b, h): the rows of head h are columns [h hd, (h + 1) hd) of q and of k.
  gemm_int8({.batch0 = B, .batch1 = H, .M = T, .N = T, .K = hd,
             .a = qkv.s8.data(), .a_signed = true, .lda = 3 * D, .a_stride0 = T * 3 * D, .a_stride1 = hd,
             .b = qkv.s8.data() + D, .trans_b = true, .ldb = 3 * D, .b_stride0 = T * 3 * D, .b_stride1 = hd,
             .c = scores.get(), .ldc = T, .c_stride0 = H * T * T, .c_stride1 = T * T});
  const auto probs = std::make_unique_for_overwrite<uint8_t[]>(static_cast<size_t>(n_scores));
  softmax_u8(scores.get(), B * H * T, T, T, exp, probs.get(), T);
  const auto out = std::make_unique_for_overwrite<int32_t[]>(static_cast<size_t>(n_out));
  // O = P V per (b, h), written as (B, T, H, hd): the heads already merged.
  gemm_int8({.batch0 = B, .batch1 = H, .M = T, .N = hd, .K = T,
             .a = probs.get(), .a_signed = false, .lda = T, .a_stride0 = H * T * T, .a_stride1 = T * T,
             .b = qkv.s8.data() + 2 * D, .trans_b = false, .ldb = 3 * D, .b_stride0 = T * 3 * D, .b_stride1 = hd,
             .c = out.get(), .ldc = D, .c_stride0 = T * D, .c_stride1 = hd});
  // per-token: each token's row by its own largest |value|
  if (per_token_scale > 0) return quantize_per_token(IntType::kS8, out.get(), {B, T, D}, per_token_scale);
  IntTensor y;
  y.type = IntType::kS8;
  y.shape = {B, T, D};
  y.scale = out_scale;
  y.s8.resize(static_cast<size_t>(n_out));
  requantize_s8(out.get(), B * T, D, D, &requant, false, -127, 127, y.s8.data(), D);
  return y;
}

namespace {

// ---- vit_layer ----

class VitLayerStage : public Stage {
 public:
  struct Parts {
    int64_t heads = 1;
    double res_scale = 1, q_scale = 1, k_scale = 1, v_scale = 1, attn_scale = 1;
    bool per_token = false;  // the attention's output quantized per token (the rest is in the parts)
    QLayerNorm ln1, ln2;
    std::unique_ptr<LinearStage> in_proj, out_proj, linear1, linear2;
  };
  explicit VitLayerStage(Parts p) : p_(std::move(p)) {
    dim_ = p_.ln1.n;
    SG_CHECK(dim_ % p_.heads == 0, "quantized ViT layer: dim {} is not a multiple of {} heads", dim_, p_.heads);
    head_dim_ = dim_ / p_.heads;
    exp_ = make_exp_params(p_.q_scale * p_.k_scale / std::sqrt(static_cast<double>(head_dim_)));
    attn_requant_ = to_fixed_point(p_.v_scale / 256.0 / p_.attn_scale);
    per_token_scale_ = p_.per_token ? p_.v_scale / 256.0 / 127 : 0;
  }

  std::string kind() const override { return "vit_layer"; }

  IntTensor run(const IntTensor& x) const override {
    SG_CHECK(x.type == IntType::kS32 && x.shape.size() == 3 && x.shape[2] == dim_,
             "quantized ViT layer: expected the int32 residual stream (B, T, {}), got {}", dim_, x.shape);
    IntTensor h = x;
    add_into(h.s32, p_.out_proj->run(attention(p_.in_proj->run(p_.ln1.run(h)))).s32);
    add_into(h.s32, p_.linear2->run(p_.linear1->run(p_.ln2.run(h))).s32);
    return h;
  }

  void save(StageWriter& w) const override {
    w.text("heads", std::to_string(p_.heads));
    w.text("per_token", p_.per_token ? "1" : "0");
    for (const auto& [key, value] : {std::pair{"res_scale", p_.res_scale}, std::pair{"q_scale", p_.q_scale},
                                     std::pair{"k_scale", p_.k_scale}, std::pair{"v_scale", p_.v_scale},
                                     std::pair{"attn_scale", p_.attn_scale}})
      w.real(key, value);
    {
      SubPrefix sub(w, "ln1.");
      p_.ln1.save(w);
    }
    {
      SubPrefix sub(w, "ln2.");
      p_.ln2.save(w);
    }
    save_linear(w, "in_proj.", *p_.in_proj);
    save_linear(w, "out_proj.", *p_.out_proj);
    save_linear(w, "linear1.", *p_.linear1);
    save_linear(w, "linear2.", *p_.linear2);
  }
  static std::unique_ptr<Stage> load(const StageReader& r) {
    Parts p;
    p.heads = r.shape("heads").at(0);
    p.per_token = r.flag("per_token");
    p.res_scale = r.real("res_scale");
    p.q_scale = r.real("q_scale");
    p.k_scale = r.real("k_scale");
    p.v_scale = r.real("v_scale");
    p.attn_scale = r.real("attn_scale");
    {
      SubPrefix sub(r, "ln1.");
      p.ln1 = QLayerNorm::load(r);
    }
    {
      SubPrefix sub(r, "ln2.");
      p.ln2 = QLayerNorm::load(r);
    }
    p.in_proj = load_linear(r, "in_proj.");
    p.out_proj = load_linear(r, "out_proj.");
    p.linear1 = load_linear(r, "linear1.");
    p.linear2 = load_linear(r, "linear2.");
    const int64_t d = p.ln1.n;
    SG_CHECK(p.ln2.n == d && p.in_proj->fields().in == d && p.in_proj->fields().out == 3 * d &&
                 p.out_proj->fields().in == d && p.out_proj->fields().out == d && p.linear1->fields().in == d &&
                 p.linear2->fields().out == d && p.linear2->fields().in == p.linear1->fields().out,
             "QuantizedModel::load: {}the layer's parts do not fit together (dim {})", r.prefix, d);
    SG_CHECK(p.ln1.wide == p.per_token && p.ln2.wide == p.per_token && p.in_proj->fields().per_token_in == p.per_token &&
                 p.out_proj->fields().per_token_in == p.per_token && p.linear1->fields().per_token_in == p.per_token &&
                 p.linear1->fields().per_token_out == p.per_token && p.linear2->fields().per_token_in == p.per_token,
             "QuantizedModel::load: {}the layer's parts disagree on per-token activations", r.prefix);
    return std::make_unique<VitLayerStage>(std::move(p));
  }
  int64_t parameter_bytes() const override {
    return p_.ln1.bytes() + p_.ln2.bytes() + p_.in_proj->parameter_bytes() + p_.out_proj->parameter_bytes() +
           p_.linear1->parameter_bytes() + p_.linear2->parameter_bytes();
  }
  std::string describe() const override {
    return fmt::format("vit_layer: {} heads of {}; LN, {}; softmax int32 -> u8; {}; LN, {}, {}", p_.heads, head_dim_,
                       p_.in_proj->describe(), p_.out_proj->describe(), p_.linear1->describe(),
                       p_.linear2->describe());
  }

 private:
  IntTensor attention(const IntTensor& qkv) const {
    return int8_attention(qkv, p_.heads, exp_, attn_requant_, p_.attn_scale, per_token_scale_);
  }

  Parts p_;
  int64_t dim_ = 0, head_dim_ = 0;
  ExpParams exp_;
  FixedPoint attn_requant_;
  double per_token_scale_ = 0;  // per-token: the attention output's base scale
};

// ---- vit_head ----

class VitHeadStage : public Stage {
 public:
  VitHeadStage(QLayerNorm norm, bool cls, int64_t tokens, double pool_scale, std::unique_ptr<LinearStage> head)
      : norm_(std::move(norm)), cls_(cls), tokens_(tokens), pool_scale_(pool_scale), head_(std::move(head)),
        mean_requant_(to_fixed_point(norm_.out_scale / static_cast<double>(tokens) / pool_scale)) {}

  std::string kind() const override { return "vit_head"; }

  IntTensor run(const IntTensor& x) const override {
    SG_CHECK(x.type == IntType::kS32 && x.shape.size() == 3 && x.shape[2] == norm_.n,
             "quantized ViT head: expected the int32 residual stream (B, T, {}), got {}", norm_.n, x.shape);
    SG_CHECK(x.shape[1] == tokens_, "quantized ViT head: expected {} tokens, got {}", tokens_, x.shape[1]);
    const int64_t B = x.shape[0], T = x.shape[1], D = norm_.n;
    // class token: only token 0 of each image is normalized (rows T D apart)
    if (cls_) return head_->run(norm_.run(x.s32.data(), B, T * D, {B, D}));
    IntTensor pooled;
    pooled.type = IntType::kS8;
    pooled.shape = {B, D};
    if (norm_.wide) {  // mean over tokens: the int32 sum, then each image's row its own scale
      const std::vector<int32_t> n = norm_.run_wide(x.s32.data(), B * T, D);
      std::vector<int32_t> sum(static_cast<size_t>(B * D));
      for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < D; ++c) {
          int64_t s = 0;
          for (int64_t t = 0; t < T; ++t) s += n[(b * T + t) * D + c];
          sum[b * D + c] = static_cast<int32_t>(std::clamp<int64_t>(s, -(int64_t{1} << 30), int64_t{1} << 30));
        }
      pooled = quantize_per_token(IntType::kS8, sum.data(), {B, D}, pool_scale_);  // the norm's fine scale / T / 127
    } else {  // mean over tokens: an int32 sum, requantized with the 1 / T folded in
      const IntTensor n = norm_.run(x);  // (B, T, D) int8
      pooled.scale = pool_scale_;
      pooled.s8.resize(static_cast<size_t>(B * D));
      std::vector<int32_t> sum(static_cast<size_t>(B * D), 0);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < T; ++t)
          for (int64_t c = 0; c < D; ++c) sum[b * D + c] += n.s8[(b * T + t) * D + c];
      requantize_s8(sum.data(), B, D, D, &mean_requant_, false, -127, 127, pooled.s8.data(), D);
    }
    return head_->run(pooled);
  }

  void save(StageWriter& w) const override {
    w.text("cls", cls_ ? "1" : "0");
    w.text("tokens", std::to_string(tokens_));
    w.real("pool_scale", pool_scale_);
    {
      SubPrefix sub(w, "norm.");
      norm_.save(w);
    }
    save_linear(w, "head.", *head_);
  }
  static std::unique_ptr<Stage> load(const StageReader& r) {
    const std::string cls = r.text("cls");
    SG_CHECK(cls == "0" || cls == "1", "QuantizedModel::load: {}cls is '{}', not 0 or 1", r.prefix, cls);
    const double pool_scale = r.real("pool_scale");
    const int64_t tokens = r.shape("tokens").at(0);
    QLayerNorm norm;
    {
      SubPrefix sub(r, "norm.");
      norm = QLayerNorm::load(r);
    }
    auto head = load_linear(r, "head.");
    SG_CHECK(head->fields().in == norm.n && head->fields().output == LinearOutput::kLogits &&
                 head->fields().per_token_in == norm.wide,
             "QuantizedModel::load: {}the head does not fit the norm (dim {})", r.prefix, norm.n);
    return std::make_unique<VitHeadStage>(std::move(norm), cls == "1", tokens, pool_scale, std::move(head));
  }
  int64_t parameter_bytes() const override { return norm_.bytes() + head_->parameter_bytes(); }
  std::string describe() const override {
    return fmt::format("vit_head: LN, {} pooling, {}", cls_ ? "class-token" : "mean", head_->describe());
  }

 private:
  QLayerNorm norm_;
  bool cls_;
  int64_t tokens_;  // with the class token
  double pool_scale_;
  std::unique_ptr<LinearStage> head_;
  FixedPoint mean_requant_;  // the token sum -> pool_scale, 1 / tokens folded in
};

// ---- calibration: the float model step by step, as the integer one runs ----

struct LayerRanges {
  Observer ln1, q, k, v, attn, ln2, pre, gelu;
};
struct VitRanges {
  Observer input, residual, norm, pooled, logits;
  std::vector<LayerRanges> layers;
};

// The float forward of `vit`, observing every activation the integer pipeline quantizes;
// returns the logits (checked against vit.forward by the caller).
Tensor observed_forward(nn::VisionTransformer& vit, const Tensor& images, VitRanges& r) {
  const nn::VisionTransformerOptions& o = vit.options();
  r.input.add(images);
  const int64_t B = images.size(0);
  Tensor x = vit.patch_embed->forward(vit.patchify(images));
  if (vit.cls_token.defined()) x = cat({vit.cls_token.expand({B, 1, o.dim}), x}, 1);
  x = x + vit.pos_embed;
  r.residual.add(x);
  const int64_t T = x.size(1), H = o.heads, hd = o.dim / o.heads;
  for (size_t l = 0; l < vit.layers->size(); ++l) {
    const auto layer = vit.layers->at<nn::TransformerEncoderLayer>(l);
    LayerRanges& lr = r.layers[l];
    const nn::MultiHeadAttention& mha = *layer->self_attn;
    const Tensor h = layer->norm1->forward(x);
    lr.ln1.add(h);
    const Tensor qkv = linear(h, mha.in_proj_weight, mha.in_proj_bias);  // (B, T, 3 dim)
    auto heads = [&](int64_t part) {
      const Tensor t = narrow(qkv, 2, part * o.dim, o.dim);
      return t.reshape({B, T, H, hd}).transpose(1, 2);
    };
    const Tensor q = heads(0), k = heads(1), v = heads(2);
    lr.q.add(q);
    lr.k.add(k);
    lr.v.add(v);
    const Tensor a = scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape({B, T, o.dim});
    lr.attn.add(a);
    x = x + mha.out_proj->forward(a);
    r.residual.add(x);
    const Tensor h2 = layer->norm2->forward(x);
    lr.ln2.add(h2);
    const Tensor u = layer->linear1->forward(h2);
    lr.pre.add(u);
    const Tensor g = gelu(u);
    lr.gelu.add(g);
    x = x + layer->linear2->forward(g);
    r.residual.add(x);
  }
  const Tensor n = vit.norm->forward(x);
  r.norm.add(n);
  const Tensor pooled = vit.cls_token.defined() ? select(n, 1, 0) : mean(n, {1});
  r.pooled.add(pooled);
  const Tensor logits = vit.head->forward(pooled);
  r.logits.add(logits);
  return logits;
}

}  // namespace

std::unique_ptr<Stage> load_vit_stage(const std::string& kind, const StageReader& r) {
  if (kind == "vit_embed") return VitEmbedStage::load(r);
  if (kind == "vit_layer") return VitLayerStage::load(r);
  if (kind == "vit_head") return VitHeadStage::load(r);
  return nullptr;
}

QuantizedModel quantize_vit(nn::VisionTransformer& vit, const std::vector<Tensor>& batches, const QuantizeOptions& o) {
  const nn::VisionTransformerOptions& opt = vit.options();
  for (size_t l = 0; l < vit.layers->size(); ++l) {
    const auto layer = std::dynamic_pointer_cast<nn::TransformerEncoderLayer>((*vit.layers)[l]);
    SG_CHECK(layer && layer->options.norm_first && layer->options.activation == nn::Activation::GELU,
             "quantize: ViT layer {} must be a pre-norm TransformerEncoderLayer with GELU (the integer pipeline's)", l);
    SG_CHECK(layer->self_attn->in_proj_bias.defined() && layer->self_attn->out_proj->bias.defined(),
             "quantize: ViT layer {}: attention without biases has no integer pipeline here", l);
  }
  VitRanges r;
  r.layers.resize(vit.layers->size());
  // An int8 activation's scale: range / 127; per-token, the int32 value's fine scale.
  auto activation_scale = [&](const Observer& ob) { return ob.range(o) / (o.per_token ? kFineSteps : 127.0); };
  {
    NoGradGuard no_grad;
    for (size_t i = 0; i < batches.size(); ++i) {
      const Tensor images = batches[i].detach().to(kFloat32);
      const Tensor mirrored = observed_forward(vit, images, r);
      // The mirror must be the model: otherwise the scales describe another computation.
      const double gap = max(abs(mirrored - vit.forward(images))).item<double>();
      SG_CHECK(gap <= 1e-3 * (1.0 + max(abs(mirrored)).item<double>()),
               "quantize: internal error: the ViT's calibration pass differs from its forward by {} (batch {})", gap,
               i);
    }
  }
  const double in_scale = r.input.range(o) / 127.0;
  const double res_scale = r.residual.range(o) / kResidualRange;
  QuantizedModel q;
  q.set_input({opt.image_size, opt.image_size}, in_scale);

  // vit_embed
  {
    LinearStage::Fields pf = LinearStage::quantize_weights(vit.patch_embed->weight, vit.patch_embed->bias, in_scale);
    pf.in_type = IntType::kS8;
    pf.output = LinearOutput::kS32;
    pf.out_scale = res_scale;
    VitEmbedStage::Fields f;
    f.image_size = opt.image_size;
    f.patch = opt.patch;
    f.dim = opt.dim;
    f.res_scale = res_scale;
    auto to_res = [&](const Tensor& t) {
      std::vector<int32_t> out;
      for (double v : t.detach().to(kFloat64).contiguous().to_vector<double>())
        out.push_back(static_cast<int32_t>(std::round(v / res_scale)));
      return out;
    };
    if (vit.cls_token.defined()) f.cls = to_res(vit.cls_token);
    f.pos = to_res(vit.pos_embed);
    q.add_stage(std::make_unique<VitEmbedStage>(std::move(f), std::make_unique<LinearStage>(std::move(pf))));
  }
  // vit_layer
  for (size_t l = 0; l < vit.layers->size(); ++l) {
    const auto layer = vit.layers->at<nn::TransformerEncoderLayer>(l);
    const LayerRanges& lr = r.layers[l];
    const nn::MultiHeadAttention& mha = *layer->self_attn;
    VitLayerStage::Parts p;
    p.heads = opt.heads;
    p.res_scale = res_scale;
    p.q_scale = lr.q.range(o) / 127.0;
    p.k_scale = lr.k.range(o) / 127.0;
    p.v_scale = lr.v.range(o) / 127.0;
    p.attn_scale = lr.attn.range(o) / 127.0;
    p.per_token = o.per_token;
    // per-token: the LayerNorms' int32 outputs at range / 2^16, each row then its own int8 scale
    p.ln1 = QLayerNorm::make(*layer->norm1, activation_scale(lr.ln1), o.per_token);
    p.ln2 = QLayerNorm::make(*layer->norm2, activation_scale(lr.ln2), o.per_token);
    // A Linear reading an input of base scale in_scale (per-token: times each row's factor).
    auto linear = [&](const Tensor& weight, const Tensor& bias, double in_scale, auto&& set_output) {
      LinearStage::Fields f = LinearStage::quantize_weights(weight, bias, in_scale, o.per_token);
      set_output(f);
      if (f.per_token_in) LinearStage::bias_at_targets(f, bias);
      return std::make_unique<LinearStage>(std::move(f));
    };
    const double ln1_in = o.per_token ? p.ln1.out_scale / 127 : p.ln1.out_scale;
    const double ln2_in = o.per_token ? p.ln2.out_scale / 127 : p.ln2.out_scale;
    const double attn_in = o.per_token ? p.v_scale / 256.0 / 127 : p.attn_scale;
    p.in_proj = linear(mha.in_proj_weight, mha.in_proj_bias, ln1_in, [&](LinearStage::Fields& f) {
      f.output = LinearOutput::kS8;  // q, k, v static
      for (int64_t c = 0; c < 3 * opt.dim; ++c)
        f.column_out_scale.push_back(c < opt.dim ? p.q_scale : c < 2 * opt.dim ? p.k_scale : p.v_scale);
      f.out_scale = p.q_scale;  // bookkeeping only: the columns carry their own
    });
    p.out_proj = linear(mha.out_proj->weight, mha.out_proj->bias, attn_in, [&](LinearStage::Fields& f) {
      f.output = LinearOutput::kS32;
      f.out_scale = res_scale;
    });
    p.linear1 = linear(layer->linear1->weight, layer->linear1->bias, ln2_in, [&](LinearStage::Fields& f) {
      f.output = LinearOutput::kS8Gelu;
      f.pre_scale = lr.pre.range(o) / 16384.0;
      f.per_token_out = o.per_token;
      f.fine_scale = lr.gelu.range(o) / kFineSteps;
      f.out_scale = o.per_token ? f.fine_scale / 127 : lr.gelu.range(o) / 127.0;
    });
    const double gelu_in = p.linear1->fields().out_scale;
    p.linear2 = linear(layer->linear2->weight, layer->linear2->bias, gelu_in, [&](LinearStage::Fields& f) {
      f.output = LinearOutput::kS32;
      f.out_scale = res_scale;
    });
    q.add_stage(std::make_unique<VitLayerStage>(std::move(p)));
  }
  // vit_head
  {
    QLayerNorm norm = QLayerNorm::make(*vit.norm, activation_scale(r.norm), o.per_token);
    const bool cls = vit.cls_token.defined();
    const double tokens = static_cast<double>(vit.pos_embed.size(1));
    const double pooled_scale = o.per_token ? norm.out_scale / 127 / (cls ? 1.0 : tokens)
                                : cls       ? norm.out_scale
                                            : r.pooled.range(o) / 127.0;
    LinearStage::Fields hf =
        LinearStage::quantize_weights(vit.head->weight, vit.head->bias, pooled_scale, o.per_token);
    hf.output = LinearOutput::kLogits;
    hf.fine_scale = r.logits.range(o) / kFineSteps;
    if (hf.per_token_in) LinearStage::bias_at_targets(hf, vit.head->bias);
    q.add_stage(std::make_unique<VitHeadStage>(std::move(norm), cls, vit.pos_embed.size(1), pooled_scale,
                                               std::make_unique<LinearStage>(std::move(hf))));
  }
  return q;
}

}  // namespace sg::quant
