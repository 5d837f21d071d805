// Table-driven decoding of canonical Huffman streams (codec/huffman.hpp),
// several independent streams interleaved.
//
// The fast path borrows huff0's CPU techniques (zstd, lib/common/huf.h):
//  - one lookup of the next table_bits bits yields up to three whole symbols
//    (a multi-symbol table: LLM exponents have ~2.6 bits of entropy, so a
//    12-bit window usually holds 3 or more codes);
//  - branchless refill: a window is one unaligned big-endian 8-byte load at
//    the bit position, good for 57 bits, i.e. four lookups;
//  - N streams advance in the same loop, so their dependency chains overlap.
// The fast loop runs only while every load stays inside the buffer and every
// stream has room for a full round of symbols; the rest decodes one symbol at
// a time with bounds-checked loads. Invalid codes (holes of an incomplete
// code) set a flag instead of branching; the caller turns it into an error.
// decode_reference() is the bit-by-bit canonical decoder the tests compare
// against.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../codec/huffman.hpp"

namespace lowbit::huffman {

// Entry of the multi-symbol table (64 bits): bits consumed in bits 0-3
// (bits 4-7 zero), symbol count 0..3 in bits 8-11, the symbols in bits 32-55
// (first in the low byte). The layout makes the decode loop cheap: the entry
// is itself the window's shift count (64-bit shifts use the count's low 6
// bits), and the entries of one window add up without carries into a packed
// (bits, symbols) total. A window that starts with no valid code has count 0
// and still consumes table_bits bits, so a corrupt stream runs on to a wrong
// end position instead of stalling (and decode_tail reports it exactly).
// Cache-line aligned: threads share one table, and a line shared with some
// thread's stack would bounce between cores on every write to that stack.
class alignas(64) DecodeTable {
 public:
  static constexpr std::uint32_t invalid = 0x80000000u;  // single(): no code prefixes the window

  explicit DecodeTable(const Lengths& len) {
    LOWBIT_CHECK(kraft_sum(len) <= (std::uint64_t(1) << 32), "huffman::DecodeTable",
                 "code lengths violate the Kraft inequality");
    for (int s = 0; s < 256; ++s)
      LOWBIT_CHECK(len[std::size_t(s)] <= table_bits, "huffman::DecodeTable", "symbol ", s, " has length ",
                   int(len[std::size_t(s)]), " > ", table_bits);
    const Code code = Code::canonical(len, table_bits);
    // single_[w]: (symbol, length) of the code that prefixes window w.
    single_.fill(invalid);
    for (int s = 0; s < 256; ++s) {
      const int l = len[std::size_t(s)];
      if (!l) continue;
      const std::uint32_t first = code.word[std::size_t(s)] << (table_bits - l);
      for (std::uint32_t w = first; w < first + (1u << (table_bits - l)); ++w)
        single_[w] = std::uint32_t(s) | std::uint32_t(l) << 8;
    }
    for (std::uint32_t w = 0; w < size; ++w) {
      std::uint32_t e = 0;
      int used = 0, n = 0;
      while (n < 3) {
        const std::uint32_t s = single_[(w << used) & (size - 1)];
        if (s == invalid || used + int(s >> 8) > table_bits) break;
        e |= (s & 0xFFu) << (8 * n);
        used += int(s >> 8);
        ++n;
      }
      multi_[w] = std::uint64_t(e) << 32 | std::uint64_t(n) << 8 | std::uint64_t(n ? used : table_bits);
    }
  }

  std::uint64_t multi(std::uint32_t window) const noexcept { return multi_[window]; }
  std::uint32_t single(std::uint32_t window) const noexcept { return single_[window]; }

  static constexpr std::uint32_t size = 1u << table_bits;

 private:
  std::array<std::uint64_t, size> multi_{};
  std::array<std::uint32_t, size> single_{};
};

// One stream: decode `count` symbols to `out`, starting at bit `pos` of the
// buffer; a correct stream ends exactly at bit `end`.
struct Stream {
  std::uint64_t pos = 0, end = 0;
  std::uint8_t* out = nullptr;
  std::size_t count = 0;
};

namespace detail {

inline std::uint64_t load_be64(const std::uint8_t* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
#if defined(__GNUC__)
  return __builtin_bswap64(v);
#else
  std::uint64_t r = 0;
  for (int i = 0; i < 8; ++i) r = (r << 8) | ((v >> (8 * i)) & 0xFF);
  return r;
#endif
}

// The 64 bits at bit position pos, zeros past the end of the buffer.
inline std::uint64_t window_checked(const std::uint8_t* buf, std::size_t size, std::uint64_t pos) noexcept {
  const std::uint64_t byte = pos >> 3;
  std::uint64_t v = 0;
  if (byte + 8 <= size) {
    v = load_be64(buf + byte);
  } else {
    for (std::uint64_t i = 0; i < 8; ++i) v = (v << 8) | (byte + i < size ? buf[byte + i] : 0u);
  }
  return v << (pos & 7);
}

// One symbol at a time, every load bounds-checked. Returns false on an
// invalid code, a code running past the buffer, or a position past `end`.
inline bool decode_tail(const DecodeTable& t, const std::uint8_t* buf, std::size_t size, Stream& s) noexcept {
  while (s.count > 0) {
    if (s.pos >= s.end) return false;
    const std::uint32_t e = t.single(std::uint32_t(window_checked(buf, size, s.pos) >> (64 - table_bits)));
    if (e == DecodeTable::invalid || s.pos + (e >> 8) > std::uint64_t(size) * 8) return false;
    *s.out++ = std::uint8_t(e);
    s.pos += e >> 8;
    --s.count;
  }
  return true;
}

}  // namespace detail

// Decodes N streams; true iff every stream held valid codes and ended
// exactly at its `end`. Never reads outside buf[0, size) and never writes
// outside each stream's out[0, count).
template <int N>
bool decode_streams(const DecodeTable& t, const std::uint8_t* buf, std::size_t size, Stream* s) noexcept {
  constexpr std::size_t round = 4 * 3 + 1;  // symbols a round may write: 4 lookups, 3 each, +1 for the 4-byte store
  // Last bit position an 8-byte load may start at; none if the buffer is shorter.
  const std::uint64_t safe = size >= 8 ? (std::uint64_t(size) - 8) * 8 : 0;
  const bool loads = size >= 8;
  // The state lives in locals: stores through the uint8_t output may alias
  // anything in memory, so state kept in `s` would be reloaded after each one.
  std::uint64_t pos[N], end[N];
  std::uint8_t* out[N];
  std::size_t count[N];
  for (int i = 0; i < N; ++i) pos[i] = s[i].pos, end[i] = s[i].end, out[i] = s[i].out, count[i] = s[i].count;
  auto fast_ok = [&](int i) { return loads && count[i] >= round && pos[i] <= safe && pos[i] <= end[i]; };
  auto step = [&](int i) {
    std::uint64_t w = detail::load_be64(buf + (pos[i] >> 3)) << (pos[i] & 7);  // >= 57 valid bits
    std::uint64_t total = 0;  // packed (bits, symbols) of the round in its low 32 bits
    std::uint8_t* o = out[i];
    for (int k = 0; k < 4; ++k) {
      const std::uint64_t e = t.multi(std::uint32_t(w >> (64 - table_bits)));
      const std::uint32_t syms = std::uint32_t(e >> 32);
      std::memcpy(o + (std::uint32_t(total) >> 8), &syms, 4);  // symbols in the low 3 bytes; the 4th is overwritten or slack
      total += e;
      w <<= (e & 63u);  // = the code bits: bits 4-5 are zero (x86 shifts mask the count anyway)
    }
    const std::size_t written = std::uint32_t(total) >> 8;
    out[i] += written;
    count[i] -= written;
    pos[i] += total & 63u;
  };
  for (;;) {
    bool all = true;
    for (int i = 0; i < N; ++i) all = all && fast_ok(i);
    if (!all) break;
    for (int i = 0; i < N; ++i) step(i);
  }
  bool ok = true;
  for (int i = 0; i < N; ++i) {
    while (fast_ok(i)) step(i);
    Stream rest{pos[i], end[i], out[i], count[i]};
    ok = detail::decode_tail(t, buf, size, rest) && rest.pos == rest.end && ok;
    s[i] = rest;
  }
  return ok;
}

// Bit-by-bit canonical decoding (the tests' reference): count symbols from
// bit `pos`; returns the bit position after them, or ~0 on an invalid code
// or a read past the buffer.
inline std::uint64_t decode_reference(const Lengths& len, const std::uint8_t* buf, std::size_t size,
                                      std::uint64_t pos, std::uint8_t* out, std::size_t count) {
  const Code code = Code::canonical(len, 32);
  for (std::size_t i = 0; i < count; ++i) {
    std::uint32_t w = 0;
    int l = 0;
    int sym = -1;
    while (sym < 0) {
      if (l == 32 || (pos >> 3) >= size) return ~std::uint64_t(0);
      w = (w << 1) | ((buf[pos >> 3] >> (7 - (pos & 7))) & 1u);
      ++pos;
      ++l;
      for (int s = 0; s < 256 && sym < 0; ++s)
        if (code.len[std::size_t(s)] == l && code.word[std::size_t(s)] == w) sym = s;
    }
    out[i] = std::uint8_t(sym);
  }
  return pos;
}

}  // namespace lowbit::huffman
