// Round-to-nearest group quantization: the baseline every other quantizer in
// lowbit must beat. Each group of g weights along the input dimension gets a
// scale and zero point from its range (min-max) or from a clipping search
// minimizing the group's squared error (Clip::mse); weights round half to
// even to the nearest code.
#pragma once

#include <cmath>
#include <vector>

#include "../core/parallel.hpp"
#include "../core/view.hpp"
#include "group_fit.hpp"

namespace lowbit::rtn {

struct Options {
  int bits = 4;
  std::size_t group = 128;
  bool symmetric = false;
  ScaleType scale_type = ScaleType::fp16;
  Clip clip = Clip::minmax;
  int grid = 100;
  float max_shrink = 0.8f;
  int threads = 0;  // 0: lowbit::num_threads()

  GroupFit fit() const { return GroupFit{bits, symmetric, scale_type, clip, grid, max_shrink}; }
};

inline void check_weights(ConstMatrixView<float> w, const char* where) {
  for (std::size_t r = 0; r < w.rows(); ++r)
    for (std::size_t k = 0; k < w.cols(); ++k)
      LOWBIT_CHECK(std::isfinite(w(r, k)), where, "weight (", r, ", ", k, ") is not finite: ", w(r, k));
}

inline void check_group(std::size_t group, std::size_t cols, const char* where) {
  LOWBIT_CHECK(group >= 8 && group % 8 == 0, where, "group must be a positive multiple of 8, got ", group);
  LOWBIT_CHECK(cols == 0 || group <= cols, where, "group ", group, " exceeds K = ", cols, "; use group <= K");
}

inline GroupQuantMatrix quantize(ConstMatrixView<float> w, const Options& opt = {}) {
  const char* where = "rtn::quantize";
  detail::check_group_fit(opt.fit(), where);
  check_group(opt.group, w.cols(), where);
  check_weights(w, where);
  GroupQuantMatrix q = detail::make_group_matrix(w.rows(), w.cols(), opt.group, opt.fit());
  const std::size_t G = q.groups_per_row(), K = w.cols();
  std::vector<std::uint8_t> zeros(w.rows() * G);
  parallel_for(w.rows(), 1, opt.threads, [&](std::size_t r0, std::size_t r1) {
    std::vector<std::uint8_t> codes(K);
    for (std::size_t r = r0; r < r1; ++r) {
      const float* row = w.row(r);
      for (std::size_t j = 0; j < G; ++j) {
        const std::size_t k0 = j * opt.group, n = std::min(opt.group, K - k0);
        const detail::GroupParams p = detail::fit_group(row + k0, n, opt.fit());
        detail::store_scale(q, r * G + j, p.scale);
        zeros[r * G + j] = std::uint8_t(p.zero);
        for (std::size_t k = k0; k < k0 + n; ++k) codes[k] = std::uint8_t(detail::quantize_code(row[k], p, opt.bits));
      }
      bitpack::pack(codes.data(), K, opt.bits, q.codes.data() + r * q.row_bytes());
    }
  });
  detail::store_zeros(q, zeros);
  return q;
}

}  // namespace lowbit::rtn
