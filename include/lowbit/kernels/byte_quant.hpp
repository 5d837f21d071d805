// Vectors quantized to bytes with one step (dynamic int8 activations): the
// scalar meaning and its SIMD twin, which gives the same codes. Used for the
// group kernels' int8 activations (kernels/group_gemv.hpp) and for the int8
// queries and probability weights of decode attention.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "../simd/ops.hpp"

namespace lowbit::detail {

// v[0, n) as bytes with one step: q[i] = nearbyint(v[i] * (M / max|v|)), ties
// to even, M = 127 for int8_t (symmetric) and 255 for uint8_t (v >= 0: the
// probability weights); returns the step max|v| / M (0, and all codes 0, for
// an all-zero v). |v[i]| * (M / max|v|) <= M (1 + eps) rounds to at most M.
template <class T>
inline constexpr float byte_levels = std::is_signed_v<T> ? 127.0f : 255.0f;
template <class T>
inline float quantize_bytes(const float* v, std::size_t n, T* q) noexcept {
  float top = 0.0f;
  for (std::size_t i = 0; i < n; ++i) top = std::max(top, std::fabs(v[i]));
  const float inv = top > 0.0f ? byte_levels<T> / top : 0.0f;
  for (std::size_t i = 0; i < n; ++i) q[i] = T(std::nearbyint(v[i] * inv));
  return top / byte_levels<T>;
}

// quantize_bytes over batches, given m = max|v| (callers may fold it into the
// loops that make v): the same float operations, so the same codes.
template <class Tag, class T>
LOWBIT_ALWAYS_INLINE inline float quantize_bytes_simd(const float* v, std::size_t n, float m, T* q) noexcept {
  using F = simd::f32<Tag>;
  constexpr std::size_t L = F::size;
  const float inv = m > 0.0f ? byte_levels<T> / m : 0.0f;
  const auto code = [&](std::size_t i) { return xsimd::nearbyint_as_int(F::load_unaligned(v + i) * F(inv)); };
  std::size_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L)
    simd::narrow8<Tag>(code(i), code(i + L), code(i + 2 * L), code(i + 3 * L), q + i);
  for (; i < n; ++i) q[i] = T(std::nearbyint(v[i] * inv));
  return m / byte_levels<T>;
}

// quantize_bytes<int8_t> in SIMD, max|v| included (a kernel table entry).
template <class Tag>
float quantize_i8(const float* v, std::size_t n, std::int8_t* q) noexcept {
  using F = simd::f32<Tag>;
  constexpr std::size_t L = F::size;
  F top(0.0f);
  std::size_t i = 0;
  for (; i + L <= n; i += L) top = xsimd::max(top, xsimd::abs(F::load_unaligned(v + i)));
  float m = simd::reduce_max<Tag>(top);
  for (; i < n; ++i) m = std::max(m, std::fabs(v[i]));
  return quantize_bytes_simd<Tag>(v, n, m, q);
}

}  // namespace lowbit::detail
