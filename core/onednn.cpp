// See core/onednn.h. One CPU engine for the process, one stream per thread (oneDNN's
// streams are not meant to be shared between threads), and one matmul primitive per
// distinct (layout, shape, beta): creating a primitive costs tens of microseconds (it
// JIT-compiles its kernels), executing a cached one a few.
//
// Operands are described to oneDNN with their own strides (a transposed operand is a
// (M, K) matrix with strides (1, lda)), so nothing is copied on our side; oneDNN's
// brgemm kernels pack B into their blocked layout internally.
#include "core/onednn.h"

#include <algorithm>
#include <array>
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>

#include "core/error.h"

namespace sg {
namespace {

using dt = dnnl::memory::data_type;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& thread_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  return stream;
}

const char* isa_name(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_mic: return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "unknown";
  }
}

// (M, N, K, lda, ldb, ldc, trans_a, trans_b, accumulate)
using GemmKey = std::array<int64_t, 9>;

struct CachedGemm {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
};

dnnl::memory::desc matrix_desc(int64_t rows, int64_t cols, int64_t ld, bool trans, dt type) {
  // A (rows, cols) matrix stored row-major with row stride ld, or the transpose of a
  // (cols, rows) one with row stride ld.
  const dnnl::memory::dims strides = trans ? dnnl::memory::dims{1, ld} : dnnl::memory::dims{ld, 1};
  return dnnl::memory::desc({rows, cols}, type, strides);
}

dnnl::matmul::primitive_desc make_gemm_pd(const GemmKey& k) {
  const auto [M, N, K, lda, ldb, ldc, ta, tb, acc] = k;
  const dnnl::memory::desc a = matrix_desc(M, K, lda, ta != 0, dt::bf16);
  const dnnl::memory::desc b = matrix_desc(K, N, ldb, tb != 0, dt::bf16);
  const dnnl::memory::desc c = matrix_desc(M, N, ldc, false, dt::f32);
  dnnl::primitive_attr attr;
  if (acc) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);  // c = a @ b + c
    attr.set_post_ops(ops);
  }
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), attr, cpu_engine());
}

struct GemmCache {
  std::mutex mutex;
  std::map<GemmKey, std::shared_ptr<CachedGemm>> primitives;
  std::vector<std::string> impls;  // distinct impl_info_str values, first-use order
};

GemmCache& gemm_cache() {
  static GemmCache cache;
  return cache;
}

std::shared_ptr<CachedGemm> cached_gemm(const GemmKey& key) {
  GemmCache& cache = gemm_cache();
  std::lock_guard lock(cache.mutex);
  auto it = cache.primitives.find(key);
  if (it != cache.primitives.end()) return it->second;
  auto pd = make_gemm_pd(key);
  auto entry = std::make_shared<CachedGemm>(CachedGemm{pd, dnnl::matmul(pd)});
  const std::string impl = pd.impl_info_str();
  if (std::find(cache.impls.begin(), cache.impls.end(), impl) == cache.impls.end()) cache.impls.push_back(impl);
  cache.primitives.emplace(key, entry);
  return entry;
}

OnednnInfo probe() {
  OnednnInfo info;
  const dnnl_version_t* v = dnnl_version();
  info.version = fmt::format("{}.{}.{}", v->major, v->minor, v->patch);
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  info.isa = isa_name(isa);
  // Native bfloat16: the ISA includes AVX512-BF16 (AMX's bit pattern contains it too).
  const auto bits = static_cast<unsigned>(isa), bf16_bits = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_bf16);
  try {
    const dnnl::matmul::primitive_desc pd = make_gemm_pd({64, 64, 64, 64, 64, 64, 0, 0, 0});
    info.bf16_impl = pd.impl_info_str();
    info.bf16_native = (bits & bf16_bits) == bf16_bits && info.bf16_impl.rfind("ref", 0) != 0;
  } catch (const dnnl::error& e) {
    info.bf16_impl = fmt::format("none ({})", e.what());
  }
  return info;
}

}  // namespace

const OnednnInfo& onednn_info() {
  static const OnednnInfo info = probe();
  return info;
}

std::vector<std::string> onednn_impls_used() {
  GemmCache& cache = gemm_cache();
  std::lock_guard lock(cache.mutex);
  return cache.impls;
}

void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const bfloat16* a, int64_t lda,
               const bfloat16* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  SG_CHECK(M > 0 && N > 0 && K > 0, "gemm_bf16: sizes must be positive, got M={} N={} K={}", M, N, K);
  SG_CHECK(beta == 0.0f || beta == 1.0f, "gemm_bf16: beta must be 0 or 1, got {}", beta);
  SG_CHECK(onednn_info().bf16_native, "gemm_bf16: oneDNN has no native bfloat16 matmul on this CPU (ISA {}, {})",
           onednn_info().isa, onednn_info().bf16_impl);
  const GemmKey key{M, N, K, lda, ldb, ldc, trans_a, trans_b, beta != 0.0f};
  const std::shared_ptr<CachedGemm> gemm = cached_gemm(key);
  dnnl::engine& engine = cpu_engine();
  // NOTE: oneDNN's memory objects take non-const pointers; a and b are only read.
  dnnl::memory ma(gemm->pd.src_desc(), engine, const_cast<bfloat16*>(a));
  dnnl::memory mb(gemm->pd.weights_desc(), engine, const_cast<bfloat16*>(b));
  dnnl::memory mc(gemm->pd.dst_desc(), engine, c);
  dnnl::stream& stream = thread_stream();
  gemm->prim.execute(stream, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
  stream.wait();
}

}  // namespace sg
