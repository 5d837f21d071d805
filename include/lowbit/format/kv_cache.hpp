// The quantized part of one KV-cache head (KIVI, Liu et al. 2024): b-bit
// codes of the tokens plus fp16 statistics, in one of KIVI's two groupings.
//
//   x ~= scale * code + min          (asymmetric; `min` is a float offset, as
//                                     in KIVI's reference, not an integer zero)
//
// Axis (KIVI Sec. 3.2): keys are grouped per *channel* (a group is `group`
// consecutive tokens of one channel), values per *token* (a group is `group`
// consecutive channels of one token).
//
// Codes: token t's `dim` codes are codes [(t mod P) * dim, + dim) of page
// t div P, one core/bitpack.hpp row of P * dim codes. P = page_tokens() is
// the fewest tokens that fill whole 32-byte chunks, so pages carry no padding
// (P = 1 for dim 128 at 2 or 4 bits, P = 2 for dim 64 at 2 bits).
//
// Statistics (fp16 bit patterns):
//   channel axis: per block of `group` tokens, dim scales then dim mins are
//                 scale[block * dim + c], min[block * dim + c];
//   token axis:   per token, dim / group of each: scale[t * (dim / group) + g].
//
// bytes() counts what the object holds: every allocated page (the last may be
// partly filled) and both statistics arrays.
#pragma once

#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

#include "../core/bitpack.hpp"
#include "../core/error.hpp"
#include "../core/types.hpp"

namespace lowbit {

enum class KvAxis : std::uint8_t { channel, token };

struct KvCodes {
  KvAxis axis = KvAxis::token;
  int bits = 2;
  std::size_t dim = 0, group = 0;
  std::size_t tokens = 0;
  std::vector<std::uint8_t> pages;
  std::vector<std::uint16_t> scale, min;

  static std::size_t page_tokens(std::size_t dim, int bits) noexcept {
    const std::size_t chunk_bits = 8 * bitpack::chunk_bytes;
    return dim == 0 ? 1 : chunk_bits / std::gcd(chunk_bits, dim * std::size_t(bits));
  }
  std::size_t page_tokens() const noexcept { return page_tokens(dim, bits); }
  std::size_t page_codes() const noexcept { return page_tokens() * dim; }
  std::size_t page_bytes() const noexcept { return page_codes() * std::size_t(bits) / 8; }

  std::size_t bytes() const noexcept { return pages.size() + 2 * (scale.size() + min.size()); }

  // Index of token t's (scale, min) for channel c.
  std::size_t stat_index(std::size_t t, std::size_t c) const noexcept {
    return axis == KvAxis::channel ? (t / group) * dim + c : t * (dim / group) + c / group;
  }
  std::uint8_t code(std::size_t t, std::size_t c) const noexcept {
    const std::uint8_t* page = pages.data() + (t / page_tokens()) * page_bytes();
    return bitpack::get(page, page_codes(), bits, (t % page_tokens()) * dim + c);
  }
  friend bool operator==(const KvCodes& a, const KvCodes& b) {
    return a.axis == b.axis && a.bits == b.bits && a.dim == b.dim && a.group == b.group && a.tokens == b.tokens &&
           a.pages == b.pages && a.scale == b.scale && a.min == b.min;
  }
  friend bool operator!=(const KvCodes& a, const KvCodes& b) { return !(a == b); }

  // The value code (t, c) stands for (what attention computes with).
  float value(std::size_t t, std::size_t c) const noexcept {
    const std::size_t i = stat_index(t, c);
    return fp16::from_bits(scale[i]).to_float() * float(code(t, c)) + fp16::from_bits(min[i]).to_float();
  }
};

}  // namespace lowbit
