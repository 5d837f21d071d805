// Streamed calibration statistics for the input of one linear layer (or of
// several that share it): feed token batches with add(X), X: tokens x K.
//
//   mean_abs()  per-channel mean |x|: AWQ's activation statistic (AWQ §3.2)
//   hessian()   (1/N) X^T X over all tokens, accumulated in double: the
//               proxy Hessian of GPTQ, SpQR and VPTQ (GPTQ §2, eq. 1)
//   sample()    a uniform sample of up to `sample_tokens` tokens (reservoir
//               sampling, Algorithm R, seeded): what AWQ evaluates its
//               output loss on
//
// Memory is bounded by K^2 doubles (Hessian, optional) plus the sample:
// millions of tokens can be streamed.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <Eigen/Core>

#include "../core/error.hpp"
#include "../core/view.hpp"

namespace lowbit {

struct CalibrationOptions {
  bool hessian = true;               // accumulate X^T X (needs K^2 doubles)
  std::size_t sample_tokens = 512;   // tokens kept for loss evaluation (0: none)
  std::uint64_t seed = 0;
};

class Calibration {
 public:
  explicit Calibration(std::size_t in_features, CalibrationOptions opt = {})
      : k_(in_features), opt_(opt), abs_sum_(in_features, 0.0), rng_(opt.seed) {
    LOWBIT_CHECK(in_features > 0, "Calibration", "in_features must be positive");
    if (opt_.hessian) h_ = Eigen::MatrixXd::Zero(Eigen::Index(k_), Eigen::Index(k_));
    sample_.reserve(opt_.sample_tokens * k_);
  }

  // Add a batch of tokens (rows of X).
  void add(ConstMatrixView<float> X) {
    LOWBIT_CHECK(X.cols() == k_, "Calibration::add", "X has ", X.cols(), " columns, calibration has K = ", k_);
    for (std::size_t t = 0; t < X.rows(); ++t)
      for (std::size_t k = 0; k < k_; ++k)
        LOWBIT_CHECK(std::isfinite(X(t, k)), "Calibration::add", "activation (", t, ", ", k,
                     ") is not finite: ", X(t, k));
    for (std::size_t t = 0; t < X.rows(); ++t) {
      const float* x = X.row(t);
      for (std::size_t k = 0; k < k_; ++k) abs_sum_[k] += std::fabs(double(x[k]));
      keep_sample(x);
      ++n_;
    }
    if (opt_.hessian && X.rows() > 0) {
      // H += X^T X on the lower triangle, in blocks of tokens.
      constexpr std::size_t step = 256;
      for (std::size_t t0 = 0; t0 < X.rows(); t0 += step) {
        const std::size_t nt = std::min(step, X.rows() - t0);
        Eigen::MatrixXd xt(static_cast<Eigen::Index>(k_), static_cast<Eigen::Index>(nt));
        for (std::size_t t = 0; t < nt; ++t)
          for (std::size_t k = 0; k < k_; ++k) xt(Eigen::Index(k), Eigen::Index(t)) = double(X(t0 + t, k));
        h_.selfadjointView<Eigen::Lower>().rankUpdate(xt);
      }
    }
  }

  std::size_t features() const noexcept { return k_; }
  std::size_t tokens() const noexcept { return n_; }

  std::vector<float> mean_abs() const {
    LOWBIT_CHECK(n_ > 0, "Calibration::mean_abs", "no tokens were added");
    std::vector<float> m(k_);
    for (std::size_t k = 0; k < k_; ++k) m[k] = float(abs_sum_[k] / double(n_));
    return m;
  }

  // (1/N) X^T X, full symmetric K x K.
  Eigen::MatrixXd hessian() const {
    LOWBIT_CHECK(opt_.hessian, "Calibration::hessian", "Hessian accumulation was disabled in the options");
    LOWBIT_CHECK(n_ > 0, "Calibration::hessian", "no tokens were added");
    Eigen::MatrixXd h = h_.selfadjointView<Eigen::Lower>();
    return h / double(n_);
  }

  // The kept tokens, rows of a (min(N, sample_tokens) x K) matrix.
  ConstMatrixView<float> sample() const noexcept {
    return {sample_.data(), sample_.size() / k_, k_};
  }

 private:
  void keep_sample(const float* x) {
    const std::size_t cap = opt_.sample_tokens;
    if (cap == 0) return;
    if (n_ < cap) {
      sample_.insert(sample_.end(), x, x + k_);
      return;
    }
    const std::uint64_t j = std::uniform_int_distribution<std::uint64_t>(0, n_)(rng_);
    if (j < cap) std::copy(x, x + k_, sample_.begin() + std::ptrdiff_t(j * k_));
  }

  std::size_t k_;
  CalibrationOptions opt_;
  std::size_t n_ = 0;
  std::vector<double> abs_sum_;
  Eigen::MatrixXd h_;
  std::vector<float> sample_;
  std::mt19937_64 rng_;
};

}  // namespace lowbit
