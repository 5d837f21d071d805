// Lookup-table GEMVs (T-MAC, Wei et al., "T-MAC: CPU Renaissance via Table
// Lookup for Low-Bit LLM Deployment on Edge", 2024; LUT Tensor Core, Mo et
// al., 2024: the table precompute runs once per call, fused with the GEMV,
// and tables are symmetrized).
//
// (a) Small VQ codebooks along the input axis. A row of a VQ part is nb
// vectors of v inputs, so
//   y[a] += sum_b dot(C[idx(a nb + b)], xs[b v .. b v + v))
// and the k possible dot products of segment b are the same for every row:
//   T[b][c] = dot(C[c], xs[b v ..])         (nb k v multiply-adds, once)
//   y[a]   += sum_b T[b][idx(a nb + b)]     (one load and add per vector)
// which replaces M nb v multiply-adds by M nb lookups: worth it when M is
// large against k (k <= 256 here). The table build is per ISA
// (kernel_table::lut_build, vectorized over centroids); the lookups are
// plain loads on every ISA.
//
// (b) Bit-serial tables for int2/3/4 group formats (format/bit_plane.hpp).
// With bit planes q = sum_i 2^i q_i and signs s_i = 2 q_i - 1 in {-1, +1},
//   sum_k q_k x_k = 1/2 sum_i 2^i sum_t T_t[p_it] + (2^b - 1)/2 sum_k x_k,
//   T_t[p] = sum_{j<4} (bit j of p ? +1 : -1) x_{4t+j}            (T-MAC §3.1)
// so each quad t of activations has one 16-entry table shared by every row
// and plane, and a row's group sum is
//   s (sum_k q_k x_k - z X_g) = s/2 sum_i 2^i sum_t T_t[p_it] + offset X_g
// with offset = s ((2^b - 1)/2 - z) stored per row and group. The ±1 form
// makes the table odd, T[15 - p] = -T[p] (table symmetrization, LUT Tensor
// Core §3.2): 8 sums per quad are computed, and quantizing to int8 with a
// symmetric scale keeps the symmetry exactly. Tables are int8 with one scale
// d per segment of at most 64 quads inside a group, so a pair of planes,
// |T + 2 T'| <= 381, adds up over a segment in int16 without overflow.
// The lookup is a byte shuffle of 16 rows' 4-bit patterns (pshufb / tbl),
// the pair multiply-add (x1, x2) joins two planes of a row, and a segment
// ends in one conversion: out += float(A) (s d / 2).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../core/parallel.hpp"
#include "../format/bit_plane.hpp"
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

// ---- (b) bit-serial tables -------------------------------------------------

// The tables of one activation vector for a bit-plane matrix: int8 (the
// kernels), or float for activations with NaN or Inf, which then propagate
// as IEEE arithmetic would instead of being quantized into garbage.
struct BitPlaneTables {
  bool int8 = true;
  std::size_t segment = 0;         // quads per table scale (divides the quads of a group)
  std::vector<std::int8_t> q;      // int8: 16 per quad
  std::vector<float> f;            // float: 16 per quad
  std::vector<float> half_scale;   // per segment: d / 2 (int8), 1 / 2 (float)
  std::vector<float> group_sum;    // X_g

  BitPlaneTables(const BitPlaneMatrix& w, const float* x, bool use_int8, int threads = 1) : int8(use_int8) {
    const std::size_t K = w.cols, Q = w.quads(), gq = w.group / 4;
    segment = std::min<std::size_t>(gq, 64);
    while (gq % segment != 0) --segment;
    const std::size_t S = (Q + segment - 1) / segment;
    group_sum.assign(w.groups_per_row(), 0.0f);
    for (std::size_t k = 0; k < K; ++k) group_sum[k / w.group] += x[k];
    if (int8) q.resize(16 * Q);
    else f.resize(16 * Q);
    half_scale.assign(S, int8 ? 0.0f : 0.5f);
    parallel_for(S, 1, threads_for(Q, 64, threads), [&](std::size_t s0, std::size_t s1) {
      float T[64 * 8];
      for (std::size_t i = s0; i < s1; ++i) {
        const std::size_t t0 = i * segment, n = std::min(Q, t0 + segment) - t0;
        for (std::size_t t = 0; t < n; ++t) {
          float a[4] = {0, 0, 0, 0};
          for (std::size_t j = 0; j < 4 && 4 * (t0 + t) + j < K; ++j) a[j] = x[4 * (t0 + t) + j];
          // Entries with bit 3 clear (-x3), built up from all-minus; the
          // other 8 are their negatives, T[15 - p] = -T[p].
          float* e = T + 8 * t;
          e[0] = -((a[0] + a[1]) + (a[2] + a[3]));
          e[1] = e[0] + 2 * a[0];
          e[2] = e[0] + 2 * a[1];
          e[3] = e[2] + 2 * a[0];
          e[4] = e[0] + 2 * a[2];
          e[5] = e[4] + 2 * a[0];
          e[6] = e[4] + 2 * a[1];
          e[7] = e[6] + 2 * a[0];
        }
        if (!int8) {
          for (std::size_t t = 0; t < n; ++t)
            for (std::size_t p = 0; p < 8; ++p) {
              f[16 * (t0 + t) + p] = T[8 * t + p];
              f[16 * (t0 + t) + 15 - p] = -T[8 * t + p];
            }
          continue;
        }
        float amax = 0;
        for (std::size_t k = 0; k < 8 * n; ++k) amax = std::max(amax, std::fabs(T[k]));
        if (amax == 0.0f) continue;  // zero tables, scale 0
        const float inv = 127.0f / amax;
        for (std::size_t t = 0; t < n; ++t)
          for (std::size_t p = 0; p < 8; ++p) {
            const float v = T[8 * t + p] * inv;  // rounded half away from zero: symmetric
            const int r = std::clamp(int(v + std::copysign(0.5f, v)), -127, 127);
            q[16 * (t0 + t) + p] = std::int8_t(r);
            q[16 * (t0 + t) + 15 - p] = std::int8_t(-r);
          }
        half_scale[i] = amax / 127.0f * 0.5f;
      }
    });
  }
};

// The scalar reference, int8 or float tables: rows of tiles [tile0, tile1).
// The integer sums are exact and the float steps are the SIMD kernel's, in
// its order, so both give identical results.
inline void bit_plane_gemv_reference(const BitPlaneMatrix& w, const BitPlaneTables& tb, float* y,
                                     std::size_t tile0, std::size_t tile1) {
  const std::size_t Q = w.quads(), G = w.groups_per_row(), gq = w.group / 4, R = w.tile_rows;
  for (std::size_t r = tile0 * R; r < std::min(w.rows, tile1 * R); ++r) {
    float out = 0;
    for (std::size_t j = 0; j < G; ++j) {
      out = std::fma(tb.group_sum[j], w.offset[w.stat_index(r, j)], out);
      const float s = w.scale[w.stat_index(r, j)];
      for (std::size_t t0 = j * gq; t0 < std::min(Q, (j + 1) * gq); t0 += tb.segment) {
        std::int64_t ai = 0;
        float af = 0;
        for (std::size_t t = t0; t < std::min({Q, (j + 1) * gq, t0 + tb.segment}); ++t)
          for (int i = 0; i < w.bits; ++i) {
            const std::size_t e = 16 * t + w.pattern(r, t, i);
            if (tb.int8) ai += std::int64_t(tb.q[e]) * (std::int64_t(1) << i);  // 2^i T: exact
            else af += float(1 << i) * tb.f[e];
          }
        out = std::fma(tb.int8 ? float(ai) : af, tb.half_scale[t0 / tb.segment] * s, out);
      }
    }
    y[r] = out;
  }
}

// Rows of tiles [tile0, tile1), int8 tables. Per quad: one table broadcast,
// and per pair of planes and 16-byte lane one load, two nibble masks, two
// shuffles and two pair multiply-adds into int16 accumulators (rows 0..7
// of the lane from the low nibbles, 8..15 from the high ones).
template <class Tag, int Bits>
void bit_plane_gemv(const BitPlaneMatrix& w, const BitPlaneTables& tb, float* y, std::size_t tile0,
                    std::size_t tile1) noexcept {
  using U = simd::u8<Tag>;
  using I16 = simd::i16<Tag>;
  using I32 = simd::i32<Tag>;
  using F = simd::f32<Tag>;
  constexpr std::size_t V = U::size, NR = BitPlaneMatrix::block_bytes / V, L = F::size;
  constexpr std::size_t R = BitPlaneMatrix::tile_rows, NU = R / L;
  constexpr int P = (Bits + 1) / 2;
  static_assert(V == 16 || V == 32, "bit_plane_gemv: 16- or 32-byte registers");
  // The first row of the int32 half `half` of accumulator (register r, nibble h).
  constexpr auto unit = [](std::size_t r, std::size_t h, std::size_t half) {
    return (V == 32 ? 16 * half + 8 * h : 16 * r + 8 * h + 4 * half) / L;
  };
  alignas(64) std::uint8_t m[2][V];
  for (std::size_t i = 0; i < V; ++i) {
    m[0][i] = i % 2 ? 2 : 1;
    m[1][i] = i % 2 ? (Bits % 2 ? 0 : 2) : 1;  // an odd b's last pair has one plane
  }
  const U mult[2] = {U::load_aligned(m[0]), U::load_aligned(m[1])};
  const U low(std::uint8_t(15));
  const std::size_t Q = w.quads(), G = w.groups_per_row(), gq = w.group / 4;
  for (std::size_t tile = tile0; tile < tile1; ++tile) {
    F out[NU];
    for (auto& o : out) o = F(0.0f);
    const std::uint8_t* codes = w.block(tile, 0, 0);
    const float* sc = w.scale.data() + tile * G * R;
    const float* off = w.offset.data() + tile * G * R;
    for (std::size_t j = 0; j < G; ++j) {
      const F X(tb.group_sum[j]);
      for (std::size_t u = 0; u < NU; ++u) out[u] = xsimd::fma(X, F::load_unaligned(off + j * R + u * L), out[u]);
      const std::size_t t1 = std::min(Q, (j + 1) * gq);
      for (std::size_t t0 = j * gq; t0 < t1; t0 += tb.segment) {
        I16 acc[P][NR][2];
        for (auto& a : acc)
          for (auto& b : a) b[0] = b[1] = I16(0);
        for (std::size_t t = t0; t < std::min(t1, t0 + tb.segment); ++t) {
          simd::prefetch_ahead(codes + t * P * BitPlaneMatrix::block_bytes, P * BitPlaneMatrix::block_bytes);
          const auto tbl = simd::table16<Tag>(tb.q.data() + 16 * t);
          for (int p = 0; p < P; ++p)
            for (std::size_t r = 0; r < NR; ++r) {
              const U v = U::load_unaligned(codes + (t * P + std::size_t(p)) * BitPlaneMatrix::block_bytes + r * V);
              acc[p][r][0] += simd::madd_u8i8<Tag>(mult[p], simd::lookup16<Tag>(tbl, v & low));
              acc[p][r][1] += simd::madd_u8i8<Tag>(mult[p], simd::lookup16<Tag>(tbl, simd::shr_mask<Tag>(v, 4, 15)));
            }
        }
        const F ds(tb.half_scale[t0 / tb.segment]);
        for (std::size_t r = 0; r < NR; ++r)
          for (std::size_t h = 0; h < 2; ++h) {
            auto a = simd::widen_i16<Tag>(acc[0][r][h]);
            if constexpr (P == 2) {  // planes 2 and 3 weigh 4x planes 0 and 1
              const auto b = simd::widen_i16<Tag>(acc[1][r][h]);
              a.first += b.first << 2;
              a.second += b.second << 2;
            }
            const I32 halves[2] = {a.first, a.second};
            for (std::size_t half = 0; half < 2; ++half) {
              const std::size_t u = unit(r, h, half);
              out[u] = xsimd::fma(xsimd::to_float(halves[half]), ds * F::load_unaligned(sc + j * R + u * L), out[u]);
            }
          }
      }
    }
    alignas(64) float o[R];
    for (std::size_t u = 0; u < NU; ++u) out[u].store_aligned(o + u * L);
    for (std::size_t a = 0; a < R && tile * R + a < w.rows; ++a) y[tile * R + a] = o[a];
  }
}

}  // namespace lowbit::detail
