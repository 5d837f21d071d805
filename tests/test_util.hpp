// Helpers shared by lowbit's tests.
#pragma once

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <lowbit/lowbit.hpp>

#include "catch.hpp"

namespace lowbit::test {

// Runs body() once per ISA this program can run here, with that ISA forced.
template <class F>
void for_each_isa(F&& body) {
  struct restore {
    ~restore() { reset_isa(); }
  } guard;  // a failing REQUIRE throws: leave the automatic choice behind
  for (isa i : available_isas()) {
    set_isa(i);
    INFO("isa = " << isa_name(i));
    body(i);
  }
}

// LLM-like weights: Laplacian (heavy-tailed) with per-row scale spread.
inline Matrix llm_weights(std::size_t rows, std::size_t cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::exponential_distribution<float> ex(1.0f);
  std::uniform_real_distribution<float> u(0.5f, 2.0f);
  Matrix w(rows, cols);
  for (std::size_t r = 0; r < rows; ++r) {
    const float s = 0.02f * u(rng);
    for (std::size_t k = 0; k < cols; ++k) w(r, k) = s * (ex(rng) - ex(rng));
  }
  return w;
}

inline std::vector<float> gaussian(std::size_t n, unsigned seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

// Activations with a few outlier channels (AWQ's salient channels).
inline std::vector<float> llm_activations(std::size_t n, unsigned seed) {
  std::vector<float> x = gaussian(n, seed);
  for (std::size_t i = 7; i < n; i += 97) x[i] *= 40.0f;
  return x;
}

inline double frob_error(const Matrix& a, const Matrix& b) {
  double e = 0;
  for (std::size_t i = 0; i < a.rows(); ++i)
    for (std::size_t j = 0; j < a.cols(); ++j) {
      const double d = double(a(i, j)) - double(b(i, j));
      e += d * d;
    }
  return e;
}

// tr((Q - W) H (Q - W)^T): the output error of quantized weights Q for
// inputs with second moment H, what GPTQ-style methods minimize.
inline double hessian_error(const Matrix& W, const Matrix& Q, const Eigen::MatrixXd& H) {
  Eigen::MatrixXd D(static_cast<Eigen::Index>(W.rows()), static_cast<Eigen::Index>(W.cols()));
  for (std::size_t r = 0; r < W.rows(); ++r)
    for (std::size_t k = 0; k < W.cols(); ++k) D(Eigen::Index(r), Eigen::Index(k)) = double(Q(r, k)) - double(W(r, k));
  return (D * H * D.transpose()).trace();
}

// Correlated inputs with a few strong channels (a non-diagonal Hessian):
// neighbouring channels mixed, every 50th channel 10x larger.
inline Eigen::MatrixXd neighbour_hessian(std::size_t K, unsigned seed, std::size_t tokens = 2048) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd;
  Eigen::MatrixXd Z(static_cast<Eigen::Index>(tokens), static_cast<Eigen::Index>(K));
  for (Eigen::Index t = 0; t < Z.rows(); ++t)
    for (Eigen::Index k = 0; k < Z.cols(); ++k) Z(t, k) = nd(rng) * (k % 50 == 3 ? 10.0 : 1.0);
  Eigen::MatrixXd X = Z;
  for (Eigen::Index k = 1; k < X.cols(); ++k) X.col(k) += 0.6 * Z.col(k - 1);  // neighbour correlation
  return X.transpose() * X / double(tokens);
}

inline std::string shared_data_dir() {
#ifdef LOWBIT_SHARED_DATA
  return LOWBIT_SHARED_DATA;
#else
  return "";
#endif
}

// The real model's files (../shared/data/stories260K; see its README).
inline std::string stories260k_dir() { return shared_data_dir() + "/stories260K"; }

}  // namespace lowbit::test
