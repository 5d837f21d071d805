// SpQR (Dettmers et al., "SpQR: A Sparse-Quantized Representation for
// Near-Lossless LLM Weight Compression", 2023), on the GPTQ loop of
// quant/gptq.hpp, following the reference (spqr_engine.py, SPQRUtil.quantize):
//
//  - Small groups of beta1 = 16 input positions (after the optional
//    act-order permutation), min-max with a real-valued zero point, fitted
//    when the group's first column comes up, on the weights as updated so far.
//  - Second-level statistics (§4.1): each group's M scales and M zero points
//    are quantized to stat_bits (3) in blocks of beta2 = 16 rows, min-max,
//    with fp16 parameters; weights are quantized against the dequantized
//    statistics.
//  - Outliers (§4.2): with U the upper Cholesky factor of H^-1, the threshold
//    is tau * mean_k(var_r(W[r, k]) / U_kk^2). At a group's start, a weight
//    is a likely outlier when leaving it out of the group's fit lowers the
//    group's error sum_k ((q_k - w_k) / U_kk)^2 by more than the threshold;
//    the group is fitted with those replaced by the mean of the rest. Then
//    each weight whose own error ((w - q) / U_kk)^2 exceeds the threshold is
//    kept exactly (fp16, in the CSR part) and its error is zero.
//    simplified_outliers skips the leave-one-out step, as the reference's flag.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../format/spqr.hpp"
#include "gptq.hpp"

namespace lowbit::spqr {

struct Options {
  int bits = 3;
  std::size_t group = 16;        // beta1
  int stat_bits = 3;
  std::size_t stat_group = 16;   // beta2
  float outlier_threshold = 0.2f;  // tau, relative; infinity: no outliers
  bool simplified_outliers = false;
  double percdamp = 0.01;
  bool act_order = true;
  std::size_t block = 128;
  int threads = 0;
  Progress progress;  // (columns done, K) after each block (core/progress.hpp)
};

struct Stats {
  double threshold = 0;    // absolute outlier threshold used
  std::size_t outliers = 0;
};

namespace detail {

struct MinMax {
  float scale = 1.0f, zero = 0.0f;  // w ~ scale * (code - zero), zero real
};

// Min-max fit of n values with a real zero (reference quant_groups, round_zero = False).
inline MinMax fit_minmax(const float* v, std::size_t n, int bits) {
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  for (std::size_t i = 0; i < n; ++i) {
    lo = std::min(lo, v[i]);
    hi = std::max(hi, v[i]);
  }
  const float maxq = float((1 << bits) - 1);
  MinMax m;
  if (!(hi > lo)) {  // constant (or empty): any scale reproduces it exactly
    m.scale = lo != 0.0f ? std::fabs(lo) : 1.0f;
    m.zero = -lo / m.scale;
    return m;
  }
  m.scale = (hi - lo) / maxq;
  m.zero = -lo / m.scale;
  return m;
}
inline int code_of(float w, MinMax m, int bits) {
  const float q = std::nearbyint(w / m.scale + m.zero);
  return int(std::clamp(q, 0.0f, float((1 << bits) - 1)));
}
inline float value_of(int c, MinMax m) { return m.scale * (float(c) - m.zero); }

// sum_k ((Q(v_k) - v_k) / d_k)^2 for a fit m of the values, skipping index `skip`.
inline float group_error(const float* v, const float* d, std::size_t n, MinMax m, int bits, std::size_t skip) {
  float e = 0;
  for (std::size_t k = 0; k < n; ++k) {
    if (k == skip) continue;
    const float r = (value_of(code_of(v[k], m, bits), m) - v[k]) / d[k];
    e += r * r;
  }
  return e;
}

struct ColumnQuantizer {
  const Options& o;
  std::size_t M, K, G;
  double threshold = std::numeric_limits<double>::infinity();
  bool initialized = false;
  std::vector<MinMax> cur;                     // per row, current group
  std::vector<std::uint8_t> codes;             // M x K by position
  std::vector<std::uint8_t> scale_codes, zero_codes;  // M x G
  std::vector<std::uint16_t> stat_params;      // row_blocks x G x 4
  std::vector<std::vector<std::pair<std::uint32_t, float>>> outliers;  // per row: (position, kept weight)

  std::size_t width() const { return 1; }

  void init(const lowbit::detail::GptqStep& s) {
    initialized = true;
    if (!std::isfinite(o.outlier_threshold)) return;
    // tau * mean over columns of var_r(W[:, k]) / U_kk^2 (unbiased variance).
    double acc = 0;
    for (Eigen::Index k = 0; k < Eigen::Index(K); ++k) {
      const auto col = s.W.col(k).cast<double>();
      const double mean = col.mean();
      const double var = M > 1 ? (col.array() - mean).square().sum() / double(M - 1) : 0.0;
      acc += var / (double(s.U(k, k)) * double(s.U(k, k)));
    }
    threshold = double(o.outlier_threshold) * acc / double(K);
  }

  // Quantize one row-block's worth of a statistic vector (M values) for group j.
  void quantize_stats(std::vector<MinMax>& p, std::size_t j) {
    const std::size_t nb = (M + o.stat_group - 1) / o.stat_group;
    std::vector<float> v(o.stat_group);
    for (int which = 0; which < 2; ++which) {
      for (std::size_t b = 0; b < nb; ++b) {
        const std::size_t r0 = b * o.stat_group, n = std::min(o.stat_group, M - r0);
        for (std::size_t i = 0; i < n; ++i) v[i] = which ? p[r0 + i].zero : p[r0 + i].scale;
        MinMax m = fit_minmax(v.data(), n, o.stat_bits);
        // Stored as fp16: quantize against the rounded parameters.
        m.scale = fp16::from_float(m.scale).to_float();
        m.zero = fp16::from_float(m.zero).to_float();
        if (!(m.scale > 0.0f) || !std::isfinite(m.scale)) m.scale = fp16::from_bits(1).to_float();
        if (!std::isfinite(m.zero)) {
          // A tiny range far from 0 (rows with near-equal statistics): the
          // zero point -min / scale overflows fp16. Widen the scale until it
          // fits; the values then share one code, within 2^-11 of min.
          const float lo = *std::min_element(v.begin(), v.begin() + std::ptrdiff_t(n));
          m.scale = fp16::from_float(std::fabs(lo) / 1024.0f).to_float();
          m.zero = fp16::from_float(-lo / m.scale).to_float();
        }
        const std::size_t at = (b * G + j) * 4 + std::size_t(2 * which);
        stat_params[at] = fp16::from_float(m.scale).bits;
        stat_params[at + 1] = fp16::from_float(m.zero).bits;
        for (std::size_t i = 0; i < n; ++i) {
          const int c = code_of(v[i], m, o.stat_bits);
          (which ? zero_codes : scale_codes)[(r0 + i) * G + j] = std::uint8_t(c);
          float& dst = which ? p[r0 + i].zero : p[r0 + i].scale;
          dst = value_of(c, m);
        }
      }
    }
    // A scale that dequantizes to 0 would divide by zero: the smallest fp16.
    for (auto& m : p)
      if (!(std::fabs(m.scale) > 0.0f)) m.scale = fp16::from_bits(1).to_float();
  }

  void start_group(const lowbit::detail::GptqStep& s, std::size_t pos) {
    const std::size_t j = pos / o.group, n = std::min(o.group, K - pos);
    std::vector<float> d(n);
    for (std::size_t k = 0; k < n; ++k) d[k] = s.U(Eigen::Index(pos + k), Eigen::Index(pos + k));
    const bool loo = std::isfinite(threshold) && !o.simplified_outliers;
    parallel_for(M, 64, o.threads, [&](std::size_t r0, std::size_t r1) {
      std::vector<float> g(n), rest(n);
      std::vector<char> out(n);
      for (std::size_t r = r0; r < r1; ++r) {
        for (std::size_t k = 0; k < n; ++k) g[k] = s.W1(Eigen::Index(r), Eigen::Index(s.i + k));
        if (loo && n > 1) {
          // Leave-one-out: how much the group's error falls without weight l.
          const float base = group_error(g.data(), d.data(), n, fit_minmax(g.data(), n, o.bits), o.bits, n);
          std::size_t kept = 0;
          float sum = 0;
          for (std::size_t l = 0; l < n; ++l) {
            std::size_t m = 0;
            for (std::size_t k = 0; k < n; ++k)
              if (k != l) rest[m++] = g[k];
            const float e = group_error(g.data(), d.data(), n, fit_minmax(rest.data(), m, o.bits), o.bits, l);
            out[l] = double(base - e) > threshold;
          }
          for (std::size_t k = 0; k < n; ++k)
            if (!out[k]) {
              sum += g[k];
              ++kept;
            }
          const float mean = sum / float(std::max<std::size_t>(kept, 1));
          for (std::size_t k = 0; k < n; ++k)
            if (out[k]) g[k] = mean;
        }
        cur[r] = fit_minmax(g.data(), n, o.bits);
      }
    });
    quantize_stats(cur, j);
  }

  void operator()(const lowbit::detail::GptqStep& s, Eigen::Ref<Eigen::MatrixXf> q) {
    if (!initialized) init(s);
    const std::size_t pos = s.i1 + s.i;
    if (pos % o.group == 0) start_group(s, pos);
    const float d = s.U(Eigen::Index(pos), Eigen::Index(pos));
    for (std::size_t r = 0; r < M; ++r) {
      const float w = s.W1(Eigen::Index(r), Eigen::Index(s.i));
      int c = code_of(w, cur[r], o.bits);
      float v = value_of(c, cur[r]);
      const float e = (w - v) / d;
      if (double(e) * double(e) > threshold) {  // kept exactly: zero error
        outliers[r].push_back({std::uint32_t(pos), w});
        c = code_of(0.0f, cur[r], o.bits);
        v = w;
      }
      codes[r * K + pos] = std::uint8_t(c);
      q(Eigen::Index(r), 0) = v;
    }
  }
};

}  // namespace detail

// SpQR for one linear W (M x K) given the Hessian of its input.
inline SpqrMatrix quantize(ConstMatrixView<float> w, const Eigen::MatrixXd& hessian, const Options& o = {},
                           Stats* stats = nullptr) {
  const char* where = "spqr::quantize";
  LOWBIT_CHECK(o.bits == 2 || o.bits == 3 || o.bits == 4 || o.bits == 8, where, "bits must be 2, 3, 4 or 8, got ",
               o.bits);
  LOWBIT_CHECK(o.stat_bits >= 1 && o.stat_bits <= 8, where, "stat_bits must be in 1..8, got ", o.stat_bits);
  LOWBIT_CHECK(o.group >= 8 && o.group % 8 == 0 && 128 % o.group == 0, where,
               "group must be a multiple of 8 dividing 128, got ", o.group);
  LOWBIT_CHECK(o.group <= w.cols(), where, "group ", o.group, " exceeds K = ", w.cols());
  LOWBIT_CHECK(o.block % o.group == 0, where, "block ", o.block, " must be a multiple of the group ", o.group);
  LOWBIT_CHECK(o.stat_group >= 1, where, "stat_group must be positive");
  LOWBIT_CHECK(o.outlier_threshold > 0.0f, where, "outlier threshold tau must be > 0, got ", o.outlier_threshold);
  LOWBIT_CHECK(w.cols() <= 65536, where, "K = ", w.cols(), " exceeds the 16-bit outlier column index");
  rtn::check_weights(w, where);
  const std::size_t M = w.rows(), K = w.cols(), G = (K + o.group - 1) / o.group;
  LOWBIT_CHECK(M > 0 && K > 0, where, "empty weight matrix ", M, "x", K);
  const std::size_t nb = (M + o.stat_group - 1) / o.stat_group;
  detail::ColumnQuantizer cq{o, M, K, G, std::numeric_limits<double>::infinity(), false,
                             std::vector<detail::MinMax>(M), std::vector<std::uint8_t>(M * K, 0),
                             std::vector<std::uint8_t>(M * G, 0), std::vector<std::uint8_t>(M * G, 0),
                             std::vector<std::uint16_t>(nb * G * 4, 0),
                             std::vector<std::vector<std::pair<std::uint32_t, float>>>(M)};
  Eigen::MatrixXf W = eigen_map(w);
  std::vector<std::size_t> order;
  lowbit::detail::gptq_loop(std::move(W), hessian, o.percdamp, o.act_order, o.block, cq, order, where, o.progress);

  SpqrMatrix q;
  q.rows = M;
  q.cols = K;
  q.bits = o.bits;
  q.group = o.group;
  q.stat_bits = o.stat_bits;
  q.stat_group = o.stat_group;
  if (o.act_order) q.perm = packed_ints::pack(order.data(), K, q.perm_bits());
  q.codes.assign(M * q.row_bytes(), 0);
  for (std::size_t r = 0; r < M; ++r) bitpack::pack(cq.codes.data() + r * K, K, o.bits, q.codes.data() + r * q.row_bytes());
  q.scale_codes.assign(bitpack::row_bytes(M * G, o.stat_bits), 0);
  q.zero_codes.assign(q.scale_codes.size(), 0);
  bitpack::pack(cq.scale_codes.data(), M * G, o.stat_bits, q.scale_codes.data());
  bitpack::pack(cq.zero_codes.data(), M * G, o.stat_bits, q.zero_codes.data());
  q.stat_params = std::move(cq.stat_params);
  // Outliers: the correction on top of the dense value, by original column.
  std::vector<std::size_t> counts(M);
  for (std::size_t r = 0; r < M; ++r) {
    auto& list = cq.outliers[r];
    std::vector<std::pair<std::uint32_t, float>> byc;
    for (auto [pos, wv] : list) {
      const std::size_t j = pos / o.group;
      const float dense = q.scale(r, j) * (float(cq.codes[r * K + pos]) - q.zero(r, j));
      byc.push_back({std::uint32_t(q.column(pos)), wv - dense});
    }
    std::sort(byc.begin(), byc.end());
    for (auto [c, v] : byc) {
      q.outlier_col.push_back(std::uint16_t(c));
      q.outlier_val.push_back(fp16::from_float(v).bits);
    }
    counts[r] = byc.size();
  }
  q.count_bits = packed_ints::width_for(counts.empty() ? 0 : *std::max_element(counts.begin(), counts.end()));
  q.row_counts = packed_ints::pack(counts.data(), M, q.count_bits);
  if (stats) {
    stats->threshold = cq.threshold;
    stats->outliers = q.outliers();
  }
  return q;
}

}  // namespace lowbit::spqr
