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
// from their packed form once per call (O(K + M)).
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
  w.validate();
  LOWBIT_CHECK(x.size() == w.cols, "gemv", "x has ", x.size(), " elements, W has K = ", w.cols, " columns");
  LOWBIT_CHECK(y.size() == w.rows, "gemv", "y has ", y.size(), " elements, W has M = ", w.rows, " rows");
  LOWBIT_CHECK(opt.activations == Activations::fp32, "gemv", "the SpQR kernel takes fp32 activations");
  const std::size_t K = w.cols, G = w.groups_per_row(), g = w.group;
  const auto& k = detail::active_kernels();
  const std::size_t per = g / detail::code_dot_group;  // 16-code subgroups per group
  const bool fast = g % detail::code_dot_group == 0 && K % 32 == 0 && k.f32_lanes > 0;
  std::vector<float> xp(x.begin(), x.end());
  if (!w.perm.empty()) {
    const std::vector<std::uint32_t> perm = w.permutation();
    for (std::size_t p = 0; p < K; ++p) xp[p] = x[perm[p]];
  }
  const std::vector<std::uint32_t> starts = w.row_starts();
  detail::PreparedActivations a;  // x_perm in the kernel's lane order, and the group sums A_j
  a.prepare(xp.data(), K, g, false, fast ? k.f32_lanes : 0);
  const std::vector<float>& A = a.group_sum;
  const std::size_t nstat = w.rows * G;
  parallel_for(w.rows, 16, detail::threads_for(w.rows, K, opt.threads), [&](std::size_t r0, std::size_t r1) {
    // Per block of stat_group rows: the second-level parameters (one array
    // per kind: scale's s and z, zero's s and z) and the rows' statistic
    // codes, unpacked once for the block.
    const std::size_t B = w.stat_group;
    std::vector<std::uint8_t> sc(B * G), zc(B * G);
    std::vector<float> ps(G), pz(G), qs(G), qz(G), s(G), s16(fast && per > 1 ? K / detail::code_dot_group : 0);
    std::size_t block = std::size_t(-1), first = 0;
    for (std::size_t r = r0; r < r1; ++r) {
      if (r / B != block) {
        block = r / B;
        first = r;
        const std::uint16_t* par = w.stat_params.data() + block * G * 4;
        for (std::size_t j = 0; j < G; ++j) {
          ps[j] = fp16::from_bits(par[4 * j]).to_float();
          pz[j] = fp16::from_bits(par[4 * j + 1]).to_float();
          qs[j] = fp16::from_bits(par[4 * j + 2]).to_float();
          qz[j] = fp16::from_bits(par[4 * j + 3]).to_float();
        }
        const std::size_t n = (std::min(r1, (block + 1) * B) - r) * G;
        bitpack::unpack_range(w.scale_codes.data(), nstat, w.stat_bits, r * G, n, sc.data());
        bitpack::unpack_range(w.zero_codes.data(), nstat, w.stat_bits, r * G, n, zc.data());
      }
      const std::size_t i = (r - first) * G;
      const float zero_term =
          k.group_scales({&sc[i], &zc[i], ps.data(), pz.data(), qs.data(), qz.data(), A.data()}, G, s.data());
      for (std::size_t j = 0, t = 0; t < s16.size(); ++j)  // scale j for each 16-code subgroup of group j
        for (std::size_t u = 0; u < per && t < s16.size(); ++u) s16[t++] = s[j];
      const float dense =
          fast ? k.group16_dot(w.row_codes(r), K, w.bits, a.x.data(), per > 1 ? s16.data() : s.data())
               : detail::group_scaled_dot_reference(w.row_codes(r), K, w.bits, xp.data(), s.data(), g);
      y[r] = dense - zero_term;
    }
    detail::csr_add(starts.data(), w.outlier_col.data(), w.outlier_val.data(), x.data(), y.data(), r0, r1);
  });
}

}  // namespace lowbit
