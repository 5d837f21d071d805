// Dense arrays of fixed-width unsigned integers (0..32 bits each), for the
// per-row and per-column metadata of a format where every bit is counted:
// SpQR's input permutation (ceil(log2 K) bits per entry) and its outliers
// per row. On a 64-wide row a 32-bit index costs half a bit per weight; at
// 6 bits it costs 0.09.
//
// Layout: entry i occupies bits [w i, w i + w) of the array, counting bit 0
// as the least significant bit of byte 0 (little-endian bit order); the
// array has bytes(n, w) = ceil(n w / 8) bytes, the bits past the last entry
// zero. Width 0 holds only zeros in no bytes. Unlike core/bitpack.hpp (the
// codes' layout, built for SIMD), nothing is padded and reads are scalar.
// VQ's index streams (format/vq.hpp) are this layout plus two zero bytes, so
// that its kernels read any index with one 3-byte load.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "error.hpp"

namespace lowbit::packed_ints {

inline constexpr int max_width = 32;

// Bits that hold every value in 0..max_value.
constexpr int width_for(std::uint64_t max_value) noexcept {
  int w = 0;
  while (w < 64 && (max_value >> w) != 0) ++w;
  return w;
}

constexpr std::size_t bytes(std::size_t n, int width) noexcept {
  return (n * std::size_t(width) + 7) / 8;
}

// Entry i of an array of `width`-bit entries; reads only the bytes that hold
// it, so any i < n is in bounds of an array of bytes(n, width) bytes.
inline std::uint32_t get(const std::uint8_t* data, int width, std::size_t i) noexcept {
  if (width == 0) return 0;
  const std::size_t bit = i * std::size_t(width), first = bit / 8, last = (bit + std::size_t(width) - 1) / 8;
  std::uint64_t v = 0;
  for (std::size_t b = last + 1; b-- > first;) v = (v << 8) | data[b];
  v >>= bit % 8;
  return std::uint32_t(v & ((std::uint64_t(1) << width) - 1));
}

inline void unpack(const std::uint8_t* data, int width, std::size_t n, std::uint32_t* out) noexcept {
  for (std::size_t i = 0; i < n; ++i) out[i] = get(data, width, i);
}

// Packs n values of at most `width` bits each.
template <class T>
std::vector<std::uint8_t> pack(const T* values, std::size_t n, int width) {
  LOWBIT_CHECK(width >= 0 && width <= max_width, "packed_ints::pack", "width must be in 0..32, got ", width);
  std::vector<std::uint8_t> out(bytes(n, width), 0);
  for (std::size_t i = 0; i < n; ++i) {
    const auto v = std::uint64_t(values[i]);
    LOWBIT_CHECK(width_for(v) <= width, "packed_ints::pack", "value ", v, " at ", i, " does not fit in ", width,
                 " bits");
    const std::size_t bit = i * std::size_t(width), touched = (bit % 8 + std::size_t(width) + 7) / 8;
    for (std::size_t b = 0; b < touched; ++b) out[bit / 8 + b] |= std::uint8_t((v << (bit % 8)) >> (8 * b));
  }
  return out;
}

}  // namespace lowbit::packed_ints
