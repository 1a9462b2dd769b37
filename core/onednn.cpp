// See core/onednn.h. One CPU engine for the process, one stream per thread (oneDNN's
// streams are not meant to be shared between threads), and one matmul primitive per
// distinct MatmulKey (operand types, shapes and strides, accumulate or not), bfloat16 and
// int8 alike: creating a primitive costs tens of microseconds (it JIT-compiles its
// kernels), executing a cached one a few.
//
// Operands are described to oneDNN with their own strides (a transposed operand is a
// (M, K) matrix with strides (1, lda); a batched one is 4-D), so nothing is copied on our
// side; oneDNN's brgemm kernels pack B into their blocked layout internally.
#include "core/onednn.h"

#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>

#include "core/error.h"
#include "core/onednn_detail.h"
#include "core/strided.h"  // parallel_for

namespace sg {

namespace onednn_detail {

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& thread_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  return stream;
}

}  // namespace onednn_detail

namespace {

using dt = dnnl::memory::data_type;
using onednn_detail::cpu_engine;
using onednn_detail::thread_stream;

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

// One operand as a dnnl::memory::desc needs it: 2-D (a GEMM) or 4-D (a batched one).
struct OperandLayout {
  dnnl::memory::dims dims, strides;
  dt type = dt::undef;
  auto operator<=>(const OperandLayout&) const = default;
};

// A matmul primitive's key: its three operands and whether dst is accumulated into.
struct MatmulKey {
  OperandLayout src, weights, dst;
  bool accumulate = false;  // dst = src @ weights + dst (a sum post-op)
  auto operator<=>(const MatmulKey&) const = default;
  bool is_int8() const { return src.type == dt::u8 || src.type == dt::s8; }
};

OperandLayout matrix_layout(int64_t rows, int64_t cols, int64_t ld, bool trans, dt type) {
  // A (rows, cols) matrix stored row-major with row stride ld, or the transpose of a
  // (cols, rows) one with row stride ld.
  return {{rows, cols}, trans ? dnnl::memory::dims{1, ld} : dnnl::memory::dims{ld, 1}, type};
}

// The same matrix repeated over (batch0, batch1) with batch strides stride0, stride1. A batch
// dim the operand does not move along (size 1 or stride 0) is size 1 for oneDNN, which
// broadcasts it.
OperandLayout batched_layout(int64_t batch0, int64_t batch1, int64_t stride0, int64_t stride1, int64_t rows,
                             int64_t cols, int64_t ld, bool trans, dt type) {
  const OperandLayout m = matrix_layout(rows, cols, ld, trans, type);
  const int64_t d0 = stride0 == 0 ? 1 : batch0, d1 = stride1 == 0 ? 1 : batch1;
  // NOTE: a size-1 dim's stride moves no pointer, but oneDNN matches layouts against its
  // formats by stride: give such dims the dense value, which also keeps cache keys canonical.
  const int64_t s1 = d1 == 1 ? (trans ? cols : rows) * ld : stride1;
  const int64_t s0 = d0 == 1 ? d1 * s1 : stride0;
  return {{d0, d1, rows, cols}, {s0, s1, m.strides[0], m.strides[1]}, type};
}

dnnl::matmul::primitive_desc make_matmul_pd(const MatmulKey& k) {
  auto desc = [](const OperandLayout& o) { return dnnl::memory::desc(o.dims, o.type, o.strides); };
  dnnl::primitive_attr attr;
  if (k.accumulate) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(desc(k.src), desc(k.weights), desc(k.dst)), attr,
                                      cpu_engine());
}

// An empty prim means oneDNN has no usable implementation for the key; impl then says why.
struct CachedMatmul {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
  std::string impl;
};

CachedMatmul make_matmul(const MatmulKey& key) {
  try {
    dnnl::matmul::primitive_desc pd = make_matmul_pd(key);
    std::string impl = pd.impl_info_str();
    // oneDNN's reference loops are no faster than softgrad's int8 kernel: use ours.
    if (key.is_int8() && impl.starts_with("ref")) return {pd, {}, impl};
    return {pd, dnnl::matmul(pd), impl};
  } catch (const dnnl::error& e) {
    return {{}, {}, fmt::format("none ({})", e.what())};
  }
}

struct MatmulCache {
  std::mutex mutex;
  std::map<MatmulKey, std::shared_ptr<const CachedMatmul>> primitives;
  // Distinct implementations that ran, first-use order: bfloat16 and int8 GEMMs.
  std::vector<std::string> bf16_impls, int8_impls;
};

MatmulCache& matmul_cache() {
  static MatmulCache cache;
  return cache;
}

void record_impl(std::vector<std::string>& impls, const std::string& impl) {  // under the cache's mutex
  if (std::find(impls.begin(), impls.end(), impl) == impls.end()) impls.push_back(impl);
}

std::shared_ptr<const CachedMatmul> cached_matmul(const MatmulKey& key) {
  MatmulCache& cache = matmul_cache();
  std::lock_guard lock(cache.mutex);
  auto it = cache.primitives.find(key);
  if (it != cache.primitives.end()) return it->second;
  auto entry = std::make_shared<const CachedMatmul>(make_matmul(key));
  if (entry->prim) record_impl(key.is_int8() ? cache.int8_impls : cache.bf16_impls, entry->impl);
  cache.primitives.emplace(key, entry);
  return entry;
}

void run_matmul(const CachedMatmul& m, const void* src, const void* weights, void* dst) {
  dnnl::engine& engine = cpu_engine();
  // NOTE: oneDNN's memory objects take non-const pointers; src and weights are only read.
  dnnl::memory msrc(m.pd.src_desc(), engine, const_cast<void*>(src));
  dnnl::memory mweights(m.pd.weights_desc(), engine, const_cast<void*>(weights));
  dnnl::memory mdst(m.pd.dst_desc(), engine, dst);
  dnnl::stream& stream = thread_stream();
  m.prim.execute(stream, {{DNNL_ARG_SRC, msrc}, {DNNL_ARG_WEIGHTS, mweights}, {DNNL_ARG_DST, mdst}});
  stream.wait();
}

MatmulKey bf16_key(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb,
                   int64_t ldc, bool accumulate) {
  return {matrix_layout(M, K, lda, trans_a, dt::bf16), matrix_layout(K, N, ldb, trans_b, dt::bf16),
          matrix_layout(M, N, ldc, false, dt::f32), accumulate};
}

MatmulKey int8_key(const Int8Gemm& g) {
  return {batched_layout(g.batch0, g.batch1, g.a_stride0, g.a_stride1, g.M, g.K, g.lda, false,
                         g.a_signed ? dt::s8 : dt::u8),
          batched_layout(g.batch0, g.batch1, g.b_stride0, g.b_stride1, g.K, g.N, g.ldb, g.trans_b, dt::s8),
          batched_layout(g.batch0, g.batch1, g.c_stride0, g.c_stride1, g.M, g.N, g.ldc, false, dt::s32), false};
}

// ---- int8: checks, the reference, softgrad's portable kernel ------------------------------

std::string int8_shapes(const Int8Gemm& g) {
  const std::string b = g.trans_b ? fmt::format("[{}, {}]^T", g.N, g.K) : fmt::format("[{}, {}]", g.K, g.N);
  return fmt::format("a [{}, {}, {}, {}] {}, b {} s8, c [{}, {}, {}, {}] s32", g.batch0, g.batch1, g.M, g.K,
                     g.a_signed ? "s8" : "u8", b, g.batch0, g.batch1, g.M, g.N);
}

// True when no two elements of a view with these (size, stride) dims share an address.
// Sorted by stride, each dim must step past everything the smaller ones span. Sufficient
// rather than necessary, and true of any slice or permutation of a dense tensor.
bool elements_distinct(std::array<std::pair<int64_t, int64_t>, 4> dims) {
  std::sort(dims.begin(), dims.end(), [](auto x, auto y) { return x.second < y.second; });
  int64_t span = 0;  // the last offset the smaller dims reach
  for (const auto& [size, stride] : dims) {
    if (size == 1) continue;
    if (stride <= span) return false;
    span += (size - 1) * stride;
  }
  return true;
}

void check_int8_gemm(const Int8Gemm& g, const char* op) {
  SG_CHECK(g.batch0 > 0 && g.batch1 > 0 && g.M > 0 && g.N > 0 && g.K > 0,
           "{}: sizes must be positive, got batch0={} batch1={} M={} N={} K={}", op, g.batch0, g.batch1, g.M, g.N,
           g.K);
  SG_CHECK(g.K <= kInt8GemmMaxK, "{}: K={} exceeds {}, beyond which int32 sums could overflow ({})", op, g.K,
           kInt8GemmMaxK, int8_shapes(g));
  SG_CHECK(g.a && g.b && g.c, "{}: null pointer: a={} b={} c={} ({})", op, g.a, fmt::ptr(g.b), fmt::ptr(g.c),
           int8_shapes(g));
  SG_CHECK(g.lda >= g.K, "{}: lda={} is shorter than a row of a (K={}) ({})", op, g.lda, g.K, int8_shapes(g));
  SG_CHECK(!g.b_column_sums || ((g.batch0 == 1 || g.b_stride0 == 0) && (g.batch1 == 1 || g.b_stride1 == 0)),
           "{}: b_column_sums describe one b matrix, but b has distinct matrices per batch ({})", op, int8_shapes(g));
  const int64_t b_row = g.trans_b ? g.K : g.N;
  SG_CHECK(g.ldb >= b_row, "{}: ldb={} is shorter than a row of b ({}={}) ({})", op, g.ldb, g.trans_b ? "K" : "N",
           b_row, int8_shapes(g));
  SG_CHECK(g.ldc >= g.N, "{}: ldc={} is shorter than a row of c (N={}) ({})", op, g.ldc, g.N, int8_shapes(g));
  const std::array<int64_t, 6> strides{g.a_stride0, g.a_stride1, g.b_stride0, g.b_stride1, g.c_stride0, g.c_stride1};
  static constexpr std::array<const char*, 6> names{"a_stride0", "a_stride1", "b_stride0",
                                                    "b_stride1", "c_stride0", "c_stride1"};
  for (size_t i = 0; i < strides.size(); ++i)
    SG_CHECK(strides[i] >= 0, "{}: {}={} is negative ({})", op, names[i], strides[i], int8_shapes(g));
  SG_CHECK(elements_distinct({{{g.batch0, g.c_stride0}, {g.batch1, g.c_stride1}, {g.M, g.ldc}, {g.N, 1}}}),
           "{}: c_stride0={} c_stride1={} ldc={} make elements of c overlap ({})", op, g.c_stride0, g.c_stride1,
           g.ldc, int8_shapes(g));
}

template <typename TA>
void gemm_int8_reference_impl(const Int8Gemm& g) {
  const TA* a = static_cast<const TA*>(g.a);
  for (int64_t i = 0; i < g.batch0; ++i)
    for (int64_t j = 0; j < g.batch1; ++j)
      for (int64_t m = 0; m < g.M; ++m)
        for (int64_t n = 0; n < g.N; ++n) {
          int32_t sum = 0;
          for (int64_t k = 0; k < g.K; ++k) {
            const int64_t b_at = g.trans_b ? n * g.ldb + k : k * g.ldb + n;
            sum += int32_t{a[i * g.a_stride0 + j * g.a_stride1 + m * g.lda + k]} *
                   int32_t{g.b[i * g.b_stride0 + j * g.b_stride1 + b_at]};
          }
          g.c[i * g.c_stride0 + j * g.c_stride1 + m * g.ldc + n] = sum;
        }
}

// Softgrad's kernel, otherwise identical to gemm_int8_reference: each element of c is a
// dot product of a row of a with a row of bt = op(b)^T (N, K), both contiguous along K, so
// the compiler vectorizes the k loop: into vpdpbusd (u8 a) or vpdpwssd (s8 a) where -march
// has VNNI, else into int16 multiplies widened to int32 adds (every product fits int16:
// 255 * -128 = -32640). None of them saturate. A register tile of R rows x C columns reads
// each loaded vector of a C times and of bt R times. ~35-45 GOP/s per core without VNNI
// (a Zen 4 core, compiled for skylake-avx512 or x86-64-v3), 150-200 with it.
template <int R, int C, typename TA>
void dot_tile(int64_t K, const TA* a, int64_t lda, const int8_t* bt, int64_t ldbt, int32_t* c, int64_t ldc) {
  int32_t sum[R][C] = {};
  for (int64_t k = 0; k < K; ++k)
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < C; ++q) sum[r][q] += int32_t{a[r * lda + k]} * int32_t{bt[q * ldbt + k]};
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < C; ++q) c[r * ldc + q] = sum[r][q];
}

template <int R, typename TA>
void dot_tile_row(int64_t n0, int64_t n1, int64_t K, const TA* a, int64_t lda, const int8_t* bt, int64_t ldbt,
                  int32_t* c, int64_t ldc) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) dot_tile<R, 4>(K, a, lda, bt + n * ldbt, ldbt, c + n, ldc);
  for (; n < n1; ++n) dot_tile<R, 1>(K, a, lda, bt + n * ldbt, ldbt, c + n, ldc);
}

// bt (N, K) = b (K, N)^T, in 32 x 32 tiles.
void transpose_b(int64_t K, int64_t N, const int8_t* b, int64_t ldb, int8_t* bt) {
  constexpr int64_t kTile = 32;
  for (int64_t k0 = 0; k0 < K; k0 += kTile)
    for (int64_t n0 = 0; n0 < N; n0 += kTile)
      for (int64_t k = k0; k < std::min(K, k0 + kTile); ++k)
        for (int64_t n = n0; n < std::min(N, n0 + kTile); ++n) bt[n * K + k] = b[k * ldb + n];
}

// The distinct matrices of a batched operand: one along a batch dim whose stride is 0.
// Batch element (i, j) uses matrix index(i, j), which starts at offset(index) in the operand.
struct DistinctMatrices {
  int64_t n0, n1, stride0, stride1;
  DistinctMatrices(int64_t batch0, int64_t batch1, int64_t s0, int64_t s1)
      : n0(s0 ? batch0 : 1), n1(s1 ? batch1 : 1), stride0(s0), stride1(s1) {}
  int64_t count() const { return n0 * n1; }
  int64_t index(int64_t i, int64_t j) const { return (n0 == 1 ? 0 : i) * n1 + (n1 == 1 ? 0 : j); }
  int64_t offset(int64_t index) const { return index / n1 * stride0 + index % n1 * stride1; }
};

template <typename TA>
void gemm_int8_portable(const Int8Gemm& g) {
  // bt for each distinct b: transposed copies, unless b already is one (trans_b).
  const DistinctMatrices bs(g.batch0, g.batch1, g.b_stride0, g.b_stride1);
  std::vector<int8_t> packed;
  if (!g.trans_b) {
    packed.resize(static_cast<size_t>(bs.count() * g.N * g.K));
    parallel_for(bs.count(), g.N * g.K, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) transpose_b(g.K, g.N, g.b + bs.offset(p), g.ldb, packed.data() + p * g.N * g.K);
    });
  }
  // Tasks: (batch element, column panel, block of rows), rows fastest, so a thread's run of
  // tasks keeps reading one panel of bt (~256 KiB, the size of an L2) while a streams by.
  constexpr int64_t kRows = 32, kPanelBytes = 256 * 1024;
  const int64_t cols = std::max<int64_t>(4, kPanelBytes / g.K / 4 * 4);
  const int64_t row_blocks = (g.M + kRows - 1) / kRows, panels = (g.N + cols - 1) / cols;
  const TA* a = static_cast<const TA*>(g.a);
  parallel_for(g.batch0 * g.batch1 * panels * row_blocks, kRows * cols * g.K, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t rb = t % row_blocks, panel = t / row_blocks % panels, batch = t / row_blocks / panels;
      const int64_t i = batch / g.batch1, j = batch % g.batch1;
      const int8_t* bt = g.trans_b ? g.b + bs.offset(bs.index(i, j)) : packed.data() + bs.index(i, j) * g.N * g.K;
      const int64_t ldbt = g.trans_b ? g.ldb : g.K;
      const TA* ai = a + i * g.a_stride0 + j * g.a_stride1;
      int32_t* ci = g.c + i * g.c_stride0 + j * g.c_stride1;
      const int64_t m1 = std::min(g.M, (rb + 1) * kRows), n0 = panel * cols, n1 = std::min(g.N, n0 + cols);
      int64_t m = rb * kRows;
      for (; m + 2 <= m1; m += 2) dot_tile_row<2>(n0, n1, g.K, ai + m * g.lda, g.lda, bt, ldbt, ci + m * g.ldc, g.ldc);
      if (m < m1) dot_tile_row<1>(n0, n1, g.K, ai + m * g.lda, g.lda, bt, ldbt, ci + m * g.ldc, g.ldc);
    }
  });
}

// ---- int8 on oneDNN ---------------------------------------------------------------------

// Runs g on oneDNN; false when oneDNN has no usable primitive for it.
bool gemm_int8_onednn_unsigned(const Int8Gemm& g) {
  const auto gemm = cached_matmul(int8_key(g));
  if (gemm->prim) run_matmul(*gemm, g.a, g.b, g.c);
  return static_cast<bool>(gemm->prim);
}

// dst = src + 128, the same bits with the top one flipped.
// NOTE: a function of its own so that n is a value: a uint8_t store may alias anything a
// lambda reaches by reference, and the loop then runs a byte at a time.
void shift_to_unsigned(int64_t n, const int8_t* src, uint8_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<uint8_t>(src[i]) ^ 0x80;
}

// sum[n] += the sum over k of op(b)[k, n], for n in [n0, n1).
void column_sums(int64_t K, int64_t n0, int64_t n1, const int8_t* b, int64_t ldb, bool trans_b, int32_t* sum) {
  if (trans_b) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t k = 0; k < K; ++k) sum[n] += b[n * ldb + k];
  } else {
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = n0; n < n1; ++n) sum[n] += b[k * ldb + n];
  }
}

}  // namespace

void int8_column_sums(int64_t K, int64_t N, const int8_t* b, int64_t ldb, bool trans_b, int32_t* sums) {
  SG_CHECK(K >= 0 && N >= 0 && ldb >= (trans_b ? K : N) && K <= kInt8GemmMaxK && b && sums,
           "int8_column_sums: K = {}, N = {}, ldb = {} (trans_b {})", K, N, ldb, trans_b);
  std::fill(sums, sums + N, 0);
  column_sums(K, 0, N, b, ldb, trans_b, sums);
}

namespace {

// NOTE: VNNI multiplies u8 by s8 only, and oneDNN 2.6 computes s8 a @ b as
// (a + 128) @ b - 128 * colsum(b) with that compensation applied in float32: sums beyond 2^24
// come back rounded (all-127 a and b with K = 4095: 66048256, not 66048255). u8 a is exact.
// So signed a takes the same route in int32 here: a + 128 (the bit pattern a ^ 0x80) as u8
// into a contiguous copy, the u8 GEMM, then c -= 128 * colsum(b). No overflow for
// K <= kInt8GemmMaxK: |(a + 128) @ b| <= 255 * 128 * K and |128 * colsum(b)| <= 2^14 * K.
// c += factor * colsum(b) on every row of c (b's column sums: g.b_column_sums, or computed).
void add_column_sums(const Int8Gemm& g, int32_t factor) {
  const DistinctMatrices bs(g.batch0, g.batch1, g.b_stride0, g.b_stride1);
  const int64_t M = g.M, N = g.N, K = g.K;
  std::vector<int32_t> colsum;
  if (!g.b_column_sums) {
    colsum.assign(static_cast<size_t>(bs.count() * N), 0);
    for (int64_t p = 0; p < bs.count(); ++p)
      parallel_for(N, K, [&](int64_t begin, int64_t end) {
        column_sums(K, begin, end, g.b + bs.offset(p), g.ldb, g.trans_b, colsum.data() + p * N);
      });
  }
  const int32_t* sums = g.b_column_sums ? g.b_column_sums : colsum.data();
  parallel_for(g.batch0 * g.batch1 * M, N, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t batch = row / M, i = batch / g.batch1, j = batch % g.batch1;
      int32_t* c = g.c + i * g.c_stride0 + j * g.c_stride1 + row % M * g.ldc;
      const int32_t* sum = sums + bs.index(i, j) * N;
      for (int64_t n = 0; n < N; ++n) c[n] += factor * sum[n];
    }
  });
}

bool gemm_int8_onednn_signed(const Int8Gemm& g) {
  const DistinctMatrices as(g.batch0, g.batch1, g.a_stride0, g.a_stride1);
  const int64_t M = g.M, K = g.K;
  Int8Gemm u = g;
  u.a_signed = false;
  u.lda = K;
  u.a_stride0 = as.n0 > 1 ? as.n1 * M * K : 0;
  u.a_stride1 = as.n1 > 1 ? M * K : 0;
  const auto gemm = cached_matmul(int8_key(u));
  if (!gemm->prim) return false;

  const auto shifted = std::make_unique_for_overwrite<uint8_t[]>(static_cast<size_t>(as.count() * M * K));
  const auto* a = static_cast<const int8_t*>(g.a);
  parallel_for(as.count() * M, K, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row)
      shift_to_unsigned(K, a + as.offset(row / M) + row % M * g.lda, shifted.get() + row * K);
  });
  u.a = shifted.get();
  run_matmul(*gemm, u.a, u.b, u.c);          // (a + 128) @ b
  if (!g.a_plus_128) add_column_sums(g, -128);  // - 128 colsum(b), unless the caller owes it
  return true;
}

// Whether oneDNN computes u8 a @ s8 b exactly here, as VNNI and AMX do (see the header),
// tried where int16 pair sums would saturate (all-255 a, all--128 b: -65280 becomes -32768)
// on the two kernel families gemm_int8 meets: brgemm (a plain matrix) and oneDNN's jit gemm
// (attention's q @ k^T on a qkv buffer gets it). impl: the plain matrix's.
bool onednn_int8_exact(std::string& impl) {
  constexpr int64_t B = 2, H = 2, T = 8, D = 64, kRow = 3 * H * D, kWant = 255 * -128 * D;
  std::vector<uint8_t> a(B * T * kRow, 255);
  std::vector<int8_t> b(a.size(), -128);
  std::vector<int32_t> c(B * H * T * T);
  const Int8Gemm plain{.M = 16, .N = 16, .K = D, .a = a.data(), .a_signed = false, .lda = D, .b = b.data(),
                       .ldb = 16, .c = c.data(), .ldc = 16};
  const Int8Gemm heads{.batch0 = B, .batch1 = H, .M = T, .N = T, .K = D, .a = a.data(), .a_signed = false,
                       .lda = kRow, .a_stride0 = T * kRow, .a_stride1 = D, .b = b.data(), .trans_b = true,
                       .ldb = kRow, .b_stride0 = T * kRow, .b_stride1 = D, .c = c.data(), .ldc = T,
                       .c_stride0 = H * T * T, .c_stride1 = T * T};
  const auto exact_on = [&](const Int8Gemm& g) {
    const CachedMatmul m = make_matmul(int8_key(g));
    if (g.batch0 == 1) impl = m.impl;
    if (!m.prim) return false;
    std::fill(c.begin(), c.end(), 0);
    run_matmul(m, g.a, g.b, g.c);
    return std::all_of(c.begin(), c.end(), [](int32_t x) { return x == kWant; });
  };
  return exact_on(plain) && exact_on(heads);
}

OnednnInfo probe() {
  OnednnInfo info;
  const dnnl_version_t* v = dnnl_version();
  info.version = fmt::format("{}.{}.{}", v->major, v->minor, v->patch);
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  info.isa = isa_name(isa);
  // Each ISA's bit pattern contains those of the ISAs it extends: AMX's contains
  // avx512_core_bf16's, which contains avx512_core_vnni's.
  const auto has = [bits = static_cast<unsigned>(isa)](dnnl::cpu_isa part) {
    return (bits & static_cast<unsigned>(part)) == static_cast<unsigned>(part);
  };
  const CachedMatmul bf16 = make_matmul(bf16_key(false, false, 64, 64, 64, 64, 64, 64, false));
  info.bf16_impl = bf16.impl;
  info.bf16_native = has(dnnl::cpu_isa::avx512_core_bf16) && bf16.prim && !bf16.impl.starts_with("ref");
  const bool exact = onednn_int8_exact(info.int8_impl);
  info.int8_native = (has(dnnl::cpu_isa::avx512_core_vnni) || has(dnnl::cpu_isa::avx2_vnni)) && exact;
  return info;
}

}  // namespace

const OnednnInfo& onednn_info() {
  static const OnednnInfo info = probe();
  return info;
}

std::vector<std::string> onednn_impls_used() {
  MatmulCache& cache = matmul_cache();
  std::lock_guard lock(cache.mutex);
  return cache.bf16_impls;
}

std::vector<std::string> onednn_int8_impls_used() {
  MatmulCache& cache = matmul_cache();
  std::lock_guard lock(cache.mutex);
  return cache.int8_impls;
}

void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const bfloat16* a, int64_t lda,
               const bfloat16* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  SG_CHECK(M > 0 && N > 0 && K > 0, "gemm_bf16: sizes must be positive, got M={} N={} K={}", M, N, K);
  SG_CHECK(beta == 0.0f || beta == 1.0f, "gemm_bf16: beta must be 0 or 1, got {}", beta);
  SG_CHECK(onednn_info().bf16_native, "gemm_bf16: oneDNN has no native bfloat16 matmul on this CPU (ISA {}, {})",
           onednn_info().isa, onednn_info().bf16_impl);
  const auto gemm = cached_matmul(bf16_key(trans_a, trans_b, M, N, K, lda, ldb, ldc, beta != 0.0f));
  SG_CHECK(gemm->prim, "gemm_bf16: oneDNN has no matmul for M={} N={} K={} lda={} ldb={} ldc={}: {}", M, N, K, lda,
           ldb, ldc, gemm->impl);
  run_matmul(*gemm, a, b, c);
}

void gemm_int8(const Int8Gemm& g) {
  check_int8_gemm(g, "gemm_int8");
  if (onednn_info().int8_native && (g.a_signed ? gemm_int8_onednn_signed(g) : gemm_int8_onednn_unsigned(g))) return;
  {
    MatmulCache& cache = matmul_cache();
    std::lock_guard lock(cache.mutex);
    record_impl(cache.int8_impls, kInt8GemmPortableImpl);
  }
  if (g.a_signed)
    gemm_int8_portable<int8_t>(g);
  else
    gemm_int8_portable<uint8_t>(g);
  if (g.a_signed && g.a_plus_128) add_column_sums(g, 128);
}

void gemm_int8_reference(const Int8Gemm& g) {
  check_int8_gemm(g, "gemm_int8_reference");
  if (g.a_signed)
    gemm_int8_reference_impl<int8_t>(g);
  else
    gemm_int8_reference_impl<uint8_t>(g);
  if (g.a_signed && g.a_plus_128) add_column_sums(g, 128);
}

}  // namespace sg
