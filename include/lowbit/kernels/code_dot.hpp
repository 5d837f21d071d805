// One row of SpQR's dense part (format/spqr.hpp, beta1 a multiple of 16):
//   sum_t s_t (sum_{p in t} c_p x_p) - sum_t s_t z_t A_t
// over the 16-code subgroups t of a packed row of codes (core/bitpack.hpp),
// with fp32 or int8 activations. The statistics are computed inside the
// loop from the row's statistic codes and the row block's second-level
// parameters, folded once per block with the activations (SubgroupStats):
// a scale costs one FMA from its code, the zero-point term another two,
// and the scales never leave registers. Groups this small make a horizontal
// sum per group too costly; instead a 32-code block's products land in
// lanes that belong to one subgroup each, and the scales multiply whole
// vectors, spread over those lanes by one permute per block. fp32: the
// codes become floats in the group kernels' lane order (up to 4 bits by
// byte shuffles, mantissa_block; 8 bits by group_gemv.hpp's float_block),
// x stored in that order. int8: x in natural order, an
// integer dot product per byte batch (vpdpbusd / maddubs / sdot: lane m sums
// codes 4m .. 4m + 3), one conversion per 32 codes; the activation scale of
// each subgroup multiplies its weight scale.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "group_gemv.hpp"

namespace lowbit::detail {

inline constexpr std::size_t code_dot_group = 16;

// Any group size g and K, x in natural order: the path for formats the row
// kernel does not cover.
template <class X>  // float or std::int8_t
float group_scaled_dot_reference(const std::uint8_t* row, std::size_t K, int bits, const X* x, const float* s,
                                 std::size_t g) {
  std::vector<std::uint8_t> c(K);
  bitpack::unpack(row, K, bits, c.data());
  float acc = 0;
  for (std::size_t j = 0; j * g < K; ++j) {
    float dot = 0;
    for (std::size_t p = j * g; p < std::min(K, (j + 1) * g); ++p) dot += float(c[p]) * float(x[p]);
    acc += s[j] * dot;
  }
  return acc;
}

// A row's statistics per 16-code subgroup t < K / 16 (SpQR's second level,
// spqr_gemv.hpp builds the arrays once per row block): with j = t's group,
//   s_t = p[t] sc[t] - pz[t]           = ps_j (sc_j - pz_j)
//   z_t A_t = qa[t] zc[t] - qza[t]     = qs_j (zc_j - qz_j) A_t
// (A_t: the subgroup's activation sum). The arrays are padded with zeros,
// and the codes readable, to a whole number of spqr_span subgroups: the
// kernel computes statistics a span at a time.
struct SubgroupStats {
  const std::uint8_t *sc, *zc;     // the row's statistic codes, one byte per subgroup
  const float *p, *pz, *qa, *qza;  // the row block's folded parameters
  const float* a = nullptr;        // fp32: the subgroups' activation sums A_t
  const float* xs = nullptr;       // int8: each subgroup's activation scale, or none
  int x_exp = 0;                   // fp32: x comes scaled by 2^x_exp (spqr_x_exp)
};

inline constexpr std::size_t spqr_span = 16;

template <class X>
float spqr_row_reference(const std::uint8_t* row, std::size_t K, int bits, const X* x, const SubgroupStats& st) {
  std::vector<std::uint8_t> c(K);
  bitpack::unpack(row, K, bits, c.data());
  // x unscaled exactly, by two normal powers of two (either alone may be subnormal).
  const float u0 = std::ldexp(1.0f, -st.x_exp / 2), u1 = std::ldexp(1.0f, st.x_exp / 2 - st.x_exp);
  float acc = 0, zero = 0;
  for (std::size_t t = 0; t < K / code_dot_group; ++t) {
    float dot = 0;
    for (std::size_t p = t * code_dot_group; p < (t + 1) * code_dot_group; ++p)
      dot += float(c[p]) * (float(x[p]) * u0 * u1);
    const float s = st.p[t] * float(st.sc[t]) - st.pz[t];
    acc += (st.xs ? s * st.xs[t] : s) * dot;
    zero += s * (st.qa[t] * float(st.zc[t]) - st.qza[t]);
  }
  return acc - zero;
}

// SubgroupStats' arrays p, pz, qa, qza (out[0..3]) for subgroups t < T of a
// row block, beta1 = 16 per: from the block's widened second-level
// parameters par (4 per group: the scale's s and z, the zero's s and z;
// format/spqr.hpp) and the subgroups' activation sums A.
inline void fold_stats_reference(const float* par, const float* A, std::size_t T, std::size_t per,
                                 float* const* out) {
  for (std::size_t t = 0; t < T; ++t) {
    const float* q = par + 4 * (t / per);
    out[0][t] = q[0];
    out[1][t] = q[0] * q[1];
    out[2][t] = q[2] * A[t];
    out[3][t] = q[2] * q[3] * A[t];
  }
}

// The same products; beta1 = 16 (per = 1) in SIMD, the groups' records
// split by simd::deinterleave4 (per row block this is 1/8 of the row
// kernel's element count: in scalar code it cost 8% of the gemv).
template <class Tag>
void fold_stats(const float* par, const float* A, std::size_t T, std::size_t per, float* const* out) noexcept {
  using F = simd::f32<Tag>;
  constexpr std::size_t L = F::size;
  std::size_t t = 0;
  if (per == 1)
    for (; t + L <= T; t += L) {
      const std::array<F, 4> q = simd::deinterleave4<Tag>(par + 4 * t);
      const F a = F::load_unaligned(A + t);
      q[0].store_unaligned(out[0] + t);
      (q[0] * q[1]).store_unaligned(out[1] + t);
      (q[2] * a).store_unaligned(out[2] + t);
      (q[2] * q[3] * a).store_unaligned(out[3] + t);
    }
  if (t == T) return;
  float* const rest[4] = {out[0] + t, out[1] + t, out[2] + t, out[3] + t};
  // per == 1 here if t > 0: the tail's groups start at t.
  fold_stats_reference(par + 4 * t, A + t, T - t, per, rest);
}

// The swizzle that spreads a vector of L subgroup scales over half Hh of
// its block I (of the L / 2 blocks it covers): lane m holds codes
// 4L Hh + 4m .. + 3 of the block (both activation layouts), which lie in
// subgroup 2I + (4L Hh + 4m) / 16.
template <class Tag, int I, int Hh, std::uint32_t... M>
constexpr auto subgroup_lanes(std::integer_sequence<std::uint32_t, M...>) noexcept {
  constexpr std::uint32_t L = sizeof...(M);
  return xsimd::batch_constant<xsimd::batch<std::uint32_t, typename Tag::arch>,
                               std::uint32_t(2 * I + (4 * L * Hh + 4 * M) / 16)...>{};
}

// fp32 activations, Bits <= 4: a block's codes as the floats
//   2^-126 (1 + c / 2^Bits)
// made by byte shuffles alone. The decoder puts each code at the top of
// its byte's low 7 bits, bit 7 is set (the float's lowest exponent bit),
// and a shuffle moves byte p of each 32-bit lane to byte 2, zeros around
// it: one OR and four shuffles per block, where float_block takes a mask,
// two shuffles, a shift and four int-to-float conversions, which share
// their ports with the FMAs. The row kernel undoes the offset 1 (with the
// zero-point term) and the factors 2^-126 and 2^Bits (once per row); x is
// scaled so that the products stay normal numbers (SubgroupStats::x_exp).
template <class Tag, int Bits>
struct mantissa_block {
  static_assert(Bits <= 4, "codes of 2 to 4 bits: 8-bit codes fill their byte");
  static constexpr int Pos = 7 - Bits;
  using F = simd::f32<Tag>;
  using CB = code_block<Tag, Bits, Pos>;
  static constexpr int H = CB::D::H;
  F f[H][4];

  // f[h][p] lane m = code 4m + p of half h, float_block's order.
  explicit mantissa_block(const CB& cb) noexcept {
    using U8 = simd::u8<Tag>;
    // Shuffle controls: byte p of each 32-bit lane to byte 2, zeros elsewhere.
    alignas(64) static constexpr std::uint8_t pick[4][32] = {
        {128, 128, 0, 128, 128, 128, 4, 128, 128, 128, 8, 128, 128, 128, 12, 128,
         128, 128, 0, 128, 128, 128, 4, 128, 128, 128, 8, 128, 128, 128, 12, 128},
        {128, 128, 1, 128, 128, 128, 5, 128, 128, 128, 9, 128, 128, 128, 13, 128,
         128, 128, 1, 128, 128, 128, 5, 128, 128, 128, 9, 128, 128, 128, 13, 128},
        {128, 128, 2, 128, 128, 128, 6, 128, 128, 128, 10, 128, 128, 128, 14, 128,
         128, 128, 2, 128, 128, 128, 6, 128, 128, 128, 10, 128, 128, 128, 14, 128},
        {128, 128, 3, 128, 128, 128, 7, 128, 128, 128, 11, 128, 128, 128, 15, 128,
         128, 128, 3, 128, 128, 128, 7, 128, 128, 128, 11, 128, 128, 128, 15, 128}};
    for (int h = 0; h < H; ++h) {
      const simd::i8<Tag> t = simd::bitcast<std::int8_t>(cb.c[h] | U8(std::uint8_t(0x80)));
      for (int p = 0; p < 4; ++p)
        f[h][p] = simd::bitcast<float>(simd::lookup16<Tag>(t, U8::load_aligned(pick[p])));
    }
  }
};

// The decoded block of the row kernel: mantissa_block's byte layout, or
// codes at bit 0.
template <class Tag, int Bits, bool Mantissa>
struct row_codes {
  using type = code_block<Tag, Bits>;
};
template <class Tag, int Bits>
struct row_codes<Tag, Bits, true> {
  using type = typename mantissa_block<Tag, Bits>::CB;
};

// The x_exp for fp32 activations of largest magnitude m: with Bits <= 4
// (mantissa_block), the power of two that brings m just below 2^126, so that
// the products 2^-126 (1 + c / 2^Bits) x stay normal; 0 otherwise (8-bit
// codes are converted to floats, x as it is), and for m zero or not finite.
inline int spqr_x_exp(int bits, float m) noexcept {
  if (bits > 4 || !(m > 0) || !std::isfinite(m)) return 0;
  int e;
  std::frexp(m, &e);  // m < 2^e
  return std::clamp(126 - e, 0, 127);
}

// K a multiple of 32; X = float: x in the kernel's lane order
// (PreparedActivations with lanes = f32 size); X = std::int8_t: natural order.
template <class Tag, int Bits, class X>
float spqr_row(const std::uint8_t* row, std::size_t K, const X* x, const SubgroupStats& st) noexcept {
  using F = simd::f32<Tag>;
  constexpr int L = int(F::size);
  constexpr bool fp32 = std::is_same_v<X, float>, mantissa = fp32 && Bits <= 4;
  using CB = typename row_codes<Tag, Bits, mantissa>::type;
  using D = typename CB::D;
  constexpr int H = D::H, U = D::unit;
  static_assert(H * 4 * L == 32 && (H == 1 || H == 2), "32-code blocks of one or two byte batches");
  // mantissa: the products carry 2^-126 (1 + c / 2^Bits) x 2^x_exp; the
  // offset's sum 2^Bits A_t goes in with the zero-point term.
  const F offset(mantissa ? float(1 << Bits) : 0.0f);
  // A span: whole decoder units (compile-time bit-fields, group_gemv.hpp)
  // and whole vectors of statistics (L subgroups, L / 2 blocks).
  constexpr int V = std::max(U, L / 2), NS = 2 * V / L;  // blocks, statistic vectors
  static_assert(std::size_t(2 * V) <= spqr_span && spqr_span % std::size_t(2 * V) == 0, "spans tile the padding");
  const D dec(row, K);
  // The pointers in locals: through st, every store would reload them.
  const std::uint8_t *sc = st.sc, *zc = st.zc;
  const float *p = st.p, *pz = st.pz, *qa = st.qa, *qza = st.qza, *A = st.a, *xs = st.xs;
  F acc0(0.0f), acc1(0.0f), zacc(0.0f);
  const std::size_t nb = K / 32;
  constexpr std::size_t span_bytes = std::size_t(V) * Bits * 4;
  // Odd and even blocks on separate accumulators; whole spans without a
  // bounds check per block, then the partial one (its padded statistics
  // are zero).
  const auto run_span = [&](std::size_t q, auto partial) {
    simd::prefetch_ahead(row + q * span_bytes, span_bytes);
    F s[NS];
    for (int v = 0; v < NS; ++v) {
      const std::size_t t = (q * std::size_t(V) * 2) + std::size_t(v * L);
      const F code_s = xsimd::to_float(simd::widen_u8<Tag>(sc + t)), code_z = xsimd::to_float(simd::widen_u8<Tag>(zc + t));
      s[v] = xsimd::fms(F::load_unaligned(p + t), code_s, F::load_unaligned(pz + t));
      F za = xsimd::fms(F::load_unaligned(qa + t), code_z, F::load_unaligned(qza + t));
      if constexpr (mantissa) za = xsimd::fma(offset, F::load_unaligned(A + t), za);
      zacc = xsimd::fma(s[v], za, zacc);
      if constexpr (!fp32) s[v] = s[v] * F::load_unaligned(xs + t);
    }
    unroll(std::make_integer_sequence<int, V>{}, [&](auto J) {
      const std::size_t b = q * std::size_t(V) + std::size_t(J());
      if constexpr (decltype(partial)::value)
        if (b >= nb) return;
      const CB cb(dec, q * std::size_t(V / U) + std::size_t(J() / U), std::integral_constant<int, J() % U>{});
      // fp32: the block widened once for both halves.
      using Widened = std::conditional_t<mantissa, mantissa_block<Tag, Bits>, float_block<Tag, Bits>>;
      const std::conditional_t<fp32, Widened, const CB&> fb(cb);
      F& acc = J() % 2 ? acc1 : acc0;
      unroll(std::make_integer_sequence<int, H>{}, [&](auto Hh) {
        constexpr int h = Hh();
        F d;
        if constexpr (fp32) {
          const float* xp = x + b * 32 + std::size_t(h * 4 * L);
          d = fb.f[h][0] * F::load_unaligned(xp);
          d = xsimd::fma(fb.f[h][1], F::load_unaligned(xp + L), d);
          d = xsimd::fma(fb.f[h][2], F::load_unaligned(xp + 2 * L), d);
          d = xsimd::fma(fb.f[h][3], F::load_unaligned(xp + 3 * L), d);
        } else {
          d = xsimd::to_float(fb.dot_q8_half(simd::i32<Tag>(0), x + b * 32, h));
        }
        constexpr int I = J() % (L / 2);
        const auto lanes = subgroup_lanes<Tag, I, h>(std::make_integer_sequence<std::uint32_t, std::uint32_t(L)>{});
        acc = xsimd::fma(d, xsimd::swizzle(s[J() / (L / 2)], lanes), acc);
      });
    });
  };
  const std::size_t full = nb / std::size_t(V);
  for (std::size_t q = 0; q < full; ++q) run_span(q, std::false_type{});
  if (full * std::size_t(V) < nb) run_span(full, std::true_type{});
  float dense = xsimd::hadd(acc0 + acc1);
  if constexpr (fp32) {  // times 2^k, in two factors: either alone may leave the float range
    const int k = mantissa ? Bits + 126 - st.x_exp : -st.x_exp;
    dense = dense * std::ldexp(1.0f, k / 2) * std::ldexp(1.0f, k - k / 2);
  }
  return dense - xsimd::hadd(zacc);
}

// Codes [first, first + count) of a packed row of n codes of any width
// (bitpack::unpack_range): SpQR's statistic codes are unpacked this way for
// every row on every call. Widths 2, 3, 4 and 8 through the kernels' block
// decoder, others a whole 32-code run per plane and batch. Partial runs
// (first or first + count not a multiple of 32) go through the scalar
// unpack.
template <class Tag>
void unpack_codes(const std::uint8_t* row, std::size_t n, int bits, std::size_t first, std::size_t count,
                  std::uint8_t* out) {
  using U8 = simd::u8<Tag>;
  constexpr std::size_t S = U8::size, run = bitpack::chunk_bytes;
  if (first % run != 0 || count % run != 0) return bitpack::unpack_range(row, n, bits, first, count, out);
  LOWBIT_CHECK(first <= n && count <= n - first, "unpack_codes", "codes [", first, ", ", first, " + ", count,
               ") lie outside a row of ", n);
  const std::size_t lo = first / run, hi = (first + count) / run;  // whole runs [lo, hi)
  bitpack::check_bits(bits, "unpack_codes");
  // The widths of the weight codes: run b is the kernels' block b, decoded
  // with compile-time bit-fields within whole decoder units.
  const auto blocks = [&](auto B) {
    using CB = code_block<Tag, decltype(B)::value>;
    using D = typename CB::D;
    constexpr std::size_t U = D::unit;
    const D dec(row, n);
    const auto put = [&](std::size_t b, const CB& cb) {
      for (int h = 0; h < D::H; ++h) cb.c[h].store_unaligned(out + (b - lo) * run + std::size_t(h) * D::S);
    };
    std::size_t b = lo;
    for (; b < hi && b % U != 0; ++b) put(b, CB(dec, b));
    for (; b + U <= hi; b += U)
      unroll(std::make_integer_sequence<int, int(U)>{}, [&](auto J) { put(b + std::size_t(J()), CB(dec, b / U, J)); });
    for (; b < hi; ++b) put(b, CB(dec, b));
  };
  switch (bits) {
    case 2: return blocks(std::integral_constant<int, 2>{});
    case 3: return blocks(std::integral_constant<int, 3>{});
    case 4: return blocks(std::integral_constant<int, 4>{});
    case 8: return blocks(std::integral_constant<int, 8>{});
    default: break;
  }
  int low = 0;
  for (int p = 0; p < bitpack::plane_count(bits); ++p) {
    const int w = bitpack::plane_width(bits, p);
    const unsigned log_f = bitpack::fields_log2(w);
    const std::uint8_t* plane = row + bitpack::plane_offset(n, bits, p);
    const auto mask = std::uint8_t((1u << w) - 1u);
    for (std::size_t q = lo; q < hi; ++q) {
      std::uint8_t* o = out + (q - lo) * run;
      const std::uint8_t* src = plane + (q >> log_f) * run;
      const int shift = w * int(q & ((std::size_t(1) << log_f) - 1));
      for (std::size_t h = 0; h < run; h += S) {
        U8 c = simd::shr_mask<Tag>(U8::load_unaligned(src + h), shift, mask);
        if (low != 0) c = simd::shl_small<Tag>(c, low) | U8::load_unaligned(o + h);
        c.store_unaligned(o + h);
      }
    }
    low += w;
  }
}

}  // namespace lowbit::detail
