// Group-quantized matrix: b-bit codes in groups of g along the input
// dimension, one scale (and, asymmetric, one zero point) per group.
//
// W is M x K (out_features x in_features, y = W x). Row r, column k belongs
// to group k / g; the last group of a row is shorter when g does not divide K.
//
//   field        type / shape                                 meaning
//   rows, cols   M, K
//   bits         b in {2, 3, 4, 8}
//   group        g: a multiple of 8, 8 <= g <= K
//   symmetric    false: w = s * (q - z), z stored per group
//                true:  w = s * (q - 2^(b-1)), no zeros stored
//   scale_type   fp16 or fp32
//   codes        u8[M * row_bytes(K, b)]   row r at r * row_bytes(K, b), each
//                                           row packed by core/bitpack.hpp
//   scales       u8[M * G * (2 or 4)]      G = ceil(K / g); scale (r, j) at
//                                           index r * G + j, little-endian fp16
//                                           or fp32
//   zeros        u8[row_bytes(M * G, b)]   asymmetric only: the M * G zero
//                                           points (r * G + j) as ONE packed
//                                           row of b-bit codes (bitpack), so
//                                           they cost b bits each
//
// bytes() is the sum of the three arrays (exact, padding included) and
// bits_per_weight() = 8 * bytes() / (M * K).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../core/bitpack.hpp"
#include "../core/buffer.hpp"
#include "../core/error.hpp"
#include "../core/types.hpp"
#include "../core/view.hpp"

namespace lowbit {

enum class ScaleType : std::uint8_t { fp16 = 0, fp32 = 1 };

inline std::size_t scale_bytes(ScaleType t) noexcept { return t == ScaleType::fp16 ? 2 : 4; }

// Round a scale to what its storage type can hold.
inline float round_scale(float s, ScaleType t) noexcept {
  return t == ScaleType::fp16 ? fp16::from_float(s).to_float() : s;
}

struct GroupQuantMatrix {
  std::size_t rows = 0, cols = 0;
  int bits = 4;
  std::size_t group = 128;
  bool symmetric = false;
  ScaleType scale_type = ScaleType::fp16;
  Buffer<std::uint8_t> codes, scales, zeros;

  std::size_t groups_per_row() const noexcept { return group ? (cols + group - 1) / group : 0; }
  std::size_t row_bytes() const noexcept { return bitpack::row_bytes(cols, bits); }
  const std::uint8_t* row_codes(std::size_t r) const noexcept { return codes.data() + r * row_bytes(); }

  float scale(std::size_t r, std::size_t j) const noexcept {
    const std::size_t i = r * groups_per_row() + j;
    if (scale_type == ScaleType::fp16) {
      std::uint16_t h;
      std::memcpy(&h, scales.data() + 2 * i, 2);
      return fp16::from_bits(h).to_float();
    }
    float f;
    std::memcpy(&f, scales.data() + 4 * i, 4);
    return f;
  }
  int zero(std::size_t r, std::size_t j) const noexcept {
    if (symmetric) return 1 << (bits - 1);
    const std::size_t n = rows * groups_per_row();
    return bitpack::get(zeros.data(), n, bits, r * groups_per_row() + j);
  }
  int code(std::size_t r, std::size_t k) const noexcept { return bitpack::get(row_codes(r), cols, bits, k); }
  float weight(std::size_t r, std::size_t k) const noexcept {
    const std::size_t j = k / group;
    return scale(r, j) * float(code(r, k) - zero(r, j));
  }

  std::size_t bytes() const noexcept { return codes.size() + scales.size() + zeros.size(); }
  double bits_per_weight() const noexcept {
    return rows != 0 && cols != 0 ? 8.0 * double(bytes()) / double(rows * cols) : 0.0;
  }

  // Throws lowbit::error unless the fields describe a consistent matrix (use
  // on anything read from outside).
  void validate() const {
    const char* where = "GroupQuantMatrix";
    LOWBIT_CHECK(bits == 2 || bits == 3 || bits == 4 || bits == 8, where, "bits must be 2, 3, 4 or 8, got ", bits);
    LOWBIT_CHECK(group >= 8 && group % 8 == 0, where, "group must be a positive multiple of 8, got ", group);
    LOWBIT_CHECK(cols == 0 || group <= cols, where, "group ", group, " exceeds K = ", cols);
    LOWBIT_CHECK(scale_type == ScaleType::fp16 || scale_type == ScaleType::fp32, where, "unknown scale type ",
                 int(scale_type));
    LOWBIT_CHECK(codes.size() == rows * row_bytes(), where, "codes has ", codes.size(), " bytes, expected ",
                 rows * row_bytes());
    const std::size_t ng = rows * groups_per_row();
    LOWBIT_CHECK(scales.size() == ng * scale_bytes(scale_type), where, "scales has ", scales.size(),
                 " bytes, expected ", ng * scale_bytes(scale_type));
    const std::size_t zb = symmetric ? 0 : bitpack::row_bytes(ng, bits);
    LOWBIT_CHECK(zeros.size() == zb, where, "zeros has ", zeros.size(), " bytes, expected ", zb);
  }

  friend bool operator==(const GroupQuantMatrix& a, const GroupQuantMatrix& b) {
    return a.rows == b.rows && a.cols == b.cols && a.bits == b.bits && a.group == b.group &&
           a.symmetric == b.symmetric && a.scale_type == b.scale_type && a.codes == b.codes &&
           a.scales == b.scales && a.zeros == b.zeros;
  }
  friend bool operator!=(const GroupQuantMatrix& a, const GroupQuantMatrix& b) { return !(a == b); }
};

// The dense M x K matrix a group-quantized matrix stands for.
inline Matrix dequantize(const GroupQuantMatrix& q) {
  q.validate();
  Matrix w(q.rows, q.cols);
  std::vector<std::uint8_t> codes(q.cols);
  for (std::size_t r = 0; r < q.rows; ++r) {
    bitpack::unpack(q.row_codes(r), q.cols, q.bits, codes.data());
    for (std::size_t k = 0; k < q.cols; ++k) {
      const std::size_t j = k / q.group;
      w(r, k) = q.scale(r, j) * float(int(codes[k]) - q.zero(r, j));
    }
  }
  return w;
}

}  // namespace lowbit
