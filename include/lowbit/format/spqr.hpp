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
//   perm         packed_ints[K] of perm_bits(), or  position p holds input column perm[p];
//                empty                              perm_bits() = width_for(K - 1)
//   codes        M rows x row_bytes(K, bits)        weight codes by position (core/bitpack.hpp)
//   scale_codes  row_bytes(M*G, stat_bits)          code of scale (r, j) at index r*G + j
//   zero_codes   row_bytes(M*G, stat_bits)          code of zero (r, j), same index
//   stat_params  fp16[ceil(M/beta2) * G * 4]        per (row block, group): scale's (s, z),
//                                                   zero's (s, z): index ((r/beta2)*G + j)*4
//   count_bits   0..17                              width of a row's outlier count
//   row_counts   packed_ints[M] of count_bits       outliers of row r; row r's outliers are
//                                                   entries starts[r] .. [r + 1] (CSR, validate_unpacked())
//   outlier_col  uint16[nnz]                        input column (original order), ascending
//                                                   within a row
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
// accounting) plus count_bits / K for the outliers per row; permutation
// ceil(log2 K) / M. The paper stores 32-bit row pointers and leaves the
// permutation uncounted; lowbit packs both (core/packed_ints.hpp) because on
// narrow matrices they are not small: at M = K = 64, 32-bit row pointers and
// indices would add 1 bit per weight, packed they add about 0.1. Row
// pointers are rebuilt per call in O(M), by the validation a kernel runs anyway (validate_unpacked()).
#pragma once

#include <cstdint>
#include <vector>

#include "../core/bitpack.hpp"
#include "../core/buffer.hpp"
#include "../core/error.hpp"
#include "../core/packed_ints.hpp"
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
  int count_bits = 0;
  Buffer<std::uint8_t> perm;
  Buffer<std::uint8_t> codes, scale_codes, zero_codes;
  Buffer<std::uint16_t> stat_params;
  Buffer<std::uint8_t> row_counts;
  Buffer<std::uint16_t> outlier_col, outlier_val;

  // Widest outlier count: a row of K <= 65536 outliers.
  static constexpr int max_count_bits = packed_ints::width_for(65536);

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
  int perm_bits() const noexcept { return packed_ints::width_for(cols > 0 ? cols - 1 : 0); }
  std::size_t column(std::size_t p) const noexcept {
    return perm.empty() ? p : packed_ints::get(perm.data(), perm_bits(), p);
  }
  // The permutation unpacked (K entries), or empty for the identity.
  std::vector<std::uint32_t> permutation() const {
    std::vector<std::uint32_t> p(perm.empty() ? 0 : cols);
    packed_ints::unpack(perm.data(), perm_bits(), p.size(), p.data());
    return p;
  }
  std::size_t row_count(std::size_t r) const noexcept { return packed_ints::get(row_counts.data(), count_bits, r); }

  std::size_t bytes() const noexcept {
    return codes.size() + scale_codes.size() + zero_codes.size() + 2 * stat_params.size() + perm.size() +
           row_counts.size() + 2 * outlier_col.size() + 2 * outlier_val.size();
  }
  double bits_per_weight() const noexcept {
    return rows != 0 && cols != 0 ? 8.0 * double(bytes()) / (double(rows) * double(cols)) : 0.0;
  }

  // The permutation (empty for the identity) and the CSR row pointers
  // (M + 1 prefix sums of the counts), unpacked: what validate() checks and
  // a kernel then reads.
  struct Unpacked {
    std::vector<std::uint32_t> perm, starts;
  };

  // Structural checks: sizes, the permutation, CSR consistency, finite
  // statistics and outliers. Any loaded or hand-built matrix passes this
  // before a kernel reads it.
  void validate() const { (void)validate_unpacked(); }

  // validate(), returning the arrays it unpacked to check them, so that a
  // kernel does not unpack them a second time per call.
  Unpacked validate_unpacked() const {
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
    // The element-wise checks accumulate flags instead of branching per
    // element: every kernel call validates, so they must cost little beside it.
    LOWBIT_CHECK(detail::all_finite_fp16(stat_params.data(), stat_params.size()), where, "a statistic parameter is not finite");
    LOWBIT_CHECK(perm.empty() || perm.size() == packed_ints::bytes(cols, perm_bits()), where, "perm has ",
                 perm.size(), " bytes, expected ", packed_ints::bytes(cols, perm_bits()), " (K = ", cols, " entries of ",
                 perm_bits(), " bits) or none");
    Unpacked u{permutation(), std::vector<std::uint32_t>(rows + 1, 0)};
    detail::check_permutation(u.perm, cols, where);
    LOWBIT_CHECK(count_bits >= 0 && count_bits <= max_count_bits, where, "count_bits must be in 0..", max_count_bits,
                 ", got ", count_bits);
    LOWBIT_CHECK(row_counts.size() == packed_ints::bytes(rows, count_bits), where, "row_counts has ",
                 row_counts.size(), " bytes, expected ", packed_ints::bytes(rows, count_bits), " (M = ", rows,
                 " counts of ", count_bits, " bits)");
    LOWBIT_CHECK(outlier_col.size() == outlier_val.size(), where, "outlier arrays disagree: ", outlier_col.size(),
                 " columns, ", outlier_val.size(), " values");
    LOWBIT_CHECK(outlier_col.size() <= UINT32_MAX, where, outlier_col.size(),
                 " outliers exceed the 32-bit row pointers the kernels use");
    // Ascending columns within rows: the non-ascending neighbours of the whole
    // array, counted in one branch-free pass, are all at row boundaries. Then
    // a row's last column is its largest, the only one to range-check.
    const std::uint16_t* col = outlier_col.data();
    std::uint32_t descents = 0;  // fits: at most UINT32_MAX outliers (above); 32-bit lanes vectorize twice as wide
    for (std::size_t k = 1; k < outlier_col.size(); ++k) descents += col[k - 1] >= col[k];
    std::size_t i = 0;  // the row's first outlier
    for (std::size_t r = 0; r < rows; ++r) {
      const std::size_t n = row_count(r);
      LOWBIT_CHECK(n <= cols && n <= outlier_col.size() - i, where, "row ", r, " counts ", n,
                   " outliers, more than K or the ", outlier_col.size() - i, " left");
      LOWBIT_CHECK(n == 0 || col[i + n - 1] < cols, where, "row ", r, "'s outlier column ", col[i + n - 1],
                   " is out of range (K = ", cols, ")");
      descents -= n != 0 && i != 0 && col[i - 1] >= col[i];  // a boundary pair
      i += n;
      u.starts[r + 1] = std::uint32_t(i);  // <= the outlier count, checked above to fit 32 bits
    }
    LOWBIT_CHECK(i == outlier_col.size(), where, "the row counts sum to ", i, ", but there are ", outlier_col.size(),
                 " outliers");
    LOWBIT_CHECK(descents == 0, where, descents, " outlier columns are not ascending within their row");
    LOWBIT_CHECK(detail::all_finite_fp16(outlier_val.data(), outlier_val.size()), where, "an outlier value is not finite");
    return u;
  }

  friend bool operator==(const SpqrMatrix& a, const SpqrMatrix& b) {
    return a.rows == b.rows && a.cols == b.cols && a.bits == b.bits && a.group == b.group &&
           a.stat_bits == b.stat_bits && a.stat_group == b.stat_group && a.perm == b.perm && a.codes == b.codes &&
           a.scale_codes == b.scale_codes && a.zero_codes == b.zero_codes && a.stat_params == b.stat_params &&
           a.count_bits == b.count_bits && a.row_counts == b.row_counts && a.outlier_col == b.outlier_col &&
           a.outlier_val == b.outlier_val;
  }
  friend bool operator!=(const SpqrMatrix& a, const SpqrMatrix& b) { return !(a == b); }
};

// W as floats (M x K, original column order).
inline Matrix dequantize(const SpqrMatrix& q) {
  const std::vector<std::uint32_t> starts = q.validate_unpacked().starts;
  Matrix w(q.rows, q.cols);
  std::vector<std::uint8_t> c(q.cols);
  for (std::size_t r = 0; r < q.rows; ++r) {
    bitpack::unpack(q.row_codes(r), q.cols, q.bits, c.data());
    for (std::size_t p = 0; p < q.cols; ++p) {
      const std::size_t j = p / q.group;
      w(r, q.column(p)) = q.scale(r, j) * (float(c[p]) - q.zero(r, j));
    }
    for (std::size_t i = starts[r]; i < starts[r + 1]; ++i)
      w(r, q.outlier_col[i]) += fp16::from_bits(q.outlier_val[i]).to_float();
  }
  return w;
}

}  // namespace lowbit
