// Packing of b-bit unsigned codes (b = 1..8): lowbit's one bit layout.
//
// A row of n codes is stored as one *plane* per binary digit of b, widest
// first; the widest plane holds the lowest bits of each code:
//
//   b      1    2    3      4    5      6      7        8
//   planes 1    2    2+1    4    4+1    4+2    4+2+1    8
//
// A plane of width w (1, 2, 4 or 8) is a sequence of 32-byte *chunks*, each
// holding 256/w codes. Within a chunk, code i sits in
//
//   byte  i mod 32,   bits  [w * (i div 32), w * (i div 32) + w)
//
// so the 32 consecutive codes 32f .. 32f+31 form bit-field f of the chunk's 32
// bytes. A SIMD kernel extracts one such run of 32 codes from a 32-byte load
// with one shift and one mask, no shuffle: the run is exactly one block of
// 32 int8 activations (kernels/group_gemv.hpp). The last chunk of a plane is
// zero-padded; a row occupies row_bytes(n, b) bytes, planes back to back.
//
// Cost of the layout: a row is padded to whole chunks per plane (e.g. 64
// codes per chunk at 4 bits), which format bytes() and bits_per_weight()
// count honestly.
#pragma once

#include <algorithm>

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "error.hpp"

namespace lowbit::bitpack {

inline constexpr std::size_t chunk_bytes = 32;

inline void check_bits(int bits, const char* where) {
  LOWBIT_CHECK(bits >= 1 && bits <= 8, where, "bits must be in 1..8, got ", bits);
}

// Number of planes for b bits and the width of plane p (widest first).
constexpr int plane_count(int bits) noexcept { return (bits & 8 ? 1 : 0) + (bits & 4 ? 1 : 0) + (bits & 2 ? 1 : 0) + (bits & 1 ? 1 : 0); }
constexpr int plane_width(int bits, int p) noexcept {
  for (int w = 8; w >= 1; w >>= 1)
    if (bits & w) {
      if (p == 0) return w;
      --p;
    }
  return 0;
}
// log2 of the runs (bit-fields) per chunk of a plane of width w (8 / w runs):
// run q is field q mod 8/w of chunk q div 8/w, found with shifts.
constexpr unsigned fields_log2(int w) noexcept { return w == 8 ? 0u : w == 4 ? 1u : w == 2 ? 2u : 3u; }
// Codes per chunk and chunks for n codes in a plane of width w.
constexpr std::size_t chunk_codes(int w) noexcept { return 256u / unsigned(w); }
constexpr std::size_t plane_chunks(std::size_t n, int w) noexcept { return (n + chunk_codes(w) - 1) / chunk_codes(w); }
constexpr std::size_t plane_bytes(std::size_t n, int w) noexcept { return plane_chunks(n, w) * chunk_bytes; }

// Bytes of one packed row of n b-bit codes.
constexpr std::size_t row_bytes(std::size_t n, int bits) noexcept {
  std::size_t total = 0;
  for (int p = 0; p < plane_count(bits); ++p) total += plane_bytes(n, plane_width(bits, p));
  return total;
}

// Byte offset of plane p within a packed row of n codes.
constexpr std::size_t plane_offset(std::size_t n, int bits, int p) noexcept {
  std::size_t off = 0;
  for (int q = 0; q < p; ++q) off += plane_bytes(n, plane_width(bits, q));
  return off;
}

// Pack n codes (each < 2^bits) into out[0 .. row_bytes(n, bits)), padding
// with zeros. Codes are masked to `bits`; callers validate them first.
inline void pack(const std::uint8_t* codes, std::size_t n, int bits, std::uint8_t* out) {
  check_bits(bits, "bitpack::pack");
  const std::size_t total = row_bytes(n, bits);
  for (std::size_t i = 0; i < total; ++i) out[i] = 0;
  int low = 0;  // lowest code bit held by this plane
  for (int p = 0; p < plane_count(bits); ++p) {
    const int w = plane_width(bits, p);
    const unsigned mask = (1u << w) - 1u;
    std::uint8_t* plane = out + plane_offset(n, bits, p);
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t chunk = i / chunk_codes(w), j = i % chunk_codes(w);
      const unsigned field = unsigned(j / chunk_bytes);
      const unsigned v = (unsigned(codes[i]) >> low) & mask;
      plane[chunk * chunk_bytes + j % chunk_bytes] |= std::uint8_t(v << (unsigned(w) * field));
    }
    low += w;
  }
}

// Codes [first, first + count) of a packed row of n codes set from codes[0 ..
// count), the row's other codes unchanged: how a growing buffer (the KV cache,
// quant/kivi.hpp) writes into a row one part at a time.
inline void pack_range(const std::uint8_t* codes, std::size_t n, int bits, std::size_t first, std::size_t count,
                       std::uint8_t* row) {
  check_bits(bits, "bitpack::pack_range");
  LOWBIT_CHECK(first <= n && count <= n - first, "bitpack::pack_range", "codes [", first, ", ", first, " + ", count,
               ") lie outside a row of ", n);
  int low = 0;
  for (int p = 0; p < plane_count(bits); ++p) {
    const int w = plane_width(bits, p);
    const unsigned mask = (1u << w) - 1u;
    std::uint8_t* plane = row + plane_offset(n, bits, p);
    for (std::size_t i = first; i < first + count; ++i) {
      const std::size_t chunk = i / chunk_codes(w), j = i % chunk_codes(w);
      const unsigned shift = unsigned(w) * unsigned(j / chunk_bytes);
      std::uint8_t& byte = plane[chunk * chunk_bytes + j % chunk_bytes];
      const unsigned v = (unsigned(codes[i - first]) >> low) & mask;
      byte = std::uint8_t((byte & ~(mask << shift)) | (v << shift));
    }
    low += w;
  }
}

// Code i of a packed row (scalar; the reference for every SIMD decoder).
inline std::uint8_t get(const std::uint8_t* row, std::size_t n, int bits, std::size_t i) noexcept {
  assert(i < n);
  unsigned v = 0;
  int low = 0;
  for (int p = 0; p < plane_count(bits); ++p) {
    const int w = plane_width(bits, p);
    const std::uint8_t* plane = row + plane_offset(n, bits, p);
    const std::size_t chunk = i / chunk_codes(w), j = i % chunk_codes(w);
    const unsigned field = unsigned(j / chunk_bytes);
    const unsigned byte = plane[chunk * chunk_bytes + j % chunk_bytes];
    v |= ((byte >> (unsigned(w) * field)) & ((1u << w) - 1u)) << low;
    low += w;
  }
  return std::uint8_t(v);
}

// Codes [first, first + count) of a packed row of n codes. Written run by
// run (the 32 codes of a run share one shift), so the inner loop vectorizes;
// tests check it against get().
inline void unpack_range(const std::uint8_t* row, std::size_t n, int bits, std::size_t first, std::size_t count,
                         std::uint8_t* out) {
  check_bits(bits, "bitpack::unpack");
  LOWBIT_CHECK(first <= n && count <= n - first, "bitpack::unpack_range", "codes [", first, ", ", first, " + ",
               count, ") lie outside a row of ", n);
  std::fill(out, out + count, std::uint8_t(0));
  const std::size_t end = first + count;
  int low = 0;
  for (int p = 0; p < plane_count(bits); ++p) {
    const int w = plane_width(bits, p);
    const std::uint8_t* plane = row + plane_offset(n, bits, p);
    const unsigned mask = (1u << w) - 1u;
    const unsigned log_f = fields_log2(w);
    for (std::size_t run = first / chunk_bytes; run * chunk_bytes < end; ++run) {
      const std::size_t base = run * chunk_bytes, lo = std::max(first, base), hi = std::min(end, base + chunk_bytes);
      const std::uint8_t* src = plane + (run >> log_f) * chunk_bytes;
      const unsigned shift = unsigned(w) * unsigned(run & ((1u << log_f) - 1u));
      if (hi - lo == chunk_bytes) {
        // A whole run, 8 codes per 64-bit word: a byte's field shifted down
        // within the word only drags in the neighbour's low bits, which the
        // replicated mask clears (shift + w <= 8, low + w <= 8).
        const std::uint64_t m = std::uint64_t(mask) * 0x0101010101010101u;
        for (std::size_t k = 0; k < chunk_bytes; k += 8) {
          std::uint64_t v, o;
          std::memcpy(&v, src + k, 8);
          std::memcpy(&o, out + (lo - first) + k, 8);
          o |= ((v >> shift) & m) << low;
          std::memcpy(out + (lo - first) + k, &o, 8);
        }
        continue;
      }
      for (std::size_t i = lo; i < hi; ++i)
        out[i - first] = std::uint8_t(out[i - first] | (((unsigned(src[i - base]) >> shift) & mask) << low));
    }
    low += w;
  }
}

// Unpack n codes from a packed row.
inline void unpack(const std::uint8_t* row, std::size_t n, int bits, std::uint8_t* codes) {
  unpack_range(row, n, bits, 0, n, codes);
}

}  // namespace lowbit::bitpack
