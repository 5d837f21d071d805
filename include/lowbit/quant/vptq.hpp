// VPTQ (Liu et al., "VPTQ: Extreme Low-bit Vector Post-Training Quantization
// for Large Language Models", 2024) on the GPTQ loop of quant/gptq.hpp,
// following the reference (vptq.py fast_vector_quant, quantizer.py
// NPVectorQuantizer):
//
//  - Normalization (optional, reference enable_norm with norm_dim 0): each
//    input column is shifted by its mean and divided by its standard
//    deviation, both stored in fp16. Unlike the reference, the loop then
//    uses the Hessian of the normalized problem, S H S (S = diag(scale)), so
//    that it still minimizes the layer's output error.
//  - Column order: act-order (descending H_kk, reference enable_perm). The
//    first outlier_percent % of the columns in that order (the most
//    sensitive) form the outlier part, with its own codebook (§3.3).
//  - Vectors: along the output axis by default, v rows of one column, so
//    each loop step quantizes one column and GPTQ's error feedback applies
//    unchanged ("channel-independent second-order optimization", §3.1);
//    axis = input cuts v inputs of one row instead (one step quantizes v
//    columns, the error fed back through the v x v block of U), the layout
//    the lookup-table kernel needs.
//  - Codebooks: weighted k-means (quant/kmeans.hpp) on each part's vectors,
//    weights the Hessian diagonal of the vector's column (mean over the
//    vector for the input axis), §3.2; stored in fp16, and the loop
//    quantizes against the fp16 values. Nearest centroid by Euclidean
//    distance, as the reference's cdist.
//  - Residual VQ (§3.3): the loop runs once with the main codebook; a second
//    codebook is trained by weighted k-means on what that pass left
//    (each vector minus its centroid), then the loop runs again quantizing
//    each vector to centroid + residual centroid.
#pragma once

#include <cmath>
#include <memory>
#include <vector>

#include "../format/vq.hpp"
#include "gptq.hpp"
#include "kmeans.hpp"

namespace lowbit::vptq {

struct Options {
  std::size_t vector = 8;              // v, 2..16
  std::size_t codebook = 65536;        // k, a power of two up to 65536
  std::size_t residual_codebook = 0;   // second level (0: none)
  VqAxis axis = VqAxis::output;
  double outlier_percent = 0;          // reference npercent
  std::size_t outlier_codebook = 0;    // k of the outlier part (needed when outlier_percent > 0)
  bool normalize = false;              // reference enable_norm
  bool act_order = true;               // reference enable_perm
  double percdamp = 0.01;
  std::size_t block = 128;             // rounded down to a multiple of v on the input axis
  KmeansOptions kmeans;
  int threads = 0;                     // searches, k-means; the loop's products are Eigen's
  Progress progress;                   // (columns done, K x passes) after each block; two passes
                                       // with a residual codebook (core/progress.hpp)
};

namespace detail {

using lowbit::detail::RowMatrixXf;

struct Level {
  RowMatrixXf C;  // fp16-rounded centroids
  std::shared_ptr<lowbit::detail::CentroidSearch> search;
};

inline Level make_level(RowMatrixXf C, const Options& o) {
  for (Eigen::Index i = 0; i < C.size(); ++i) C.data()[i] = fp16::from_float(C.data()[i]).to_float();
  Level l{std::move(C), nullptr};
  l.search = std::make_shared<lowbit::detail::CentroidSearch>(l.C, o.kmeans.probes,
                                                                  lowbit::detail::exact_search_limit, o.threads);
  return l;
}

// Columns per loop step: 1 on the output axis, v on the input axis.
inline std::size_t width_of(VqAxis axis, std::size_t v) { return axis == VqAxis::output ? 1 : v; }

// The vectors of a part's step: columns [c, c + width) of W (M x .).
// Output axis: width 1, vector a = rows [a v, a v + v). Input axis: width v,
// vector a = row a.
inline RowMatrixXf step_vectors(const Eigen::MatrixXf& W, Eigen::Index c, VqAxis axis, std::size_t v) {
  if (axis == VqAxis::output)
    return Eigen::Map<const RowMatrixXf>(W.col(c).data(), W.rows() / Eigen::Index(v), Eigen::Index(v));
  return W.middleCols(c, Eigen::Index(v));
}

struct Part {
  std::size_t p0 = 0, nb = 0;  // first position, vectors per vector row
  std::vector<Level> levels;
  std::vector<std::vector<std::uint32_t>> idx;  // per level, index a nb + b
  RowMatrixXf left;                             // what the levels left, per vector (residual training)
};

// VPTQ's vector quantizer as a GPTQ column quantizer.
struct VectorQuantizer {
  VqAxis axis;
  std::size_t M, v;
  Part* parts[2];  // outlier (may be empty), main

  std::size_t width() const { return width_of(axis, v); }

  void operator()(const lowbit::detail::GptqStep& s, Eigen::Ref<Eigen::MatrixXf> q) {
    const std::size_t pos = s.i1 + s.i;
    Part& p = *parts[pos < parts[1]->p0 ? 0 : 1];
    const std::size_t b = axis == VqAxis::output ? pos - p.p0 : (pos - p.p0) / v;
    RowMatrixXf R = step_vectors(s.W1, Eigen::Index(s.i), axis, v);
    RowMatrixXf Y = RowMatrixXf::Zero(R.rows(), R.cols());
    std::vector<std::uint32_t> id(std::size_t(R.rows()));
    for (std::size_t l = 0; l < p.levels.size(); ++l) {
      p.levels[l].search->nearest(R, id.data());
      for (std::size_t a = 0; a < id.size(); ++a) {
        const auto c = p.levels[l].C.row(id[a]);
        Y.row(Eigen::Index(a)) += c;
        R.row(Eigen::Index(a)) -= c;
        p.idx[l][a * p.nb + b] = id[a];
      }
    }
    if (p.left.size() > 0)
      for (Eigen::Index a = 0; a < R.rows(); ++a) p.left.row(a * Eigen::Index(p.nb) + Eigen::Index(b)) = R.row(a);
    if (axis == VqAxis::output) q.col(0) = Eigen::Map<const Eigen::VectorXf>(Y.data(), Eigen::Index(M));
    else q = Y;
  }
};

// All vectors of a part of Wp (permuted columns), index a nb + b, with their
// k-means weights (the Hessian diagonal of their columns, hd).
inline std::pair<RowMatrixXf, std::vector<float>> part_vectors(const Eigen::MatrixXf& Wp, const Part& p, VqAxis axis,
                                                               std::size_t v, const std::vector<double>& hd) {
  const std::size_t A = axis == VqAxis::output ? std::size_t(Wp.rows()) / v : std::size_t(Wp.rows());
  RowMatrixXf X(Eigen::Index(A * p.nb), Eigen::Index(v));
  std::vector<float> w(A * p.nb);
  for (std::size_t b = 0; b < p.nb; ++b) {
    const std::size_t c = axis == VqAxis::output ? p.p0 + b : p.p0 + b * v;
    const RowMatrixXf V = step_vectors(Wp, Eigen::Index(c), axis, v);
    double wt = 0;
    for (std::size_t t = 0; t < width_of(axis, v); ++t) wt += hd[c + t];
    wt /= double(width_of(axis, v));
    for (std::size_t a = 0; a < A; ++a) {
      X.row(Eigen::Index(a * p.nb + b)) = V.row(Eigen::Index(a));
      w[a * p.nb + b] = float(wt);
    }
  }
  return {std::move(X), std::move(w)};
}

inline VqCodebook pack_level(const Level& l, const std::vector<std::uint32_t>& idx) {
  VqCodebook c;
  c.entries = std::size_t(l.C.rows());
  std::vector<std::uint16_t> h(std::size_t(l.C.size()));
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = fp16::from_float(l.C.data()[i]).bits;
  c.centroids = std::move(h);
  c.indices = lowbit::detail::vq_pack_indices(idx.data(), idx.size(), c.index_bits());
  return c;
}

inline void check_codebook(std::size_t k, const char* what, const char* where) {
  LOWBIT_CHECK(k >= 2 && k <= 65536 && lowbit::detail::log2_exact(k) > 0, where, what,
               " must be a power of two in 2..65536, got ", k);
}

}  // namespace detail

// VPTQ for one linear W (M x K) given the Hessian of its input (K x K, e.g.
// Calibration::hessian()).
inline VqMatrix quantize(ConstMatrixView<float> w, const Eigen::MatrixXd& hessian, const Options& o = {}) {
  using detail::RowMatrixXf;
  const char* where = "vptq::quantize";
  rtn::check_weights(w, where);
  const std::size_t M = w.rows(), K = w.cols(), v = o.vector;
  LOWBIT_CHECK(M > 0 && K > 0, where, "empty weight matrix ", M, "x", K);
  LOWBIT_CHECK(v >= 2 && v <= 16, where, "vector length must be in 2..16, got ", v);
  detail::check_codebook(o.codebook, "codebook", where);
  if (o.residual_codebook) detail::check_codebook(o.residual_codebook, "residual_codebook", where);
  LOWBIT_CHECK(o.outlier_percent >= 0 && o.outlier_percent < 100, where, "outlier_percent must be in [0, 100), got ",
               o.outlier_percent);
  if (o.outlier_percent > 0) detail::check_codebook(o.outlier_codebook, "outlier_codebook", where);
  LOWBIT_CHECK(o.axis != VqAxis::output || M % v == 0, where, "vector length ", v, " does not divide M = ", M,
               " (vectors along the output axis)");
  LOWBIT_CHECK(o.axis != VqAxis::input || K % v == 0, where, "vector length ", v, " does not divide K = ", K,
               " (vectors along the input axis)");
  lowbit::detail::check_hessian(hessian, Eigen::Index(K), where);
  LOWBIT_CHECK(hessian.diagonal().maxCoeff() > 0, where, "the Hessian is zero: empty calibration");

  VqMatrix q;
  q.rows = M;
  q.cols = K;
  q.vector = v;
  q.axis = o.axis;
  Eigen::MatrixXf W = eigen_map(w);
  Eigen::MatrixXd H = hessian;
  if (o.normalize) {
    std::vector<std::uint16_t> sc(K), bi(K);
    Eigen::VectorXd s(static_cast<Eigen::Index>(K));
    for (std::size_t k = 0; k < K; ++k) {
      const auto col = W.col(Eigen::Index(k)).cast<double>();
      const double mean = col.mean();
      const double sd = M > 1 ? std::sqrt((col.array() - mean).square().sum() / double(M - 1)) : 0.0;
      fp16 hs = fp16::from_float(float(sd));
      if (!(hs.to_float() > 0) || !std::isfinite(hs.to_float())) hs = fp16::from_float(1.0f);
      const fp16 hb = fp16::from_float(float(mean));
      sc[k] = hs.bits;
      bi[k] = hb.bits;
      s[Eigen::Index(k)] = double(hs.to_float());
      W.col(Eigen::Index(k)) = (W.col(Eigen::Index(k)).array() - hb.to_float()) / hs.to_float();
    }
    H = s.asDiagonal() * H * s.asDiagonal();
    q.scale = std::move(sc);
    q.bias = std::move(bi);
  }

  // Column order and parts.
  const std::vector<std::size_t> perm = lowbit::detail::gptq_order(H, o.act_order);
  std::size_t n_o = std::size_t(std::ceil(o.outlier_percent / 100.0 * double(K)));
  if (o.axis == VqAxis::input) n_o = (n_o + v - 1) / v * v;
  LOWBIT_CHECK(n_o < K, where, "outlier_percent ", o.outlier_percent, " leaves no columns for the main codebook");
  q.outlier_columns = n_o;
  detail::Part outl, mainp;
  outl.nb = q.vectors_per_row(n_o);
  mainp.p0 = n_o;
  mainp.nb = q.vectors_per_row(K - n_o);

  // Initial codebooks: weighted k-means over each part's vectors of the
  // permuted weights (dead inputs zeroed, as the loop will see them).
  Eigen::MatrixXf Wp(W.rows(), W.cols());
  std::vector<double> hd(K);
  for (std::size_t j = 0; j < K; ++j) {
    const auto c = Eigen::Index(perm[j]);
    hd[j] = H(c, c);
    if (hd[j] == 0.0) Wp.col(Eigen::Index(j)).setZero();
    else Wp.col(Eigen::Index(j)) = W.col(c);
  }
  KmeansOptions ko = o.kmeans;
  ko.threads = o.threads;
  const auto train = [&](const RowMatrixXf& X, const std::vector<float>& wt, std::size_t k) {
    return detail::make_level(lowbit::detail::kmeans(X, wt, k, ko, where), o);
  };
  if (n_o) {
    const auto [X, wt] = detail::part_vectors(Wp, outl, o.axis, v, hd);
    outl.levels.push_back(train(X, wt, o.outlier_codebook));
  }
  // The main part's weights serve its residual codebook too.
  std::vector<float> main_wt;
  {
    auto [X, wt] = detail::part_vectors(Wp, mainp, o.axis, v, hd);
    mainp.levels.push_back(train(X, wt, o.codebook));
    main_wt = std::move(wt);
  }

  const std::size_t A = q.vector_rows();
  const std::size_t block = o.axis == VqAxis::output ? o.block : std::max(o.block / v, std::size_t(1)) * v;
  const std::size_t passes = o.residual_codebook ? 2 : 1;
  std::size_t pass = 0;
  const auto run = [&]() {
    for (detail::Part* p : {&outl, &mainp}) p->idx.assign(p->levels.size(), std::vector<std::uint32_t>(A * p->nb));
    detail::VectorQuantizer vq{o.axis, M, v, {&outl, &mainp}};
    std::vector<std::size_t> order;
    Progress each;
    if (o.progress) each = [&](std::size_t done, std::size_t) { o.progress(pass * K + done, passes * K); };
    lowbit::detail::gptq_loop(W, H, o.percdamp, o.act_order, block, vq, order, where, each);
    ++pass;
  };
  if (o.residual_codebook) {
    mainp.left.resize(Eigen::Index(A * mainp.nb), Eigen::Index(v));
    run();
    mainp.levels.push_back(train(mainp.left, main_wt, o.residual_codebook));
    mainp.left.resize(0, 0);
  }
  run();

  bool identity = true;
  for (std::size_t j = 0; j < K; ++j) identity = identity && perm[j] == j;
  if (!identity) q.perm = std::vector<std::uint32_t>(perm.begin(), perm.end());
  for (std::size_t l = 0; l < outl.levels.size(); ++l) q.outlier.push_back(detail::pack_level(outl.levels[l], outl.idx[l]));
  for (std::size_t l = 0; l < mainp.levels.size(); ++l) q.main.push_back(detail::pack_level(mainp.levels[l], mainp.idx[l]));
  return q;
}

}  // namespace lowbit::vptq
