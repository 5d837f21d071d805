// The vector-quantized format (VPTQ: Liu et al., "VPTQ: Extreme Low-bit
// Vector Post-Training Quantization for Large Language Models", 2024): W is
// cut into vectors of v weights, each stored as the index of its nearest
// centroid in a codebook (plus, optionally, the index of a residual
// centroid), with an optional input permutation, a separate codebook for the
// outlier columns and per-column normalization.
//
//   field            type / size              content
//   rows, cols       M, K                     W is M x K, y = W x
//   vector           v, 2..16                 weights per vector
//   axis             output | input           output: v consecutive rows of one column (the
//                                             reference's layout, §3.1); input: v consecutive
//                                             positions of one row (lowbit's, for lut_gemv)
//   perm             uint32[K] or empty       position p holds input column perm[p]
//   outlier_columns  n_o                      positions [0, n_o) form the outlier part,
//                                             [n_o, K) the main part
//   scale, bias      fp16[K] or both empty    per input column (original order)
//   outlier          0, 1 or 2 VqCodebook     levels of the outlier part (none iff n_o = 0)
//   main             1 or 2 VqCodebook        levels of the main part: codebook, then residual
//
//   VqCodebook       entries k                a power of two, 2..65536
//                    centroids fp16[k * v]    centroid c is [c v, c v + v)
//                    indices                  log2(k)-bit indices, least significant bit
//                                             first, one flat bitstream, then 2 zero bytes
//                                             (a kernel reads any index with one 3-byte load)
//
// A part of n positions starting at p0 holds the vectors (a, b), index a nb + b:
//   output axis:  a < M / v, b < n       rows [a v, a v + v) of position p0 + b
//   input axis:   a < M,     b < n / v   positions p0 + [b v, b v + v) of row a
// and their normalized weights are the sum over the part's levels of
// centroid(index). Then W[r][perm[p]] = scale[perm[p]] * Wn + bias[perm[p]]
// (scale 1, bias 0 when empty). Indices have exactly log2(k) bits, so no
// stored index can be out of range.
//
// bits_per_weight() = 8 bytes() / (M K), every stored byte counted: for each
// level log2(k) / v per weight of its part, plus 16 k v bits of codebook,
// 32 K bits of permutation and 32 K of normalization, amortized over M K.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "../core/buffer.hpp"
#include "../core/error.hpp"
#include "../core/packed_ints.hpp"
#include "../core/permutation.hpp"
#include "../core/types.hpp"
#include "../core/view.hpp"

namespace lowbit {

enum class VqAxis : std::uint8_t { output = 0, input = 1 };

namespace detail {

inline constexpr std::size_t vq_index_pad = 2;

inline int log2_exact(std::size_t k) noexcept {
  int b = 0;
  while ((std::size_t(1) << b) < k) ++b;
  return (std::size_t(1) << b) == k ? b : -1;
}

inline std::size_t vq_index_bytes(std::size_t n, int bits) noexcept {
  return (n * std::size_t(bits) + 7) / 8 + vq_index_pad;
}

// Index i of a bitstream of `bits`-bit indices (bits <= 16).
inline std::uint32_t vq_index(const std::uint8_t* s, int bits, std::size_t i) noexcept {
  const std::size_t bit = i * std::size_t(bits);
  const std::uint8_t* p = s + bit / 8;
  const std::uint32_t w = std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16;
  return (w >> (bit % 8)) & ((1u << bits) - 1u);
}

// n indices (each < 2^bits) as a bitstream of vq_index_bytes(n, bits) bytes.
inline std::vector<std::uint8_t> vq_pack_indices(const std::uint32_t* idx, std::size_t n, int bits) {
  std::vector<std::uint8_t> out = packed_ints::pack(idx, n, bits);  // the same bit order
  out.resize(vq_index_bytes(n, bits), 0);
  return out;
}

}  // namespace detail

struct VqCodebook {
  std::size_t entries = 0;
  Buffer<std::uint16_t> centroids;  // fp16, entries x vector
  Buffer<std::uint8_t> indices;     // bitstream, see above

  int index_bits() const noexcept { return detail::log2_exact(entries); }
  std::uint32_t index(std::size_t i) const noexcept { return detail::vq_index(indices.data(), index_bits(), i); }
  std::size_t bytes() const noexcept { return 2 * centroids.size() + indices.size(); }

  friend bool operator==(const VqCodebook& a, const VqCodebook& b) {
    return a.entries == b.entries && a.centroids == b.centroids && a.indices == b.indices;
  }
  friend bool operator!=(const VqCodebook& a, const VqCodebook& b) { return !(a == b); }
};

struct VqMatrix {
  std::size_t rows = 0, cols = 0, vector = 8;
  VqAxis axis = VqAxis::output;
  Buffer<std::uint32_t> perm;
  std::size_t outlier_columns = 0;
  Buffer<std::uint16_t> scale, bias;
  std::vector<VqCodebook> outlier, main;

  std::size_t column(std::size_t p) const noexcept { return perm.empty() ? p : perm[p]; }
  // Vector rows of a part (a in the table above) and vectors per vector row
  // (b) for a part of n positions.
  std::size_t vector_rows() const noexcept { return axis == VqAxis::output ? rows / vector : rows; }
  std::size_t vectors_per_row(std::size_t n) const noexcept { return axis == VqAxis::output ? n : n / vector; }
  // Vectors (indices per codebook level) of a part of n positions.
  std::size_t vectors(std::size_t n) const noexcept { return vector_rows() * vectors_per_row(n); }

  std::size_t bytes() const noexcept {
    std::size_t b = 4 * perm.size() + 2 * scale.size() + 2 * bias.size();
    for (const auto* part : {&outlier, &main})
      for (const VqCodebook& c : *part) b += c.bytes();
    return b;
  }
  double bits_per_weight() const noexcept {
    return rows != 0 && cols != 0 ? 8.0 * double(bytes()) / (double(rows) * double(cols)) : 0.0;
  }

  // Structural checks (sizes, the permutation, codebook sizes, finite
  // normalization) and, with values, finite centroids. Any loaded or
  // hand-built matrix passes this before a kernel reads it (gemv checks the
  // structure on every call; a non-finite centroid only makes outputs
  // non-finite, and checking k v values per call would cost more than the
  // product at small M).
  void validate(bool values = true) const {
    const char* where = "VqMatrix";
    LOWBIT_CHECK(vector >= 2 && vector <= 16, where, "vector length must be in 2..16, got ", vector);
    LOWBIT_CHECK(axis == VqAxis::output || axis == VqAxis::input, where, "unknown axis ", int(axis));
    LOWBIT_CHECK(axis == VqAxis::input || rows % vector == 0, where, "vector length ", vector,
                 " does not divide M = ", rows, " (output axis)");
    LOWBIT_CHECK(axis == VqAxis::output || (cols % vector == 0 && outlier_columns % vector == 0), where,
                 "vector length ", vector, " does not divide K = ", cols, " and the outlier columns ", outlier_columns,
                 " (input axis)");
    LOWBIT_CHECK(outlier_columns <= cols, where, "outlier_columns ", outlier_columns, " exceeds K = ", cols);
    LOWBIT_CHECK((outlier_columns == 0) == outlier.empty() && outlier.size() <= 2, where, "outlier part has ",
                 outlier_columns, " columns and ", outlier.size(), " codebooks");
    LOWBIT_CHECK(!main.empty() && main.size() <= 2, where, "main part needs 1 or 2 codebooks, has ", main.size());
    const auto check_part = [&](const std::vector<VqCodebook>& part, std::size_t n) {
      const std::size_t nv = vectors(n);
      for (const VqCodebook& c : part) {
        const int bits = c.index_bits();
        LOWBIT_CHECK(c.entries >= 2 && c.entries <= 65536 && bits > 0, where,
                     "codebook entries must be a power of two in 2..65536, got ", c.entries);
        LOWBIT_CHECK(c.centroids.size() == c.entries * vector, where, "codebook has ", c.centroids.size(),
                     " values, expected ", c.entries * vector);
        LOWBIT_CHECK(c.indices.size() == detail::vq_index_bytes(nv, bits), where, "indices have ", c.indices.size(),
                     " bytes, expected ", detail::vq_index_bytes(nv, bits));
        for (std::size_t i = 0; values && i < c.centroids.size(); ++i)
          LOWBIT_CHECK(fp16::from_bits(c.centroids[i]).is_finite(), where, "centroid value ", i,
                       " is not finite");
      }
    };
    check_part(outlier, outlier_columns);
    check_part(main, cols - outlier_columns);
    LOWBIT_CHECK(scale.size() == bias.size() && (scale.empty() || scale.size() == cols), where, "scale/bias have ",
                 scale.size(), "/", bias.size(), " entries, expected 0 or K = ", cols);
    for (std::size_t k = 0; k < scale.size(); ++k)
      LOWBIT_CHECK(fp16::from_bits(scale[k]).is_finite() && fp16::from_bits(bias[k]).is_finite(),
                   where, "normalization of column ", k, " is not finite");
    detail::check_permutation(perm, cols, where);
  }

  friend bool operator==(const VqMatrix& a, const VqMatrix& b) {
    return a.rows == b.rows && a.cols == b.cols && a.vector == b.vector && a.axis == b.axis && a.perm == b.perm &&
           a.outlier_columns == b.outlier_columns && a.scale == b.scale && a.bias == b.bias &&
           a.outlier == b.outlier && a.main == b.main;
  }
  friend bool operator!=(const VqMatrix& a, const VqMatrix& b) { return !(a == b); }
};

// W as floats (M x K, original column order): the reference every VQ kernel
// is tested against.
inline Matrix dequantize(const VqMatrix& q) {
  q.validate();
  Matrix w(q.rows, q.cols);
  const std::size_t v = q.vector;
  const auto part = [&](const std::vector<VqCodebook>& levels, std::size_t p0, std::size_t n) {
    const std::size_t nb = q.vectors_per_row(n);
    for (std::size_t a = 0; a < q.vector_rows(); ++a)
      for (std::size_t b = 0; b < nb; ++b)
        for (std::size_t t = 0; t < v; ++t) {
          float x = 0;
          for (const VqCodebook& c : levels)
            x += fp16::from_bits(c.centroids[c.index(a * nb + b) * v + t]).to_float();
          if (q.axis == VqAxis::output) w(a * v + t, q.column(p0 + b)) = x;
          else w(a, q.column(p0 + b * v + t)) = x;
        }
  };
  part(q.outlier, 0, q.outlier_columns);
  part(q.main, q.outlier_columns, q.cols - q.outlier_columns);
  if (!q.scale.empty())
    for (std::size_t r = 0; r < q.rows; ++r)
      for (std::size_t k = 0; k < q.cols; ++k)
        w(r, k) = w(r, k) * fp16::from_bits(q.scale[k]).to_float() + fp16::from_bits(q.bias[k]).to_float();
  return w;
}

}  // namespace lowbit
