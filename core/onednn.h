#pragma once
// oneDNN (Debian's libdnnl 2.6.3), softgrad's bfloat16 and int8 GEMM backend. This header
// and core/onednn.cpp are the only places that know about oneDNN; OpenBLAS (core/blas.h)
// stays the float32/float64 path.
//
// oneDNN picks its kernels by CPU at run time: AMX tiles (Sapphire Rapids and later),
// else AVX512-BF16 dot products (Cooper Lake, Zen 4), else bfloat16 is emulated on
// float32 units (slower than sgemm) or not available at all. softgrad counts the first
// two as native and uses oneDNN only then (OnednnInfo::bf16_native); otherwise autocast
// computes its products in float32 (core/autocast.h). ONEDNN_MAX_CPU_ISA=AVX512_CORE
// (or AVX2) makes a newer CPU behave like an older one, which the tests use.
//
// int8 (gemm_int8 below) is exact on every CPU, by one of two routes:
// - VNNI (vpdpbusd: Cascade Lake, Zen 4; AVX-VNNI on Alder Lake) or AMX-INT8: oneDNN sums
//   u8 * s8 products straight into int32. softgrad counts these as native
//   (OnednnInfo::int8_native, which also runs a probe on saturating values) and uses oneDNN.
// - otherwise oneDNN 2.6 uses vpmaddubsw, which adds pairs of products in int16 and
//   saturates: all-255 u8 times all--128 s8 with K = 16 gives -262144, not -522240, and
//   random u8 or s8 operands come out wrong in most elements (measured on a Zen 4 under
//   ONEDNN_MAX_CPU_ISA=AVX512_CORE and =AVX2). gemm_int8 then runs a plain C++ kernel of
//   softgrad's (int32 accumulators, vectorized by the compiler) instead.
// NOTE: even with VNNI, oneDNN 2.6 rounds s8 @ s8 sums beyond 2^24 through float32 (its
// compensation for VNNI's unsigned a is applied in float), so gemm_int8 gives oneDNN only
// u8 a and does that compensation itself, in int32 (core/onednn.cpp).
#include <cstdint>
#include <string>
#include <vector>

#include "core/bfloat16.h"

namespace sg {

struct OnednnInfo {
  std::string version;     // "2.6.3"
  std::string isa;         // the ISA oneDNN runs on: "avx512_core_bf16", "avx512_core_amx", ...
  bool bf16_native = false;  // bfloat16 matmul runs on AMX or AVX512-BF16 instructions
  std::string bf16_impl;   // what a probe bfloat16 matmul chose ("brg:avx512_core_bf16"),
                           // or why there is none
  bool int8_native = false;  // int8 matmul runs on VNNI or AMX-INT8 dot products (the ISA has
                             // avx512_core_vnni, avx2_vnni or amx, and a probe on values that
                             // would saturate came out exact), so gemm_int8 uses oneDNN
  std::string int8_impl;   // what a probe u8 matmul chose ("brg:avx512_core_vnni"), or why there
                           // is none (gemm_int8 gives oneDNN only u8 a: see below)
};

// Probes once (the first call creates oneDNN's engine).
const OnednnInfo& onednn_info();

// Every implementation that has run a bfloat16 GEMM in this process, in first-use order
// (oneDNN's impl_info_str, e.g. "brg:avx512_core_amx_bf16").
std::vector<std::string> onednn_impls_used();
// The same for gemm_int8: oneDNN's impl_info_str ("brg:avx512_core_vnni"), or
// kInt8GemmPortableImpl when softgrad's own kernel ran.
std::vector<std::string> onednn_int8_impls_used();

// Row-major GEMM with bfloat16 operands, float32 accumulation and a float32 result:
//   c (M, N) = op(a) @ op(b) + beta * c,  op(x) = x^T when its flag is set, beta 0 or 1.
// The layout arguments mean what they mean for sg::gemm (core/blas.h). M, N, K > 0.
// Primitives are cached by shape and layout. Requires onednn_info().bf16_native.
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const bfloat16* a, int64_t lda,
               const bfloat16* b, int64_t ldb, float beta, float* c, int64_t ldc);

// Integer GEMM: c = a @ op(b) with exact int32 sums (bit for bit the triple loop of
// gemm_int8_reference), batched over up to two leading dims.
//   a: (batch0, batch1, M, K), uint8 or int8 (a_signed); element (i, j, m, k) at
//      a[i * a_stride0 + j * a_stride1 + m * lda + k]
//   b: int8, (K, N) with row stride ldb, or when trans_b the transpose of an (N, K) matrix
//      with row stride ldb; batch strides b_stride0, b_stride1
//   c: int32, element (i, j, m, n) at c[i * c_stride0 + j * c_stride1 + m * ldc + n]
// A batch stride of 0 gives every batch element the same a or b (a weight matrix shared by
// all). Elements of c must not overlap. Multi-head attention's scores q @ k^T, all heads in
// one call, read q and k out of a (B, T, 3, H, D) qkv buffer into a (B, H, T, T) c (as
// tests/test_onednn_int8.cpp does):
//   Int8Gemm g{.batch0 = B, .batch1 = H, .M = T, .N = T, .K = D,
//              .a = qkv, .lda = 3 * H * D, .a_stride0 = T * 3 * H * D, .a_stride1 = D,
//              .b = qkv + H * D, .trans_b = true, .ldb = 3 * H * D, .b_stride0 = T * 3 * H * D,
//              .b_stride1 = D, .c = scores, .ldc = T, .c_stride0 = H * T * T, .c_stride1 = T * T};
// No scales and no zero points: dequantizing is the caller's.
//
// Where onednn_info().int8_native, oneDNN runs it (one primitive cached per distinct shape,
// strides and a's type); elsewhere softgrad's own kernel does (see the top of this file).
struct Int8Gemm {
  int64_t batch0 = 1, batch1 = 1, M = 0, N = 0, K = 0;
  const void* a = nullptr;
  bool a_signed = true;
  int64_t lda = 0, a_stride0 = 0, a_stride1 = 0;
  const int8_t* b = nullptr;
  bool trans_b = false;
  int64_t ldb = 0, b_stride0 = 0, b_stride1 = 0;
  int32_t* c = nullptr;
  int64_t ldc = 0, c_stride0 = 0, c_stride1 = 0;
  // Optional, for a b that is used again and again (a layer's weights) with signed a: b's
  // column sums (int8_column_sums), which the signed path needs and otherwise computes on
  // every call (K x N work: more than the product itself at M = 1). One matrix of b only
  // (batch0 = batch1 = 1, or b strides 0).
  const int32_t* b_column_sums = nullptr;
  // With a_signed: c receives (a + 128) @ b, i.e. a's bytes read as uint8 after flipping the
  // sign bit, for a caller that subtracts 128 colsum(b) itself (a layer folds it into its
  // bias): the u8 x s8 product VNNI computes, without the correction pass over c.
  bool a_plus_128 = false;
};

// sum over k of b[k][n] (b (K, N), or (N, K) with trans_b, leading dimension ldb) -> sums (N).
void int8_column_sums(int64_t K, int64_t N, const int8_t* b, int64_t ldb, bool trans_b, int32_t* sums);

// The largest K gemm_int8 accepts: every sum must fit int32. A u8 * s8 product lies in
// [255 * -128, 255 * 127] = [-32640, 32385], so K terms stay >= -2^31 while
// K <= 2^31 / 32640, i.e. K <= 65793; s8 * s8 lies in [-16256, 16384], so K <= 131071.
// 2^16 is under both (255 * 128 * 2^16 = 2139095040 < 2^31 = 2147483648).
inline constexpr int64_t kInt8GemmMaxK = int64_t{1} << 16;

// Names softgrad's own int8 kernel in onednn_int8_impls_used().
inline constexpr const char* kInt8GemmPortableImpl = "softgrad:int8_dot_tiles";

// Throws sg::Error naming the op, the shapes and the bad value for: a size <= 0,
// K > kInt8GemmMaxK, a null pointer, a negative stride, a leading dimension shorter than its
// row (lda < K, ldb < N or, with trans_b, ldb < K, ldc < N), or strides of c that make two of
// its elements share memory.
void gemm_int8(const Int8Gemm& g);

// The specification: for each (i, j, m, n), an int32 sum over k in order. For tests.
void gemm_int8_reference(const Int8Gemm& g);

// ---- 2-D convolution (core/onednn_conv.cpp) -------------------------------------------------
//
// oneDNN's convolution primitive, forward and both backward products, on NCHW tensors:
//   x (N, C, H, W), w (O, C / groups, kh, kw), bias (O), y (N, O, Ho, Wo).
// oneDNN picks its own layout for each (format "any": blocked nChw16c / NHWC for its
// AVX-512 and AMX kernels); softgrad's NCHW operands are reordered in and out around each
// call, inside oneDNN. Primitives and reorders are cached per distinct OnednnConv.
// bf16: x, w and dy are bfloat16 (autocast's operands), every result float32 (sums in
// float32); otherwise all float32.
// winograd: oneDNN's Winograd F(4x4, 3x3) kernels (float32, 3x3, stride 1, no dilation, no
// groups; AVX-512): 4x fewer multiplications than the direct convolution, for a larger
// rounding error (the transforms' sums; see tests/test_conv_onednn.cpp for the bound used).
// onednn_conv_impl says "none (...)" where oneDNN has no such kernel.
struct OnednnConv {
  int64_t N = 0, C = 0, H = 0, W = 0, O = 0, groups = 1, kh = 0, kw = 0, Ho = 0, Wo = 0;
  int64_t sh = 1, sw = 1, dh = 1, dw = 1;  // stride and dilation as PyTorch counts them (1 = dense)
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  bool bf16 = false;
  bool winograd = false;
  auto operator<=>(const OnednnConv&) const = default;
};

// The implementation oneDNN picks for this convolution's forward ("brg_conv_fwd:avx512_core",
// "jit:avx512_core", "gemm:jit", "ref:any", ...), or "none (why)" when it has none.
std::string onednn_conv_impl(const OnednnConv& c);
// Every convolution implementation that has run in this process (forward, backward data,
// backward weights alike), in first-use order, each prefixed with its kind ("fwd ", "bwd_d ",
// "bwd_w ").
std::vector<std::string> onednn_conv_impls_used();

// y = conv(x, w) + bias (bias may be null). x and w are float or bfloat16 as c.bf16 says.
// saved_src: where oneDNN reads x in another layout than NCHW, the reordered copy is also
// written there (onednn_conv_saved_src_bytes(c, bias != null) bytes, 64-byte aligned), for
// the weight gradient to read instead of x (saves reordering x again); ignored when that
// size is 0 (x is read as it is).
void onednn_conv_forward(const OnednnConv& c, const void* x, const void* w, const float* bias, float* y,
                         void* saved_src = nullptr);
size_t onednn_conv_saved_src_bytes(const OnednnConv& c, bool bias);
// The gradients for dy (each overwritten; null: not wanted): dx of the input, and dw of
// the weight with db of the bias (db only together with dw). dy is reordered once for both.
// x: the input as given to the forward, or null when saved_src holds the forward's copy
// (then `bias` says which forward wrote it).
void onednn_conv_backward(const OnednnConv& c, const void* x, const void* w, const void* dy, float* dx, float* dw,
                          float* db, const void* saved_src = nullptr, bool bias = false);

}  // namespace sg
