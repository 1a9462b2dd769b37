// The int8 GEMM (core/onednn.h): gemm_int8 equals gemm_int8_reference bit for bit over
// both signs of a, both layouts of b, odd sizes, extreme values (every product at its
// largest magnitude, K up to kInt8GemmMaxK), batched views of an attention qkv buffer and a
// shared (stride-0) b; every element of c outside the view is left alone. Bad arguments
// throw sg::Error naming gemm_int8 and the value.
//
// This binary also runs as onednn_int8_fallback/* with ONEDNN_MAX_CPU_ISA=AVX512_CORE and
// =AVX2 (CMakeLists.txt): oneDNN's int8 kernels then saturate (core/onednn.h), so
// gemm_int8 must have taken softgrad's own kernel, and the same checks must pass.
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "test_util.h"

using sg::Int8Gemm;
using sgtest::check_error;

namespace {

constexpr int32_t kUntouched = 0x5a5a5a5a;  // fills c: elements outside the view must keep it

// Operand bytes: uniform over every value, or one of the patterns that stress saturation
// (all at the largest value, all at the smallest, alternating) or float32 rounding (within 3
// of the largest or smallest: large sums with random low bits).
enum class Fill { kRandom, kMax, kMin, kAlternate, kNearMax, kNearMin };

std::vector<int8_t> bytes(size_t n, Fill fill, bool as_unsigned, std::mt19937& gen) {
  std::vector<int8_t> v(n);
  const int8_t big = as_unsigned ? static_cast<int8_t>(255) : int8_t{127};  // u8 255 is bit pattern -1
  for (size_t i = 0; i < n; ++i) {
    switch (fill) {
      case Fill::kRandom: v[i] = static_cast<int8_t>(gen()); break;
      case Fill::kMax: v[i] = big; break;
      case Fill::kMin: v[i] = as_unsigned ? int8_t{0} : int8_t{-128}; break;
      case Fill::kAlternate: v[i] = i % 2 ? big : int8_t{-128}; break;
      case Fill::kNearMax: v[i] = static_cast<int8_t>(big - static_cast<int>(gen() % 4)); break;
      case Fill::kNearMin: v[i] = static_cast<int8_t>((as_unsigned ? 0 : -128) + static_cast<int>(gen() % 4)); break;
    }
  }
  return v;
}

// Runs gemm_int8 and gemm_int8_reference on g (whose c points into a buffer of c_size
// elements) and checks the whole buffers are equal, bit for bit.
void check_exact(Int8Gemm g, size_t c_size) {
  std::vector<int32_t> got(c_size, kUntouched), want(c_size, kUntouched);
  g.c = want.data();
  sg::gemm_int8_reference(g);
  g.c = got.data();
  sg::gemm_int8(g);
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < c_size; ++i)
    if (got[i] != want[i] && bad++ == 0) first = i;
  CHECK_MESSAGE(bad == 0, bad << " of " << c_size << " elements differ, first at " << first << ": got "
                                  << got[first] << ", want " << want[first]);
}

// One (M, K) @ op(b) product on contiguous operands.
void check_matrix(int64_t M, int64_t N, int64_t K, bool a_signed, bool trans_b, Fill fill_a, Fill fill_b,
                  std::mt19937& gen) {
  CAPTURE(M);
  CAPTURE(N);
  CAPTURE(K);
  CAPTURE(a_signed);
  CAPTURE(trans_b);
  const std::vector<int8_t> a = bytes(static_cast<size_t>(M * K), fill_a, !a_signed, gen);
  const std::vector<int8_t> b = bytes(static_cast<size_t>(K * N), fill_b, false, gen);
  const Int8Gemm g{.M = M, .N = N, .K = K, .a = a.data(), .a_signed = a_signed, .lda = K, .b = b.data(),
                   .trans_b = trans_b, .ldb = trans_b ? K : N, .ldc = N};
  check_exact(g, static_cast<size_t>(M * N));
  // b's column sums given (a layer's weights): the same bits.
  std::vector<int32_t> sums(static_cast<size_t>(N));
  sg::int8_column_sums(K, N, b.data(), g.ldb, trans_b, sums.data());
  Int8Gemm with_sums = g;
  with_sums.b_column_sums = sums.data();
  check_exact(with_sums, static_cast<size_t>(M * N));
  if (!a_signed) return;
  // (a + 128) @ b, the correction left to the caller: the reference's product plus 128 colsum.
  Int8Gemm shifted = with_sums;
  shifted.a_plus_128 = true;
  std::vector<int32_t> got(static_cast<size_t>(M * N)), want(got.size());
  shifted.c = got.data();
  sg::gemm_int8(shifted);
  Int8Gemm exact = g;
  exact.c = want.data();
  sg::gemm_int8_reference(exact);
  int bad = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) bad += got[m * N + n] != want[m * N + n] + 128 * sums[n];
  CHECK_MESSAGE(bad == 0, bad << " elements of (a + 128) @ b differ");
  check_exact(shifted, static_cast<size_t>(M * N));  // and the reference honours the flag too
}

std::string forced_isa() {
  const char* isa = std::getenv("ONEDNN_MAX_CPU_ISA");
  return isa ? isa : "";
}

}  // namespace

TEST_CASE("the oneDNN probe reports whether int8 matmul is native, and which implementation ran") {
  const sg::OnednnInfo& info = sg::onednn_info();
  CHECK(!info.int8_impl.empty());
  if (forced_isa() == "AVX512_CORE" || forced_isa() == "AVX2") CHECK_FALSE(info.int8_native);
  if (info.int8_native) CHECK_FALSE(info.int8_impl.starts_with("ref"));
  MESSAGE(fmt::format("oneDNN {} on {}: s8 matmul {}{}", info.version, info.isa, info.int8_impl,
                      info.int8_native ? " (native)" : " (not native: gemm_int8 runs softgrad's kernel)"));

  std::mt19937 gen(1);
  check_matrix(17, 17, 17, false, false, Fill::kRandom, Fill::kRandom, gen);
  const std::vector<std::string> used = sg::onednn_int8_impls_used();
  REQUIRE_FALSE(used.empty());
  if (info.int8_native)
    CHECK(used.front() == info.int8_impl);
  else
    CHECK(used.front() == sg::kInt8GemmPortableImpl);
  MESSAGE(fmt::format("gemm_int8 ran on: {}", fmt::join(used, ", ")));
}

TEST_CASE("gemm_int8: odd sizes, both signs of a and both layouts of b, random bytes") {
  std::mt19937 gen(2);
  for (int64_t M : {1, 3, 17, 50, 65, 129})
    for (int64_t N : {1, 3, 17, 50, 65, 129})
      for (int64_t K : {1, 3, 17, 50, 65, 129})
        for (bool a_signed : {false, true})
          for (bool trans_b : {false, true}) check_matrix(M, N, K, a_signed, trans_b, Fill::kRandom, Fill::kRandom, gen);
}

TEST_CASE("gemm_int8: extreme values, where int16 pair sums saturate or float32 rounds, up to K = 4096") {
  // u8 255 * s8 -128 = -32640: two of them overflow int16 (vpmaddubsw saturates at -32768).
  // s8 -128 * -128 = 16384; alternating signs make neighbouring products cancel or add.
  // Near-extreme values make sums beyond 2^24 with random low bits, which a trip through
  // float32 would round (oneDNN's s8 compensation: core/onednn.cpp).
  std::mt19937 gen(3);
  struct Case {
    bool a_signed;
    Fill a, b;
  };
  const Case cases[] = {{false, Fill::kMax, Fill::kMin},     {true, Fill::kMin, Fill::kMin},
                        {false, Fill::kMax, Fill::kMax},     {true, Fill::kMax, Fill::kMin},
                        {false, Fill::kAlternate, Fill::kAlternate}, {true, Fill::kAlternate, Fill::kAlternate},
                        {false, Fill::kMax, Fill::kAlternate}, {false, Fill::kRandom, Fill::kMin},
                        {false, Fill::kNearMax, Fill::kNearMin}, {false, Fill::kNearMax, Fill::kNearMax},
                        {true, Fill::kNearMin, Fill::kNearMin}, {true, Fill::kNearMax, Fill::kNearMax},
                        {true, Fill::kNearMax, Fill::kNearMin}};
  for (const Case& c : cases)
    for (bool trans_b : {false, true})
      for (int64_t K : {2, 16, 64, 784, 2047, 4095, 4096}) check_matrix(17, 65, K, c.a_signed, trans_b, c.a, c.b, gen);
}

TEST_CASE("gemm_int8: K = kInt8GemmMaxK with every product -32640 sums to -2139095040 exactly") {
  std::mt19937 gen(4);
  const int64_t K = sg::kInt8GemmMaxK;
  for (bool trans_b : {false, true}) check_matrix(3, 5, K, false, trans_b, Fill::kMax, Fill::kMin, gen);
  // and the value itself, which the reference must reach without overflowing
  const std::vector<int8_t> a(K, static_cast<int8_t>(255)), b(K, int8_t{-128});
  int32_t c = 0;
  sg::gemm_int8({.M = 1, .N = 1, .K = K, .a = a.data(), .a_signed = false, .lda = K, .b = b.data(), .ldb = 1,
                 .c = &c, .ldc = 1});
  CHECK(c == -255 * 128 * K);
  CHECK(c == -2139095040);
}

TEST_CASE("gemm_int8: multi-head attention's products on views of a (B, T, 3, H, D) qkv buffer") {
  std::mt19937 gen(5);
  const int64_t B = 2, H = 3;
  for (int64_t T : {1, 17, 50})
    for (int64_t D : {16, 17, 64, 2047})  // 2047: q @ k^T sums beyond 2^24
      for (Fill fill : {Fill::kRandom, Fill::kAlternate, Fill::kNearMax}) {
        CAPTURE(T);
        CAPTURE(D);
        CAPTURE(static_cast<int>(fill));
        const int64_t row = 3 * H * D;  // one token's q, k and v
        const std::vector<int8_t> qkv = bytes(static_cast<size_t>(B * T * row), fill, false, gen);
        // scores (B, H, T, T) = q @ k^T: the example in core/onednn.h
        check_exact({.batch0 = B, .batch1 = H, .M = T, .N = T, .K = D, .a = qkv.data(), .lda = row,
                     .a_stride0 = T * row, .a_stride1 = D, .b = qkv.data() + H * D, .trans_b = true, .ldb = row,
                     .b_stride0 = T * row, .b_stride1 = D, .ldc = T, .c_stride0 = H * T * T, .c_stride1 = T * T},
                    static_cast<size_t>(B * H * T * T));
        // out (B, T, H, D) = p @ v, p (B, H, T, T) u8 probabilities, written head-interleaved
        // with a padding column per token row to catch writes past a row
        const std::vector<int8_t> p = bytes(static_cast<size_t>(B * H * T * T), fill, true, gen);
        const int64_t ldc = H * D + 1;
        check_exact({.batch0 = B, .batch1 = H, .M = T, .N = D, .K = T, .a = p.data(), .a_signed = false, .lda = T,
                     .a_stride0 = H * T * T, .a_stride1 = T * T, .b = qkv.data() + 2 * H * D, .ldb = row,
                     .b_stride0 = T * row, .b_stride1 = D, .ldc = ldc, .c_stride0 = T * ldc, .c_stride1 = D},
                    static_cast<size_t>(B * T * ldc));
      }
}

TEST_CASE("gemm_int8: a shared b (batch stride 0), a shared a, and padded leading dims") {
  std::mt19937 gen(6);
  const int64_t B0 = 2, B1 = 3, M = 50, N = 65;
  for (const int64_t K : {17, 2047})  // 2047 with near-extreme values: sums beyond 2^24
    for (bool a_signed : {false, true})
      for (bool trans_b : {false, true}) {
        CAPTURE(K);
        CAPTURE(a_signed);
        CAPTURE(trans_b);
        const int64_t lda = K + 3, ldc = N + 2;
        const Fill fill_a = K < 100 ? Fill::kRandom : Fill::kNearMax, fill_b = K < 100 ? Fill::kRandom : Fill::kNearMin;
        const std::vector<int8_t> a = bytes(static_cast<size_t>(B0 * B1 * M * lda), fill_a, !a_signed, gen);
        const std::vector<int8_t> b = bytes(static_cast<size_t>(B0 * B1 * (K + 5) * (N + 5)), fill_b, false, gen);
        const size_t c_size = static_cast<size_t>(B0 * B1 * M * ldc);
        const int64_t ldb = (trans_b ? K : N) + 5, b_matrix = (trans_b ? N : K) * ldb;
        Int8Gemm g{.batch0 = B0, .batch1 = B1, .M = M, .N = N, .K = K, .a = a.data(), .a_signed = a_signed,
                   .lda = lda, .a_stride0 = B1 * M * lda, .a_stride1 = M * lda, .b = b.data(), .trans_b = trans_b,
                   .ldb = ldb, .b_stride0 = 0, .b_stride1 = 0, .ldc = ldc, .c_stride0 = B1 * M * ldc,
                   .c_stride1 = M * ldc};
        check_exact(g, c_size);  // one b for all six
        g.b_stride1 = b_matrix;  // b per batch1 index, shared over batch0
        check_exact(g, c_size);
        g.b_stride0 = B1 * b_matrix;  // b per batch element
        check_exact(g, c_size);
        g.a_stride1 = 0;  // one a per batch0 index
        check_exact(g, c_size);
        g.a_stride0 = 0;  // one a for all
        check_exact(g, c_size);
      }
}

TEST_CASE("gemm_int8: bad arguments throw sg::Error naming the op and the value") {
  const std::vector<int8_t> a(64), b(64);
  std::vector<int32_t> c(64);
  const Int8Gemm ok{.batch0 = 2, .M = 2, .N = 3, .K = 4, .a = a.data(), .lda = 4, .a_stride0 = 8, .b = b.data(),
                    .ldb = 3, .b_stride0 = 12, .c = c.data(), .ldc = 3, .c_stride0 = 6};
  sg::gemm_int8(ok);
  auto bad = [&](auto edit, std::initializer_list<std::string> fragments) {
    Int8Gemm g = ok;
    edit(g);
    check_error([&] { sg::gemm_int8(g); }, fragments);
  };
  bad([](Int8Gemm& g) { g.M = 0; }, {"gemm_int8: sizes must be positive", "M=0"});
  bad([](Int8Gemm& g) { g.batch1 = -1; }, {"gemm_int8:", "batch1=-1"});
  bad([](Int8Gemm& g) { g.K = sg::kInt8GemmMaxK + 1; g.lda = g.K; },
      {"gemm_int8: K=65537 exceeds 65536", "a [2, 1, 2, 65537] s8"});
  bad([](Int8Gemm& g) { g.a = nullptr; }, {"gemm_int8: null pointer", "a=0x0"});
  bad([](Int8Gemm& g) { g.c = nullptr; }, {"gemm_int8: null pointer", "c=0x0"});
  bad([](Int8Gemm& g) { g.lda = 3; }, {"gemm_int8: lda=3 is shorter than a row of a (K=4)", "a [2, 1, 2, 4] s8"});
  bad([](Int8Gemm& g) { g.ldb = 2; }, {"gemm_int8: ldb=2 is shorter than a row of b (N=3)", "b [4, 3] s8"});
  bad([](Int8Gemm& g) { g.trans_b = true; }, {"gemm_int8: ldb=3 is shorter than a row of b (K=4)", "b [3, 4]^T s8"});
  bad([](Int8Gemm& g) { g.ldc = 2; }, {"gemm_int8: ldc=2 is shorter than a row of c (N=3)", "c [2, 1, 2, 3] s32"});
  bad([](Int8Gemm& g) { g.b_stride0 = -12; }, {"gemm_int8: b_stride0=-12 is negative"});
  bad([](Int8Gemm& g) { g.c_stride0 = 0; }, {"gemm_int8: c_stride0=0 c_stride1=0 ldc=3 make elements of c overlap"});
  bad([](Int8Gemm& g) { g.c_stride0 = 5; }, {"gemm_int8: c_stride0=5", "overlap"});
  const std::vector<int32_t> sums(3);
  bad([&](Int8Gemm& g) { g.b_column_sums = sums.data(); }, {"gemm_int8: b_column_sums describe one b matrix"});
  check_error([&] { sg::gemm_int8_reference(Int8Gemm{}); }, {"gemm_int8_reference: sizes must be positive", "M=0"});
}
