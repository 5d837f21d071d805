// Sparse outlier add: sum_i val[i] x[col[i]] over one CSR row (the outlier
// part of SpQR), the values in fp16 as stored. The SIMD kernel gathers a
// batch of x per batch of outliers, widening indices and values on the way
// (F16C / NEON); at ~40 outliers per row, one scalar load of x, of the
// value and of the index per outlier made the add about a tenth of SpQR's
// gemv (perf, stop 32).
#pragma once

#include <cstddef>
#include <cstdint>

#include "../core/types.hpp"
#include "../simd/ops.hpp"

namespace lowbit::detail {

// The reference, in order. Four sums break the add chain.
inline float sparse_dot_reference(const std::uint16_t* col, const std::uint16_t* val, std::size_t n,
                                  const float* x) noexcept {
  float a[4] = {0, 0, 0, 0};
  for (std::size_t i = 0; i < n; ++i) a[i % 4] += fp16::from_bits(val[i]).to_float() * x[col[i]];
  return (a[0] + a[1]) + (a[2] + a[3]);
}

template <class Tag>
float sparse_dot(const std::uint16_t* col, const std::uint16_t* val, std::size_t n, const float* x) noexcept {
  using F = simd::f32<Tag>;
  constexpr std::size_t L = F::size;
  F acc(0.0f);
  std::size_t i = 0;
  for (; i + L <= n; i += L)
    acc = xsimd::fma(simd::load_halves<Tag>(val + i), simd::gather<Tag>(x, simd::widen_u16<Tag>(col + i)), acc);
  float tail = 0;
  for (; i < n; ++i) tail += simd::half_to_float<Tag>(val[i]) * x[col[i]];
  return xsimd::hadd(acc) + tail;
}

}  // namespace lowbit::detail
