// y = W x for the SpQR format (format/spqr.hpp): the dense small-group part
// on the permuted activations, then the sparse outlier add.
//
//   y_r = sum_j s_rj (sum_{p in j} c_rp x_perm[p] - z_rj A_j) + sum_i v_i x[col_i]
//
// with A_j = sum_{p in j} x_perm[p] computed once per call. The dense part is
// plain C++ written to auto-vectorize (byte -> float and multiply-add per
// group of 16); a SIMD kernel over the int8 block layout is future work.
// Rows run in parallel and every row is computed the same way for any
// thread count (bit-identical results).
#pragma once

#include <vector>

#include "../core/parallel.hpp"
#include "../format/spqr.hpp"
#include "group_gemv.hpp"
#include "sparse.hpp"

namespace lowbit {

inline void gemv(const SpqrMatrix& w, span<const float> x, span<float> y, const RunOptions& opt = {}) {
  w.validate();
  LOWBIT_CHECK(x.size() == w.cols, "gemv", "x has ", x.size(), " elements, W has K = ", w.cols, " columns");
  LOWBIT_CHECK(y.size() == w.rows, "gemv", "y has ", y.size(), " elements, W has M = ", w.rows, " rows");
  LOWBIT_CHECK(opt.activations == Activations::fp32, "gemv", "the SpQR kernel takes fp32 activations");
  const std::size_t K = w.cols, G = w.groups_per_row(), g = w.group;
  std::vector<float> xp(K), A(G, 0.0f);
  for (std::size_t p = 0; p < K; ++p) {
    xp[p] = x[w.column(p)];
    A[p / g] += xp[p];
  }
  const std::size_t nstat = w.rows * G;
  parallel_for(w.rows, 16, opt.threads, [&](std::size_t r0, std::size_t r1) {
    std::vector<std::uint8_t> c(K), sc(G), zc(G);
    std::vector<float> par(4 * G);  // second-level parameters of the current row block
    std::size_t block = std::size_t(-1);
    for (std::size_t r = r0; r < r1; ++r) {
      if (r / w.stat_group != block) {
        block = r / w.stat_group;
        for (std::size_t i = 0; i < 4 * G; ++i) par[i] = fp16::from_bits(w.stat_params[block * G * 4 + i]).to_float();
      }
      bitpack::unpack(w.row_codes(r), K, w.bits, c.data());
      bitpack::unpack_range(w.scale_codes.data(), nstat, w.stat_bits, r * G, G, sc.data());
      bitpack::unpack_range(w.zero_codes.data(), nstat, w.stat_bits, r * G, G, zc.data());
      float acc = 0;
      for (std::size_t j = 0; j < G; ++j) {
        const std::size_t p0 = j * g, p1 = std::min(K, p0 + g);
        float part[8] = {};  // independent sums: the loop vectorizes
        for (std::size_t p = p0; p < p1; ++p) part[(p - p0) % 8] += float(c[p]) * xp[p];
        const float dot = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
        const float* q = par.data() + 4 * j;
        const float s = q[0] * (float(sc[j]) - q[1]), z = q[2] * (float(zc[j]) - q[3]);
        acc += s * (dot - z * A[j]);
      }
      y[r] = acc;
    }
    detail::csr_add(w.row_ptr.data(), w.outlier_col.data(), w.outlier_val.data(), x.data(), y.data(), r0, r1);
  });
}

}  // namespace lowbit
