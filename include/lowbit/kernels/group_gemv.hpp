// y = W x and Y = X W^T for group-quantized W (format/group_quant.hpp).
//
// Two activation paths:
//  - fp32: y_r = sum_k s_g(k) (q_rk - z_g(k)) x_k in float.
//  - int8: x is quantized per block of 32 (d_b = max|x| / 127, xq = round(x /
//    d_b), like llama.cpp's q8_0) and the code-times-activation sums are
//    integer dot products (maddubs / vpdpbusd / sdot).
// Both use y_r = sum_b s_g(b) d_b (sum_{k in b} q_k a_k) - sum_g s_g z_g A_g,
// where A_g sums the group's activations once per call (shared by all rows),
// so the hot loop is decode, multiply, add: the zero points never enter it.
//
// Fast paths need g % 32 == 0 (a 32-code block then lies in one group);
// other group sizes run the scalar reference. Rows run in parallel.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../core/bitpack.hpp"
#include "../format/group_quant.hpp"
#include "../simd/ops.hpp"

namespace lowbit {

// How a kernel treats the activations.
enum class Activations : std::uint8_t { fp32 = 0, int8 = 1 };

struct RunOptions {
  Activations activations = Activations::fp32;
  int threads = 0;  // 0: lowbit::num_threads()
};

namespace detail {

inline constexpr std::size_t act_block = 32;

// One activation vector prepared for a group matrix of width K and group g:
// padded with zeros to whole blocks, plus per-group sums (see header comment).
struct PreparedActivations {
  bool int8 = false;
  std::vector<float> x;        // fp32 path: nb * 32
  std::vector<std::int8_t> q;  // int8 path: nb * 32
  std::vector<float> d;        // int8 path: nb block scales
  std::vector<float> group_sum;

  void prepare(const float* src, std::size_t K, std::size_t group, bool use_int8) {
    int8 = use_int8;
    const std::size_t nb = (K + act_block - 1) / act_block, G = (K + group - 1) / group;
    group_sum.assign(G, 0.0f);
    if (!int8) {
      x.assign(nb * act_block, 0.0f);
      std::copy(src, src + K, x.begin());
      for (std::size_t j = 0; j < G; ++j) {
        float s = 0;
        for (std::size_t k = j * group; k < std::min(K, (j + 1) * group); ++k) s += src[k];
        group_sum[j] = s;
      }
      return;
    }
    q.assign(nb * act_block, 0);
    d.assign(nb, 0.0f);
    for (std::size_t b = 0; b < nb; ++b) {
      const std::size_t k0 = b * act_block, k1 = std::min(K, k0 + act_block);
      float amax = 0;
      for (std::size_t k = k0; k < k1; ++k) amax = std::max(amax, std::fabs(src[k]));
      if (amax == 0.0f) continue;
      const float db = amax / 127.0f, inv = 127.0f / amax;
      int sum = 0;
      for (std::size_t k = k0; k < k1; ++k) {
        const int v = int(std::nearbyint(src[k] * inv));
        q[k] = std::int8_t(std::clamp(v, -127, 127));
        sum += q[k];
      }
      d[b] = db;
      // Block sums go to their group (g % 32 == 0 on the int8 fast path;
      // the reference recomputes sums itself for other groups).
      group_sum[k0 / group] += db * float(sum);
    }
  }
};

// Per-block scale factors of row r (s_g, times d_b on the int8 path) and
// the row's zero-point term sum_g s_g z_g A_g. Needs g % 32 == 0.
inline float row_block_scales(const GroupQuantMatrix& w, std::size_t r, const PreparedActivations& a,
                              float* sb) noexcept {
  const std::size_t G = w.groups_per_row(), nb = (w.cols + act_block - 1) / act_block;
  const std::size_t bpg = w.group / act_block;
  float bias = 0;
  for (std::size_t j = 0; j < G; ++j) {
    const float s = w.scale(r, j);
    bias += s * float(w.zero(r, j)) * a.group_sum[j];
    const std::size_t b1 = std::min(nb, (j + 1) * bpg);
    for (std::size_t b = j * bpg; b < b1; ++b) sb[b] = a.int8 ? s * a.d[b] : s;
  }
  return bias;
}

// Scalar reference for rows [r0, r1): dequantize each weight and accumulate
// in double, for any group size. With int8 activations it uses the same
// quantized activations as the fast path (a.q, a.d), so both compute the same
// number up to float rounding.
inline void group_gemv_reference(const GroupQuantMatrix& w, const float* x, const PreparedActivations* a,
                                 float* y, std::size_t r0, std::size_t r1) {
  std::vector<std::uint8_t> codes(w.cols);
  for (std::size_t r = r0; r < r1; ++r) {
    bitpack::unpack(w.row_codes(r), w.cols, w.bits, codes.data());
    double acc = 0;
    for (std::size_t k = 0; k < w.cols; ++k) {
      const std::size_t j = k / w.group;
      const double wk = double(w.scale(r, j)) * double(int(codes[k]) - w.zero(r, j));
      const double xk = (a && a->int8) ? double(a->d[k / act_block]) * double(a->q[k]) : double(x[k]);
      acc += wk * xk;
    }
    y[r] = float(acc);
  }
}


// ---------------------------------------------------------------------------
// SIMD kernels, written once over the xsimd batches of an ISA tag.

// Decodes 32-code blocks of one packed row (core/bitpack.hpp): block b is
// bit-field (b mod F) of chunk (b div F) in each plane, F = 8 / width. A byte
// batch holds S = 16 or 32 codes, so a block is 32 / S batches ("halves").
template <class Tag, int Bits>
struct block_decoder {
  using u8 = simd::u8<Tag>;
  static constexpr int S = int(u8::size);
  static constexpr int planes = bitpack::plane_count(Bits);
  const std::uint8_t* plane[4] = {};

  block_decoder(const std::uint8_t* row, std::size_t K) noexcept {
    for (int p = 0; p < planes; ++p) plane[p] = row + bitpack::plane_offset(K, Bits, p);
  }

  u8 decode(std::size_t b, int h) const noexcept {
    u8 v(std::uint8_t(0));
    int low = 0;
    for (int p = 0; p < planes; ++p) {
      const int w = bitpack::plane_width(Bits, p), F = 8 / w;
      const u8 raw = u8::load_unaligned(plane[p] + (b / F) * bitpack::chunk_bytes + h * S);
      const u8 c = w == 8 ? raw : simd::shr_mask<Tag>(raw, w * int(b % F), std::uint8_t((1u << w) - 1u));
      v = p == 0 ? c : (v | simd::shl_small<Tag>(c, low));
      low += w;
    }
    return v;
  }
};

// Integer dot of 32-code block b with int8 activations q: 8-bit codes are
// split into two 7-bit halves unless vpdpbusd takes the full range.
template <class Tag, int Bits>
inline simd::i32<Tag> block_dot_q8(const block_decoder<Tag, Bits>& dec, std::size_t b,
                                   const std::int8_t* q) noexcept {
  using D = block_decoder<Tag, Bits>;
  simd::i32<Tag> acc(0), acc_lo(0);
  for (int h = 0; h < 32 / D::S; ++h) {
    const simd::u8<Tag> c = dec.decode(b, h);
    const simd::i8<Tag> xq = simd::i8<Tag>::load_unaligned(q + h * D::S);
    if constexpr (Bits == 8 && !Tag::vnni) {
      acc = simd::dot_u8i8<Tag>(acc, simd::shr_mask<Tag>(c, 1, 0x7F), xq);
      acc_lo = simd::dot_u8i8<Tag>(acc_lo, c & simd::u8<Tag>(std::uint8_t(1)), xq);
    } else {
      acc = simd::dot_u8i8<Tag>(acc, c, xq);
    }
  }
  if constexpr (Bits == 8 && !Tag::vnni) return acc + acc + acc_lo;
  return acc;
}

// A 32-code block widened to floats: 32 / S halves of 4 float batches.
template <class Tag, int Bits>
struct widened_block {
  static constexpr int H = 32 / block_decoder<Tag, Bits>::S;
  simd::f32<Tag> f[H][4];
  widened_block(const block_decoder<Tag, Bits>& dec, std::size_t b) noexcept {
    for (int h = 0; h < H; ++h) simd::widen_u8_f32<Tag>(dec.decode(b, h), f[h]);
  }
  // sum_k code_k x_k as a float batch (gemv and gemm share this order, so
  // gemm's rows are bit-identical to gemv's).
  simd::f32<Tag> dot(const float* x) const noexcept {
    using F = simd::f32<Tag>;
    constexpr int L = int(F::size);
    F acc0(0.0f), acc1(0.0f);
    for (int h = 0; h < H; ++h) {
      const float* xp = x + h * 4 * L;
      acc0 = xsimd::fma(f[h][0], F::load_unaligned(xp), acc0);
      acc1 = xsimd::fma(f[h][1], F::load_unaligned(xp + L), acc1);
      acc0 = xsimd::fma(f[h][2], F::load_unaligned(xp + 2 * L), acc0);
      acc1 = xsimd::fma(f[h][3], F::load_unaligned(xp + 3 * L), acc1);
    }
    return acc0 + acc1;
  }
};

template <class Tag, int Bits>
void group_gemv_rows(const GroupQuantMatrix& w, const PreparedActivations& a, float* y, std::size_t r0,
                     std::size_t r1) {
  using F = simd::f32<Tag>;
  const std::size_t nb = (w.cols + act_block - 1) / act_block;
  std::vector<float> sb(nb);
  for (std::size_t r = r0; r < r1; ++r) {
    const float bias = row_block_scales(w, r, a, sb.data());
    const block_decoder<Tag, Bits> dec(w.row_codes(r), w.cols);
    F acc(0.0f);
    if (a.int8) {
      for (std::size_t b = 0; b < nb; ++b)
        acc = xsimd::fma(xsimd::to_float(block_dot_q8(dec, b, a.q.data() + b * act_block)), F(sb[b]), acc);
    } else {
      for (std::size_t b = 0; b < nb; ++b)
        acc = xsimd::fma(widened_block<Tag, Bits>(dec, b).dot(a.x.data() + b * act_block), F(sb[b]), acc);
    }
    y[r] = xsimd::hadd(acc) - bias;
  }
}

// Y[n, r] for tokens n of a tile of up to NT, rows [r0, r1): each block is
// decoded once and used by every token of the tile.
template <class Tag, int Bits, int NT>
void group_gemm_rows(const GroupQuantMatrix& w, const PreparedActivations* a, std::size_t n_tokens, float* Y,
                     std::size_t ldy, std::size_t r0, std::size_t r1) {
  using F = simd::f32<Tag>;
  const std::size_t nb = (w.cols + act_block - 1) / act_block;
  std::vector<float> sb(nb * NT), bias(NT);
  for (std::size_t r = r0; r < r1; ++r) {
    const block_decoder<Tag, Bits> dec(w.row_codes(r), w.cols);
    for (std::size_t n0 = 0; n0 < n_tokens; n0 += NT) {
      const int nt = int(std::min<std::size_t>(NT, n_tokens - n0));
      for (int t = 0; t < nt; ++t) bias[t] = row_block_scales(w, r, a[n0 + t], sb.data() + t * nb);
      F acc[NT];
      for (int t = 0; t < NT; ++t) acc[t] = F(0.0f);
      const bool int8 = a[n0].int8;
      for (std::size_t b = 0; b < nb; ++b) {
        if (int8) {
          for (int t = 0; t < nt; ++t)
            acc[t] = xsimd::fma(xsimd::to_float(block_dot_q8(dec, b, a[n0 + t].q.data() + b * act_block)),
                                F(sb[t * nb + b]), acc[t]);
        } else {
          const widened_block<Tag, Bits> wb(dec, b);  // decoded once for the whole tile
          for (int t = 0; t < nt; ++t)
            acc[t] = xsimd::fma(wb.dot(a[n0 + t].x.data() + b * act_block), F(sb[t * nb + b]), acc[t]);
        }
      }
      for (int t = 0; t < nt; ++t) Y[(n0 + t) * ldy + r] = xsimd::hadd(acc[t]) - bias[t];
    }
  }
}

}  // namespace detail
}  // namespace lowbit
