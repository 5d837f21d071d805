// Dot products of BFloat16 weights with fp32 activations, in two storage
// forms: plain bf16 words, and DFloat11's split form (the 8-bit exponent and
// the sign + 7 mantissa bits in separate byte arrays, format/dfloat11.hpp).
// A bf16 word widens to fp32 exactly (it is the top half of the float), so
// both are fp32 dot products once the bits are assembled:
//   word = sign << 15 | exponent << 7 | mantissa,  float bits = word << 16.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../core/types.hpp"
#include "../simd/ops.hpp"

namespace lowbit::detail {

// The bf16 word of (exponent byte, sign-mantissa byte).
inline std::uint16_t join_bf16(std::uint8_t exponent, std::uint8_t sign_mantissa) noexcept {
  return std::uint16_t((sign_mantissa & 0x80u) << 8 | unsigned(exponent) << 7 | (sign_mantissa & 0x7Fu));
}

// out[i] = join_bf16(exponent[i], sign_mantissa[i]) for i < n: DFloat11's
// output stage. `stream`: the kernels write past the caches (simd::
// store_stream), for outputs larger than the caches (codec/dfloat11.hpp).
inline void join_bf16_words_reference(const std::uint8_t* exponent, const std::uint8_t* sign_mantissa, std::size_t n,
                                      std::uint16_t* out, bool /*stream*/) noexcept {
  for (std::size_t i = 0; i < n; ++i) out[i] = join_bf16(exponent[i], sign_mantissa[i]);
}

inline float bf16_dot_reference(const std::uint16_t* w, const float* x, std::size_t n) noexcept {
  float s = 0;
  for (std::size_t i = 0; i < n; ++i) s += bf16::from_bits(w[i]).to_float() * x[i];
  return s;
}

inline float split_bf16_dot_reference(const std::uint8_t* exponent, const std::uint8_t* sign_mantissa,
                                      const float* x, std::size_t n) noexcept {
  float s = 0;
  for (std::size_t i = 0; i < n; ++i) s += bf16::from_bits(join_bf16(exponent[i], sign_mantissa[i])).to_float() * x[i];
  return s;
}

// Four accumulators over lanes-wide chunks, then a scalar tail. Load(i)
// returns the fp32 batch of weights i .. i + lanes - 1.
template <class Tag, class Load>
float bf16_dot_loop(Load load, const float* x, std::size_t n) noexcept {
  using F = simd::f32<Tag>;
  constexpr std::size_t L = F::size;
  F a0(0.0f), a1(0.0f), a2(0.0f), a3(0.0f);
  std::size_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    a0 = xsimd::fma(load(i), F::load_unaligned(x + i), a0);
    a1 = xsimd::fma(load(i + L), F::load_unaligned(x + i + L), a1);
    a2 = xsimd::fma(load(i + 2 * L), F::load_unaligned(x + i + 2 * L), a2);
    a3 = xsimd::fma(load(i + 3 * L), F::load_unaligned(x + i + 3 * L), a3);
  }
  for (; i + L <= n; i += L) a0 = xsimd::fma(load(i), F::load_unaligned(x + i), a0);
  return xsimd::hadd((a0 + a1) + (a2 + a3));
}

template <class Tag>
float bf16_dot(const std::uint16_t* w, const float* x, std::size_t n) noexcept {
  using F = simd::f32<Tag>;
  constexpr std::size_t L = F::size;
  auto load = [&](std::size_t i) LOWBIT_ALWAYS_INLINE {
    return simd::bitcast<float>(simd::widen_u16<Tag>(w + i) << 16);
  };
  const std::size_t body = n / L * L;
  return bf16_dot_loop<Tag>(load, x, body) + bf16_dot_reference(w + body, x + body, n - body);
}

template <class Tag>
float split_bf16_dot(const std::uint8_t* exponent, const std::uint8_t* sign_mantissa, const float* x,
                     std::size_t n) noexcept {
  using F = simd::f32<Tag>;
  using I = simd::i32<Tag>;
  constexpr std::size_t L = F::size;
  auto load = [&](std::size_t i) LOWBIT_ALWAYS_INLINE {
    const I e = simd::widen_u8<Tag>(exponent + i);
    const I sm = simd::widen_u8<Tag>(sign_mantissa + i);
    return simd::bitcast<float>(((sm & I(0x80)) << 24) | (e << 23) | ((sm & I(0x7F)) << 16));
  };
  const std::size_t body = n / L * L;
  return bf16_dot_loop<Tag>(load, x, body) +
         split_bf16_dot_reference(exponent + body, sign_mantissa + body, x + body, n - body);
}

// Per byte: low = exponent bit 0 << 7 | mantissa, high = sign | exponent >> 1;
// the two byte batches interleaved are the little-endian bf16 words.
template <class Tag>
void join_bf16_words(const std::uint8_t* exponent, const std::uint8_t* sign_mantissa, std::size_t n, std::uint16_t* out,
                     bool stream) noexcept {
  using U8 = simd::u8<Tag>;
  constexpr std::size_t S = U8::size;  // elements per step: S bytes of each input, 2 S bytes out
  std::size_t i = 0;
  if (stream)  // up to the batch alignment the stores need
    for (; i < n && reinterpret_cast<std::uintptr_t>(out + i) % S != 0; ++i)
      out[i] = join_bf16(exponent[i], sign_mantissa[i]);
  for (; i + S <= n; i += S) {
    const U8 e = U8::load_unaligned(exponent + i), sm = U8::load_unaligned(sign_mantissa + i);
    const U8 lo = simd::shl_small<Tag>(e & U8(1), 7) | (sm & U8(0x7F));
    const U8 hi = (sm & U8(0x80)) | simd::shr_mask<Tag>(e, 1, 0x7F);
    const auto [w0, w1] = simd::interleave_bytes<Tag>(lo, hi);
    auto* o = reinterpret_cast<std::uint8_t*>(out + i);
    if (stream) {
      simd::store_stream<Tag>(o, w0);
      simd::store_stream<Tag>(o + S, w1);
    } else {
      w0.store_unaligned(o);
      w1.store_unaligned(o + S);
    }
  }
  join_bf16_words_reference(exponent + i, sign_mantissa + i, n - i, out + i, false);
  if (stream) simd::stream_fence();
}

}  // namespace lowbit::detail
