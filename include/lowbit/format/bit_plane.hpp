// Bit-plane layout of a group-quantized matrix, for the T-MAC lookup-table
// GEMV (kernels/lut_gemv.hpp; Wei et al. 2024, "T-MAC", §3.1: bit-serial
// weights, tables over groups of 4 activations). It is a runtime layout,
// made once from a GroupQuantMatrix when a model is loaded (to_bit_planes),
// not a storage format: store the GroupQuantMatrix.
//
// A b-bit code is q = sum_i 2^i q_i with bit planes q_i in {0, 1}. In a quad
// of 4 consecutive inputs 4t .. 4t + 3, plane i of a row forms the 4-bit
// pattern sum_j q_i(4t + j) 2^j: the index into the quad's 16-entry table.
//
// Rows come in tiles of 32 (the last padded with zero rows), inputs in quads
// (the last padded with zero codes, which meet zero activations), planes in
// pairs (2p, 2p + 1) (an odd b pads its last pair with an all-zero plane).
//
//   field   type / shape                 meaning
//   planes  u8[tiles][quads][pairs][32]  byte 16c + 2m + e of a (tile, quad,
//                                        pair) block: plane 2p + e of row
//                                        16c + m in the low nibble, of row
//                                        16c + 8 + m in the high nibble
//                                        (c < 2, m < 8, e < 2)
//   scale   f32[tiles][G][32]            s of row 32 tile + i in group j
//   offset  f32[tiles][G][32]            s ((2^b - 1) / 2 - z): see the kernel
//
// So one 16-byte lane holds 16 rows x 2 planes: a byte shuffle looks up the
// patterns of 16 rows at once, and multiplying byte pairs by (1, 2) adds the
// two planes of a row. Padding rows have scale and offset 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../core/bitpack.hpp"
#include "../core/buffer.hpp"
#include "../core/error.hpp"
#include "group_quant.hpp"

namespace lowbit {

struct BitPlaneMatrix {
  static constexpr std::size_t tile_rows = 32, block_bytes = 32;

  std::size_t rows = 0, cols = 0, group = 0;
  int bits = 2;
  Buffer<std::uint8_t> planes;
  std::vector<float> scale, offset;

  std::size_t tiles() const noexcept { return (rows + tile_rows - 1) / tile_rows; }
  std::size_t quads() const noexcept { return (cols + 3) / 4; }
  std::size_t pairs() const noexcept { return std::size_t(bits + 1) / 2; }
  std::size_t groups_per_row() const noexcept { return group ? (cols + group - 1) / group : 0; }
  // The (pair p, quad t) block of a tile: its offset in planes, and its bytes.
  std::size_t block_offset(std::size_t tile, std::size_t t, std::size_t p) const noexcept {
    return ((tile * quads() + t) * pairs() + p) * block_bytes;
  }
  const std::uint8_t* block(std::size_t tile, std::size_t t, std::size_t p) const noexcept {
    return planes.data() + block_offset(tile, t, p);
  }
  // Where plane i of row r, quad t lives (the table above): the byte's index
  // in planes, and the nibble's shift in it.
  std::size_t slot(std::size_t r, std::size_t t, int i) const noexcept {
    const std::size_t a = r % tile_rows;
    return block_offset(r / tile_rows, t, std::size_t(i / 2)) + 16 * (a / 16) + 2 * (a % 8) + std::size_t(i % 2);
  }
  static unsigned nibble_shift(std::size_t r) noexcept { return r % 16 < 8 ? 0 : 4; }
  // Index of the scale and offset of row r, group j.
  std::size_t stat_index(std::size_t r, std::size_t j) const noexcept {
    return (r / tile_rows * groups_per_row() + j) * tile_rows + r % tile_rows;
  }

  // The 4-bit pattern of plane i, row r, quad t.
  unsigned pattern(std::size_t r, std::size_t t, int i) const noexcept {
    return (planes[slot(r, t, i)] >> nibble_shift(r)) & 15u;
  }
  int code(std::size_t r, std::size_t k) const noexcept {
    int q = 0;
    for (int i = 0; i < bits; ++i) q |= int((pattern(r, k / 4, i) >> (k % 4)) & 1u) << i;
    return q;
  }

  std::size_t bytes() const noexcept { return planes.size() + sizeof(float) * (scale.size() + offset.size()); }
  // Of this runtime layout (padding included), not of the stored format.
  double bits_per_weight() const noexcept {
    return rows != 0 && cols != 0 ? 8.0 * double(bytes()) / double(rows * cols) : 0.0;
  }

  void validate() const {
    const char* where = "BitPlaneMatrix";
    LOWBIT_CHECK(bits >= 2 && bits <= 4, where, "bits must be 2, 3 or 4, got ", bits);
    LOWBIT_CHECK(group >= 4 && group % 4 == 0, where, "group must be a positive multiple of 4, got ", group);
    LOWBIT_CHECK(planes.size() == tiles() * quads() * pairs() * block_bytes, where, "planes has ", planes.size(),
                 " bytes, expected ", tiles() * quads() * pairs() * block_bytes);
    const std::size_t n = tiles() * groups_per_row() * tile_rows;
    LOWBIT_CHECK(scale.size() == n && offset.size() == n, where, "scale and offset have ", scale.size(), " and ",
                 offset.size(), " values, expected ", n);
  }
};

// The bit-plane layout of w (bits 2, 3 or 4; any shape).
inline BitPlaneMatrix to_bit_planes(const GroupQuantMatrix& w) {
  w.validate();
  LOWBIT_CHECK(w.bits >= 2 && w.bits <= 4, "to_bit_planes", "bits must be 2, 3 or 4 (bit-serial tables), got ",
               w.bits);
  BitPlaneMatrix p;
  p.rows = w.rows;
  p.cols = w.cols;
  p.group = w.group;
  p.bits = w.bits;
  const std::size_t Q = p.quads(), G = p.groups_per_row(), n = p.tiles() * G * p.tile_rows;
  p.planes.assign(p.tiles() * Q * p.pairs() * p.block_bytes, 0);
  p.scale.assign(n, 0.0f);
  p.offset.assign(n, 0.0f);
  const float half_range = float((1 << w.bits) - 1) / 2;
  std::vector<std::uint8_t> codes(4 * Q, 0);
  for (std::size_t r = 0; r < w.rows; ++r) {
    bitpack::unpack(w.row_codes(r), w.cols, w.bits, codes.data());
    for (std::size_t t = 0; t < Q; ++t)
      for (int i = 0; i < w.bits; ++i) {
        unsigned pat = 0;
        for (unsigned j = 0; j < 4; ++j) pat |= unsigned((codes[4 * t + j] >> i) & 1) << j;
        p.planes[p.slot(r, t, i)] |= std::uint8_t(pat << p.nibble_shift(r));
      }
    for (std::size_t j = 0; j < G; ++j) {
      const float s = w.scale(r, j);
      p.scale[p.stat_index(r, j)] = s;
      p.offset[p.stat_index(r, j)] = s * (half_range - float(w.zero(r, j)));
    }
  }
  return p;
}

}  // namespace lowbit
