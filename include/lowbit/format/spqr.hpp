// The SpQR format (Dettmers et al., "SpQR: A Sparse-Quantized Representation
// for Near-Lossless LLM Weight Compression", 2023, §4): small groups of
// b-bit weights whose statistics are themselves quantized, plus a sparse
// matrix of fp16 outliers, with an optional input permutation.
//
//   field        type / size                        content
//   rows, cols   M, K                               W is M x K, y = W x
//   bits         2, 3, 4 or 8                       weight code width
//   group        beta1, multiple of 8 dividing 128  weights per group along K (positions
//                                                   in permuted order); last group ragged
//   stat_bits    1..8                               width of the quantized statistics
//   stat_group   beta2                              rows sharing second-level statistics
//   perm         uint32[K] or empty                 position p holds input column perm[p]
//   codes        M rows x row_bytes(K, bits)        weight codes by position (core/bitpack.hpp)
//   scale_codes  row_bytes(M*G, stat_bits)          code of scale (r, j) at index r*G + j
//   zero_codes   row_bytes(M*G, stat_bits)          code of zero (r, j), same index
//   stat_params  fp16[ceil(M/beta2) * G * 4]        per (row block, group): scale's (s, z),
//                                                   zero's (s, z): index ((r/beta2)*G + j)*4
//   row_ptr      uint32[M+1]                        CSR over outliers
//   outlier_col  uint16[nnz]                        input column (original order), ascending
//   outlier_val  fp16[nnz]                          added on top of the dense weight
//
// With G = ceil(K / beta1) groups per row and a stat code c with its
// parameters (s, z): value = s * (c - z), for scales and zeros alike; then
//   W[r][perm[p]] = scale(r, j) * (code(r, p) - zero(r, j)) + outlier(r, perm[p]),
// j = p / beta1. Zero points are real numbers, as the reference's
// (round_zero = False); an outlier's value is the correction that makes
// dense + sparse equal the kept weight (up to fp16 rounding).
//
// bits_per_weight() = 8 bytes() / (M K), every stored byte counted: weights
// b; first-level statistics 2 stat_bits / beta1; second-level 64 /
// (beta1 beta2); outliers 32 bits each (value + column, the paper's
// accounting) plus 32 per row of row pointers; permutation 32 / M.
#pragma once

#include <cstdint>
#include <vector>

#include "../core/bitpack.hpp"
#include "../core/buffer.hpp"
#include "../core/error.hpp"
#include "../core/permutation.hpp"
#include "../core/types.hpp"
#include "../core/view.hpp"

namespace lowbit {

struct SpqrMatrix {
  std::size_t rows = 0, cols = 0;
  int bits = 3;
  std::size_t group = 16;
  int stat_bits = 3;
  std::size_t stat_group = 16;
  Buffer<std::uint32_t> perm;
  Buffer<std::uint8_t> codes, scale_codes, zero_codes;
  Buffer<std::uint16_t> stat_params;
  Buffer<std::uint32_t> row_ptr;
  Buffer<std::uint16_t> outlier_col, outlier_val;

  std::size_t groups_per_row() const noexcept { return group ? (cols + group - 1) / group : 0; }
  std::size_t row_blocks() const noexcept { return stat_group ? (rows + stat_group - 1) / stat_group : 0; }
  std::size_t row_bytes() const noexcept { return bitpack::row_bytes(cols, bits); }
  std::size_t outliers() const noexcept { return outlier_col.size(); }
  const std::uint8_t* row_codes(std::size_t r) const noexcept { return codes.data() + r * row_bytes(); }

  // Stat (r, j): which = 0 scale, 1 zero.
  float stat(std::size_t r, std::size_t j, int which) const noexcept {
    const std::size_t G = groups_per_row(), n = rows * G, i = r * G + j;
    const unsigned c = bitpack::get(which ? zero_codes.data() : scale_codes.data(), n, stat_bits, i);
    const std::size_t at = ((r / stat_group) * G + j) * 4 + std::size_t(2 * which);
    return fp16::from_bits(stat_params[at]).to_float() * (float(c) - fp16::from_bits(stat_params[at + 1]).to_float());
  }
  float scale(std::size_t r, std::size_t j) const noexcept { return stat(r, j, 0); }
  float zero(std::size_t r, std::size_t j) const noexcept { return stat(r, j, 1); }
  std::size_t column(std::size_t p) const noexcept { return perm.empty() ? p : perm[p]; }

  std::size_t bytes() const noexcept {
    return codes.size() + scale_codes.size() + zero_codes.size() + 2 * stat_params.size() + 4 * perm.size() +
           4 * row_ptr.size() + 2 * outlier_col.size() + 2 * outlier_val.size();
  }
  double bits_per_weight() const noexcept {
    return rows != 0 && cols != 0 ? 8.0 * double(bytes()) / (double(rows) * double(cols)) : 0.0;
  }

  // Structural checks: sizes, the permutation, CSR consistency, finite
  // statistics and outliers. Any loaded or hand-built matrix passes this
  // before a kernel reads it.
  void validate() const {
    const char* where = "SpqrMatrix";
    LOWBIT_CHECK(bits == 2 || bits == 3 || bits == 4 || bits == 8, where, "bits must be 2, 3, 4 or 8, got ", bits);
    LOWBIT_CHECK(stat_bits >= 1 && stat_bits <= 8, where, "stat_bits must be in 1..8, got ", stat_bits);
    LOWBIT_CHECK(group >= 8 && group % 8 == 0 && 128 % group == 0, where,
                 "group must be a multiple of 8 dividing 128, got ", group);
    LOWBIT_CHECK(stat_group >= 1, where, "stat_group must be positive");
    LOWBIT_CHECK(cols <= 65536, where, "K = ", cols, " exceeds the 16-bit outlier column index");
    const std::size_t G = groups_per_row();
    LOWBIT_CHECK(codes.size() == rows * row_bytes(), where, "codes has ", codes.size(), " bytes, expected ",
                 rows * row_bytes());
    LOWBIT_CHECK(scale_codes.size() == bitpack::row_bytes(rows * G, stat_bits) &&
                     zero_codes.size() == scale_codes.size(),
                 where, "statistic codes have ", scale_codes.size(), " / ", zero_codes.size(), " bytes, expected ",
                 bitpack::row_bytes(rows * G, stat_bits));
    LOWBIT_CHECK(stat_params.size() == row_blocks() * G * 4, where, "stat_params has ", stat_params.size(),
                 " values, expected ", row_blocks() * G * 4);
    for (std::uint16_t h : stat_params)
      LOWBIT_CHECK(fp16::from_bits(h).is_finite(), where, "a statistic parameter is not finite");
    detail::check_permutation(perm, cols, where);
    LOWBIT_CHECK(row_ptr.size() == rows + 1 && row_ptr.front() == 0, where, "row_ptr must have M + 1 = ", rows + 1,
                 " entries starting at 0");
    LOWBIT_CHECK(outlier_col.size() == outlier_val.size() && row_ptr.back() == outlier_col.size(), where,
                 "outlier arrays disagree: ", outlier_col.size(), " columns, ", outlier_val.size(), " values, row_ptr ends at ",
                 row_ptr.back());
    for (std::size_t r = 0; r < rows; ++r) {
      LOWBIT_CHECK(row_ptr[r] <= row_ptr[r + 1] && row_ptr[r + 1] <= row_ptr.back(), where,
                   "row_ptr decreases at row ", r);
      for (std::size_t i = row_ptr[r]; i < row_ptr[r + 1]; ++i) {
        LOWBIT_CHECK(outlier_col[i] < cols && (i == row_ptr[r] || outlier_col[i - 1] < outlier_col[i]), where,
                     "outlier column ", outlier_col[i], " of row ", r, " is out of range or not ascending");
        LOWBIT_CHECK(fp16::from_bits(outlier_val[i]).is_finite(), where, "outlier value of row ", r, " is not finite");
      }
    }
  }

  friend bool operator==(const SpqrMatrix& a, const SpqrMatrix& b) {
    return a.rows == b.rows && a.cols == b.cols && a.bits == b.bits && a.group == b.group &&
           a.stat_bits == b.stat_bits && a.stat_group == b.stat_group && a.perm == b.perm && a.codes == b.codes &&
           a.scale_codes == b.scale_codes && a.zero_codes == b.zero_codes && a.stat_params == b.stat_params &&
           a.row_ptr == b.row_ptr && a.outlier_col == b.outlier_col && a.outlier_val == b.outlier_val;
  }
  friend bool operator!=(const SpqrMatrix& a, const SpqrMatrix& b) { return !(a == b); }
};

// W as floats (M x K, original column order).
inline Matrix dequantize(const SpqrMatrix& q) {
  q.validate();
  Matrix w(q.rows, q.cols);
  std::vector<std::uint8_t> c(q.cols);
  for (std::size_t r = 0; r < q.rows; ++r) {
    bitpack::unpack(q.row_codes(r), q.cols, q.bits, c.data());
    for (std::size_t p = 0; p < q.cols; ++p) {
      const std::size_t j = p / q.group;
      w(r, q.column(p)) = q.scale(r, j) * (float(c[p]) - q.zero(r, j));
    }
    for (std::size_t i = q.row_ptr[r]; i < q.row_ptr[r + 1]; ++i)
      w(r, q.outlier_col[i]) += fp16::from_bits(q.outlier_val[i]).to_float();
  }
  return w;
}

}  // namespace lowbit
