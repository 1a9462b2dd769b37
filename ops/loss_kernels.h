#pragma once
// Kernels of the fused losses, apart from the graph wiring in ops/loss.cpp. They take raw
// pointers to contiguous buffers and know nothing about Tensor; labels are checked by the
// caller (a kernel never throws: it runs inside OpenMP regions).
//
// Dimension letters: R rows, C classes. cross_entropy sees its logits as R contiguous
// rows of C classes (R = N*d1*...*dk, the class dim last). nll_loss reads (N, C, D) in
// place (D = d1*...*dk, 1 for (N, C)): it picks one entry per row, so no layout pays off.
//
// cross_entropy, index targets, per row r with target t = t_r and weights w (all ones
// when none are given), p = softmax(z_r), log p = log_softmax(z_r):
//   nll_r    = -w_t log p_t                    (0 for an ignored row)
//   smooth_r = -sum_c w_c log p_c              (0 for an ignored row)
//   loss     = (1 - eps) * nll / W + (eps / C) * smooth / Ds   (W, Ds: the Mean denominators)
//   dz_rc    = g_r * (a_r p_c - beta_r [c == t] - gamma_r w_c),
//              beta_r = nll_scale * w_t, gamma_r = smooth_scale, a_r = beta_r + gamma_r * sum_c w_c
//   with nll_scale = (1 - eps) / W and smooth_scale = (eps / C) / Ds; an ignored row gets 0.
// cross_entropy, probability targets t, t' = (1 - eps) t + eps / C:
//   loss_r   = -sum_c w_c t'_rc log p_c,   dz_rc = g_r * scale * (T_r p_c - w_c t'_rc),
//   T_r = sum_c w_c t'_rc; and, when the target requires grad, dt_rc = -g_r * scale * (1 - eps) w_c log p_c.
// Forward reads each row once through the online normalizer (kernels::row_max_sum) and
// keeps only its (max, sum) per row; backward recomputes p = exp(z - max) / sum in the
// same pass that writes dz. Index targets with eps > 0 and probability targets take a
// second pass over the row in forward (it is still in cache) for the sums over c.
// Edge rows (all -inf, +inf entries, NaN) go entry by entry through log_softmax_entry and
// softmax_entry (ops/softmax_kernels.h); the loss and gradient formulas are unchanged.
#include <cstdint>

namespace sg::kernels {

// Per-row results of the cross_entropy forward. stats: (R, kStatCols) doubles per row:
// [max, sum] of the online normalizer (max widened to double, exactly), and for
// probability targets T_r = sum_c w_c t'_rc as a third column.
inline constexpr int64_t kStatCols = 3;

// z: (R, C); target: (R); weight: (C) or null -> stats: (R, kStatCols); nll: (R);
// smooth: (R), or null to skip the smoothing term (eps == 0).
template <typename T>
void cross_entropy_index_forward(const T* z, const int64_t* target, const T* weight, int64_t R, int64_t C,
                                 int64_t ignore_index, double* stats, double* nll, double* smooth);

// z: (R, C); target: (R); weight: (C) or null; stats: (R, kStatCols) from forward;
// g_rows: (R) per-row upstream gradient, or null to use g for every row -> dz: (R, C).
template <typename T>
void cross_entropy_index_backward(const T* z, const int64_t* target, const T* weight, const double* stats, int64_t R,
                                  int64_t C, int64_t ignore_index, const double* g_rows, double g, double nll_scale,
                                  double smooth_scale, T* dz);

// z, t: (R, C); weight: (C) or null -> stats: (R, kStatCols); loss: (R).
template <typename T>
void cross_entropy_prob_forward(const T* z, const T* t, const T* weight, int64_t R, int64_t C, double eps,
                                double* stats, double* loss);

// z, t: (R, C); weight: (C) or null; stats from forward; g_rows as above ->
// dz: (R, C); dt: (R, C) or null when the target needs no gradient.
template <typename T>
void cross_entropy_prob_backward(const T* z, const T* t, const T* weight, const double* stats, int64_t R, int64_t C,
                                 double eps, const double* g_rows, double g, double scale, T* dz, T* dt);

// Naive references for the tests: scalar, three passes per row, sums in long double, the
// same edge rules written out independently. Same arguments as above.
template <typename T>
void cross_entropy_index_forward_naive(const T* z, const int64_t* target, const T* weight, int64_t R, int64_t C,
                                       int64_t ignore_index, double* stats, double* nll, double* smooth);
template <typename T>
void cross_entropy_index_backward_naive(const T* z, const int64_t* target, const T* weight, const double* stats,
                                        int64_t R, int64_t C, int64_t ignore_index, const double* g_rows, double g,
                                        double nll_scale, double smooth_scale, T* dz);
template <typename T>
void cross_entropy_prob_forward_naive(const T* z, const T* t, const T* weight, int64_t R, int64_t C, double eps,
                                      double* stats, double* loss);
template <typename T>
void cross_entropy_prob_backward_naive(const T* z, const T* t, const T* weight, const double* stats, int64_t R,
                                       int64_t C, double eps, const double* g_rows, double g, double scale, T* dz,
                                       T* dt);

// nll_loss. x: (N, C, D); target: (N, D); weight: (C) or null ->
// loss: (N*D) = -w_t x[n, t, j] (0 where ignored); wt: (N*D) = w_t (0 where ignored).
template <typename T>
void nll_loss_forward(const T* x, const int64_t* target, const T* weight, int64_t N, int64_t C, int64_t D,
                      int64_t ignore_index, double* loss, double* wt);
// dx: (N, C, D), zero on entry: dx[n, t, j] = -g_{n,j} * scale * w_t for the rows not ignored.
template <typename T>
void nll_loss_backward(const int64_t* target, const T* weight, int64_t N, int64_t C, int64_t D, int64_t ignore_index,
                       const double* g_rows, double g, double scale, T* dx);

}  // namespace sg::kernels
