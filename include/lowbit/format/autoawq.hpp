// AutoAWQ's GEMM checkpoint layout (WQLinear_GEMM, 4-bit) as plain arrays,
// to and from lowbit's group format, so weights produced by AutoAWQ run on
// lowbit's kernels (and lowbit's AWQ output loads in AutoAWQ-based stacks).
//
// For a linear with in_features I, out_features O and group g (O % 8 == 0,
// I % g == 0), weight W[o][i] = (q[i][o] - z[i / g][o]) * s[i / g][o]:
//
//   tensor    dtype  shape        content
//   qweight   int32  [I, O / 8]   q: word c of row i packs columns 8c .. 8c+7
//   qzeros    int32  [I/g, O / 8] z: packed the same way
//   scales    fp16   [I/g, O]     s (here: the fp16 bit patterns)
//
// Packing ("AWQ order"): bits 4n .. 4n+3 of a word hold column 8c + order[n]
// with order = [0, 2, 4, 6, 1, 3, 5, 7]; so column 8c + m sits in nibble
// reverse[m], reverse = [0, 4, 1, 5, 2, 6, 3, 7]. Rows and groups run along
// the *input* dimension (the transpose of lowbit's row-per-output layout).
#pragma once

#include <cstdint>
#include <vector>

#include "../quant/group_fit.hpp"
#include "group_quant.hpp"

namespace lowbit {

struct AutoAWQTensors {
  std::size_t in_features = 0, out_features = 0, group = 0;
  std::vector<std::int32_t> qweight;  // [in, out / 8]
  std::vector<std::int32_t> qzeros;   // [in / group, out / 8]
  std::vector<std::uint16_t> scales;  // [in / group, out], fp16 bits
};

namespace detail {

inline constexpr int awq_reverse_order[8] = {0, 4, 1, 5, 2, 6, 3, 7};

inline std::uint32_t awq_nibble(std::int32_t word, std::size_t column) noexcept {
  return (std::uint32_t(word) >> (4 * awq_reverse_order[column % 8])) & 0xFu;
}
inline void awq_put(std::int32_t& word, std::size_t column, unsigned v) noexcept {
  word = std::int32_t(std::uint32_t(word) | (std::uint32_t(v & 0xFu) << (4 * awq_reverse_order[column % 8])));
}

inline void check_awq_shape(std::size_t in, std::size_t out, std::size_t group, const char* where) {
  LOWBIT_CHECK(in > 0 && out > 0, where, "empty linear: in_features ", in, ", out_features ", out);
  LOWBIT_CHECK(out % 8 == 0, where, "out_features ", out, " is not a multiple of 8 (AutoAWQ packs 8 per int32)");
  LOWBIT_CHECK(group >= 8 && group % 8 == 0 && group <= in && in % group == 0, where, "group ", group,
               " must be a multiple of 8 dividing in_features ", in);
}

}  // namespace detail

// lowbit -> AutoAWQ. Needs 4 bits, asymmetric, fp16 scales, M % 8 == 0 and
// K % group == 0.
inline AutoAWQTensors to_autoawq(const GroupQuantMatrix& w) {
  const char* where = "to_autoawq";
  w.validate();
  LOWBIT_CHECK(w.bits == 4, where, "AutoAWQ's GEMM layout is 4-bit, matrix has ", w.bits, " bits");
  LOWBIT_CHECK(!w.symmetric, where, "AutoAWQ stores zero points: the matrix must be asymmetric");
  LOWBIT_CHECK(w.scale_type == ScaleType::fp16, where, "AutoAWQ stores fp16 scales: the matrix has fp32 scales");
  detail::check_awq_shape(w.cols, w.rows, w.group, where);
  AutoAWQTensors t;
  t.in_features = w.cols;
  t.out_features = w.rows;
  t.group = w.group;
  const std::size_t I = w.cols, O = w.rows, G = I / w.group, W8 = O / 8;
  t.qweight.assign(I * W8, 0);
  t.qzeros.assign(G * W8, 0);
  t.scales.assign(G * O, 0);
  std::vector<std::uint8_t> codes(I);
  for (std::size_t o = 0; o < O; ++o) {
    bitpack::unpack(w.row_codes(o), I, 4, codes.data());
    for (std::size_t i = 0; i < I; ++i) detail::awq_put(t.qweight[i * W8 + o / 8], o, codes[i]);
    for (std::size_t j = 0; j < G; ++j) {
      detail::awq_put(t.qzeros[j * W8 + o / 8], o, unsigned(w.zero(o, j)));
      t.scales[j * O + o] = fp16::from_float(w.scale(o, j)).bits;
    }
  }
  return t;
}

// AutoAWQ -> lowbit (4-bit, asymmetric, fp16 scales). Validates shapes and
// that every scale is finite.
inline GroupQuantMatrix from_autoawq(const AutoAWQTensors& t) {
  const char* where = "from_autoawq";
  detail::check_awq_shape(t.in_features, t.out_features, t.group, where);
  const std::size_t I = t.in_features, O = t.out_features, G = I / t.group, W8 = O / 8;
  LOWBIT_CHECK(t.qweight.size() == I * W8, where, "qweight has ", t.qweight.size(), " words, expected [", I, ", ",
               W8, "]");
  LOWBIT_CHECK(t.qzeros.size() == G * W8, where, "qzeros has ", t.qzeros.size(), " words, expected [", G, ", ", W8,
               "]");
  LOWBIT_CHECK(t.scales.size() == G * O, where, "scales has ", t.scales.size(), " values, expected [", G, ", ", O,
               "]");
  for (std::size_t n = 0; n < t.scales.size(); ++n) {
    const float s = fp16::from_bits(t.scales[n]).to_float();
    LOWBIT_CHECK(std::isfinite(s), where, "scale [", n / O, ", ", n % O, "] is not finite: ", s);
  }
  GroupFit f;
  f.bits = 4;
  GroupQuantMatrix w = detail::make_group_matrix(O, I, t.group, f);
  std::vector<std::uint8_t> codes(I), zeros(O * G);
  for (std::size_t o = 0; o < O; ++o) {
    for (std::size_t i = 0; i < I; ++i) codes[i] = std::uint8_t(detail::awq_nibble(t.qweight[i * W8 + o / 8], o));
    bitpack::pack(codes.data(), I, 4, w.codes.data() + o * w.row_bytes());
    for (std::size_t j = 0; j < G; ++j) {
      zeros[o * G + j] = std::uint8_t(detail::awq_nibble(t.qzeros[j * W8 + o / 8], o));
      std::memcpy(w.scales.data() + 2 * (o * G + j), &t.scales[j * O + o], 2);
    }
  }
  detail::store_zeros(w, zeros);
  return w;
}

}  // namespace lowbit
