// XXH64 (Yann Collet's xxHash, 64-bit variant, as specified in the xxHash
// repository's doc/xxhash_spec.md): the per-tensor checksum of lowbit files.
//
// Why XXH64: it is a published, stable specification with independent
// implementations (`xxhsum -H1` prints the same value, so a user can check a
// tensor's bytes without lowbit), it is portable scalar code with four
// independent 64-bit lanes (several GB/s per core, no SIMD or CRC instruction
// needed), and its 64 bits make an undetected random corruption negligible.
// It is a checksum against damage, not a defence against a forger.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace lowbit {

namespace detail::xxh {
constexpr std::uint64_t p1 = 0x9E3779B185EBCA87ull, p2 = 0xC2B2AE3D27D4EB4Full, p3 = 0x165667B19E3779F9ull,
                        p4 = 0x85EBCA77C2B2AE63ull, p5 = 0x27D4EB2F165667C5ull;
inline std::uint64_t rotl(std::uint64_t x, int r) noexcept { return (x << r) | (x >> (64 - r)); }
// Little-endian reads (lowbit files are little-endian; io/safetensors.hpp
// refuses big-endian hosts).
inline std::uint64_t read64(const unsigned char* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline std::uint64_t read32(const unsigned char* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline std::uint64_t round(std::uint64_t acc, std::uint64_t in) noexcept { return rotl(acc + in * p2, 31) * p1; }
inline std::uint64_t merge(std::uint64_t h, std::uint64_t v) noexcept { return (h ^ round(0, v)) * p1 + p4; }
}  // namespace detail::xxh

// XXH64 of n bytes at data.
inline std::uint64_t xxh64(const void* data, std::size_t n, std::uint64_t seed = 0) noexcept {
  using namespace detail::xxh;
  const auto* p = static_cast<const unsigned char*>(data);
  const unsigned char* const end = p + n;
  std::uint64_t h;
  if (n >= 32) {
    std::uint64_t v1 = seed + p1 + p2, v2 = seed + p2, v3 = seed, v4 = seed - p1;
    for (; end - p >= 32; p += 32) {  // four independent lanes
      v1 = round(v1, read64(p));
      v2 = round(v2, read64(p + 8));
      v3 = round(v3, read64(p + 16));
      v4 = round(v4, read64(p + 24));
    }
    h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
    h = merge(merge(merge(merge(h, v1), v2), v3), v4);
  } else {
    h = seed + p5;
  }
  h += std::uint64_t(n);
  for (; end - p >= 8; p += 8) h = rotl(h ^ round(0, read64(p)), 27) * p1 + p4;
  if (end - p >= 4) {
    h = rotl(h ^ (read32(p) * p1), 23) * p2 + p3;
    p += 4;
  }
  for (; p < end; ++p) h = rotl(h ^ (*p * p5), 11) * p1;
  h ^= h >> 33;
  h *= p2;
  h ^= h >> 29;
  h *= p3;
  return h ^ (h >> 32);
}

}  // namespace lowbit
