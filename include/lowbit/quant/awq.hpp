// AWQ: activation-aware weight quantization (Lin et al., "AWQ: Activation-
// aware Weight Quantization for LLM Compression and Acceleration", MLSys
// 2024), following the reference code's defaults (llm-awq: auto_scale,
// auto_clip).
//
// For linears that share one input x (q/k/v, or gate/up, or a single one):
//
//  1. Scale search (§3.2, eq. 5). s = mean|x|^alpha per input channel,
//     clamped to >= 1e-4 and divided by sqrt(max s * min s); alpha runs over
//     a grid of `grid` points i / grid in [0, 1). Each candidate quantizes
//     W diag(s), takes Q(W diag(s)) diag(s)^-1 and scores the output MSE
//     against W on the calibration sample; the best alpha wins. alpha = 0 is
//     s = 1, plain RTN, so the search never does worse than RTN on the sample.
//  2. Clipping search (reference auto_clip): on W' = W diag(s) and x' = x / s,
//     per output channel and group, the clip range max|w| * (1 - i / clip_grid)
//     for i < max_shrink * clip_grid minimizing the group's output error
//     mean_t (x'_t . (Q(clamp(w)) - w))^2 over at most clip_tokens sampled
//     tokens. That error is |R_g d|^2 / n with R_g the triangular factor of
//     the group's token block (X'_g = Q R_g): the tokens enter once, through
//     R_g, and each candidate costs g^2 / 2 instead of n g multiply-adds.
//  3. The clipped W' is quantized (min-max groups) into the group format.
//
// The result stores Q(W diag(s)): the model must divide its input by s,
// which costs nothing once folded into the operation before the linears
// (fold_into_norm: an RMSNorm/LayerNorm weight; fold_into_linear: the rows
// of a previous linear, e.g. v_proj before o_proj, up_proj before down_proj).
//
// Differences from the reference, by necessity of a header library: the
// losses are the outputs of these linears themselves (the reference scores
// the enclosing module, e.g. all of self-attention for q/k/v, when it runs
// the model in PyTorch); and the reference skips clipping for q/k (attention
// logits are sensitive): pass clip = false for those.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <Eigen/Core>
#include <Eigen/QR>

#include "../core/eigen_view.hpp"
#include "../core/parallel.hpp"
#include "calibration.hpp"
#include "rtn.hpp"

namespace lowbit::awq {

struct Options {
  int bits = 4;
  std::size_t group = 128;
  bool symmetric = false;
  ScaleType scale_type = ScaleType::fp16;
  int grid = 20;                 // alpha = i / grid, i < grid (reference n_grid)
  bool clip = true;              // run the clipping search
  float max_shrink = 0.5f;       // clip ranges down to (1 - max_shrink) of max|w|
  int clip_grid = 20;            // in steps of 1 / clip_grid
  std::size_t clip_tokens = 512; // tokens for the clipping search (reference n_sample_token)
  std::size_t loss_rows = 512;   // score the scale search on this many evenly spaced output rows
                                 // (0: all, as the reference): it then costs loss_rows / M of a
                                 // full one; the loss is a mean over rows, so a sample of rows
                                 // estimates it (tests check the chosen alpha agrees)
  int threads = 0;               // 0: lowbit::num_threads()

  GroupFit fit() const { return GroupFit{bits, symmetric, scale_type, Clip::minmax, 100, 0.8f}; }
};

struct Result {
  std::vector<GroupQuantMatrix> weights;  // Q(W_i diag(s)), one per input linear
  std::vector<float> scales;              // s, K values: divide the linears' input by s
  float alpha = 0.0f;                     // the chosen exponent
  std::vector<double> loss;               // scale-search output MSE for alpha = i / grid
  double rtn_loss() const { return loss.front(); }  // alpha = 0: s = 1, plain RTN
  double best_loss() const { return *std::min_element(loss.begin(), loss.end()); }
};

namespace detail {

using RowMatrixF = EigenRowMajor<float>;

// The candidate scales for exponent alpha (reference: x_max.pow(ratio).clamp(min=1e-4),
// then / sqrt(max * min)).
inline std::vector<float> scales_for(const std::vector<float>& mean_abs, double alpha) {
  std::vector<float> s(mean_abs.size());
  double lo = std::numeric_limits<double>::infinity(), hi = 0;
  for (std::size_t k = 0; k < s.size(); ++k) {
    const double v = std::max(std::pow(double(mean_abs[k]), alpha), 1e-4);
    s[k] = float(v);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  const double norm = std::sqrt(hi * lo);
  for (float& v : s) v = float(double(v) / norm);
  return s;
}

// The rows a loss is scored on: all, or `n` evenly spaced.
inline std::vector<std::size_t> loss_rows(std::size_t total, std::size_t n) {
  std::vector<std::size_t> rows;
  if (n == 0 || n >= total) {
    for (std::size_t r = 0; r < total; ++r) rows.push_back(r);
  } else {
    for (std::size_t i = 0; i < n; ++i) rows.push_back(i * total / n);
  }
  return rows;
}

// Clipping search and clamp, in place, on the rows of W' (K columns) with the
// per-group triangular factors R[j] of the (scaled) input tokens.
inline void clip_rows(MatrixView<float> w, const std::vector<Eigen::MatrixXf>& R, const Options& o) {
  const std::size_t K = w.cols(), G = R.size();
  const int steps = std::max(1, int(o.max_shrink * float(o.clip_grid)));
  const GroupFit fit = o.fit();
  constexpr std::size_t chunk = 32;  // rows scored together: one GEMM H_g * D per group
  parallel_for(w.rows(), chunk, o.threads, [&](std::size_t r0, std::size_t r1) {
    std::vector<float> cw(o.group), qw(o.group);
    for (std::size_t c0 = r0; c0 < r1; c0 += chunk) {
      const std::size_t nr = std::min(chunk, r1 - c0);
      for (std::size_t j = 0; j < G; ++j) {
        const std::size_t k0 = j * o.group, n = std::min(o.group, K - k0);
        Eigen::MatrixXf D(static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(nr * std::size_t(steps)));
        std::vector<float> peak(nr);
        for (std::size_t i = 0; i < nr; ++i) {
          const float* g = w.row(c0 + i) + k0;
          float m0 = 0;
          for (std::size_t k = 0; k < n; ++k) m0 = std::max(m0, std::fabs(g[k]));
          peak[i] = m0;
          for (int c = 0; c < steps; ++c) {
            const float m = m0 * (1.0f - float(c) / float(o.clip_grid));
            for (std::size_t k = 0; k < n; ++k) cw[k] = std::clamp(g[k], -m, m);
            lowbit::detail::fake_quantize(cw.data(), n, n, fit, qw.data());
            for (std::size_t k = 0; k < n; ++k)
              D(Eigen::Index(k), Eigen::Index(i * std::size_t(steps) + std::size_t(c))) = qw[k] - g[k];
          }
        }
        const Eigen::MatrixXf RD = R[j].triangularView<Eigen::Upper>() * D;
        for (std::size_t i = 0; i < nr; ++i) {
          int best = 0;
          float best_err = std::numeric_limits<float>::infinity();
          for (int c = 0; c < steps; ++c) {
            const Eigen::Index col = Eigen::Index(i * std::size_t(steps) + std::size_t(c));
            const float e = RD.col(col).squaredNorm();
            if (e < best_err) {  // first minimum, as the reference's strict '<'
              best_err = e;
              best = c;
            }
          }
          const float m = peak[i] * (1.0f - float(best) / float(o.clip_grid));
          float* g = w.row(c0 + i) + k0;
          for (std::size_t k = 0; k < n; ++k) g[k] = std::clamp(g[k], -m, m);
        }
      }
    }
  });
}

}  // namespace detail

// AWQ for linears that share one input. All linears have K columns; `calib`
// holds statistics of their input (mean |x| and a token sample; the Hessian
// is not needed: CalibrationOptions{.hessian = false} saves K^2 doubles).
inline Result quantize(const std::vector<ConstMatrixView<float>>& linears, const Calibration& calib,
                       const Options& o = {}) {
  const char* where = "awq::quantize";
  LOWBIT_CHECK(!linears.empty(), where, "no linears given");
  const std::size_t K = linears[0].cols();
  LOWBIT_CHECK(K > 0, where, "linears have no columns");
  for (std::size_t i = 0; i < linears.size(); ++i) {
    LOWBIT_CHECK(linears[i].cols() == K, where, "linear ", i, " has ", linears[i].cols(), " columns, linear 0 has ",
                 K);
    rtn::check_weights(linears[i], where);
  }
  LOWBIT_CHECK(calib.features() == K, where, "calibration has K = ", calib.features(), ", the linears have ", K);
  LOWBIT_CHECK(calib.tokens() > 0, where, "calibration has no tokens");
  const ConstMatrixView<float> sample = calib.sample();
  LOWBIT_CHECK(sample.rows() > 0, where, "calibration keeps no token sample (sample_tokens = 0)");
  LOWBIT_CHECK(o.grid >= 1, where, "grid must be >= 1, got ", o.grid);
  LOWBIT_CHECK(o.clip_grid >= 1, where, "clip_grid must be >= 1, got ", o.clip_grid);
  LOWBIT_CHECK(o.max_shrink >= 0.0f && o.max_shrink < 1.0f, where, "max_shrink must be in [0, 1), got ",
               o.max_shrink);
  LOWBIT_CHECK(o.clip_tokens > 0, where, "clip_tokens must be positive");
  lowbit::detail::check_group_fit(o.fit(), where);
  rtn::check_group(o.group, K, where);

  // The rows the scale search scores, over the stacked linears.
  std::vector<const float*> all_rows;
  for (const auto& l : linears)
    for (std::size_t r = 0; r < l.rows(); ++r) all_rows.push_back(l.row(r));
  const std::vector<std::size_t> rows = detail::loss_rows(all_rows.size(), o.loss_rows);
  const std::size_t R = rows.size(), N = sample.rows();
  detail::RowMatrixF W(static_cast<Eigen::Index>(R), static_cast<Eigen::Index>(K));
  for (std::size_t i = 0; i < R; ++i)
    std::copy(all_rows[rows[i]], all_rows[rows[i]] + K, W.row(Eigen::Index(i)).data());
  const auto X = eigen_map(sample);

  // 1. Scale search: loss(alpha) = mean over tokens and rows of
  // (x . (W_hat - W)_r)^2 with W_hat = Q(W diag(s)) diag(s)^-1.
  const std::vector<float> mean_abs = calib.mean_abs();
  LOWBIT_CHECK(*std::max_element(mean_abs.begin(), mean_abs.end()) > 0.0f, where,
               "calibration activations are all zero: no channel is salient");
  Result res;
  res.loss.assign(std::size_t(o.grid), 0.0);
  double best = std::numeric_limits<double>::infinity();
  std::vector<float> best_s(K, 1.0f);
  for (int i = 0; i < o.grid; ++i) {
    const double alpha = double(i) / double(o.grid);
    const std::vector<float> s = detail::scales_for(mean_abs, alpha);
    std::vector<double> part(R, 0.0);
    parallel_for(R, 16, o.threads, [&](std::size_t r0, std::size_t r1) {
      detail::RowMatrixF Dt(static_cast<Eigen::Index>(r1 - r0), static_cast<Eigen::Index>(K));
      std::vector<float> ws(K), q(K);
      for (std::size_t r = r0; r < r1; ++r) {
        const float* wr = W.row(Eigen::Index(r)).data();
        for (std::size_t k = 0; k < K; ++k) ws[k] = wr[k] * s[k];
        lowbit::detail::fake_quantize(ws.data(), K, o.group, o.fit(), q.data());
        for (std::size_t k = 0; k < K; ++k) Dt(Eigen::Index(r - r0), Eigen::Index(k)) = q[k] / s[k] - wr[k];
      }
      const Eigen::MatrixXf E = X * Dt.transpose();  // N x rows: output errors
      for (std::size_t r = r0; r < r1; ++r) part[r] = double(E.col(Eigen::Index(r - r0)).squaredNorm());
    });
    double loss = 0;
    for (double v : part) loss += v;
    loss /= double(N) * double(R);
    res.loss[std::size_t(i)] = loss;
    if (loss < best) {  // first minimum wins, as the reference
      best = loss;
      res.alpha = float(alpha);
      best_s = s;
    }
  }
  res.scales = best_s;

  // 2. Clipping search on W' = W diag(s) with x' = x / s, over at most
  // clip_tokens evenly spaced sample tokens (reference: input_feat[:, ::step]),
  // through the R factor of each group's token block (Householder QR; rank
  // deficiency is fine). The 1/n of the mean does not change the argmin.
  std::vector<Eigen::MatrixXf> factors;
  if (o.clip) {
    const std::size_t step = std::max<std::size_t>(1, N / o.clip_tokens);
    const std::size_t nt = std::min(o.clip_tokens, (N + step - 1) / step);
    for (std::size_t k0 = 0; k0 < K; k0 += o.group) {
      const std::size_t n = std::min(o.group, K - k0);
      Eigen::MatrixXf Xg(static_cast<Eigen::Index>(nt), static_cast<Eigen::Index>(n));
      for (std::size_t t = 0; t < nt; ++t)
        for (std::size_t k = 0; k < n; ++k)
          Xg(Eigen::Index(t), Eigen::Index(k)) = sample(t * step, k0 + k) / best_s[k0 + k];
      Eigen::HouseholderQR<Eigen::MatrixXf> qr(Xg);
      const Eigen::Index r = std::min(Xg.rows(), Xg.cols());
      Eigen::MatrixXf Rg = Eigen::MatrixXf::Zero(Eigen::Index(n), Eigen::Index(n));
      Rg.topRows(r) = qr.matrixQR().topRows(r).triangularView<Eigen::Upper>();
      factors.push_back(std::move(Rg));
    }
  }

  // 3. Scale, clip and quantize each linear.
  rtn::Options ro;
  ro.bits = o.bits;
  ro.group = o.group;
  ro.symmetric = o.symmetric;
  ro.scale_type = o.scale_type;
  ro.clip = Clip::minmax;
  ro.threads = o.threads;
  for (const auto& l : linears) {
    Matrix ws(l.rows(), K);
    for (std::size_t r = 0; r < l.rows(); ++r)
      for (std::size_t k = 0; k < K; ++k) ws(r, k) = l(r, k) * best_s[k];
    if (o.clip) detail::clip_rows(ws, factors, o);
    res.weights.push_back(rtn::quantize(ws, ro));
  }
  return res;
}

inline Result quantize(ConstMatrixView<float> w, const Calibration& calib, const Options& o = {}) {
  return quantize(std::vector<ConstMatrixView<float>>{w}, calib, o);
}

// Fold 1/s into the normalization before the linears: norm_weight[k] /= s[k]
// (RMSNorm and LayerNorm scale each channel by its weight; LayerNorm's bias,
// if any, is divided as well).
inline void fold_into_norm(span<float> norm_weight, span<const float> s, span<float> norm_bias = {}) {
  LOWBIT_CHECK(norm_weight.size() == s.size(), "awq::fold_into_norm", "norm weight has ", norm_weight.size(),
               " channels, scales have ", s.size());
  LOWBIT_CHECK(norm_bias.empty() || norm_bias.size() == s.size(), "awq::fold_into_norm", "norm bias has ",
               norm_bias.size(), " channels, scales have ", s.size());
  for (std::size_t k = 0; k < s.size(); ++k) {
    norm_weight[k] /= s[k];
    if (!norm_bias.empty()) norm_bias[k] /= s[k];
  }
}

// Fold 1/s into a previous linear whose outputs are the input channels:
// row k of `prev` (and its bias) divided by s[k].
inline void fold_into_linear(MatrixView<float> prev, span<const float> s, span<float> prev_bias = {}) {
  LOWBIT_CHECK(prev.rows() == s.size(), "awq::fold_into_linear", "previous linear has ", prev.rows(),
               " output rows, scales have ", s.size());
  LOWBIT_CHECK(prev_bias.empty() || prev_bias.size() == s.size(), "awq::fold_into_linear", "bias has ",
               prev_bias.size(), " entries, scales have ", s.size());
  for (std::size_t k = 0; k < s.size(); ++k) {
    for (std::size_t j = 0; j < prev.cols(); ++j) prev(k, j) /= s[k];
    if (!prev_bias.empty()) prev_bias[k] /= s[k];
  }
}

}  // namespace lowbit::awq
