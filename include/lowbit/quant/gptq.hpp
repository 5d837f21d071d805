// GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for
// Generative Pre-trained Transformers", ICLR 2023): the second-order column
// loop, written once and shared by every method that quantizes against the
// Hessian H = X^T X / N of a linear's input (GPTQ itself, SpQR, VPTQ).
//
// detail::gptq_loop follows the reference (gptq.py, fasterquant):
//  - dead inputs (H_kk = 0): H_kk = 1 and W[:, k] = 0;
//  - act-order (optional): columns in order of descending H_kk;
//  - damping: H += percdamp * mean(diag H) * I (percdamp 0.01);
//  - U = the upper Cholesky factor of H^-1, computed here as the inverse of
//    the upper factor A of H = A A^T (one Cholesky, one triangular inverse,
//    the same matrix as the reference's chol -> cholesky_inverse -> chol);
//  - blocks of `block` columns (128); inside a block each step quantizes
//    `width` columns (1 for scalar methods, the vector length for VPTQ) and
//    feeds the error forward, E = (W - Q) U_ss^-1, W[:, rest of block] -=
//    E U[s, rest] (GPTQ eq. 3 / Algorithm 1); after the block the lazy batch
//    update W[:, after block] -= E_block U[block, after block].
// The quantizer is a callable (the "column quantizer" below), so the loop is
// the only copy there is.
//
// gptq::quantize is GPTQ as a method: group RTN (min-max, or MSE clipping)
// as the column quantizer, output in the group format. Group statistics are
// fitted when a group's first column comes up, from the weights as they are
// at the start of the current block (as the reference's find_params on W).
// With act-order the groups must be static (fitted up front on the original
// columns, reference --static-groups), since the group format stores groups
// of consecutive input channels.
#pragma once

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include <Eigen/Cholesky>
#include <Eigen/Core>

#include "../core/eigen_view.hpp"
#include "../core/parallel.hpp"
#include "../core/progress.hpp"
#include "rtn.hpp"

namespace lowbit {
namespace detail {

// What a column quantizer sees at one step of the loop. Column indices are
// positions in the (possibly permuted) order; perm[j] is the original
// column at position j.
struct GptqStep {
  const Eigen::MatrixXf& W;        // M x K: final before the block, block-start values from i1 on
  const Eigen::MatrixXf& W1;       // M x B: the current block, updated within it
  const Eigen::MatrixXf& U;        // K x K: upper Cholesky factor of H^-1 (permuted, damped)
  const std::vector<std::size_t>& perm;
  std::size_t i1;                  // block start
  std::size_t i;                   // step start within the block (column i1 + i)
};

inline void check_hessian(const Eigen::MatrixXd& H, Eigen::Index K, const char* where) {
  LOWBIT_CHECK(H.rows() == K && H.cols() == K, where, "Hessian is ", H.rows(), "x", H.cols(), ", weights have K = ",
               K);
  LOWBIT_CHECK(H.allFinite(), where, "Hessian has non-finite entries");
}

// The loop's column order: identity, or (act-order) descending H_kk with
// dead inputs counted as H_kk = 1, as the loop treats them; stable.
inline std::vector<std::size_t> gptq_order(const Eigen::MatrixXd& H, bool act_order) {
  std::vector<std::size_t> perm(std::size_t(H.rows()));
  std::iota(perm.begin(), perm.end(), std::size_t(0));
  const auto d = [&](std::size_t k) {
    const double h = H(Eigen::Index(k), Eigen::Index(k));
    return h == 0.0 ? 1.0 : h;
  };
  if (act_order) std::stable_sort(perm.begin(), perm.end(), [&](std::size_t a, std::size_t b) { return d(a) > d(b); });
  return perm;
}

// The column quantizer concept:
//   std::size_t width() const;      columns per step (divides the block size)
//   void operator()(const GptqStep& s, Eigen::Ref<Eigen::MatrixXf> q);
//     q (M x width) := the dequantized values for columns i1+i .. +width of
//     W1, recording whatever the method stores.
template <class ColumnQuantizer>
Eigen::MatrixXf gptq_loop(Eigen::MatrixXf W, Eigen::MatrixXd H, double percdamp, bool act_order,
                          std::size_t block, ColumnQuantizer& quant, std::vector<std::size_t>& perm,
                          const char* where, const Progress& progress = {}) {
  const Eigen::Index M = W.rows(), K = W.cols();
  const std::size_t width = quant.width();
  check_hessian(H, K, where);
  LOWBIT_CHECK(percdamp >= 0.0, where, "percdamp must be >= 0, got ", percdamp);
  LOWBIT_CHECK(block > 0 && block % width == 0, where, "block ", block, " must be a positive multiple of the step width ",
               width);
  perm = gptq_order(H, act_order);
  for (Eigen::Index k = 0; k < K; ++k)
    if (H(k, k) == 0.0) {  // dead input: never seen non-zero
      H(k, k) = 1.0;
      W.col(k).setZero();
    }
  Eigen::MatrixXf Wp(M, K);
  Eigen::MatrixXd Hp(K, K);
  for (Eigen::Index j = 0; j < K; ++j) {
    Wp.col(j) = W.col(Eigen::Index(perm[std::size_t(j)]));
    for (Eigen::Index i = 0; i < K; ++i) Hp(i, j) = H(Eigen::Index(perm[std::size_t(i)]), Eigen::Index(perm[std::size_t(j)]));
  }
  Hp.diagonal().array() += percdamp * Hp.diagonal().mean();
  // H = A A^T with A upper: the lower factor of the reversed matrix,
  // reversed. In float, as the reference's torch.linalg.cholesky on fp32 H
  // (the damping keeps it well conditioned; double would double the time).
  const Eigen::MatrixXf R = Hp.reverse().cast<float>();
  Eigen::LLT<Eigen::MatrixXf> llt(R);
  LOWBIT_CHECK(llt.info() == Eigen::Success, where,
               "Hessian is not positive definite even after damping (percdamp ", percdamp, ")");
  const Eigen::MatrixXf A = Eigen::MatrixXf(llt.matrixL()).reverse();
  const Eigen::MatrixXf U =
      A.triangularView<Eigen::Upper>().solve(Eigen::MatrixXf::Identity(K, K)).triangularView<Eigen::Upper>();
  LOWBIT_CHECK(U.allFinite(), where, "Hessian is numerically singular even after damping (percdamp ", percdamp, ")");

  Eigen::MatrixXf Q(M, K);
  for (std::size_t i1 = 0; i1 < std::size_t(K); i1 += block) {
    const std::size_t i2 = std::min(std::size_t(K), i1 + block), B = i2 - i1;
    Eigen::MatrixXf W1 = Wp.middleCols(Eigen::Index(i1), Eigen::Index(B));
    Eigen::MatrixXf E1(M, Eigen::Index(B));
    for (std::size_t i = 0; i < B; i += width) {
      const Eigen::Index c = Eigen::Index(i), v = Eigen::Index(std::min(width, B - i));
      auto q = Q.middleCols(Eigen::Index(i1) + c, v);
      quant(GptqStep{Wp, W1, U, perm, i1, i}, q);
      // E = (W - Q) U_ss^-1 (for width 1: (w - q) / U_ii).
      const Eigen::MatrixXf D = W1.middleCols(c, v) - q;
      const auto Uss = U.block(Eigen::Index(i1) + c, Eigen::Index(i1) + c, v, v);
      Eigen::MatrixXf E = Uss.transpose().triangularView<Eigen::Lower>().solve(D.transpose()).transpose();
      E1.middleCols(c, v) = E;
      const Eigen::Index rest = Eigen::Index(B) - c - v;
      if (rest > 0)
        W1.rightCols(rest).noalias() -= E * U.block(Eigen::Index(i1) + c, Eigen::Index(i1) + c + v, v, rest);
    }
    const Eigen::Index after = K - Eigen::Index(i2);
    if (after > 0)
      Wp.rightCols(after).noalias() -= E1 * U.block(Eigen::Index(i1), Eigen::Index(i2), Eigen::Index(B), after);
    if (progress) progress(i2, std::size_t(K));
  }
  // Back to the original column order.
  Eigen::MatrixXf out(M, K);
  for (Eigen::Index j = 0; j < K; ++j) out.col(Eigen::Index(perm[std::size_t(j)])) = Q.col(j);
  return out;
}

}  // namespace detail

namespace gptq {

struct Options {
  int bits = 4;
  std::size_t group = 128;        // along the input dimension; K: one group per row
  bool symmetric = false;
  ScaleType scale_type = ScaleType::fp16;
  Clip clip = Clip::minmax;       // the reference quantizer is min-max (mse: its --mse search)
  double percdamp = 0.01;         // damping, fraction of the mean diagonal
  bool act_order = false;         // columns in order of descending H_kk
  bool static_groups = false;     // fit group statistics up front (needed with act_order)
  std::size_t block = 128;        // lazy-batch block size
  int threads = 0;                // group fitting; the loop's products are Eigen's
  Progress progress;              // (columns done, K) after each block (core/progress.hpp)

  GroupFit fit() const { return GroupFit{bits, symmetric, scale_type, clip, 100, 0.8f}; }
};

struct Result {
  GroupQuantMatrix weights;
  std::vector<std::size_t> order;  // column order the loop used (identity without act_order)
};

namespace detail {

// Group RTN as a GPTQ column quantizer, recording codes and group parameters.
struct GroupColumnQuantizer {
  const Options& o;
  std::size_t M, K, G;
  std::vector<lowbit::detail::GroupParams> params;  // M x G
  std::vector<char> fitted;                         // per group
  std::vector<std::uint8_t> codes;                  // M x K, original column order

  std::size_t width() const { return 1; }

  // Fit group j's parameters for every row from columns [k0, k0 + n) of a
  // column-major M x K matrix W (positions p0 .. in the loop's order when
  // groups follow the loop; original columns when static).
  void fit_from(const Eigen::MatrixXf& W, std::size_t j, std::size_t k0, std::size_t n) {
    const GroupFit f = o.fit();
    parallel_for(M, 64, o.threads, [&](std::size_t r0, std::size_t r1) {
      std::vector<float> g(n);
      for (std::size_t r = r0; r < r1; ++r) {
        for (std::size_t k = 0; k < n; ++k) g[k] = W(Eigen::Index(r), Eigen::Index(k0 + k));
        params[r * G + j] = lowbit::detail::fit_group(g.data(), n, f);
      }
    });
    fitted[j] = 1;
  }

  void operator()(const lowbit::detail::GptqStep& s, Eigen::Ref<Eigen::MatrixXf> q) {
    const std::size_t pos = s.i1 + s.i, col = s.perm[pos], j = col / o.group;
    if (!fitted[j]) {
      // Non-static groups follow the loop's order, which is the original
      // order here (act_order requires static groups).
      fit_from(s.W, j, j * o.group, std::min(o.group, K - j * o.group));
    }
    for (std::size_t r = 0; r < M; ++r) {
      const lowbit::detail::GroupParams p = params[r * G + j];
      const int c = lowbit::detail::quantize_code(s.W1(Eigen::Index(r), Eigen::Index(s.i)), p, o.bits);
      codes[r * K + col] = std::uint8_t(c);
      q(Eigen::Index(r), 0) = lowbit::detail::dequantize_code(c, p);
    }
  }
};

}  // namespace detail

// GPTQ for one linear W (M x K) given the Hessian of its input (K x K, e.g.
// Calibration::hessian(); any positive scaling gives the same result).
inline Result quantize(ConstMatrixView<float> w, const Eigen::MatrixXd& hessian, const Options& o = {}) {
  const char* where = "gptq::quantize";
  lowbit::detail::check_group_fit(o.fit(), where);
  rtn::check_group(o.group, w.cols(), where);
  rtn::check_weights(w, where);
  const std::size_t M = w.rows(), K = w.cols();
  LOWBIT_CHECK(K > 0 && M > 0, where, "empty weight matrix ", M, "x", K);
  LOWBIT_CHECK(!o.act_order || o.static_groups || o.group >= K, where,
               "act_order with groups needs static_groups: the group format stores groups of consecutive inputs");
  lowbit::detail::check_hessian(hessian, Eigen::Index(K), where);  // before the static groups read it
  const std::size_t G = (K + o.group - 1) / o.group;
  Eigen::MatrixXf W = eigen_map(w);
  detail::GroupColumnQuantizer cq{o, M, K, G, std::vector<lowbit::detail::GroupParams>(M * G), std::vector<char>(G, 0),
                                  std::vector<std::uint8_t>(M * K, 0)};
  if (o.static_groups) {
    // Reference: groups fitted on the (dead-column-zeroed) original weights.
    Eigen::MatrixXf Wz = W;
    for (Eigen::Index k = 0; k < Eigen::Index(K); ++k)
      if (hessian(k, k) == 0.0) Wz.col(k).setZero();
    for (std::size_t j = 0; j < G; ++j) cq.fit_from(Wz, j, j * o.group, std::min(o.group, K - j * o.group));
  }
  Result res;
  lowbit::detail::gptq_loop(std::move(W), hessian, o.percdamp, o.act_order, o.block, cq, res.order, where,
                            o.progress);
  GroupQuantMatrix q = lowbit::detail::make_group_matrix(M, K, o.group, o.fit());
  std::vector<std::uint8_t> zeros(M * G);
  for (std::size_t r = 0; r < M; ++r) {
    for (std::size_t j = 0; j < G; ++j) {
      lowbit::detail::store_scale(q, r * G + j, cq.params[r * G + j].scale);
      zeros[r * G + j] = std::uint8_t(cq.params[r * G + j].zero);
    }
    bitpack::pack(cq.codes.data() + r * K, K, o.bits, q.codes.data() + r * q.row_bytes());
  }
  lowbit::detail::store_zeros(q, zeros);
  res.weights = std::move(q);
  return res;
}

}  // namespace gptq
}  // namespace lowbit
