// y = W x for the SpQR format (format/spqr.hpp): the dense small-group part
// on the permuted activations, then the sparse outlier add.
//
//   y_r = sum_j s_rj (sum_{p in j} c_rp x_perm[p] - z_rj A_j) + sum_i v_i x[col_i]
//
// with A_j = sum_{p in j} x_perm[p] computed once per call. The dense part
// is kernels/code_dot.hpp's SIMD kernel straight from the packed codes (for
// beta1 a multiple of 16 and K % 32 == 0, a group of 16 n taking its scale
// n times; the scalar reference otherwise), the zero-point part one dot of
// length G per row. The permutation and the CSR row pointers are unpacked
// from their packed form once per call (O(K + M)); the statistic codes per
// 16 rows and the fp16 parameters and outlier values per block go through
// the table's SIMD unpack and F16C/NEON widening (the per-group work is 1/16
// of the weights' and would otherwise rival the dot itself).
//
// Activations::int8 quantizes x_perm per 32 like the group kernels' q8 path
// (d_b = max|x| / 127 over block b, detail::PreparedActivations): the dense
// part is then an integer dot per 16-code group (vpdpbusd / maddubs / sdot)
// with d_b folded into the row's scales, and A_j sums the quantized values
// d_b q. The outliers meet the same quantized values: an outlier is the
// correction of its position's dense value, which can lie far from the
// weight (where most of a group's weights are outliers its statistics say
// little: on the main example's matrix such dense values reach 6.9 where
// |W| <= 0.47), so with fp32 x for the outliers the dense part's activation
// error there is not cancelled (6.9% output error against fp32
// activations, instead of 0.54% with the quantized values for both).
// Rows run in parallel and every row is computed the same way for any
// thread count (bit-identical results).
#pragma once

#include <vector>

#include "../core/parallel.hpp"
#include "../format/spqr.hpp"
#include "gemv.hpp"
#include "sparse.hpp"

namespace lowbit {

inline void gemv(const SpqrMatrix& w, span<const float> x, span<float> y, const RunOptions& opt = {}) {
  const SpqrMatrix::Unpacked layout = w.validate_unpacked();
  LOWBIT_CHECK(x.size() == w.cols, "gemv", "x has ", x.size(), " elements, W has K = ", w.cols, " columns");
  LOWBIT_CHECK(y.size() == w.rows, "gemv", "y has ", y.size(), " elements, W has M = ", w.rows, " rows");
  const bool int8 = opt.activations == Activations::int8;
  const std::size_t K = w.cols, G = w.groups_per_row(), g = w.group;
  const auto& k = detail::active_kernels();
  const std::size_t per = g / detail::code_dot_group;  // 16-code subgroups per group
  const bool fast = g % detail::code_dot_group == 0 && K % 32 == 0 && k.f32_lanes > 0;
  std::vector<float> xp(x.begin(), x.end());
  for (std::size_t p = 0; p < layout.perm.size(); ++p) xp[p] = x[layout.perm[p]];
  const std::vector<std::uint32_t>& starts = layout.starts;
  // fp32: x_perm in the kernel's lane order, and the group sums A_j.
  // int8: x_perm quantized per 32 (d_b, q), A_j summed from the values d_b q
  // that the kernel multiplies by, and d_b for each 16-code subgroup (xs),
  // folded into the row's scales.
  detail::PreparedActivations a;
  std::vector<float> A, xs, xo;  // xo (int8): the quantized values in natural order, for the outliers
  if (!int8) {
    a.prepare(xp.data(), K, g, false, fast ? k.f32_lanes : 0);
    A = std::move(a.group_sum);
  } else {
    a.prepare(xp.data(), K, detail::act_block, true, 0, k.quantize_i8);
    a.values(xp.data(), K, 0);  // the reference path below reads these
    A.assign(G, 0.0f);
    for (std::size_t p = 0; p < K; ++p) A[p / g] += xp[p];
    xs.resize(K / detail::code_dot_group);
    for (std::size_t t = 0; t < xs.size(); ++t) xs[t] = a.d[t * detail::code_dot_group / detail::act_block];
    xo = xp;
    for (std::size_t p = 0; p < layout.perm.size(); ++p) xo[layout.perm[p]] = xp[p];
  }
  const float* x_outlier = int8 ? xo.data() : x.data();
  const std::size_t nstat = w.rows * G;
  parallel_for(w.rows, 16, detail::threads_for(w.rows, K, opt.threads), [&](std::size_t r0, std::size_t r1) {
    // Per block of stat_group rows: the second-level parameters (one array
    // per kind: scale's s and z, zero's s and z), widened once for the block.
    const std::size_t B = w.stat_group;
    // Statistic codes of up to `chunk` rows at a time: one unpack call per
    // chunk instead of per row (per row, the calls' setup rivalled the work).
    constexpr std::size_t chunk = 16;
    std::vector<std::uint8_t> sc(chunk * G), zc(chunk * G);
    std::size_t h0 = r0, h1 = r0;  // rows [h0, h1): those whose codes sc, zc hold
    const bool expand = fast && (per > 1 || int8);  // scales per 16-code subgroup
    const bool folded = fast && int8 && per == 1;   // int8, beta1 = 16: d_b goes in with the row's scales
    std::vector<float> par(4 * G), ps(G), pz(G), qs(G), qz(G), s(G), s16(expand ? K / detail::code_dot_group : 0);
    std::size_t block = std::size_t(-1);
    for (std::size_t r = r0; r < r1; ++r) {
      if (r / B != block) {
        block = r / B;
        k.halves_to_float(w.stat_params.data() + block * G * 4, 4 * G, par.data());
        for (std::size_t j = 0; j < G; ++j) {
          ps[j] = par[4 * j];
          pz[j] = par[4 * j + 1];
          qs[j] = par[4 * j + 2];
          qz[j] = par[4 * j + 3];
        }
      }
      // With x, the codes and the block's parameters they stay in L1.
      if (r == h1) {
        h0 = r;
        h1 = std::min(r1, r + chunk);
        k.unpack_codes(w.scale_codes.data(), nstat, w.stat_bits, h0 * G, (h1 - h0) * G, sc.data());
        k.unpack_codes(w.zero_codes.data(), nstat, w.stat_bits, h0 * G, (h1 - h0) * G, zc.data());
      }
      const std::size_t at = (r - h0) * G;
      const float zero_term = k.group_scales({sc.data() + at, zc.data() + at, ps.data(), pz.data(), qs.data(),
                                              qz.data(), A.data(), folded ? xs.data() : nullptr},
                                             G, (folded ? s16 : s).data());
      if (fast && per > 1)  // scale j for each 16-code subgroup of group j (times d_b, int8)
        for (std::size_t j = 0, t = 0; t < s16.size(); ++j)
          for (std::size_t u = 0; u < per && t < s16.size(); ++u, ++t) s16[t] = int8 ? s[j] * xs[t] : s[j];
      const float* sv = expand ? s16.data() : s.data();
      float dense;
      if (!fast)
        dense = detail::group_scaled_dot_reference(w.row_codes(r), K, w.bits, xp.data(), s.data(), g);
      else if (int8)
        dense = k.group16_dot_q8(w.row_codes(r), K, w.bits, a.q.data(), sv);
      else
        dense = k.group16_dot(w.row_codes(r), K, w.bits, a.x.data(), sv);
      y[r] = dense - zero_term;
    }
    // The outliers after the dense rows: their gathers from x (natural
    // order) would otherwise share L1 with the kernel's copy of x. Values
    // widened per 256 rows.
    std::vector<float> val;
    for (std::size_t c0 = r0; c0 < r1; c0 += 256) {
      const std::size_t c1 = std::min(r1, c0 + 256);
      val.resize(starts[c1] - starts[c0]);
      k.halves_to_float(w.outlier_val.data() + starts[c0], val.size(), val.data());
      for (std::size_t r = c0; r < c1; ++r)
        y[r] += detail::sparse_dot(w.outlier_col.data() + starts[r], val.data() + (starts[r] - starts[c0]),
                                   starts[r + 1] - starts[r], x_outlier);
    }
  });
}

}  // namespace lowbit
