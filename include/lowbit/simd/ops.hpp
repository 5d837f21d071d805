// The few SIMD operations xsimd 8.1 does not provide. Intrinsics appear only
// in this file; kernels call these over xsimd batches of an ISA tag
// (simd/arch.hpp). Each op states its scalar meaning, which is what the
// scalar reference kernels compute.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "../core/types.hpp"
#include "arch.hpp"

#if defined(__SSE4_1__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#endif

LOWBIT_AVX512_INTRINSICS_BEGIN

namespace lowbit::simd {

template <class Tag> using f32 = xsimd::batch<float, typename Tag::arch>;
template <class Tag> using i32 = xsimd::batch<std::int32_t, typename Tag::arch>;
template <class Tag> using u8 = xsimd::batch<std::uint8_t, typename Tag::arch>;
template <class Tag> using i8 = xsimd::batch<std::int8_t, typename Tag::arch>;
template <class Tag> using i16 = xsimd::batch<std::int16_t, typename Tag::arch>;

template <class Tag>
inline constexpr bool is_256 = std::is_same_v<typename Tag::arch, xsimd::fma3<xsimd::avx2>>;
template <class Tag>
inline constexpr bool is_sse41 = std::is_same_v<typename Tag::arch, xsimd::sse4_1>;
template <class Tag>
inline constexpr bool is_neon64 = std::is_same_v<typename Tag::arch, xsimd::neon64>;
template <class Tag>
inline constexpr bool is_512 = std::is_same_v<typename Tag::arch, xsimd::avx512bw>;  // avx512vnni_zmm_tag

// The bits of v as a batch of To (same register). xsimd 8.1's NEON
// bitwise_cast goes through a table of function pointers that GCC does not
// inline (a call per cast in the hot loops); a vector cast is free.
template <class To, class From, class A>
inline xsimd::batch<To, A> bitcast(xsimd::batch<From, A> v) noexcept {
#if defined(__aarch64__) && defined(__ARM_NEON)
  if constexpr (std::is_same_v<A, xsimd::neon64>) {
    using R = typename xsimd::batch<To, A>::register_type;
    using S = typename xsimd::batch<From, A>::register_type;
    return (R)(S)v;
  }
#endif
  return xsimd::bitwise_cast<xsimd::batch<To, A>>(v);
}

// Bytes shifted right by s, then masked: out[i] = (v[i] >> s) & mask.
// (xsimd 8.1 has no unsigned 8-bit shift; a 16-bit shift plus the mask is
// exact because the mask drops the bits that crossed a byte boundary.)
template <class Tag>
inline u8<Tag> shr_mask(u8<Tag> v, int s, std::uint8_t mask) noexcept {
#if defined(__aarch64__) && defined(__ARM_NEON)
  // NEON shifts bytes by a register count (negative: right); xsimd 8.1 would
  // switch over immediate shifts of 16-bit lanes.
  if constexpr (is_neon64<Tag>)
    return vandq_u8(vshlq_u8(v, vdupq_n_s8(std::int8_t(-s))), vdupq_n_u8(mask));
#endif
  using u16 = xsimd::batch<std::uint16_t, typename Tag::arch>;
  const u16 w = bitcast<std::uint16_t>(v) >> s;
  return bitcast<std::uint8_t>(w) & u8<Tag>(mask);
}

// The largest lane of a batch of finite values: in registers on 512-bit
// batches (a scalar pass over 16 stored lanes cost 5% of the int8 attention
// kernel), else a tree of independent maxima over the stored lanes.
template <class Tag>
LOWBIT_ALWAYS_INLINE inline float reduce_max(f32<Tag> v) noexcept {
#if defined(__AVX512BW__)
  if constexpr (is_512<Tag>) return _mm512_reduce_max_ps(v);
#endif
  constexpr std::size_t L = f32<Tag>::size;
  alignas(64) float lanes[L];
  v.store_aligned(lanes);
  for (std::size_t half = L / 2; half > 0; half /= 2)
    for (std::size_t k = 0; k < half; ++k) lanes[k] = lanes[k] < lanes[k + half] ? lanes[k + half] : lanes[k];
  return lanes[0];
}

// Lane sums of f32<Tag>::size batches: out[i] = sum of the lanes of r[i]
// (xsimd::haddp). On 512-bit batches a tree of two-source permutes, written
// when GCC 12's false uninitialized warning on xsimd's (bug 105593) still
// failed -Werror; LOWBIT_AVX512_INTRINSICS_BEGIN now silences it, so
// xsimd::haddp would build too. This tree is the one measured (bench/README.md,
// stop 29); replacing it is a change of summation order, to be measured.
template <class Tag>
inline f32<Tag> haddp(const f32<Tag>* r) noexcept {
#if defined(__AVX512BW__)
  if constexpr (is_512<Tag>) {
    __m512 v[16];
    for (int i = 0; i < 16; ++i) v[i] = r[i];
    // Each step pairs the vectors of 16 / (2 h) rows with 2 h partial sums
    // each (lanes lo[l] = 2 h (l / h) + l % h and lo[l] + h of the pair) and
    // halves the partials.
    const auto fold = [&](int n, __m512i lo, int h) {
      const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(h));
      for (int i = 0; i < n / 2; ++i)
        v[i] = _mm512_add_ps(_mm512_permutex2var_ps(v[2 * i], lo, v[2 * i + 1]),
                             _mm512_permutex2var_ps(v[2 * i], hi, v[2 * i + 1]));
    };
    fold(16, _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23), 8);
    fold(8, _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27), 4);
    fold(4, _mm512_setr_epi32(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29), 2);
    fold(2, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), 1);
    return v[0];
  }
#endif
  return xsimd::haddp(r);
}

// The 4 L floats at p split by position mod 4: out[k] lane l = p[4 l + k]
// (arrays of 4-float records, e.g. SpQR's second-level parameters). A 4 x 4
// transpose in each 128-bit lane (xsimd's zip_lo / zip_hi stay in lanes);
// on 256-bit batches, whose lanes then hold records 0, 2, 4, 6 and 1, 3,
// 5, 7, a permute puts them in order.
template <class Tag>
inline std::array<f32<Tag>, 4> deinterleave4(const float* p) noexcept {
  using F = f32<Tag>;
  using D = xsimd::batch<double, typename Tag::arch>;
  constexpr std::size_t L = F::size;
  static_assert(L == 4 || L == 8, "deinterleave4: 128- or 256-bit batches");
  const F a = F::load_unaligned(p), b = F::load_unaligned(p + L), c = F::load_unaligned(p + 2 * L),
          d = F::load_unaligned(p + 3 * L);
  const F t[4] = {xsimd::zip_lo(a, b), xsimd::zip_hi(a, b), xsimd::zip_lo(c, d), xsimd::zip_hi(c, d)};
  std::array<F, 4> r;
  for (int k = 0; k < 4; ++k) {  // pairs of 64-bit halves: records' field k from a, b and from c, d
    const D lo = bitcast<double>(t[k / 2]), hi = bitcast<double>(t[2 + k / 2]);
    r[std::size_t(k)] = bitcast<float>(k % 2 ? xsimd::zip_hi(lo, hi) : xsimd::zip_lo(lo, hi));
    if constexpr (L == 8)
      r[std::size_t(k)] = xsimd::swizzle(
          r[std::size_t(k)], xsimd::batch_constant<xsimd::batch<std::uint32_t, typename Tag::arch>, 0, 4, 1, 5, 2, 6, 3, 7>{});
  }
  return r;
}

// 512-bit batches: the 32 bytes at p in both halves, the low half shifted
// right by s0 and the high half by s1, masked: out[i] = (p[i % 32] >> (i < 32
// ? s0 : s1)) & mask. Two 32-code fields of one bit-packed chunk
// (core/bitpack.hpp) in one batch.
template <class Tag>
inline u8<Tag> shr_mask_pair([[maybe_unused]] const std::uint8_t* p, [[maybe_unused]] int s0,
                             [[maybe_unused]] int s1, [[maybe_unused]] std::uint8_t mask) noexcept {
#if defined(__AVX512BW__)
  if constexpr (is_512<Tag>) {
    const __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    const __m512i n = _mm512_inserti64x4(_mm512_set1_epi16(std::int16_t(s0)), _mm256_set1_epi16(std::int16_t(s1)), 1);
    return _mm512_and_si512(_mm512_srlv_epi16(v, n), _mm512_set1_epi8(char(mask)));
  }
#endif
  static_assert(is_512<Tag>, "shr_mask_pair: 512-bit batches only");
  return {};
}

// 512-bit batches: lo in every 32-bit lane of the low half, hi in the high half.
template <class Tag>
inline i32<Tag> words_pair([[maybe_unused]] std::int32_t lo, [[maybe_unused]] std::int32_t hi) noexcept {
#if defined(__AVX512BW__)
  if constexpr (is_512<Tag>) return _mm512_inserti64x4(_mm512_set1_epi32(lo), _mm256_set1_epi32(hi), 1);
#endif
  static_assert(is_512<Tag>, "words_pair: 512-bit batches only");
  return {};
}

// Bytes shifted left by s (< 8): out[i] = (v[i] << s) & 0xFF, for v[i] < 2^(8-s).
template <class Tag>
inline u8<Tag> shl_small(u8<Tag> v, int s) noexcept {
#if defined(__aarch64__) && defined(__ARM_NEON)
  if constexpr (is_neon64<Tag>) return vshlq_u8(v, vdupq_n_s8(std::int8_t(s)));
#endif
  using u16 = xsimd::batch<std::uint16_t, typename Tag::arch>;
  return bitcast<std::uint8_t>(u16(bitcast<std::uint16_t>(v) << s));
}

// The bytes of a and b interleaved in order: first = a0 b0 a1 b1 ... from the
// lower halves, second the same from the upper halves. (xsimd's zip_lo and
// zip_hi interleave within each 128-bit lane on AVX2.)
template <class Tag>
inline std::pair<u8<Tag>, u8<Tag>> interleave_bytes(u8<Tag> a, u8<Tag> b) noexcept {
  const u8<Tag> lo = xsimd::zip_lo(a, b), hi = xsimd::zip_hi(a, b);
#if defined(__AVX2__)
  if constexpr (is_256<Tag>)
    return {_mm256_permute2x128_si256(__m256i(lo), __m256i(hi), 0x20),
            _mm256_permute2x128_si256(__m256i(lo), __m256i(hi), 0x31)};
#endif
  return {lo, hi};
}

// 16 bytes from each of u8<Tag>::size / 16 places, one per 128-bit lane:
// lane k = p[k][0, 16).
template <class Tag>
inline u8<Tag> load_lanes(const std::uint8_t* const* p) noexcept {
#if defined(__AVX2__)
  const auto lane = [](const std::uint8_t* q) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(q)); };
  const auto two = [&](const std::uint8_t* a, const std::uint8_t* b) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(lane(a)), lane(b), 1);
  };
  if constexpr (is_256<Tag>) return two(p[0], p[1]);
#if defined(__AVX512BW__)
  if constexpr (is_512<Tag>) return _mm512_inserti64x4(_mm512_castsi256_si512(two(p[0], p[1])), two(p[2], p[3]), 1);
#endif
#endif
  static_assert(is_256<Tag> || is_512<Tag> || u8<Tag>::size == 16, "load_lanes: no implementation for this ISA");
  return u8<Tag>::load_unaligned(p[0]);
}

// Stores v at p, aligned to the batch's size, past the caches where the
// target has such a store (x86 movntdq): an output too large to stay cached
// is then written without first reading each line in. Other targets store
// normally. Call stream_fence() before the data is used by another thread.
template <class Tag>
inline void store_stream(std::uint8_t* p, u8<Tag> v) noexcept {
#if defined(__AVX2__)
  if constexpr (is_256<Tag>) return _mm256_stream_si256(reinterpret_cast<__m256i*>(p), __m256i(v));
#endif
#if defined(__SSE4_1__)
  if constexpr (is_sse41<Tag>) return _mm_stream_si128(reinterpret_cast<__m128i*>(p), __m128i(v));
#endif
  v.store_aligned(p);
}

inline void stream_fence() noexcept {
#if defined(__SSE4_1__)
  _mm_sfence();
#endif
}

// Kernels that stream weights (rows or tiles stored one after another) ask
// for the lines `prefetch_distance` bytes ahead of those in use: computing
// between loads, one core keeps too few misses in flight for the hardware
// prefetchers alone to reach DRAM bandwidth (bench/README.md, "prefetch").
// 4 KiB: two rows at K = 4096, int4; well within L1.
inline constexpr std::size_t prefetch_distance = 4096;

// Asks for the lines that start in [p + prefetch_distance, + n), n the
// bytes the caller reads from p on: calls over consecutive ranges ask for
// each line once, however small n. A hint, never a fault; the address is
// formed as an integer because it may lie past the end of the buffer, where
// pointer arithmetic would be undefined.
inline void prefetch_ahead(const std::uint8_t* p, std::size_t n) noexcept {
  const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(p) + prefetch_distance;
  for (std::uintptr_t line = (a + 63) & ~std::uintptr_t(63); line < a + n; line += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(line), 0, 3);
}

// acc[j] + sum_{k<4} a[4j+k] * b[4j+k]: unsigned bytes times signed bytes.
// Precondition without VNNI (maddubs saturates pairs at int16): a[i] <= 127
// and b[i] >= -127, so a pair sum stays within 2*127*127 < 32767.
template <class Tag>
inline i32<Tag> dot_u8i8(i32<Tag> acc, [[maybe_unused]] u8<Tag> a, [[maybe_unused]] i8<Tag> b) noexcept {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  if constexpr (is_512<Tag> && Tag::vnni) {
    __m512i r = acc;  // in place, as below
    asm("vpdpbusd %2, %1, %0" : "+v"(r) : "v"(__m512i(a)), "v"(__m512i(b)));
    return r;
  }
#endif
#if defined(__AVX2__)
  if constexpr (is_256<Tag>) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    if constexpr (Tag::vnni) {
      // In place: GCC 12 gives the intrinsic's accumulator a fresh register
      // and copies it back, two moves per dot in a register-tiled loop
      // (group_gemm.hpp's token lanes ran at 2/3 speed).
      __m256i r = acc;
      asm("vpdpbusd %2, %1, %0" : "+v"(r) : "v"(__m256i(a)), "v"(__m256i(b)));
      return r;
    }
#endif
    const __m256i p = _mm256_maddubs_epi16(__m256i(a), __m256i(b));
    return _mm256_add_epi32(__m256i(acc), _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
  }
#endif
#if defined(__SSE4_1__)
  if constexpr (is_sse41<Tag>) {
    const __m128i p = _mm_maddubs_epi16(__m128i(a), __m128i(b));
    return _mm_add_epi32(__m128i(acc), _mm_madd_epi16(p, _mm_set1_epi16(1)));
  }
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
  if constexpr (is_neon64<Tag>) {
    const int8x16_t sa = vreinterpretq_s8_u8(a);  // a <= 127
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, sa, b);
#else
    const int16x8_t lo = vmull_s8(vget_low_s8(sa), vget_low_s8(b));
    const int16x8_t hi = vmull_high_s8(sa, b);
    return vaddq_s32(acc, vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi)));
#endif
  }
#endif
  static_assert(is_256<Tag> || is_sse41<Tag> || is_neon64<Tag> || (is_512<Tag> && Tag::vnni),
                "dot_u8i8: no implementation for this ISA");
  return acc;
}

// dot_u8i8 of a with the 4 bytes at p in every 32-bit lane. With VNNI the
// broadcast is part of the vpdpbusd ({1to8}, {1to16}): a kernel that dots with a
// different word each time saves one instruction per dot.
template <class Tag>
inline i32<Tag> dot_u8i8_word(i32<Tag> acc, u8<Tag> a, const std::int8_t* p) noexcept {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  if constexpr (is_512<Tag> && Tag::vnni) {
    __m512i r = acc;
    asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(r) : "v"(__m512i(a)), "m"(*reinterpret_cast<const std::int8_t(*)[4]>(p)));
    return r;
  }
#endif
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  if constexpr (is_256<Tag> && Tag::vnni) {
    __m256i r = acc;
    asm("vpdpbusd %2%{1to8%}, %1, %0" : "+v"(r) : "v"(__m256i(a)), "m"(*reinterpret_cast<const std::int8_t(*)[4]>(p)));
    return r;
  }
#endif
  std::int32_t w;
  std::memcpy(&w, p, 4);
  return dot_u8i8<Tag>(acc, a, bitcast<std::int8_t>(i32<Tag>(w)));
}

// Pair sums of unsigned-times-signed bytes as int16 lanes, in order:
// out[j] = a[2j] b[2j] + a[2j+1] b[2j+1]. Same precondition as dot_u8i8. Lets a
// kernel add several blocks in int16 before widening once (llama.cpp's
// q4_K x q8_K kernels do the same); the caller bounds the count.
template <class Tag>
inline i16<Tag> madd_u8i8([[maybe_unused]] u8<Tag> a, [[maybe_unused]] i8<Tag> b) noexcept {
#if defined(__AVX2__)
  if constexpr (is_256<Tag>) return _mm256_maddubs_epi16(__m256i(a), __m256i(b));
#endif
#if defined(__SSE4_1__)
  if constexpr (is_sse41<Tag>) return _mm_maddubs_epi16(__m128i(a), __m128i(b));
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
  if constexpr (is_neon64<Tag>) {
    const int8x16_t sa = vreinterpretq_s8_u8(a);
    return vpaddq_s16(vmull_s8(vget_low_s8(sa), vget_low_s8(b)), vmull_high_s8(sa, b));
  }
#endif
  static_assert(is_256<Tag> || is_sse41<Tag> || is_neon64<Tag>, "madd_u8i8: no implementation for this ISA");
  return {};
}

// Pair sums of unsigned bytes as int16 lanes: out[j] = a[2j] b[2j] + a[2j+1]
// b[2j+1], for b[i] <= 127 and pair sums below 2^15 (x86: madd_u8i8, whose
// pmaddubsw reads b as signed; NEON multiplies unsigned, a may exceed 127).
template <class Tag>
inline i16<Tag> madd_u8u7(u8<Tag> a, u8<Tag> b) noexcept {
#if defined(__aarch64__) && defined(__ARM_NEON)
  if constexpr (is_neon64<Tag>)
    return vreinterpretq_s16_u16(vpaddq_u16(vmull_u8(vget_low_u8(a), vget_low_u8(b)), vmull_high_u8(a, b)));
  else
#endif
    return madd_u8i8<Tag>(a, bitcast<std::int8_t>(b));
}

// int16 lanes widened by adding neighbours: out[j] = v[2j] + v[2j+1].
template <class Tag>
inline i32<Tag> widen_pairs([[maybe_unused]] i16<Tag> v) noexcept {
#if defined(__AVX2__)
  if constexpr (is_256<Tag>) return _mm256_madd_epi16(__m256i(v), _mm256_set1_epi16(1));
#endif
#if defined(__SSE4_1__)
  if constexpr (is_sse41<Tag>) return _mm_madd_epi16(__m128i(v), _mm_set1_epi16(1));
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
  if constexpr (is_neon64<Tag>) return vpaddlq_s16(v);
#endif
  static_assert(is_256<Tag> || is_sse41<Tag> || is_neon64<Tag>, "widen_pairs: no implementation for this ISA");
  return {};
}

// int16 lanes sign-extended to int32: first = v[0 .. n/2), second = v[n/2 .. n).
template <class Tag>
inline std::pair<i32<Tag>, i32<Tag>> widen_i16([[maybe_unused]] i16<Tag> v) noexcept {
#if defined(__AVX2__)
  if constexpr (is_256<Tag>)
    return {_mm256_cvtepi16_epi32(_mm256_castsi256_si128(v)), _mm256_cvtepi16_epi32(_mm256_extracti128_si256(v, 1))};
#endif
#if defined(__SSE4_1__)
  if constexpr (is_sse41<Tag>) return {_mm_cvtepi16_epi32(v), _mm_cvtepi16_epi32(_mm_unpackhi_epi64(v, v))};
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
  if constexpr (is_neon64<Tag>) return {vmovl_s16(vget_low_s16(v)), vmovl_high_s16(v)};
#endif
  static_assert(is_256<Tag> || is_sse41<Tag> || is_neon64<Tag>, "widen_i16: no implementation for this ISA");
  return {};
}

// Four batches of int32 lanes narrowed to bytes, in order: out[j] = T(v[j])
// for the 4 n lanes of v = (a, b, c, d), T int8_t with values in [-128, 127]
// or uint8_t with values in [0, 255] (saturating packs; exact in range).
template <class Tag, class T>
inline void narrow8([[maybe_unused]] i32<Tag> a, [[maybe_unused]] i32<Tag> b, [[maybe_unused]] i32<Tag> c,
                    [[maybe_unused]] i32<Tag> d, [[maybe_unused]] T* out) noexcept {
  static_assert(std::is_same_v<T, std::int8_t> || std::is_same_v<T, std::uint8_t>, "narrow8: bytes only");
  [[maybe_unused]] constexpr bool is_signed = std::is_signed_v<T>;  // unused in a TU with none of the branches below
#if defined(__AVX512BW__)
  if constexpr (is_512<Tag>) {  // as below, four 128-bit lanes: dword 4 k + j of x is quad k of (a, b, c, d)[j]
    const __m512i ab = _mm512_packs_epi32(__m512i(a), __m512i(b)), cd = _mm512_packs_epi32(__m512i(c), __m512i(d));
    const __m512i x = is_signed ? _mm512_packs_epi16(ab, cd) : _mm512_packus_epi16(ab, cd);
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_storeu_si512(out, _mm512_permutexvar_epi32(order, x));
    return;
  }
#endif
#if defined(__AVX2__)
  if constexpr (is_256<Tag>) {  // packs work within 128-bit lanes: dwords come out as a0 b0 c0 d0 a1 b1 c1 d1
    const __m256i ab = _mm256_packs_epi32(__m256i(a), __m256i(b)), cd = _mm256_packs_epi32(__m256i(c), __m256i(d));
    const __m256i x = is_signed ? _mm256_packs_epi16(ab, cd) : _mm256_packus_epi16(ab, cd);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out),
                        _mm256_permutevar8x32_epi32(x, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    return;
  }
#endif
#if defined(__SSE4_1__)
  if constexpr (is_sse41<Tag>) {
    const __m128i ab = _mm_packs_epi32(__m128i(a), __m128i(b)), cd = _mm_packs_epi32(__m128i(c), __m128i(d));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), is_signed ? _mm_packs_epi16(ab, cd) : _mm_packus_epi16(ab, cd));
    return;
  }
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
  if constexpr (is_neon64<Tag>) {
    const int16x8_t ab = vcombine_s16(vqmovn_s32(a), vqmovn_s32(b)), cd = vcombine_s16(vqmovn_s32(c), vqmovn_s32(d));
    if constexpr (is_signed)
      vst1q_s8(reinterpret_cast<std::int8_t*>(out), vcombine_s8(vqmovn_s16(ab), vqmovn_s16(cd)));
    else
      vst1q_u8(reinterpret_cast<std::uint8_t*>(out), vcombine_u8(vqmovun_s16(ab), vqmovun_s16(cd)));
    return;
  }
#endif
  static_assert(is_256<Tag> || is_512<Tag> || is_sse41<Tag> || is_neon64<Tag>, "narrow8: no implementation for this ISA");
}

// A 16-byte table in every 128-bit lane: out[i] = t[i % 16].
template <class Tag>
inline i8<Tag> table16(const std::int8_t* t) noexcept {
#if defined(__AVX2__)
  if constexpr (is_256<Tag>) return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t)));
#endif
  static_assert(is_256<Tag> || i8<Tag>::size == 16, "table16: no implementation for this ISA");
  return i8<Tag>::load_unaligned(t);
}

// Byte lookup within 128-bit lanes (pshufb, tbl): out[i] = t[16 (i / 16) +
// idx[i]] for idx[i] < 16, and 0 for idx[i] >= 0x80 (pshufb's zeroing bit,
// out of tbl's range).
template <class Tag>
inline i8<Tag> lookup16([[maybe_unused]] i8<Tag> t, [[maybe_unused]] u8<Tag> idx) noexcept {
#if defined(__AVX2__)
  if constexpr (is_256<Tag>) return _mm256_shuffle_epi8(t, idx);
#endif
#if defined(__SSE4_1__)
  if constexpr (is_sse41<Tag>) return _mm_shuffle_epi8(t, idx);
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
  if constexpr (is_neon64<Tag>) return vqtbl1q_s8(t, idx);
#endif
  static_assert(is_256<Tag> || is_sse41<Tag> || is_neon64<Tag>, "lookup16: no implementation for this ISA");
  return {};
}

// Zero-extending loads: lane j of the result is p[j], for as many 8- or
// 16-bit values as the ISA has 32-bit lanes (reads exactly that many).
template <class Tag>
inline i32<Tag> widen_u8([[maybe_unused]] const std::uint8_t* p) noexcept {
#if defined(__AVX512BW__)
  if constexpr (is_512<Tag>) return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#endif
#if defined(__AVX2__)
  if constexpr (is_256<Tag>) return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
#endif
#if defined(__SSE4_1__)
  if constexpr (is_sse41<Tag>) {
    std::int32_t v;
    std::memcpy(&v, p, 4);
    return _mm_cvtepu8_epi32(_mm_cvtsi32_si128(v));
  }
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
  if constexpr (is_neon64<Tag>) {
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    return vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(vmovl_u8(vreinterpret_u8_u32(vdup_n_u32(v))))));
  }
#endif
  static_assert(is_256<Tag> || is_512<Tag> || is_sse41<Tag> || is_neon64<Tag>, "widen_u8: no implementation for this ISA");
  return {};
}

template <class Tag>
inline i32<Tag> widen_u16([[maybe_unused]] const std::uint16_t* p) noexcept {
#if defined(__AVX512BW__)
  if constexpr (is_512<Tag>) return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#endif
#if defined(__AVX2__)
  if constexpr (is_256<Tag>) return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#endif
#if defined(__SSE4_1__)
  if constexpr (is_sse41<Tag>) return _mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
  if constexpr (is_neon64<Tag>) return vreinterpretq_s32_u32(vmovl_u16(vld1_u16(p)));
#endif
  static_assert(is_256<Tag> || is_512<Tag> || is_sse41<Tag> || is_neon64<Tag>, "widen_u16: no implementation for this ISA");
  return {};
}

// x[idx[l]] in lane l: vgatherdps on AVX2 and AVX-512. xsimd 8.1's
// batch::gather passes its AVX2 overload template arguments it cannot take,
// and falls back to one extract and insert per lane.
template <class Tag>
inline f32<Tag> gather(const float* x, i32<Tag> idx) noexcept {
#if defined(__AVX512F__)
  if constexpr (is_512<Tag>) return _mm512_i32gather_ps(idx, x, 4);
#endif
#if defined(__AVX2__)
  if constexpr (is_256<Tag>) return _mm256_i32gather_ps(x, idx, 4);
#endif
  constexpr std::size_t L = f32<Tag>::size;
  alignas(64) std::int32_t i[L];
  alignas(64) float f[L];
  idx.store_aligned(i);
  for (std::size_t l = 0; l < L; ++l) f[l] = x[i[l]];
  return f32<Tag>::load_aligned(f);
}

// Scalar fp16 -> float with the F16C instruction where the ISA has it;
// otherwise lowbit::fp16 (identical results: the conversion is exact).
template <class Tag>
inline float half_to_float(std::uint16_t h) noexcept {
#if defined(__F16C__)
  if constexpr (!std::is_same_v<Tag, scalar_tag>) return _cvtsh_ss(h);
#endif
  return fp16::from_bits(h).to_float();
}

// f32<Tag>::size fp16 values to float: F16C or NEON conversion where the
// ISA has it, lowbit::fp16 otherwise (the same values: the conversion is exact).
template <class Tag>
inline f32<Tag> load_halves(const std::uint16_t* h) noexcept {
#if defined(__AVX512BW__)
  if constexpr (is_512<Tag>) return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h)));
#endif
#if defined(__F16C__) && defined(__AVX2__)
  if constexpr (is_256<Tag>) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
  if constexpr (is_neon64<Tag>) return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h)));
#endif
  alignas(64) float f[f32<Tag>::size];
  for (std::size_t i = 0; i < f32<Tag>::size; ++i) f[i] = fp16::from_bits(h[i]).to_float();
  return f32<Tag>::load_aligned(f);
}

// n fp16 values to float, a batch at a time with load_halves, the tail one by one.
template <class Tag>
inline void halves_to_float(const std::uint16_t* h, std::size_t n, float* out) noexcept {
  constexpr std::size_t L = f32<Tag>::size;
  std::size_t i = 0;
  for (; i + L <= n; i += L) load_halves<Tag>(h + i).store_unaligned(out + i);
  for (; i < n; ++i) out[i] = half_to_float<Tag>(h[i]);
}

}  // namespace lowbit::simd

LOWBIT_AVX512_INTRINSICS_END
