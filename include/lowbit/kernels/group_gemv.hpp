// y = W x and Y = X W^T for group-quantized W (format/group_quant.hpp).
//
// Two activation paths:
//  - fp32: y_r = sum_k s_g(k) (q_rk - z_g(k)) x_k in float.
//  - int8: x is quantized per *segment* (d_j = max|x| / 127, xq = round(x /
//    d_j)), where a segment is the weight group when g <= 256 (else the
//    largest multiple of 32 up to 256 that divides g), like llama.cpp's q8_K
//    blocks for its k-quants. The code-times-activation sums are integer dot
//    products (maddubs / vpdpbusd / sdot); without VNNI several blocks are
//    added as int16 before one widening, and there is one int -> float
//    conversion per segment.
// Both use y_r = sum_g s_g (sum_{k in g} q_k a_k) - sum_g s_g z_g A_g,
// where A_g sums the group's activations once per call (shared by all rows),
// so the hot loop is decode, multiply, add: the zero points never enter it.
//
// Fast paths need g % 32 == 0 (a 32-code block then lies in one group);
// other group sizes run the scalar reference. Rows run in parallel. With
// AVX-512 VNNI the int8 path runs on 512-bit batches where the groups allow
// (group_rows_wide).
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
#include "byte_quant.hpp"

LOWBIT_AVX512_INTRINSICS_BEGIN

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
  std::size_t segment = act_block;  // int8 path: activations per scale d
  std::vector<std::int8_t> q;  // int8 path: nb * 32
  std::vector<float> d;        // int8 path: one scale per segment
  std::vector<float> group_sum;

  // lanes: the float lanes L of the kernel that will read x. The fast fp32
  // path widens codes in u32-lane order (float_block below): lane m of
  // vector p holds code 4m + p of each run of 4L codes, so x is stored in
  // that order, x[4L h + L p + m] = src[4L h + 4m + p]. 0 keeps the natural
  // order (scalar reference).
  // quantize: quantize_bytes<int8_t> or its SIMD twin (the same codes).
  using quantize_fn = float (*)(const float*, std::size_t, std::int8_t*);
  void prepare(const float* src, std::size_t K, std::size_t group, bool use_int8, int lanes_ = 0,
               quantize_fn quantize = quantize_bytes<std::int8_t>) {
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
    segment = act_segment(group);
    const std::size_t ns = (K + segment - 1) / segment;
    q.assign(nb * act_block, 0);
    d.assign(ns, 0.0f);
    for (std::size_t i = 0; i < ns; ++i) {
      const std::size_t k0 = i * segment, k1 = std::min(K, k0 + segment);
      d[i] = quantize(src + k0, k1 - k0, q.data() + k0);
      int sum = 0;
      for (std::size_t k = k0; k < k1; ++k) sum += q[k];
      // A segment lies in one group when g % 32 == 0 (the int8 fast path);
      // the reference recomputes sums itself for other groups.
      group_sum[k0 / group] += d[i] * float(sum);
    }
  }

  // The int8 segment for group size g (see the header comment).
  static std::size_t act_segment(std::size_t g) noexcept {
    if (g % act_block != 0) return act_block;
    std::size_t s = std::min<std::size_t>(g, 256) / act_block * act_block;
    while (g % s != 0) s -= act_block;
    return s;
  }

  // The activations the kernels multiply by, x (fp32) or d q_k (int8), in
  // the order of a kernel with L float lanes (0: natural order, see
  // `lanes`). out: K floats.
  void values(float* out, std::size_t K, std::size_t L) const noexcept {
    const std::size_t run = 4 * L;
    auto at = [&](std::size_t k) {  // natural index -> stored index for `lanes`
      const std::size_t l = std::size_t(lanes), r = 4 * l;
      return l ? (k / r) * r + (k % 4) * l + (k % r) / 4 : k;
    };
    for (std::size_t k = 0; k < K; ++k) {
      const float v = int8 ? d[k / segment] * float(q[k]) : x[at(k)];
      out[L ? (k / run) * run + (k % 4) * L + (k % run) / 4 : k] = v;
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
      const double xk = (a && a->int8) ? double(a->d[k / a->segment]) * double(a->q[k]) : double(x[k]);
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
// On 512-bit batches (S = 64) a block is one batch of 64 codes, bit-field f
// of two neighbouring chunks: block F m + f holds the codes of natural blocks
// 2F m + f and 2F m + F + f (the int8 activations are put in that order, see
// group_rows_wide). Only one-plane widths (2, 4, 8 bits) decode this way: the
// planes of 3 bits would pair different blocks. Each code lands at bits
// Pos .. Pos + Bits - 1 of its byte (Pos > 0: SpQR's row kernel builds
// floats from the bytes, code_dot.hpp).
template <class Tag, int Bits, int Pos = 0>
struct block_decoder {
  using u8 = simd::u8<Tag>;
  static constexpr int S = int(u8::size), H = S >= 32 ? 1 : 32 / S;
  static constexpr std::size_t block = std::size_t(S * H);  // codes per block, bytes per chunk of a plane
  static constexpr int planes = bitpack::plane_count(Bits);
  static_assert(block == act_block || planes == 1, "512-bit blocks: one-plane widths only");
  static_assert(Pos >= 0 && Pos + Bits <= 8, "codes within their byte");
  // Blocks per unit: one chunk of the narrowest plane (at least 2, so that
  // two accumulators alternate). Within a unit every plane's bit-field is a
  // compile-time constant.
  static constexpr int unit = std::max(2, 8 / bitpack::plane_width(Bits, planes - 1));
  const std::uint8_t* plane[4] = {};

  block_decoder(const std::uint8_t* row, std::size_t K) noexcept {
    for (int p = 0; p < planes; ++p) plane[p] = row + bitpack::plane_offset(K, Bits, p);
  }

  // Block b (any), half h.
  u8 decode(std::size_t b, int h) const noexcept {
    return decode_planes(b, 0, h, std::make_integer_sequence<int, planes>{});
  }
  // Block unit * u + J: the shifts become immediates.
  template <int J>
  u8 decode_unit(std::size_t u, int h) const noexcept {
    return decode_planes(u, std::integral_constant<int, J>{}, h, std::make_integer_sequence<int, planes>{});
  }

 private:
  template <int P, class JT>
  static constexpr bool fixed = !std::is_same_v<JT, int>;

  // Plane P's contribution to block b (JT = int) or to block unit * b + J (JT =
  // integral_constant<int, J>): bit-field (block mod F) of chunk (block div F),
  // shifted to the plane's place in the code.
  template <int P, class JT>
  u8 plane_codes(std::size_t b, JT j, int h) const noexcept {
    constexpr int w = bitpack::plane_width(Bits, P), F = 8 / w;
    constexpr int low = [] {
      int l = Pos;
      for (int q = 0; q < P; ++q) l += bitpack::plane_width(Bits, q);
      return l;
    }();
    std::size_t chunk;
    int field;
    if constexpr (fixed<P, JT>) {
      chunk = b * std::size_t(unit / F) + std::size_t(JT::value / F);
      field = JT::value % F;
    } else {
      (void)j;
      chunk = b / F;
      field = int(b % F);
    }
    const u8 raw = u8::load_unaligned(plane[P] + chunk * block + h * S);
    if constexpr (w == 8) {
      return raw;
    } else {
      // The field moved straight to its place in the code (one shift, one
      // mask). A left shift carries bits across bytes only below `low`,
      // which the mask clears (shl_small's precondition is not needed here).
      constexpr auto mask = std::uint8_t(((1u << w) - 1u) << low);
      const int net = w * field - low;
      if (net == 0) return raw & u8(mask);
      if (net > 0) return simd::shr_mask<Tag>(raw, net, mask);
      return simd::shl_small<Tag>(raw, -net) & u8(mask);
    }
  }
  template <class JT, int... P>
  u8 decode_planes(std::size_t b, JT j, int h, std::integer_sequence<int, P...>) const noexcept {
    return (plane_codes<P>(b, j, h) | ...);
  }
};

// One decoded 32-code block and its two products (codes at bit 0: Pos = 0).
template <class Tag, int Bits, int Pos = 0>
struct code_block {
  using D = block_decoder<Tag, Bits, Pos>;
  using F = simd::f32<Tag>;
  simd::u8<Tag> c[D::H];

  code_block(const D& dec, std::size_t b) noexcept {
    for (int h = 0; h < D::H; ++h) c[h] = dec.decode(b, h);
  }
  template <int J>
  code_block(const D& dec, std::size_t u, std::integral_constant<int, J>) noexcept {
    for (int h = 0; h < D::H; ++h) c[h] = dec.template decode_unit<J>(u, h);
  }

  // Pair sums code_k q_k as int16 lanes (Bits <= 4: no saturation).
  simd::i16<Tag> madd16(const std::int8_t* q) const noexcept {
    static_assert(Bits <= 4, "8-bit codes overflow int16 pair sums");
    simd::i16<Tag> p = simd::madd_u8i8<Tag>(c[0], simd::i8<Tag>::load_unaligned(q));
    for (int h = 1; h < D::H; ++h) p += simd::madd_u8i8<Tag>(c[h], simd::i8<Tag>::load_unaligned(q + h * D::S));
    return p;
  }

  // sum_k code_k q_k with int8 activations, over the block (dot_q8) or one
  // byte batch of it (dot_q8_half, lane m: codes 4m .. 4m + 3 of half h).
  // 8-bit codes are split into two 7-bit halves unless vpdpbusd takes the
  // full unsigned range.
  simd::i32<Tag> dot_q8_half(simd::i32<Tag> acc, const std::int8_t* q, int h) const noexcept {
    const simd::i8<Tag> xq = simd::i8<Tag>::load_unaligned(q + h * D::S);
    if constexpr (Bits == 8 && !Tag::vnni) {
      const simd::i32<Tag> hi = simd::dot_u8i8<Tag>(simd::i32<Tag>(0), simd::shr_mask<Tag>(c[h], 1, 0x7F), xq);
      return simd::dot_u8i8<Tag>(acc + hi + hi, c[h] & simd::u8<Tag>(std::uint8_t(1)), xq);
    } else {
      return simd::dot_u8i8<Tag>(acc, c[h], xq);
    }
  }
  // acc + the block's sum: accumulating in place saves a zeroed register
  // and an add per block.
  simd::i32<Tag> dot_q8(const std::int8_t* q, simd::i32<Tag> acc) const noexcept {
    for (int h = 0; h < D::H; ++h) acc = dot_q8_half(acc, q, h);
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
  // PreparedActivations): byte p of each 32-bit lane moved to its low byte
  // (a mask, a byte shuffle, a shift), then converted, without crossing lanes.
  explicit float_block(const code_block<Tag, Bits>& cb) noexcept {
    using I = simd::i32<Tag>;
    using U8 = simd::u8<Tag>;
    // Shuffle controls: byte 1 (2) of each 32-bit lane to byte 0, zeros above.
    alignas(64) static constexpr std::uint8_t pick[2][32] = {
        {1, 128, 128, 128, 5, 128, 128, 128, 9, 128, 128, 128, 13, 128, 128, 128,
         1, 128, 128, 128, 5, 128, 128, 128, 9, 128, 128, 128, 13, 128, 128, 128},
        {2, 128, 128, 128, 6, 128, 128, 128, 10, 128, 128, 128, 14, 128, 128, 128,
         2, 128, 128, 128, 6, 128, 128, 128, 10, 128, 128, 128, 14, 128, 128, 128}};
    const U8 p1 = U8::load_aligned(pick[0]), p2 = U8::load_aligned(pick[1]);
    for (int h = 0; h < H; ++h) {
      const I v = simd::bitcast<std::int32_t>(cb.c[h]);
      const simd::i8<Tag> t = simd::bitcast<std::int8_t>(cb.c[h]);
      f[h][0] = xsimd::to_float(v & I(0xFF));
      f[h][1] = xsimd::to_float(simd::bitcast<std::int32_t>(simd::lookup16<Tag>(t, p1)));
      f[h][2] = xsimd::to_float(simd::bitcast<std::int32_t>(simd::lookup16<Tag>(t, p2)));
      f[h][3] = xsimd::to_float(simd::bitcast<std::int32_t>(simd::bitcast<std::uint32_t>(cb.c[h]) >> 24));
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

// The tag whose blocks are in natural order: per-row statistics of a 512-bit
// kernel are decoded by its 256-bit twin.
template <class Tag> struct natural_order { using type = Tag; };
template <> struct natural_order<simd::avx512vnni_zmm_tag> { using type = simd::avx512vnni_tag; };

// Scales and zero points of one row as floats, decoded once per row. The
// zero points (one packed row of M * G codes) go through the same SIMD block
// decoder as the weights.
template <class Tag, int Bits>
struct row_params {
  using D = block_decoder<Tag, Bits>;
  const GroupQuantMatrix& w;
  std::size_t G;
  std::vector<float> s, z;
  D zdec;
  std::vector<std::uint8_t> zb;
  const std::uint8_t* sp = nullptr;  // the row's scales

  explicit row_params(const GroupQuantMatrix& m)
      : w(m), G(m.groups_per_row()), s(G), z(G, float(1 << (Bits - 1))),
        zdec(m.symmetric ? m.codes.data() : m.zeros.data(), m.symmetric ? 0 : m.rows * G),
        zb((G / act_block + 2) * act_block) {}

  // Row r: the float arrays s and z (F16C / widening loads, scalar tails).
  void load(std::size_t r) noexcept {
    using F = simd::f32<Tag>;
    constexpr std::size_t L = F::size;
    sp = w.scales.data() + r * G * scale_bytes(w.scale_type);
    std::size_t j = 0;
    if (w.scale_type == ScaleType::fp16)
      for (; j + L <= G; j += L)
        simd::load_halves<Tag>(reinterpret_cast<const std::uint16_t*>(sp + 2 * j)).store_unaligned(&s[j]);
    for (; j < G; ++j) s[j] = scale(j);
    if (w.symmetric) return;
    const std::size_t i0 = r * G, b0 = i0 / act_block, b1 = (i0 + G - 1) / act_block;
    for (std::size_t b = b0; b <= b1; ++b)
      for (int h = 0; h < D::H; ++h) zdec.decode(b, h).store_unaligned(zb.data() + (b - b0) * act_block + h * D::S);
    const std::uint8_t* zr = zb.data() + (i0 - b0 * act_block);  // the row's zero codes
    for (j = 0; j + L <= G; j += L) xsimd::to_float(simd::widen_u8<Tag>(zr + j)).store_unaligned(&z[j]);
    for (; j < G; ++j) z[j] = float(zr[j]);
  }

  // Group j's scale of the loaded row.
  float scale(std::size_t j) const noexcept {
    if (w.scale_type == ScaleType::fp32) {
      float v;
      std::memcpy(&v, sp + 4 * j, 4);
      return v;
    }
    std::uint16_t h;
    std::memcpy(&h, sp + 2 * j, 2);
    return simd::half_to_float<Tag>(h);
  }

  // sum_j s_j z_j A_j: the zero-point term of the loaded row for group sums A.
  float bias(const float* A) const noexcept {
    using F = simd::f32<Tag>;
    constexpr std::size_t L = F::size;
    F b(0.0f);
    std::size_t j = 0;
    for (; j + L <= G; j += L)
      b = xsimd::fma(F::load_unaligned(&s[j]) * F::load_unaligned(&z[j]), F::load_unaligned(A + j), b);
    float acc = xsimd::hadd(b);
    for (; j < G; ++j) acc += s[j] * z[j] * A[j];
    return acc;
  }
};


// Whole groups of whole decoder units, one activation segment per group
// (fp32: segment = g): the shape group_rows_for runs without per-block
// checks, and the only one in which 512-bit blocks (pairs of natural blocks)
// stay inside their group.
template <class D>
bool whole_units(const GroupQuantMatrix& w, std::size_t segment) noexcept {
  return w.group % (std::size_t(D::unit) * D::block) == 0 && w.cols % w.group == 0 && segment == w.group;
}

template <int... J, class Fn>
inline void unroll(std::integer_sequence<int, J...>, Fn&& f) {
  (f(std::integral_constant<int, J>{}), ...);
}

// y[t][r] for rows [r0, r1) and exactly NT prepared activation vectors
// (gemv: NT = 1; gemm with few tokens: a tile of tokens). Each block is
// decoded once per tile. Blocks run in decoder units (compile-time
// bit-fields) and alternate between two accumulators, so no latency chain
// runs across neighbouring blocks and every accumulator index is a
// compile-time constant (a runtime index would put them on the stack).
//   fp32: block sums accumulate in float and are scaled by s_g per group.
//   int8: block sums accumulate as integers (int16 for up to `blocks16`
//         blocks, then int32), are converted and scaled by d once per
//         activation segment, and by s_g once per group.
// A unit may straddle groups (e.g. 3 bits, g = 128): a segment or group is
// closed after its last block, whatever unit that lies in.
template <class Tag, int Bits, int NT, bool Int8>
void group_rows_for(const GroupQuantMatrix& w, const PreparedActivations* const* a, float* const* y,
                    std::size_t r0, std::size_t r1) {
  using F = simd::f32<Tag>;
  using I32 = simd::i32<Tag>;
  using I16 = simd::i16<Tag>;
  using CB = code_block<Tag, Bits>;
  using D = block_decoder<Tag, Bits>;
  constexpr int U = D::unit;
  constexpr std::size_t blk = D::block;
  // An int16 lane takes 2 H products code * xq per block, each at most
  // (2^Bits - 1) * 127 in magnitude: this many blocks cannot overflow.
  constexpr bool use16 = Int8 && Bits <= 4 && !Tag::vnni;
  constexpr std::size_t blocks16 = (32767 / (((1 << Bits) - 1) * 127)) / (2 * D::H);
  static_assert(!use16 || blocks16 >= 1);
  const std::size_t nb = (w.cols + blk - 1) / blk, bpg = w.group / blk;
  const std::size_t nu = (nb + U - 1) / U, bps = Int8 ? a[0]->segment / blk : bpg;
  // Activation pointers in locals: through a[t]-> the compiler reloads them
  // every block.
  const std::int8_t* aq[NT];
  const float *ad[NT], *ax[NT], *ag[NT];
  for (int t = 0; t < NT; ++t) {
    ag[t] = a[t]->group_sum.data();
    aq[t] = a[t]->q.data();
    ad[t] = a[t]->d.data();
    ax[t] = a[t]->x.data();
  }
  const std::size_t upg = bpg / U, group_bytes = w.group * Bits / 8;
  const bool fast = whole_units<D>(w, Int8 ? a[0]->segment : w.group) && (!use16 || bpg <= blocks16);
  row_params<typename natural_order<Tag>::type, Bits> rp(w);
  const std::size_t G = w.groups_per_row();
  std::vector<float> sd(fast && Int8 ? NT * G : 0);  // fast int8: s_j d_j per token
  for (std::size_t r = r0; r < r1; ++r) {
    rp.load(r);
    const std::uint8_t* const row = w.row_codes(r);  // row_bytes() divides: once per row, not per group
    const D dec(row, w.cols);
    float bias[NT];
    for (int t = 0; t < NT; ++t) bias[t] = rp.bias(ag[t]);
    // Fast int8 path: the scales times d per row in SIMD (per group in
    // scalar, with the zero-point term, they cost a fifth of the int4 q8 gemv).
    if constexpr (Int8)
      if (fast)
        for (int t = 0; t < NT; ++t) {
          float* st = &sd[std::size_t(t) * G];
          std::size_t j = 0;
          for (; j + F::size <= G; j += F::size)
            (F::load_unaligned(&rp.s[j]) * F::load_unaligned(ad[t] + j)).store_unaligned(st + j);
          for (; j < G; ++j) st[j] = rp.s[j] * ad[t][j];
        }
    F acc[NT], g0[NT], g1[NT];
    I32 i0[NT], i1[NT];
    I16 p0[NT], p1[NT];
    for (int t = 0; t < NT; ++t) {
      acc[t] = g0[t] = g1[t] = F(0.0f);
      i0[t] = i1[t] = I32(0);
      p0[t] = p1[t] = I16(0);
    }
    std::size_t j = 0, group_end = std::min(bpg, nb), seg = 0, seg_end = std::min(bps, nb), n16 = 0;
    auto widen = [&] {
      if constexpr (use16)
        for (int t = 0; t < NT; ++t) {
          i0[t] += simd::widen_pairs<Tag>(p0[t] + p1[t]);
          p0[t] = p1[t] = I16(0);
        }
      n16 = 0;
    };
    // Common case (e.g. int4 g128): whole groups of whole units, one
    // segment per group, few enough blocks for int16: no per-block checks.
    if (fast) {
      for (std::size_t u = 0; u < nu; u += upg) {
        simd::prefetch_ahead(row + j * group_bytes, group_bytes);
        for (std::size_t v = u; v < u + upg; ++v)
          unroll(std::make_integer_sequence<int, U>{}, [&](auto J) {
            constexpr bool odd = J() % 2;
            const std::size_t b = v * U + std::size_t(J());
            const CB cb(dec, v, J);
            for (int t = 0; t < NT; ++t) {
              if constexpr (!Int8)
                (odd ? g1 : g0)[t] += float_block<Tag, Bits>(cb).dot(ax[t] + b * blk);
              else if constexpr (use16)
                (odd ? p1 : p0)[t] += cb.madd16(aq[t] + b * blk);
              else
                (odd ? i1 : i0)[t] = cb.dot_q8(aq[t] + b * blk, (odd ? i1 : i0)[t]);
            }
          });
        for (int t = 0; t < NT; ++t) {
          if constexpr (Int8) {
            if constexpr (use16) i0[t] += simd::widen_pairs<Tag>(p0[t] + p1[t]);
            acc[t] = xsimd::fma(xsimd::to_float(i0[t] + i1[t]), F(sd[std::size_t(t) * G + j]), acc[t]);
            i0[t] = i1[t] = I32(0);
            p0[t] = p1[t] = I16(0);
          } else {
            acc[t] = xsimd::fma(g0[t] + g1[t], F(rp.s[j]), acc[t]);
            g0[t] = g1[t] = F(0.0f);
          }
        }
        ++j;
      }
      for (int t = 0; t < NT; ++t) y[t][r] = xsimd::hadd(acc[t]) - bias[t];
      continue;
    }
    for (std::size_t u = 0; u < nu; ++u)
      unroll(std::make_integer_sequence<int, U>{}, [&](auto J) {
        constexpr bool odd = J() % 2;
        const std::size_t b = u * U + std::size_t(J());
        if (b >= nb) return;
        const CB cb(dec, u, J);
        if constexpr (Int8) {
          for (int t = 0; t < NT; ++t) {
            if constexpr (use16)
              (odd ? p1 : p0)[t] += cb.madd16(aq[t] + b * blk);
            else
              (odd ? i1 : i0)[t] = cb.dot_q8(aq[t] + b * blk, (odd ? i1 : i0)[t]);
          }
          if constexpr (use16)
            if (++n16 == blocks16) widen();
          if (b + 1 == seg_end) {
            if constexpr (use16) widen();
            for (int t = 0; t < NT; ++t) {
              g0[t] = xsimd::fma(xsimd::to_float(i0[t] + i1[t]), F(ad[t][seg]), g0[t]);
              i0[t] = i1[t] = I32(0);
            }
            ++seg;
            seg_end = std::min(seg_end + bps, nb);
          }
        } else {
          const float_block<Tag, Bits> fb(cb);
          for (int t = 0; t < NT; ++t) (odd ? g1 : g0)[t] += fb.dot(ax[t] + b * blk);
        }
        if (b + 1 == group_end) {
          const F s(rp.s[j]);
          for (int t = 0; t < NT; ++t) {
            acc[t] = xsimd::fma(g0[t] + g1[t], s, acc[t]);
            g0[t] = g1[t] = F(0.0f);
          }
          ++j;
          group_end = std::min(group_end + bpg, nb);
        }
      });
    for (int t = 0; t < NT; ++t) y[t][r] = xsimd::hadd(acc[t]) - bias[t];
  }
}

// The int8 kernel on 512-bit batches (AVX-512 VNNI), where every group and
// activation segment is whole units of 512-bit blocks (block_decoder): int4
// with g % 128 == 0, int2 with g % 256, int8 with g % 128. A group of int4
// g128 is then one 64-byte load, a mask, a shift and two vpdpbusd, half the
// instructions of the 256-bit kernel. Returns false, doing nothing, for other
// shapes (3 bits, other groups, fp32 activations) and other tags.
template <class Tag, int Bits, int NT>
bool group_rows_wide([[maybe_unused]] const GroupQuantMatrix& w, [[maybe_unused]] const PreparedActivations* const* a,
                     [[maybe_unused]] float* const* y, [[maybe_unused]] std::size_t r0,
                     [[maybe_unused]] std::size_t r1) {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  if constexpr (Bits != 3 && std::is_same_v<Tag, simd::avx512vnni_tag>) {  // instruction-bound: 512-bit where the shapes allow
    using Z = simd::avx512vnni_zmm_tag;
    using D = block_decoder<Z, Bits>;
    constexpr std::size_t F = 8 / Bits, half = D::block / 2;
    if (!a[0]->int8 || !whole_units<D>(w, a[0]->segment)) return false;
    if constexpr (F == 1) {  // 8 bits: natural blocks 2m and 2m + 1, the natural order
      group_rows_for<Z, Bits, NT, true>(w, a, y, r0, r1);
      return true;
    }
    // The activations in block order: block F m + f takes natural blocks
    // 2F m + f and 2F m + F + f.
    PreparedActivations p[NT];
    const PreparedActivations* in[NT];
    for (int t = 0; t < NT; ++t) {
      p[t] = *a[t];
      in[t] = &p[t];
      for (std::size_t b = 0; b < w.cols / D::block; ++b) {
        const std::size_t m = b / F, f = b % F;
        std::memcpy(&p[t].q[D::block * b], &a[t]->q[half * (2 * F * m + f)], half);
        std::memcpy(&p[t].q[D::block * b + half], &a[t]->q[half * (2 * F * m + F + f)], half);
      }
    }
    group_rows_for<Z, Bits, NT, true>(w, in, y, r0, r1);
    return true;
  }
#endif
  return false;
}

// Rows [r0, r1) for NT tokens: the 512-bit int8 kernel where it applies,
// else the kernel of Tag.
template <class Tag, int Bits, int NT>
void group_rows(const GroupQuantMatrix& w, const PreparedActivations* const* a, float* const* y, std::size_t r0,
                std::size_t r1) {
  if (group_rows_wide<Tag, Bits, NT>(w, a, y, r0, r1)) return;
  if (a[0]->int8)
    group_rows_for<Tag, Bits, NT, true>(w, a, y, r0, r1);
  else
    group_rows_for<Tag, Bits, NT, false>(w, a, y, r0, r1);
}

template <class Tag, int Bits>
void group_gemv_rows(const GroupQuantMatrix& w, const PreparedActivations& a, float* y, std::size_t r0,
                     std::size_t r1) {
  const PreparedActivations* in[1] = {&a};
  float* out[1] = {y};
  group_rows<Tag, Bits, 1>(w, in, out, r0, r1);
}

}  // namespace detail
}  // namespace lowbit

LOWBIT_AVX512_INTRINSICS_END
