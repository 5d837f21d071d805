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
// row and the fp16 parameters and outlier values per block go through the
// table's SIMD unpack and F16C/NEON widening (the per-group work is 1/16 of
// the weights' and would otherwise rival the dot itself).
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
  LOWBIT_CHECK(opt.activations == Activations::fp32, "gemv", "the SpQR kernel takes fp32 activations");
  const std::size_t K = w.cols, G = w.groups_per_row(), g = w.group;
  const auto& k = detail::active_kernels();
  const std::size_t per = g / detail::code_dot_group;  // 16-code subgroups per group
  const bool fast = g % detail::code_dot_group == 0 && K % 32 == 0 && k.f32_lanes > 0;
  std::vector<float> xp(x.begin(), x.end());
  for (std::size_t p = 0; p < layout.perm.size(); ++p) xp[p] = x[layout.perm[p]];
  const std::vector<std::uint32_t>& starts = layout.starts;
  detail::PreparedActivations a;  // x_perm in the kernel's lane order, and the group sums A_j
  a.prepare(xp.data(), K, g, false, fast ? k.f32_lanes : 0);
  const std::vector<float>& A = a.group_sum;
  const std::size_t nstat = w.rows * G;
  parallel_for(w.rows, 16, detail::threads_for(w.rows, K, opt.threads), [&](std::size_t r0, std::size_t r1) {
    // Per block of stat_group rows: the second-level parameters (one array
    // per kind: scale's s and z, zero's s and z), widened once for the block.
    const std::size_t B = w.stat_group;
    std::vector<std::uint8_t> sc(G), zc(G);
    std::vector<float> par(4 * G), ps(G), pz(G), qs(G), qz(G), s(G), s16(fast && per > 1 ? K / detail::code_dot_group : 0);
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
      // The row's statistic codes, unpacked per row: with x, the codes and
      // the block's parameters they stay in L1.
      k.unpack_codes(w.scale_codes.data(), nstat, w.stat_bits, r * G, G, sc.data());
      k.unpack_codes(w.zero_codes.data(), nstat, w.stat_bits, r * G, G, zc.data());
      const float zero_term =
          k.group_scales({sc.data(), zc.data(), ps.data(), pz.data(), qs.data(), qz.data(), A.data()}, G, s.data());
      for (std::size_t j = 0, t = 0; t < s16.size(); ++j)  // scale j for each 16-code subgroup of group j
        for (std::size_t u = 0; u < per && t < s16.size(); ++u) s16[t++] = s[j];
      const float dense =
          fast ? k.group16_dot(w.row_codes(r), K, w.bits, a.x.data(), per > 1 ? s16.data() : s.data())
               : detail::group_scaled_dot_reference(w.row_codes(r), K, w.bits, xp.data(), s.data(), g);
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
                                   starts[r + 1] - starts[r], x.data());
    }
  });
}

}  // namespace lowbit
