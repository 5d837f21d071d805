// Lookup-table GEMV for small codebooks along the input axis (T-MAC, Wei et
// al., "T-MAC: CPU Renaissance via Table Lookup for Low-Bit LLM Deployment
// on Edge", 2024; LUT Tensor Core, Mo et al., 2024: the table precompute
// runs once per call, fused with the GEMV).
//
// A row of a VQ part along the input axis is nb vectors of v inputs, so
//   y[a] += sum_b dot(C[idx(a nb + b)], xs[b v .. b v + v))
// and the k possible dot products of segment b are the same for every row:
//   T[b][c] = dot(C[c], xs[b v ..])         (nb k v multiply-adds, once)
//   y[a]   += sum_b T[b][idx(a nb + b)]     (one load and add per vector)
// which replaces M nb v multiply-adds by M nb lookups: worth it when M is
// large against k (k <= 256 here).
//
// The table build is per ISA (kernel_table::lut_build, vectorized over
// centroids); the lookups are plain loads on every ISA.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "../simd/ops.hpp"
#include "vq_kernel.hpp"

namespace lowbit::detail {

inline constexpr std::size_t lut_max_entries = 256;
inline constexpr std::size_t lut_tile_bytes = 16 * 1024, lut_row_block = 2048;

// ct: the codebook as floats, transposed (v x k, ct[t k + c]). Tables of
// segments [b0, b1): T[b k + c].
inline void lut_build_reference(const float* ct, std::size_t k, std::size_t v, const float* xs, std::size_t b0,
                                std::size_t b1, float* T) {
  for (std::size_t b = b0; b < b1; ++b)
    for (std::size_t c = 0; c < k; ++c) {
      float s = 0;
      for (std::size_t t = 0; t < v; ++t) s += ct[t * k + c] * xs[b * v + t];
      T[b * k + c] = s;
    }
}

template <class Tag>
void lut_build(const float* ct, std::size_t k, std::size_t v, const float* xs, std::size_t b0, std::size_t b1,
               float* T) noexcept {
  using F = simd::f32<Tag>;
  constexpr std::size_t L = F::size;
  const std::size_t kv = k / L * L;
  for (std::size_t b = b0; b < b1; ++b) {
    float* row = T + b * k;
    for (std::size_t c = 0; c < kv; c += L) {
      F s = F::load_unaligned(ct + c) * F(xs[b * v]);
      for (std::size_t t = 1; t < v; ++t) s = xsimd::fma(F::load_unaligned(ct + t * k + c), F(xs[b * v + t]), s);
      s.store_unaligned(row + c);
    }
    for (std::size_t c = kv; c < k; ++c) {  // same order of operations as the vector lanes
      float s = ct[c] * xs[b * v];
      for (std::size_t t = 1; t < v; ++t) s = std::fma(ct[t * k + c], xs[b * v + t], s);
      row[c] = s;
    }
  }
}

// y[a] += sum_b T[b k + idx(a nb + b)] for rows [a0, a1): blocks of
// lut_row_block rows, and within a block tiles of segments whose tables
// fit in L1; a block's index lines (64 bytes per row, shared by the next
// tiles) stay in L2 meanwhile.
template <int Bits>
void lut_lookup(const VqLevel& l, std::size_t k, const float* T, float* y, std::size_t a0, std::size_t a1) noexcept {
  const std::size_t tile = std::max<std::size_t>(1, lut_tile_bytes / (k * sizeof(float)));
  for (std::size_t r0 = a0; r0 < a1; r0 += lut_row_block) {
    const std::size_t r1 = std::min(a1, r0 + lut_row_block);
    for (std::size_t b0 = 0; b0 < l.nb; b0 += tile) {
      const std::size_t b1 = std::min(l.nb, b0 + tile);
      for (std::size_t a = r0; a < r1; ++a) {
        const std::size_t base = a * l.nb;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        std::size_t b = b0;
        for (; b + 4 <= b1; b += 4) {
          s0 += T[b * k + vq_index_at<Bits>(l.indices, l.bits, base + b)];
          s1 += T[(b + 1) * k + vq_index_at<Bits>(l.indices, l.bits, base + b + 1)];
          s2 += T[(b + 2) * k + vq_index_at<Bits>(l.indices, l.bits, base + b + 2)];
          s3 += T[(b + 3) * k + vq_index_at<Bits>(l.indices, l.bits, base + b + 3)];
        }
        for (; b < b1; ++b) s0 += T[b * k + vq_index_at<Bits>(l.indices, l.bits, base + b)];
        y[a] += (s0 + s1) + (s2 + s3);
      }
    }
  }
}

}  // namespace lowbit::detail
