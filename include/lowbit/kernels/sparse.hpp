// Sparse outlier add: y[r] += sum_i val[i] x[col[i]] over a CSR row (the
// outlier part of SpQR), the values already widened from fp16 (one SIMD
// conversion per 256 rows, kernels/spqr_gemv.hpp). A gather per nonzero:
// at ~1% density its cost is small beside the dense part, so one loop
// serves every ISA (and is its own scalar reference).
#pragma once

#include <cstddef>
#include <cstdint>

namespace lowbit::detail {

// sum_i val[i] x[col[i]] over one row's n outliers. Two sums break the add
// chain.
inline float sparse_dot(const std::uint16_t* col, const float* val, std::size_t n, const float* x) noexcept {
  float a0 = 0, a1 = 0;
  std::size_t i = 0;
  for (; i + 2 <= n; i += 2) {
    a0 += val[i] * x[col[i]];
    a1 += val[i + 1] * x[col[i + 1]];
  }
  if (i < n) a0 += val[i] * x[col[i]];
  return a0 + a1;
}

}  // namespace lowbit::detail
