// See core/autocast.h.
#include "core/autocast.h"

#include <cstdio>
#include <map>
#include <mutex>
#include <tuple>

#include "core/autograd.h"
#include "core/onednn.h"
#include "core/strided.h"
#include "core/tensor.h"
#include "ops/shape.h"

namespace sg {
namespace {

thread_local bool t_autocast_enabled = false;

// A parameter's bfloat16 cast, valid while its storage lives and keeps its version.
struct CachedCast {
  std::weak_ptr<Storage> storage;
  uint64_t version = 0;
  Tensor cast;
};
// What identifies a view of a storage: the storage, offset, shape and strides.
using CastKey = std::tuple<const Storage*, int64_t, Shape, Strides>;

struct CastCache {
  std::mutex mutex;
  std::map<CastKey, CachedCast> casts;
};

CastCache& cast_cache() {
  static CastCache cache;
  return cache;
}

// The casts of contiguous float32 x (n elements): to bfloat16, or rounded to bfloat16 and
// kept in float32 (attention's operands, no bfloat16 buffer). Plain loops the compiler
// vectorizes; to()'s strided copy was measurably slower here (default ViT bf16 epoch 9.7
// and 11.6 s with these loops, 12.1 and 12.3 s through to(), alternated in one phase).
void cast_to_bf16(const float* x, bfloat16* out, int64_t n) {
  parallel_for(n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) out[i] = bfloat16::from_bits(float_to_bfloat16_bits(x[i]));
  });
}
void round_through_bf16(const float* x, float* out, int64_t n) {
  parallel_for(n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      out[i] = std::bit_cast<float>(static_cast<uint32_t>(float_to_bfloat16_bits(x[i])) << 16);
  });
}

Tensor cast_without_history(const Tensor& x) {
  if (x.dtype() == kFloat32 && x.is_contiguous()) {
    Tensor out = empty(x.shape(), kBFloat16);
    cast_to_bf16(x.data_ptr<float>(), out.data_ptr<bfloat16>(), x.numel());
    return out;
  }
  NoGradGuard no_grad;
  return to(x.detach(), kBFloat16);
}

}  // namespace

AutocastGuard::AutocastGuard(Dtype dtype, bool enabled) : prev_(t_autocast_enabled) {
  SG_CHECK(dtype == kBFloat16, "AutocastGuard: only bfloat16 is supported, got {}", dtype);
  t_autocast_enabled = enabled;
}

AutocastGuard::~AutocastGuard() { t_autocast_enabled = prev_; }

bool autocast_enabled() { return t_autocast_enabled; }

bool autocast_bf16_active() { return onednn_info().bf16_native; }

namespace autocast {

Tensor to_bf16(const Tensor& x) {
  if (x.dtype() == kBFloat16) return x;
  SG_CHECK(x.dtype() == kFloat32, "autocast: expected a float32 or bfloat16 operand, got {} {}", x.shape(),
           x.dtype());
  if (!(x.is_leaf() && x.requires_grad())) return cast_without_history(x);
  const std::shared_ptr<Storage>& storage = x.impl()->storage;
  CastKey key{storage.get(), x.offset(), x.shape(), x.strides()};
  CastCache& cache = cast_cache();
  std::lock_guard lock(cache.mutex);
  auto it = cache.casts.find(key);
  if (it != cache.casts.end() && it->second.storage.lock() == storage && it->second.version == storage->version)
    return it->second.cast;
  // A stale entry (the weights changed, or a freed storage's address was reused) is
  // replaced; entries of freed storages are dropped on the way.
  std::erase_if(cache.casts, [](const auto& kv) { return kv.second.storage.expired(); });
  CachedCast entry{storage, storage->version, cast_without_history(x)};
  cache.casts.insert_or_assign(std::move(key), entry);
  return entry.cast;
}

Tensor round_to_bf16(const Tensor& x) {
  Tensor out;
  if (x.dtype() == kFloat32 && x.is_contiguous()) {  // one pass, no bfloat16 buffer
    out = empty(x.shape(), kFloat32);
    round_through_bf16(x.data_ptr<float>(), out.data_ptr<float>(), x.numel());
  } else {
    NoGradGuard no_grad;
    out = to(to_bf16(x), kFloat32);
  }
  if (x.dtype() == kFloat32 && any_requires_grad({x}))
    record("autocast round to bfloat16", {x}, out, [](const Tensor& g) { return grads(g); });
  return out;
}

Tensor fp32_input(const Tensor& x) {
  if (!t_autocast_enabled || !x.defined() || x.dtype() != kBFloat16) return x;
  return to(x, kFloat32);
}

bool use_bf16_product(const Tensor& a, const Tensor& b) {
  if (!t_autocast_enabled) return false;
  auto eligible = [](const Tensor& t) {
    return !t.defined() || t.dtype() == kFloat32 || t.dtype() == kBFloat16;
  };
  if (!eligible(a) || !eligible(b)) return false;  // float64 (or a wrong dtype the op reports)
  if (onednn_info().bf16_native) return true;
  static std::once_flag notice;
  std::call_once(notice, [] {
    const OnednnInfo& info = onednn_info();
    std::fprintf(stderr,
                 "softgrad: autocast: oneDNN %s has no native bfloat16 matmul on this CPU (ISA %s; %s); "
                 "products run in float32\n",
                 info.version.c_str(), info.isa.c_str(), info.bf16_impl.c_str());
  });
  return false;
}

void clear_cache() {
  CastCache& cache = cast_cache();
  std::lock_guard lock(cache.mutex);
  cache.casts.clear();
}

size_t cache_size() {
  CastCache& cache = cast_cache();
  std::lock_guard lock(cache.mutex);
  return cache.casts.size();
}

}  // namespace autocast

}  // namespace sg
