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
#include <cstring>
#include <type_traits>
#include <utility>
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
  int lanes = 0;               // fp32 path: x is permuted for this many float lanes (0: natural order)
  std::vector<float> x;        // fp32 path: nb * 32
  std::vector<std::int8_t> q;  // int8 path: nb * 32
  std::vector<float> d;        // int8 path: nb block scales
  std::vector<float> group_sum;

  // lanes: the float lanes L of the kernel that will read x. The fast fp32
  // path widens codes in u32-lane order (float_block below): lane m of
  // vector p holds code 4m + p of each run of 4L codes, so x is stored in
  // that order, x[4L h + L p + m] = src[4L h + 4m + p]. 0 keeps the natural
  // order (scalar reference).
  void prepare(const float* src, std::size_t K, std::size_t group, bool use_int8, int lanes_ = 0) {
    int8 = use_int8;
    lanes = use_int8 ? 0 : lanes_;
    const std::size_t nb = (K + act_block - 1) / act_block, G = (K + group - 1) / group;
    group_sum.assign(G, 0.0f);
    if (!int8) {
      x.assign(nb * act_block, 0.0f);
      if (lanes == 0) {
        std::copy(src, src + K, x.begin());
      } else {
        const std::size_t L = std::size_t(lanes), run = 4 * L;
        for (std::size_t k = 0; k < K; ++k) {
          const std::size_t h = k / run, i = k % run;
          x[h * run + (i % 4) * L + i / 4] = src[k];
        }
      }
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
// batch holds S = 16 or 32 codes, so a block is H = 32 / S batches.
template <class Tag, int Bits>
struct block_decoder {
  using u8 = simd::u8<Tag>;
  static constexpr int S = int(u8::size), H = 32 / S;
  static constexpr int planes = bitpack::plane_count(Bits);
  const std::uint8_t* plane[4] = {};

  block_decoder(const std::uint8_t* row, std::size_t K) noexcept {
    for (int p = 0; p < planes; ++p) plane[p] = row + bitpack::plane_offset(K, Bits, p);
  }

  // Block b (any), half h.
  u8 decode(std::size_t b, int h) const noexcept {
    return decode_planes(b, 0, h, std::make_integer_sequence<int, planes>{});
  }
  // Block 8u + J of a unit of 8 blocks (256 codes): every plane's bit-field
  // is then a compile-time constant (the shifts become immediates).
  template <int J>
  u8 decode_unit(std::size_t u, int h) const noexcept {
    return decode_planes(u, std::integral_constant<int, J>{}, h, std::make_integer_sequence<int, planes>{});
  }

 private:
  template <int P, class JT>
  static constexpr bool fixed = !std::is_same_v<JT, int>;

  // Plane P's contribution to block b (JT = int) or to block 8b + J (JT =
  // integral_constant<int, J>): bit-field (block mod F) of chunk (block div F),
  // shifted to the plane's place in the code.
  template <int P, class JT>
  u8 plane_codes(std::size_t b, JT j, int h) const noexcept {
    constexpr int w = bitpack::plane_width(Bits, P), F = 8 / w;
    constexpr int low = [] {
      int l = 0;
      for (int q = 0; q < P; ++q) l += bitpack::plane_width(Bits, q);
      return l;
    }();
    std::size_t chunk;
    int field;
    if constexpr (fixed<P, JT>) {
      chunk = b * std::size_t(8 / F) + std::size_t(JT::value / F);
      field = JT::value % F;
    } else {
      (void)j;
      chunk = b / F;
      field = int(b % F);
    }
    const u8 raw = u8::load_unaligned(plane[P] + chunk * bitpack::chunk_bytes + h * S);
    u8 c = raw;
    if constexpr (w != 8) c = simd::shr_mask<Tag>(raw, w * field, std::uint8_t((1u << w) - 1u));
    if constexpr (low != 0) c = simd::shl_small<Tag>(c, low);
    return c;
  }
  template <class JT, int... P>
  u8 decode_planes(std::size_t b, JT j, int h, std::integer_sequence<int, P...>) const noexcept {
    return (plane_codes<P>(b, j, h) | ...);
  }
};

// One decoded 32-code block and its two products.
template <class Tag, int Bits>
struct code_block {
  using D = block_decoder<Tag, Bits>;
  using F = simd::f32<Tag>;
  simd::u8<Tag> c[D::H];

  code_block(const D& dec, std::size_t b) noexcept {
    for (int h = 0; h < D::H; ++h) c[h] = dec.decode(b, h);
  }
  template <int J>
  code_block(const D& dec, std::size_t u, std::integral_constant<int, J>) noexcept {
    for (int h = 0; h < D::H; ++h) c[h] = dec.template decode_unit<J>(u, h);
  }

  // sum_k code_k q_k with int8 activations. 8-bit codes are split into two
  // 7-bit halves unless vpdpbusd takes the full unsigned range.
  simd::i32<Tag> dot_q8(const std::int8_t* q) const noexcept {
    simd::i32<Tag> acc(0), acc_lo(0);
    for (int h = 0; h < D::H; ++h) {
      const simd::i8<Tag> xq = simd::i8<Tag>::load_unaligned(q + h * D::S);
      if constexpr (Bits == 8 && !Tag::vnni) {
        acc = simd::dot_u8i8<Tag>(acc, simd::shr_mask<Tag>(c[h], 1, 0x7F), xq);
        acc_lo = simd::dot_u8i8<Tag>(acc_lo, c[h] & simd::u8<Tag>(std::uint8_t(1)), xq);
      } else {
        acc = simd::dot_u8i8<Tag>(acc, c[h], xq);
      }
    }
    if constexpr (Bits == 8 && !Tag::vnni) return acc + acc + acc_lo;
    return acc;
  }
};

// The block widened to floats, for fp32 activations.
template <class Tag, int Bits>
struct float_block {
  using F = simd::f32<Tag>;
  static constexpr int H = block_decoder<Tag, Bits>::H, L = int(F::size);
  F f[H][4];

  // f[h][p] lane m = code 4m + p of half h (x is stored in that order, see
  // PreparedActivations). Bytes become floats without shuffles: the byte is
  // or-ed into the mantissa of 2^23 and 2^23 subtracted, exact for any byte.
  explicit float_block(const code_block<Tag, Bits>& cb) noexcept {
    using U = xsimd::batch<std::uint32_t, typename Tag::arch>;
    const U magic(0x4B000000u), lo(0xFFu);
    const F two23(8388608.0f);
    for (int h = 0; h < H; ++h) {
      const U v = xsimd::bitwise_cast<U>(cb.c[h]);
      f[h][0] = xsimd::bitwise_cast<F>((v & lo) | magic) - two23;
      f[h][1] = xsimd::bitwise_cast<F>(((v >> 8) & lo) | magic) - two23;
      f[h][2] = xsimd::bitwise_cast<F>(((v >> 16) & lo) | magic) - two23;
      f[h][3] = xsimd::bitwise_cast<F>((v >> 24) | magic) - two23;
    }
  }
  // sum_k code_k x_k (gemv and gemm share this order: bit-identical rows).
  F dot(const float* x) const noexcept {
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

// Scales and zero points of one row as floats, decoded once per row.
template <class Tag, int Bits>
struct row_params {
  const GroupQuantMatrix& w;
  std::size_t G, zn;
  std::size_t zplane[4] = {};
  std::vector<float> s, z;

  explicit row_params(const GroupQuantMatrix& m)
      : w(m), G(m.groups_per_row()), zn(m.rows * G), s(G), z(G, float(1 << (Bits - 1))) {
    for (int p = 0; p < bitpack::plane_count(Bits); ++p) zplane[p] = bitpack::plane_offset(zn, Bits, p);
  }

  void load(std::size_t r) noexcept {
    const std::uint8_t* sp = w.scales.data() + r * G * scale_bytes(w.scale_type);
    if (w.scale_type == ScaleType::fp16) {
      for (std::size_t j = 0; j < G; ++j) {
        std::uint16_t h;
        std::memcpy(&h, sp + 2 * j, 2);
        s[j] = simd::half_to_float<Tag>(h);
      }
    } else {
      std::memcpy(s.data(), sp, G * 4);
    }
    if (w.symmetric) return;
    for (std::size_t j = 0; j < G; ++j) z[j] = float(zero_code(r * G + j));
  }

  // bitpack::get with the planes known at compile time.
  unsigned zero_code(std::size_t i) const noexcept {
    return zero_planes(i, std::make_integer_sequence<int, bitpack::plane_count(Bits)>{});
  }
  template <int... P>
  unsigned zero_planes(std::size_t i, std::integer_sequence<int, P...>) const noexcept {
    unsigned v = 0;
    int low = 0;
    auto one = [&](auto pc) {
      constexpr int P_ = decltype(pc)::value, wd = bitpack::plane_width(Bits, P_);
      constexpr std::size_t cc = bitpack::chunk_codes(wd);
      const std::size_t j = i % cc;
      const unsigned byte = w.zeros[zplane[P_] + (i / cc) * bitpack::chunk_bytes + j % 32];
      v |= ((byte >> (unsigned(wd) * unsigned(j / 32))) & ((1u << wd) - 1u)) << low;
      low += wd;
    };
    (one(std::integral_constant<int, P>{}), ...);
    return v;
  }

  // sum_j s_j z_j A_j: the zero-point term of the row for activations a.
  float bias(const PreparedActivations& a) const noexcept {
    float acc = 0;
    for (std::size_t j = 0; j < G; ++j) acc += s[j] * z[j] * a.group_sum[j];
    return acc;
  }
};


template <int... J, class Fn>
inline void unroll(std::integer_sequence<int, J...>, Fn&& f) {
  (f(std::integral_constant<int, J>{}), ...);
}

// y[t][r] for rows [r0, r1) and exactly NT prepared activation vectors
// (gemv: NT = 1; gemm: a tile of tokens). Each block is decoded once per
// tile; block sums are scaled by d_b (int8 path) as they come and by s_g once
// per group. Blocks go in pairs to two accumulators, so no FMA latency chain
// runs across blocks and every accumulator index is a compile-time constant
// (a runtime index would put the accumulators on the stack). Where a group
// spans whole units of 8 blocks (g a multiple of 256), blocks run in units
// with compile-time bit-fields.
template <class Tag, int Bits, int NT>
void group_rows(const GroupQuantMatrix& w, const PreparedActivations* const* a, float* const* y, std::size_t r0,
                std::size_t r1) {
  using F = simd::f32<Tag>;
  using CB = code_block<Tag, Bits>;
  const std::size_t nb = (w.cols + act_block - 1) / act_block, bpg = w.group / act_block;
  const bool int8 = a[0]->int8;
  row_params<Tag, Bits> rp(w);
  for (std::size_t r = r0; r < r1; ++r) {
    rp.load(r);
    const block_decoder<Tag, Bits> dec(w.row_codes(r), w.cols);
    F acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = F(0.0f);
    for (std::size_t j = 0; j < rp.G; ++j) {
      F g0[NT], g1[NT];
      for (int t = 0; t < NT; ++t) g0[t] = g1[t] = F(0.0f);
      auto block = [&](const CB& cb, std::size_t b, F* g) {
        if (int8) {
          for (int t = 0; t < NT; ++t)
            g[t] = xsimd::fma(xsimd::to_float(cb.dot_q8(a[t]->q.data() + b * act_block)), F(a[t]->d[b]), g[t]);
        } else {
          const float_block<Tag, Bits> fb(cb);
          for (int t = 0; t < NT; ++t) g[t] += fb.dot(a[t]->x.data() + b * act_block);
        }
      };
      std::size_t b = j * bpg;
      const std::size_t b1 = std::min(nb, b + bpg);
      if (bpg % 8 == 0)
        for (; b + 8 <= b1; b += 8)
          unroll(std::make_integer_sequence<int, 8>{}, [&](auto J) {
            block(CB(dec, b / 8, J), b + std::size_t(J()), J() % 2 ? g1 : g0);
          });
      for (; b + 2 <= b1; b += 2) {
        block(CB(dec, b), b, g0);
        block(CB(dec, b + 1), b + 1, g1);
      }
      if (b < b1) block(CB(dec, b), b, g0);
      const F s(rp.s[j]);
      for (int t = 0; t < NT; ++t) acc[t] = xsimd::fma(g0[t] + g1[t], s, acc[t]);
    }
    for (int t = 0; t < NT; ++t) y[t][r] = xsimd::hadd(acc[t]) - rp.bias(*a[t]);
  }
}

template <class Tag, int Bits>
void group_gemv_rows(const GroupQuantMatrix& w, const PreparedActivations& a, float* y, std::size_t r0,
                     std::size_t r1) {
  const PreparedActivations* in[1] = {&a};
  float* out[1] = {y};
  group_rows<Tag, Bits, 1>(w, in, out, r0, r1);
}

// Y[n, r] (row stride ldy) for all n tokens, rows [r0, r1), in tiles of 4
// tokens. A short last tile repeats its last token and drops those results.
template <class Tag, int Bits>
void group_gemm_rows(const GroupQuantMatrix& w, const PreparedActivations* a, std::size_t n, float* Y,
                     std::size_t ldy, std::size_t r0, std::size_t r1) {
  constexpr int NT = 4;
  std::vector<float> scratch(w.rows);
  for (std::size_t n0 = 0; n0 < n; n0 += NT) {
    const PreparedActivations* in[NT];
    float* out[NT];
    for (int t = 0; t < NT; ++t) {
      const std::size_t i = n0 + std::size_t(t);
      in[t] = &a[std::min(i, n - 1)];
      out[t] = i < n ? Y + i * ldy : scratch.data();
    }
    // Token tiles are the outer loop: a tile's activations stay in cache
    // while the rows stream.
    group_rows<Tag, Bits, NT>(w, in, out, r0, r1);
  }
}

}  // namespace detail
}  // namespace lowbit
