// y = W x for the SpQR format (format/spqr.hpp): the dense small-group part
// on the permuted activations, then the sparse outlier add.
//
//   y_r = sum_t s_rt (sum_{p in t} c_rp x_perm[p] - z_rt A_t) + sum_i v_i x[col_i]
//
// over the 16-code subgroups t of a row (a group of beta1 = 16 n codes is n
// subgroups sharing its statistics), with A_t = sum_{p in t} x_perm[p]
// computed once per call. The dense part is kernels/code_dot.hpp's row
// kernel (beta1 a multiple of 16 and K % 32 == 0; the scalar reference
// otherwise), straight from the packed codes: it computes each scale and
// zero-point term from the statistic codes, against the second-level
// parameters folded with A once per row block (O(K) per block of beta2
// rows). The permutation and the CSR row pointers are unpacked from their
// packed form once per call (O(K + M)); the statistic codes per 16 rows and
// the fp16 parameters per block go through the table's SIMD unpack and
// F16C/NEON widening, the outlier values through the sparse add's (the
// per-group work is 1/16 of the weights' and would otherwise rival the dot
// itself).
//
// Activations::int8 quantizes x_perm per 32 like the group kernels' q8 path
// (d_b = max|x| / 127 over block b, detail::PreparedActivations): the dense
// part is then an integer dot per subgroup (vpdpbusd / maddubs / sdot)
// with d_b multiplying the subgroup's scale, and A_t sums the quantized
// values d_b q. The outliers meet the same quantized values: an outlier is the
// correction of its position's dense value, which can lie far from the
// weight (where most of a group's weights are outliers its statistics say
// little: on the main example's matrix such dense values reach 6.9 where
// |W| <= 0.47), so with fp32 x for the outliers the dense part's activation
// error there is not cancelled (6.9% output error against fp32
// activations, instead of 0.54% with the quantized values for both).
// Rows run in parallel and every row is computed the same way for any
// thread count (bit-identical results).
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/parallel.hpp"
#include "../format/spqr.hpp"
#include "gemv.hpp"

namespace lowbit {

inline void gemv(const SpqrMatrix& w, span<const float> x, span<float> y, const RunOptions& opt = {}) {
  const SpqrMatrix::Unpacked layout = w.validate_unpacked();
  LOWBIT_CHECK(x.size() == w.cols, "gemv", "x has ", x.size(), " elements, W has K = ", w.cols, " columns");
  LOWBIT_CHECK(y.size() == w.rows, "gemv", "y has ", y.size(), " elements, W has M = ", w.rows, " rows");
  const bool int8 = opt.activations == Activations::int8;
  const std::size_t K = w.cols, G = w.groups_per_row(), g = w.group, sub = detail::code_dot_group;
  const auto& k = detail::active_kernels();
  // The row kernel: groups of whole subgroups, whole 32-code blocks.
  const bool fast = g % sub == 0 && K % 32 == 0;
  std::vector<float> xp(x.begin(), x.end());
  for (std::size_t p = 0; p < layout.perm.size(); ++p) xp[p] = x[layout.perm[p]];
  const std::vector<std::uint32_t>& starts = layout.starts;
  // A: the activation sums per subgroup (fast) or group. fp32: x_perm in the
  // kernel's lane order. int8: x_perm quantized per 32 (d_b, q), A summed
  // from the values d_b q that the kernel multiplies by, and d_b for each
  // subgroup (xs).
  const std::size_t span_A = fast ? sub : g;
  // The row kernel's per-subgroup arrays: zero padding to whole spans.
  const std::size_t T = K / sub, padded = (T + detail::spqr_span - 1) / detail::spqr_span * detail::spqr_span;
  detail::PreparedActivations a;
  std::vector<float> A, xs, xo;  // xo (int8): the quantized values in natural order, for the outliers
  int x_exp = 0;  // fp32: x scaled by 2^x_exp for the row kernel (detail::spqr_x_exp)
  if (!int8) {
    a.prepare(xp.data(), K, span_A, false, fast ? k.f32_lanes : 0);
    A = std::move(a.group_sum);
    if (fast) {
      float m = 0;
      for (const float v : x) m = std::max(m, std::fabs(v));
      x_exp = detail::spqr_x_exp(w.bits, m);
    }
    const float scale = std::ldexp(1.0f, x_exp);  // exact: a power of two in the normal range
    if (x_exp != 0)
      for (float& v : a.x) v *= scale;
  } else {
    a.prepare(xp.data(), K, detail::act_block, true, 0, k.quantize_i8);
    a.values(xp.data(), K, 0);  // the reference path below reads these
    A.assign((K + span_A - 1) / span_A, 0.0f);
    for (std::size_t p = 0; p < K; ++p) A[p / span_A] += xp[p];
    if (fast) {
      xs.assign(padded, 0.0f);
      for (std::size_t t = 0; t < T; ++t) xs[t] = a.d[t * sub / detail::act_block];
    }
    xo = xp;
    for (std::size_t p = 0; p < layout.perm.size(); ++p) xo[layout.perm[p]] = xp[p];
  }
  if (fast) A.resize(padded, 0.0f);
  const float* x_outlier = int8 ? xo.data() : x.data();
  const std::size_t nstat = w.rows * G;
  parallel_for(w.rows, 16, detail::threads_for(w.rows, K, opt.threads), [&](std::size_t r0, std::size_t r1) {
    if (!fast) {  // any group size: the statistics per element, the dot in scalar code
      std::vector<float> s(G);
      for (std::size_t r = r0; r < r1; ++r) {
        float zero_term = 0;
        for (std::size_t j = 0; j < G; ++j) zero_term += (s[j] = w.scale(r, j)) * w.zero(r, j) * A[j];
        y[r] = detail::group_scaled_dot_reference(w.row_codes(r), K, w.bits, xp.data(), s.data(), g) - zero_term;
      }
    } else {
      // Per block of stat_group rows, the second-level parameters (scale's
      // s and z, zero's s and z per group) widened and folded with the
      // activation sums into per-subgroup arrays (detail::SubgroupStats).
      const std::size_t B = w.stat_group, per = g / sub;
      std::vector<float> par(4 * G), fp(padded), fpz(padded), fqa(padded), fqza(padded);  // zero padding
      // Statistic codes of up to `chunk` rows at a time: one unpack call per
      // chunk instead of per row (per row, the calls' setup rivalled the
      // work). With groups of several subgroups, a row's codes repeated per
      // subgroup.
      constexpr std::size_t chunk = 16;
      std::vector<std::uint8_t> sc(chunk * G + detail::spqr_span), zc(sc.size());
      std::vector<std::uint8_t> sct(per > 1 ? padded : 0), zct(sct.size());
      std::size_t h0 = r0, h1 = r0;  // rows [h0, h1): those whose codes sc, zc hold
      std::size_t block = std::size_t(-1);
      for (std::size_t r = r0; r < r1; ++r) {
        if (r / B != block) {
          block = r / B;
          k.halves_to_float(w.stat_params.data() + block * G * 4, 4 * G, par.data());
          float* const out[4] = {fp.data(), fpz.data(), fqa.data(), fqza.data()};
          k.fold_stats(par.data(), A.data(), T, per, out);
        }
        // With x, the codes and the block's arrays they stay in L1.
        if (r == h1) {
          h0 = r;
          h1 = std::min(r1, r + chunk);
          k.unpack_codes(w.scale_codes.data(), nstat, w.stat_bits, h0 * G, (h1 - h0) * G, sc.data());
          k.unpack_codes(w.zero_codes.data(), nstat, w.stat_bits, h0 * G, (h1 - h0) * G, zc.data());
        }
        const std::uint8_t *scr = sc.data() + (r - h0) * G, *zcr = zc.data() + (r - h0) * G;
        if (per > 1) {
          for (std::size_t t = 0; t < T; ++t) sct[t] = scr[t / per], zct[t] = zcr[t / per];
          scr = sct.data(), zcr = zct.data();
        }
        const detail::SubgroupStats st{scr,       zcr, fp.data(), fpz.data(), fqa.data(), fqza.data(),
                                       A.data(), int8 ? xs.data() : nullptr, x_exp};
        y[r] = int8 ? k.spqr_row_q8(w.row_codes(r), K, w.bits, a.q.data(), st)
                    : k.spqr_row(w.row_codes(r), K, w.bits, a.x.data(), st);
      }
    }
    // The outliers after the dense rows: their gathers from x (natural
    // order) would otherwise share L1 with the kernel's copy of x.
    for (std::size_t r = r0; r < r1; ++r)
      y[r] += k.sparse_dot(w.outlier_col.data() + starts[r], w.outlier_val.data() + starts[r],
                           starts[r + 1] - starts[r], x_outlier);
  });
}

}  // namespace lowbit
