// Canonical, length-limited Huffman codes over byte symbols: code lengths
// from a histogram, canonical code words, and an MSB-first bit writer.
// Decoding lives in kernels/huffman_decode.hpp.
//
// Lengths come from package-merge (Larmore & Hirschberg, 1990), which gives
// the optimal prefix code under a maximum length: without a binding limit it
// is a Huffman code (same total cost), with one it is the best code that
// respects it. Code words are canonical (DEFLATE's rule, RFC 1951 §3.2.2):
// shorter codes first, ties by symbol value, consecutive integers, so the
// 256 lengths alone describe the code.
//
// Bit order: code words are written most significant bit first, and bytes are
// filled from their most significant bit, so a decoder reads the next L bits
// as the top bits of a big-endian window.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <numeric>
#include <vector>

#include "../core/error.hpp"
#include "../core/view.hpp"

namespace lowbit::huffman {

using Lengths = std::array<std::uint8_t, 256>;  // 0: symbol absent from the code

// The longest code the decoders' lookup tables take (kernels/huffman_decode.hpp):
// 2^12 entries of 4 bytes stay in L1, and four 12-bit lookups fit one 57-bit window.
inline constexpr int table_bits = 12;

// Optimal code lengths <= max_len for the symbols with a nonzero count.
// One used symbol gets length 1 (a code needs at least one bit per symbol).
inline Lengths code_lengths(span<const std::uint64_t> histogram, int max_len) {
  LOWBIT_CHECK(histogram.size() == 256, "huffman::code_lengths", "histogram has ", histogram.size(),
               " bins, expected 256");
  LOWBIT_CHECK(max_len >= 8 && max_len <= 32, "huffman::code_lengths", "max_len = ", max_len,
               " outside [8, 32] (8 bits must fit 256 symbols)");
  Lengths len{};
  std::vector<int> used;
  for (int s = 0; s < 256; ++s)
    if (histogram[std::size_t(s)] > 0) used.push_back(s);
  if (used.empty()) return len;
  if (used.size() == 1) {
    len[std::size_t(used[0])] = 1;
    return len;
  }
  std::stable_sort(used.begin(), used.end(),
                   [&](int a, int b) { return histogram[std::size_t(a)] < histogram[std::size_t(b)]; });
  const std::size_t n = used.size();

  // Package-merge: an item is a weight and how often each leaf occurs in it.
  // Each round pairs the current list into packages and merges them with a
  // fresh copy of the leaves; the 2n - 2 cheapest items of the last round
  // give each leaf's length as its number of occurrences.
  struct Item {
    std::uint64_t weight;
    std::vector<std::uint8_t> count;
  };
  std::vector<Item> leaves(n);
  for (std::size_t i = 0; i < n; ++i) {
    leaves[i].weight = histogram[std::size_t(used[i])];
    leaves[i].count.assign(n, 0);
    leaves[i].count[i] = 1;
  }
  std::vector<Item> list = leaves;
  for (int round = 1; round < max_len; ++round) {
    std::vector<Item> packages;
    for (std::size_t i = 0; i + 1 < list.size(); i += 2) {
      Item p{list[i].weight + list[i + 1].weight, list[i].count};
      for (std::size_t k = 0; k < n; ++k) p.count[k] = std::uint8_t(p.count[k] + list[i + 1].count[k]);
      packages.push_back(std::move(p));
    }
    std::vector<Item> merged;
    merged.reserve(n + packages.size());
    std::merge(leaves.begin(), leaves.end(), packages.begin(), packages.end(), std::back_inserter(merged),
               [](const Item& a, const Item& b) { return a.weight < b.weight; });
    list = std::move(merged);
  }
  for (std::size_t i = 0; i < 2 * n - 2; ++i)
    for (std::size_t k = 0; k < n; ++k) len[std::size_t(used[k])] = std::uint8_t(len[std::size_t(used[k])] + list[i].count[k]);
  return len;
}

// Kraft sum scaled by 2^32: exactly 2^32 for a complete code, less for an
// incomplete one (e.g. a single symbol), more for lengths no prefix code has.
inline std::uint64_t kraft_sum(const Lengths& len) noexcept {
  std::uint64_t k = 0;
  for (std::uint8_t l : len)
    if (l) k += std::uint64_t(1) << (32 - std::min<int>(l, 32));
  return k;
}

// Canonical code words (right-aligned in the low `len` bits).
struct Code {
  Lengths len{};
  std::array<std::uint32_t, 256> word{};

  static Code canonical(const Lengths& lengths, int max_len) {
    LOWBIT_CHECK(max_len >= 1 && max_len <= 32, "huffman::Code", "max_len = ", max_len);
    for (int s = 0; s < 256; ++s)
      LOWBIT_CHECK(lengths[std::size_t(s)] <= max_len, "huffman::Code", "symbol ", s, " has length ",
                   int(lengths[std::size_t(s)]), " > max_len ", max_len);
    LOWBIT_CHECK(kraft_sum(lengths) <= (std::uint64_t(1) << 32), "huffman::Code",
                 "code lengths violate the Kraft inequality (no prefix code has them)");
    Code c;
    c.len = lengths;
    std::uint32_t next = 0;
    int prev_len = 0;
    for (int l = 1; l <= max_len; ++l)
      for (int s = 0; s < 256; ++s) {
        if (lengths[std::size_t(s)] != l) continue;
        next <<= (l - prev_len);
        prev_len = l;
        c.word[std::size_t(s)] = next++;
      }
    return c;
  }
};

// MSB-first bit writer (see the bit order above). Bits past the last byte of
// a flush are zero.
class BitWriter {
 public:
  void put(std::uint32_t word, int nbits) {
    acc_ = (acc_ << nbits) | word;
    fill_ += nbits;
    bits_ += std::uint64_t(nbits);
    while (fill_ >= 8) {
      fill_ -= 8;
      out_.push_back(std::uint8_t(acc_ >> fill_));
    }
  }
  std::uint64_t bits() const noexcept { return bits_; }
  std::vector<std::uint8_t> finish() {
    if (fill_ > 0) out_.push_back(std::uint8_t(acc_ << (8 - fill_)));
    fill_ = 0;
    return std::move(out_);
  }

 private:
  std::uint64_t acc_ = 0;  // holds fewer than 8 pending bits between calls
  int fill_ = 0;
  std::uint64_t bits_ = 0;
  std::vector<std::uint8_t> out_;
};

// Cost in bits of coding `histogram` with `len`.
inline std::uint64_t coded_bits(span<const std::uint64_t> histogram, const Lengths& len) noexcept {
  std::uint64_t b = 0;
  for (std::size_t s = 0; s < 256 && s < histogram.size(); ++s) b += histogram[s] * len[s];
  return b;
}

}  // namespace lowbit::huffman
