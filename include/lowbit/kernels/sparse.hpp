// Sparse outlier add: y[r] += sum_i val[i] x[col[i]] over a CSR row (the
// outlier part of SpQR), the values already widened from fp16 (one SIMD
// conversion per 256 rows, kernels/spqr_gemv.hpp). A gather per nonzero:
// at ~1% density its cost is small beside the dense part, so one loop
// serves every ISA (and is its own scalar reference).
#pragma once

#include <cstddef>
#include <cstdint>

namespace lowbit::detail {

// sum_i val[i] x[col[i]] over one row's n outliers (~40 at 1% of K = 4096).
// Four sums break the add chain: with two, perf put most of the loop's
// samples on its two dependent FMAs.
inline float sparse_dot(const std::uint16_t* col, const float* val, std::size_t n, const float* x) noexcept {
  float a[4] = {0, 0, 0, 0};
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) a[k] += val[i + k] * x[col[i + k]];
  for (int k = 0; i < n; ++i, ++k) a[k] += val[i] * x[col[i]];
  return (a[0] + a[1]) + (a[2] + a[3]);
}

}  // namespace lowbit::detail
