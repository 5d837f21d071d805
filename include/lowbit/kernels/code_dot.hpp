// Group-scaled dot product of one packed row of codes (core/bitpack.hpp)
// with fp32 or int8 activations, for groups of 16 codes:
//   sum_j s[j] * sum_{p in group j} c[p] x[p],   group j = [16 j, 16 j + 16)
// the dense inner loop of SpQR (beta1 = 16). Groups this small make a
// horizontal sum per group too costly; instead a 32-code block's products
// land in lanes that belong to one group each, and the scales multiply
// whole vectors: one extra FMA per 32 codes. fp32: the codes are widened in
// the group kernels' lane order (group_gemv.hpp, float_block), x stored in
// that order. int8: x in natural order, an integer dot product per byte
// batch (vpdpbusd / maddubs / sdot: lane m sums codes 4m .. 4m + 3), one
// conversion per 32 codes; the caller folds the activations' scales into s.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "group_gemv.hpp"

namespace lowbit::detail {

inline constexpr std::size_t code_dot_group = 16;

// Any group size g and K, x in natural order: the reference, and the path
// for formats the fast kernel does not cover.
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

template <class X>
float group16_dot_reference(const std::uint8_t* row, std::size_t K, int bits, const X* x, const float* s) {
  return group_scaled_dot_reference(row, K, bits, x, s, code_dot_group);
}

// K a multiple of 32; X = float: x in the kernel's lane order
// (PreparedActivations with lanes = f32 size); X = std::int8_t: natural order.
template <class Tag, int Bits, class X>
float group16_dot(const std::uint8_t* row, std::size_t K, const X* x, const float* s) noexcept {
  using F = simd::f32<Tag>;
  constexpr std::size_t L = F::size;
  constexpr int H = block_decoder<Tag, Bits>::H;
  static_assert(H * 4 * L == 32 && (H == 1 || H == 2), "32-code blocks of one or two byte batches");
  using D = block_decoder<Tag, Bits>;
  constexpr int U = D::unit;
  const D dec(row, K);
  // 256-bit: lanes 0..3 hold codes 0..15 of a block (group 2b), lanes 4..7
  // codes 16..31 (group 2b + 1). 128-bit: half h is group 2b + h.
  alignas(64) static constexpr float lane_index[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  const auto upper = F::load_aligned(lane_index) >= F(float(L / 2));
  F acc0(0.0f), acc1(0.0f);
  const std::size_t nb = K / 32;
  // Blocks in decoder units (compile-time bit-fields, group_gemv.hpp), odd
  // and even blocks on separate accumulators; whole units without a bounds
  // check per block, then the partial one.
  constexpr std::size_t unit_bytes = std::size_t(U) * Bits * 4;  // a unit of U 32-code blocks
  const auto run_unit = [&](std::size_t u, auto partial) {
    simd::prefetch_ahead(row + u * unit_bytes, unit_bytes);
    unroll(std::make_integer_sequence<int, U>{}, [&](auto J) {
      const std::size_t b = u * U + std::size_t(J());
      if constexpr (decltype(partial)::value)
        if (b >= nb) return;
      constexpr bool fp32 = std::is_same_v<X, float>;
      const code_block<Tag, Bits> cb(dec, u, J);
      // fp32: the block widened once for both halves.
      const std::conditional_t<fp32, float_block<Tag, Bits>, const code_block<Tag, Bits>&> fb(cb);
      F& acc = J() % 2 ? acc1 : acc0;
      for (int h = 0; h < H; ++h) {
        F d;
        if constexpr (fp32) {
          const float* xp = x + b * 32 + std::size_t(h) * 4 * L;
          d = fb.f[h][0] * F::load_unaligned(xp);
          d = xsimd::fma(fb.f[h][1], F::load_unaligned(xp + L), d);
          d = xsimd::fma(fb.f[h][2], F::load_unaligned(xp + 2 * L), d);
          d = xsimd::fma(fb.f[h][3], F::load_unaligned(xp + 3 * L), d);
        } else {
          d = xsimd::to_float(fb.dot_q8_half(simd::i32<Tag>(0), x + b * 32, h));
        }
        const F sv = H == 1 ? xsimd::select(upper, F(s[2 * b + 1]), F(s[2 * b])) : F(s[2 * b + std::size_t(h)]);
        acc = xsimd::fma(d, sv, acc);
      }
    });
  };
  const std::size_t full = nb / U;
  for (std::size_t u = 0; u < full; ++u) run_unit(u, std::false_type{});
  if (full * U < nb) run_unit(full, std::true_type{});
  return xsimd::hadd(acc0 + acc1);
}

// Codes [first, first + count) of a packed row of n codes of any width
// (bitpack::unpack_range), a whole 32-code run per plane and batch: SpQR's
// statistic codes are unpacked this way for every row on every call.
// Partial runs (first or first + count not a multiple of 32) go through
// the scalar unpack.
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

// A row's group scales and zero-point term from its 3-bit-style statistic
// codes (SpQR's second level, format/spqr.hpp): for groups j < G,
//   s_j = ps[j] (sc[j] - pz[j]),  z_j = qs[j] (zc[j] - qz[j]),
// returns sum_j s_j z_j A[j] (A: the groups' activation sums) and stores
// s[j] = s_j, or s_j xs[j] with the int8 path's activation scales xs.
struct RowStats {
  const std::uint8_t *sc, *zc;         // codes, one byte each
  const float *ps, *pz, *qs, *qz, *A;  // second-level parameters of the row's block, group sums
  const float* xs = nullptr;           // per-group factor of the stored scales, or none
};

inline float group_scales_reference(const RowStats& r, std::size_t G, float* s) {
  float zero_term = 0;
  for (std::size_t j = 0; j < G; ++j) {
    const float sj = r.ps[j] * (float(r.sc[j]) - r.pz[j]);
    s[j] = r.xs ? sj * r.xs[j] : sj;
    zero_term += sj * (r.qs[j] * (float(r.zc[j]) - r.qz[j])) * r.A[j];
  }
  return zero_term;
}

template <class Tag>
float group_scales(const RowStats& r, std::size_t G, float* s) noexcept {
  using F = simd::f32<Tag>;
  constexpr std::size_t L = F::size;
  F acc[2] = {F(0.0f), F(0.0f)};  // two chains: with one, perf saw the loop wait on its FMA
  std::size_t j = 0;
  // The pointers in locals: through r, every store to s would reload them.
  const std::uint8_t *sc = r.sc, *zc = r.zc;
  const float *ps = r.ps, *pz = r.pz, *qs = r.qs, *qz = r.qz, *A = r.A, *xs = r.xs;
  const auto step = [&](std::size_t i, F& a) {
    const F sj = F::load_unaligned(ps + i) * (xsimd::to_float(simd::widen_u8<Tag>(sc + i)) - F::load_unaligned(pz + i));
    const F zj = F::load_unaligned(qs + i) * (xsimd::to_float(simd::widen_u8<Tag>(zc + i)) - F::load_unaligned(qz + i));
    (xs ? sj * F::load_unaligned(xs + i) : sj).store_unaligned(s + i);
    a = xsimd::fma(sj * zj, F::load_unaligned(A + i), a);
  };
  for (; j + 2 * L <= G; j += 2 * L) {
    step(j, acc[0]);
    step(j + L, acc[1]);
  }
  if (j + L <= G) {  // one vector left before the scalar tail
    step(j, acc[0]);
    j += L;
  }
  const RowStats tail{r.sc + j, r.zc + j, r.ps + j, r.pz + j, r.qs + j, r.qz + j, r.A + j, r.xs ? r.xs + j : nullptr};
  return xsimd::hadd(acc[0] + acc[1]) + group_scales_reference(tail, G - j, s + j);
}

}  // namespace lowbit::detail
