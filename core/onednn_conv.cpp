// See core/onednn.h (2-D convolution). One cached entry per (OnednnConv, kind): the
// primitive oneDNN picked with format "any" for every operand, and for each operand whose
// chosen layout differs from softgrad's NCHW / OIHW a reorder to or from it. The reordered
// copies live in per-thread buffers that grow to the largest convolution seen, so a training
// step allocates nothing.
#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "core/onednn.h"
#include "core/onednn_detail.h"

namespace sg {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using onednn_detail::cpu_engine;
using onednn_detail::thread_stream;

enum class Kind { Forward, BackwardData, BackwardWeights };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Forward: return "fwd";
    case Kind::BackwardData: return "bwd_d";
    case Kind::BackwardWeights: return "bwd_w";
  }
  return "?";
}

// The operand descriptors of one convolution: softgrad's plain layouts with their types, and
// "any" (oneDNN chooses) for the primitive.
struct ConvDescs {
  dnnl::memory::dims src, weights, bias, dst, strides, dilates, pad_l, pad_r;
  tag weights_tag;
};

ConvDescs conv_descs(const OnednnConv& c) {
  ConvDescs d;
  d.src = {c.N, c.C, c.H, c.W};
  d.dst = {c.N, c.O, c.Ho, c.Wo};
  d.bias = {c.O};
  if (c.groups == 1) {
    d.weights = {c.O, c.C, c.kh, c.kw};
    d.weights_tag = tag::oihw;
  } else {
    d.weights = {c.groups, c.O / c.groups, c.C / c.groups, c.kh, c.kw};
    d.weights_tag = tag::goihw;
  }
  d.strides = {c.sh, c.sw};
  d.dilates = {c.dh - 1, c.dw - 1};  // oneDNN counts the gaps: 0 = dense
  d.pad_l = {c.pad_top, c.pad_left};
  d.pad_r = {c.pad_bottom, c.pad_right};
  return d;
}

dnnl::algorithm algorithm(const OnednnConv& c) {
  return c.winograd ? dnnl::algorithm::convolution_winograd : dnnl::algorithm::convolution_direct;
}

dnnl::memory::desc any_md(const dnnl::memory::dims& dims, dt type) { return {dims, type, tag::any}; }

// A zero descriptor where there is no bias: oneDNN then builds the primitive without one.
dnnl::memory::desc bias_md(const ConvDescs& d, bool with_bias) {
  return with_bias ? any_md(d.bias, dt::f32) : dnnl::memory::desc();
}

dnnl::convolution_forward::primitive_desc forward_pd(const OnednnConv& c, bool with_bias) {
  const ConvDescs d = conv_descs(c);
  const dt in = c.bf16 ? dt::bf16 : dt::f32;
  dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_training, algorithm(c), any_md(d.src, in),
                                       any_md(d.weights, in), bias_md(d, with_bias), any_md(d.dst, dt::f32),
                                       d.strides, d.dilates, d.pad_l, d.pad_r);
  return {desc, cpu_engine()};
}

// One operand of a cached primitive: its argument id, softgrad's layout, the primitive's,
// and the reorder between them when they differ (user -> primitive for an input,
// primitive -> user for an output).
struct Operand {
  int arg = 0;
  dnnl::memory::desc user, prim;
  bool output = false;
  std::optional<dnnl::reorder> reorder;
};

// A primitive and its operands, or (error set, no primitive) why oneDNN has none for the key.
struct CachedConv {
  dnnl::primitive prim;
  std::vector<Operand> operands;
  std::string impl;
  std::string error;
};

Operand operand(int arg, const dnnl::memory::desc& user, const dnnl::memory::desc& prim, bool output) {
  Operand o{arg, user, prim, output, std::nullopt};
  const dnnl::memory::desc& from = output ? prim : user;
  const dnnl::memory::desc& to = output ? user : prim;
  if (user != prim) o.reorder = dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), from, cpu_engine(), to));
  return o;
}

CachedConv make_conv(const OnednnConv& c, Kind kind, bool with_bias) {
  const ConvDescs d = conv_descs(c);
  const dt in = c.bf16 ? dt::bf16 : dt::f32;
  const dnnl::memory::desc src_user(d.src, in, tag::nchw), w_user(d.weights, in, d.weights_tag),
      dst_user(d.dst, dt::f32, tag::nchw), dy_user(d.dst, in, tag::nchw), dx_user(d.src, dt::f32, tag::nchw),
      dw_user(d.weights, dt::f32, d.weights_tag), bias_user(d.bias, dt::f32, tag::x);
  const auto hint = forward_pd(c, /*with_bias=*/true);  // the backward primitives' forward hint
  CachedConv out;
  switch (kind) {
    case Kind::Forward: {
      const auto pd = forward_pd(c, with_bias);
      out.prim = dnnl::convolution_forward(pd);
      out.impl = pd.impl_info_str();
      out.operands = {operand(DNNL_ARG_SRC, src_user, pd.src_desc(), false),
                      operand(DNNL_ARG_WEIGHTS, w_user, pd.weights_desc(), false),
                      operand(DNNL_ARG_DST, dst_user, pd.dst_desc(), true)};
      if (with_bias) out.operands.push_back(operand(DNNL_ARG_BIAS, bias_user, pd.bias_desc(), false));
      break;
    }
    case Kind::BackwardData: {
      dnnl::convolution_backward_data::desc desc(algorithm(c), any_md(d.src, dt::f32),
                                                 any_md(d.weights, in), any_md(d.dst, in), d.strides, d.dilates,
                                                 d.pad_l, d.pad_r);
      dnnl::convolution_backward_data::primitive_desc pd(desc, cpu_engine(), hint);
      out.prim = dnnl::convolution_backward_data(pd);
      out.impl = pd.impl_info_str();
      out.operands = {operand(DNNL_ARG_DIFF_DST, dy_user, pd.diff_dst_desc(), false),
                      operand(DNNL_ARG_WEIGHTS, w_user, pd.weights_desc(), false),
                      operand(DNNL_ARG_DIFF_SRC, dx_user, pd.diff_src_desc(), true)};
      break;
    }
    case Kind::BackwardWeights: {
      dnnl::convolution_backward_weights::desc desc(algorithm(c), any_md(d.src, in), any_md(d.weights, dt::f32),
                                                    bias_md(d, with_bias), any_md(d.dst, in), d.strides, d.dilates,
                                                    d.pad_l, d.pad_r);
      dnnl::convolution_backward_weights::primitive_desc pd(desc, cpu_engine(), hint);
      out.prim = dnnl::convolution_backward_weights(pd);
      out.impl = pd.impl_info_str();
      out.operands = {operand(DNNL_ARG_SRC, src_user, pd.src_desc(), false),
                      operand(DNNL_ARG_DIFF_DST, dy_user, pd.diff_dst_desc(), false),
                      operand(DNNL_ARG_DIFF_WEIGHTS, dw_user, pd.diff_weights_desc(), true)};
      if (with_bias) out.operands.push_back(operand(DNNL_ARG_DIFF_BIAS, bias_user, pd.diff_bias_desc(), true));
      break;
    }
  }
  return out;
}

struct ConvKey {
  OnednnConv conv;
  Kind kind;
  bool bias;
  auto operator<=>(const ConvKey&) const = default;
};

struct ConvCache {
  std::mutex mutex;
  std::map<ConvKey, std::shared_ptr<const CachedConv>> primitives;  // refusals included
  std::vector<std::string> impls;  // "kind impl", first-use order
};

ConvCache& conv_cache() {
  static ConvCache cache;
  return cache;
}

std::string describe(const OnednnConv& c) {
  return fmt::format("x [{}, {}, {}, {}] w [{}, {}, {}, {}] groups {} stride ({}, {}) dilation ({}, {}) pad ({}, {}, "
                     "{}, {}) {}{}",
                     c.N, c.C, c.H, c.W, c.O, c.C / c.groups, c.kh, c.kw, c.groups, c.sh, c.sw, c.dh, c.dw, c.pad_top,
                     c.pad_left, c.pad_bottom, c.pad_right, c.bf16 ? "bf16" : "f32", c.winograd ? " winograd" : "");
}

// The cached entry for the key, made on first use. A convolution oneDNN has no kernel for
// (Winograd on a CPU without them) is asked about on every conv2d call: its refusal is
// cached too, as an entry with `error` set.
std::shared_ptr<const CachedConv> find_conv(const OnednnConv& c, Kind kind, bool bias) {
  ConvCache& cache = conv_cache();
  const ConvKey key{c, kind, bias};
  std::lock_guard lock(cache.mutex);
  if (auto it = cache.primitives.find(key); it != cache.primitives.end()) return it->second;
  std::shared_ptr<const CachedConv> entry;
  try {
    entry = std::make_shared<const CachedConv>(make_conv(c, kind, bias));
    const std::string name = fmt::format("{} {}", kind_name(kind), entry->impl);
    if (std::find(cache.impls.begin(), cache.impls.end(), name) == cache.impls.end()) cache.impls.push_back(name);
  } catch (const dnnl::error& e) {
    CachedConv refused;
    refused.error = fmt::format("conv2d: oneDNN has no {} convolution for {} ({})", kind_name(kind), describe(c),
                                e.what());
    entry = std::make_shared<const CachedConv>(std::move(refused));
  }
  cache.primitives.emplace(key, entry);
  return entry;
}

// The entry, which must have a primitive.
std::shared_ptr<const CachedConv> cached_conv(const OnednnConv& c, Kind kind, bool bias) {
  std::shared_ptr<const CachedConv> entry = find_conv(c, kind, bias);
  if (!entry->error.empty()) throw Error(entry->error);
  return entry;
}

// One op's execution: runs cached primitives in turn, reordering each input that needs it
// once (backward's dy feeds both products: reordered once when both take the same layout).
// Reordered copies live in per-thread buffers that grow to the largest convolution seen.
class Execution {
 public:
  Execution() : engine_(cpu_engine()), stream_(thread_stream()) {}
  ~Execution() = default;

  // The forward's reordered x goes to `to` (not a per-thread buffer), so that it outlives
  // the call; when x needs no reorder nothing is written there.
  void place_src_at(void* to) { src_to_ = to; }
  // x for the weight gradient is the forward's reordered copy at `at`, in layout `layout`
  // (reordered once more if this primitive wants another).
  void take_src_from(const void* at, const dnnl::memory::desc& layout) {
    src_from_ = dnnl::memory(layout, engine_, const_cast<void*>(at));
  }

  // ptrs: the user's pointers in the order of the entry's operands.
  void run(const CachedConv& conv, const std::vector<void*>& ptrs) {
    std::unordered_map<int, dnnl::memory> args;
    std::vector<std::pair<const Operand*, std::pair<dnnl::memory, dnnl::memory>>> outputs;  // (prim, user)
    for (size_t i = 0; i < conv.operands.size(); ++i) {
      const Operand& o = conv.operands[i];
      if (o.arg == DNNL_ARG_SRC && src_from_) {
        args.emplace(o.arg, src_in_layout(o.prim));
        continue;
      }
      dnnl::memory user(o.user, engine_, ptrs[i]);
      if (!o.reorder) {
        args.emplace(o.arg, user);
      } else if (o.output) {
        dnnl::memory prim(o.prim, engine_, buffer(o.prim.get_size()));
        outputs.push_back({&o, {prim, user}});
        args.emplace(o.arg, prim);
      } else if (o.arg == DNNL_ARG_SRC && src_to_) {
        dnnl::memory placed(o.prim, engine_, src_to_);
        o.reorder->execute(stream_, user, placed);
        args.emplace(o.arg, placed);
      } else {
        args.emplace(o.arg, reordered_input(o, user, ptrs[i]));
      }
    }
    conv.prim.execute(stream_, args);
    for (auto& [o, mems] : outputs) o->reorder->execute(stream_, mems.first, mems.second);
    stream_.wait();
  }

 private:
  dnnl::memory src_in_layout(const dnnl::memory::desc& wanted) {
    const dnnl::memory::desc have = src_from_.get_desc();
    if (have == wanted) return src_from_;
    dnnl::memory out(wanted, engine_, buffer(wanted.get_size()));  // a rare case: no cached reorder
    dnnl::reorder(dnnl::reorder::primitive_desc(engine_, have, engine_, wanted)).execute(stream_, src_from_, out);
    return out;
  }
  dnnl::memory reordered_input(const Operand& o, dnnl::memory user, void* ptr) {
    for (const auto& [p, mem] : inputs_)
      if (p == ptr && mem.get_desc() == o.prim) return mem;
    dnnl::memory prim(o.prim, engine_, buffer(o.prim.get_size()));
    o.reorder->execute(stream_, user, prim);
    inputs_.emplace_back(ptr, prim);
    return prim;
  }
  // 64-byte aligned, as oneDNN's own allocations (its Winograd kernels use aligned loads).
  std::byte* buffer(size_t bytes) {
    struct Buffer {
      std::unique_ptr<std::byte, decltype(&std::free)> data{nullptr, &std::free};
      size_t size = 0;
    };
    thread_local std::vector<Buffer> buffers;
    if (buffers.size() <= used_) buffers.resize(used_ + 1);
    Buffer& b = buffers[used_++];
    if (b.size < bytes) {
      const size_t rounded = (bytes + 63) / 64 * 64;
      b.data.reset(static_cast<std::byte*>(std::aligned_alloc(64, rounded)));
      SG_CHECK(b.data, "conv2d: cannot allocate {} bytes for oneDNN's operand layout", rounded);
      b.size = rounded;
    }
    return b.data.get();
  }

  dnnl::engine& engine_;
  dnnl::stream& stream_;
  std::vector<std::pair<void*, dnnl::memory>> inputs_;  // reordered inputs of this op, by user pointer
  size_t used_ = 0;                                      // buffers handed out
  void* src_to_ = nullptr;
  dnnl::memory src_from_;
};

void* mut(const void* p) { return const_cast<void*>(p); }  // oneDNN's memory takes non-const pointers; inputs are only read

}  // namespace

std::string onednn_conv_impl(const OnednnConv& c) {
  const std::shared_ptr<const CachedConv> entry = find_conv(c, Kind::Forward, false);
  return entry->error.empty() ? entry->impl : fmt::format("none ({})", entry->error);
}

std::vector<std::string> onednn_conv_impls_used() {
  ConvCache& cache = conv_cache();
  std::lock_guard lock(cache.mutex);
  return cache.impls;
}

namespace {
// The forward's x operand (its layout: the one the saved copy is in).
const Operand& forward_src(const CachedConv& forward) {
  return *std::find_if(forward.operands.begin(), forward.operands.end(),
                       [](const Operand& o) { return o.arg == DNNL_ARG_SRC; });
}
}  // namespace

size_t onednn_conv_saved_src_bytes(const OnednnConv& c, bool bias) {
  const Operand& src = forward_src(*cached_conv(c, Kind::Forward, bias));
  return src.reorder ? src.prim.get_size() : 0;
}

void onednn_conv_forward(const OnednnConv& c, const void* x, const void* w, const float* bias, float* y,
                         void* saved_src) {
  const auto conv = cached_conv(c, Kind::Forward, bias != nullptr);
  std::vector<void*> ptrs{mut(x), mut(w), y};
  if (bias) ptrs.push_back(mut(bias));
  Execution e;
  if (saved_src && forward_src(*conv).reorder) e.place_src_at(saved_src);
  e.run(*conv, ptrs);
}

void onednn_conv_backward(const OnednnConv& c, const void* x, const void* w, const void* dy, float* dx, float* dw,
                          float* db, const void* saved_src, bool bias) {
  Execution e;
  if (dx) e.run(*cached_conv(c, Kind::BackwardData, false), {mut(dy), mut(w), dx});
  if (dw) {
    if (saved_src) e.take_src_from(saved_src, forward_src(*cached_conv(c, Kind::Forward, bias)).prim);
    std::vector<void*> ptrs{mut(x), mut(dy), dw};
    if (db) ptrs.push_back(db);
    e.run(*cached_conv(c, Kind::BackwardWeights, db != nullptr), ptrs);
  }
}

}  // namespace sg
