// The DFloat11 format (Zhang et al., "70% Size, 100% Accuracy: Lossless LLM
// Compression for Efficient GPU Inference via Dynamic-Length Float", 2025,
// §3): a BFloat16 tensor stored losslessly as its Huffman-coded 8-bit
// exponents plus the raw sign and mantissa bits. Element i is element
// (i / cols, i % cols) of the row-major M x K tensor.
//
//   field          type / size              content
//   rows, cols     M, K                     n = M K elements
//   block          uint64, >= 16            exponents per block (B); the last block is ragged
//   code_lengths   uint8[256]               canonical Huffman code of the exponents
//                                           (codec/huffman.hpp), lengths 0..12, 0 = unused
//   block_start    uint64[ceil(n/B) + 1]    bit offset of block b's first code in `exponents`;
//                                           the last entry is the stream's length in bits
//   exponents      uint8[ceil(bits / 8)]    the codes, MSB first, blocks back to back
//   sign_mantissa  uint8[n]                 bit 7: sign, bits 0-6: mantissa of element i
//
// Element i is the bf16 word sign << 15 | exponent << 7 | mantissa. Block b
// holds the exponents of elements [bB, min(n, (b + 1) B)), so output
// positions need no storage; its codes occupy bits
// [block_start[b], block_start[b + 1]) exactly, and each block decodes on its
// own: that is what lets threads and interleaved streams work in parallel
// (the paper's per-thread-block "gaps" and output positions, §3.3, at the
// granularity a CPU thread wants).
//
// bits_per_weight() = 8 bytes() / n with bytes() counting every field:
// 24 header bytes, 256 code lengths, 8 per block offset, the two streams.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "../core/buffer.hpp"
#include "../core/error.hpp"
#include "../codec/huffman.hpp"

namespace lowbit {

struct Dfloat11Matrix {
  std::size_t rows = 0, cols = 0;
  std::size_t block = 16384;
  std::array<std::uint8_t, 256> code_lengths{};
  Buffer<std::uint64_t> block_start;
  Buffer<std::uint8_t> exponents;
  Buffer<std::uint8_t> sign_mantissa;

  std::size_t size() const noexcept { return rows * cols; }
  std::size_t blocks() const noexcept { return block ? (size() + block - 1) / block : 0; }

  std::size_t bytes() const noexcept {
    return 24 + code_lengths.size() + 8 * block_start.size() + exponents.size() + sign_mantissa.size();
  }
  double bits_per_weight() const noexcept { return size() ? 8.0 * double(bytes()) / double(size()) : 0.0; }

  // Structural checks (the decoder checks the codes themselves). Throws
  // lowbit::error naming the first inconsistency.
  void validate() const {
    const char* where = "Dfloat11Matrix";
    LOWBIT_CHECK(cols == 0 || rows <= std::size_t(-1) / cols, where, rows, " x ", cols, " overflows");
    LOWBIT_CHECK(block >= 16 && block <= (std::size_t(1) << 32), where, "block = ", block,
                 " outside [16, 2^32]");
    LOWBIT_CHECK(sign_mantissa.size() == size(), where, "sign_mantissa has ", sign_mantissa.size(),
                 " bytes for ", size(), " elements");
    LOWBIT_CHECK(block_start.size() == blocks() + 1, where, "block_start has ", block_start.size(),
                 " entries, expected ", blocks() + 1);
    LOWBIT_CHECK(block_start[0] == 0, where, "block_start[0] = ", block_start[0], ", expected 0");
    for (std::size_t b = 0; b < blocks(); ++b)
      LOWBIT_CHECK(block_start[b] <= block_start[b + 1], where, "block_start decreases at block ", b);
    const std::uint64_t bits = block_start.back();
    LOWBIT_CHECK(exponents.size() == (bits + 7) / 8, where, "exponents has ", exponents.size(),
                 " bytes for a stream of ", bits, " bits");
    int used = 0;
    for (std::size_t s = 0; s < 256; ++s) {
      LOWBIT_CHECK(code_lengths[s] <= huffman::table_bits, where, "code length of exponent ", s, " is ",
                   int(code_lengths[s]), " > ", huffman::table_bits);
      used += code_lengths[s] > 0;
    }
    LOWBIT_CHECK(huffman::kraft_sum(code_lengths) <= (std::uint64_t(1) << 32), where,
                 "code lengths violate the Kraft inequality");
    LOWBIT_CHECK(size() == 0 || used > 0, where, "no exponent has a code");
  }

  friend bool operator==(const Dfloat11Matrix& a, const Dfloat11Matrix& b) {
    return a.rows == b.rows && a.cols == b.cols && a.block == b.block && a.code_lengths == b.code_lengths &&
           a.block_start == b.block_start && a.exponents == b.exponents && a.sign_mantissa == b.sign_mantissa;
  }
  friend bool operator!=(const Dfloat11Matrix& a, const Dfloat11Matrix& b) { return !(a == b); }
};

}  // namespace lowbit
