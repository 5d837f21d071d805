// bf16 and fp16 storage types with exact IEEE round-to-nearest-even
// conversion from float and exact conversion to float.
//
// Special values: ±0, ±Inf and subnormals convert exactly (fp16 subnormals
// are produced and read; bf16 shares float's exponent range). NaN keeps its
// sign and the top payload bits that fit; if those bits are all zero the
// quiet bit is set so the result stays a NaN. Hence every one of the 65,536
// bf16 or fp16 bit patterns survives a round trip through float unchanged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace lowbit {

namespace detail {
inline std::uint32_t float_bits(float f) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(std::uint32_t u) noexcept {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace detail

// bfloat16: the top 16 bits of an IEEE binary32.
struct bf16 {
  std::uint16_t bits = 0;

  static bf16 from_bits(std::uint16_t b) noexcept { return bf16{b}; }

  static bf16 from_float(float f) noexcept {
    const std::uint32_t u = detail::float_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) {  // NaN: keep sign and top payload
      std::uint16_t h = static_cast<std::uint16_t>(u >> 16);
      if ((h & 0x7Fu) == 0) h |= 0x40u;
      return bf16{h};
    }
    // Round to nearest even on the 16 dropped bits; a carry into the exponent
    // is the correct result (up to and including overflow to Inf).
    const std::uint32_t rounded = u + 0x7FFFu + ((u >> 16) & 1u);
    return bf16{static_cast<std::uint16_t>(rounded >> 16)};
  }

  float to_float() const noexcept { return detail::bits_float(std::uint32_t(bits) << 16); }

  friend bool operator==(bf16 a, bf16 b) noexcept { return a.bits == b.bits; }
  friend bool operator!=(bf16 a, bf16 b) noexcept { return a.bits != b.bits; }
};

// IEEE binary16.
struct fp16 {
  std::uint16_t bits = 0;

  static fp16 from_bits(std::uint16_t b) noexcept { return fp16{b}; }

  static fp16 from_float(float f) noexcept {
    const std::uint32_t u = detail::float_bits(f);
    const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
    const std::uint32_t a = u & 0x7FFFFFFFu;
    if (a >= 0x7F800000u) {  // Inf or NaN
      if (a == 0x7F800000u) return fp16{std::uint16_t(sign | 0x7C00u)};
      std::uint16_t m = static_cast<std::uint16_t>((a >> 13) & 0x3FFu);
      if (m == 0) m = 0x200u;
      return fp16{std::uint16_t(sign | 0x7C00u | m)};
    }
    // 65520 = 65504 + half an ulp: ties go to the even neighbour, which is Inf.
    if (a >= 0x477FF000u) return fp16{std::uint16_t(sign | 0x7C00u)};
    std::uint32_t r, rem, half;
    if (a < 0x38800000u) {  // below 2^-14: an fp16 subnormal (or zero)
      if (a <= 0x33000000u) return fp16{sign};  // <= 2^-25 rounds to zero (tie -> even 0)
      const std::uint32_t e = a >> 23;          // 102..112
      const std::uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
      const std::uint32_t shift = 126u - e;     // value / 2^-24 = m >> shift
      r = m >> shift;
      rem = m & ((1u << shift) - 1u);
      half = 1u << (shift - 1u);
    } else {  // normal: rebias the exponent from 127 to 15, drop 13 bits
      r = (a - 0x38000000u) >> 13;
      rem = a & 0x1FFFu;
      half = 0x1000u;
    }
    if (rem > half || (rem == half && (r & 1u))) ++r;  // carry into exponent is correct
    return fp16{std::uint16_t(sign | r)};
  }

  // Neither Inf nor NaN: the exponent is not all ones (no conversion needed).
  bool is_finite() const noexcept { return (bits & 0x7C00u) != 0x7C00u; }

  // Branch-free (scalar kernels convert outliers and statistics one at a
  // time): a normal value re-biases the exponent, a subnormal m * 2^-24 is an
  // exact int-to-float product (no subnormal float arithmetic, so DAZ/FTZ
  // modes do not change it), Inf and NaN keep their payload.
  float to_float() const noexcept {
    const std::uint32_t sign = std::uint32_t(bits & 0x8000u) << 16, em = bits & 0x7FFFu;
    const float normal = detail::bits_float((em << 13) + (112u << 23));
    const float special = detail::bits_float(0x7F800000u | ((em & 0x3FFu) << 13));
    const float subnormal = float(em) * 0x1p-24f;
    const float mag = em >= 0x7C00u ? special : em >= 0x400u ? normal : subnormal;
    return detail::bits_float(detail::float_bits(mag) | sign);
  }

  friend bool operator==(fp16 a, fp16 b) noexcept { return a.bits == b.bits; }
  friend bool operator!=(fp16 a, fp16 b) noexcept { return a.bits != b.bits; }
};

static_assert(sizeof(bf16) == 2 && sizeof(fp16) == 2, "storage types must be 2 bytes");

namespace detail {
// No Inf or NaN among n fp16 bit patterns (fp16::is_finite of each).
// Validation runs before every kernel call over whole arrays, so this is
// written to vectorize: flags, not a branch per value, in blocks of 32 (a
// fixed count, which GCC's -O2 cost model vectorizes).
inline bool all_finite_fp16(const std::uint16_t* h, std::size_t n) noexcept {
  unsigned bad = 0;
  const auto flag = [](std::uint16_t v) { return unsigned(!fp16::from_bits(v).is_finite()); };
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (std::size_t j = 0; j < 32; ++j) bad |= flag(h[i + j]);
  for (; i < n; ++i) bad |= flag(h[i]);
  return bad == 0;
}
}  // namespace detail

}  // namespace lowbit
