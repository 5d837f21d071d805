// Codebook training and nearest-centroid search for vector quantization
// (quant/vptq.hpp): the hot loops of VPTQ.
//
// CentroidSearch finds the nearest centroid (squared Euclidean distance) of
// many vectors at once. Distances come from matrix products,
//   argmin_c |x - c|^2 = argmin_c (|c|^2 / 2 - c . x),
// so the work is Eigen GEMMs over blocks of queries. Up to exact_limit
// centroids the search is exact. Above it (the 65,536-entry codebooks VPTQ
// uses at 2 bits) it is an inverted file: the centroids are grouped into
// about sqrt(k) cells by a few Lloyd steps, and a vector is compared with the
// centroids of its `probes` nearest cells only (Jegou et al., "Product
// quantization for nearest neighbor search", 2011, §4): about
// (sqrt(k) + probes sqrt(k)) v multiply-adds per vector instead of k v, at a
// small loss of exactness that the tests measure.
//
// kmeans() is weighted Lloyd, as the reference's cuml KMeans with sample
// weights (VPTQ §3.2: the weights are the Hessian diagonal): random initial
// centroids (init='random'), at most `iterations` rounds, stopping when the
// weighted inertia improves by less than tol relative; inputs larger than
// max_samples are trained on a uniform sample.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include <Eigen/Core>

#include "../core/error.hpp"
#include "../core/parallel.hpp"

namespace lowbit {

struct KmeansOptions {
  // The reference (on a GPU) runs up to 100 rounds on all vectors; on a CPU
  // core lowbit's defaults stop at 20 rounds on at most 2^19 vectors, which
  // keeps a 4096 x 4096 layer with 65,536 centroids within minutes
  // (bench_quantize); quality versus rounds: tests/test_vptq.cpp.
  std::size_t iterations = 20;         // reference kiter: 100
  double tol = 1e-5;                   // reference ktol (here: relative inertia change)
  std::size_t max_samples = 1u << 19;  // train on a uniform sample of larger inputs
  unsigned seed = 0;
  std::size_t probes = 8;              // CentroidSearch, above exact_limit centroids
  int threads = 0;
};

}  // namespace lowbit

namespace lowbit::detail {

using RowMatrixXf = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Codebooks up to this size are searched exhaustively.
inline constexpr std::size_t exact_search_limit = 4096;

class CentroidSearch {
 public:
  explicit CentroidSearch(const RowMatrixXf& C, std::size_t probes = 8, std::size_t exact_limit = exact_search_limit,
                          int threads = 1)
      : threads_(threads) {
    const std::size_t k = std::size_t(C.rows());
    LOWBIT_CHECK(k > 0 && C.cols() > 0, "CentroidSearch", "empty codebook");
    if (k <= exact_limit) {
      cells_ = 1;
      start_ = {0, k};
      ids_.resize(k);
      std::iota(ids_.begin(), ids_.end(), std::uint32_t(0));
      C_ = C;
    } else {
      build_cells(C, probes);
    }
    half_norm_ = 0.5f * C_.rowwise().squaredNorm().transpose();
  }

  // out[i] := the nearest centroid of row i of X (n x v).
  void nearest(const RowMatrixXf& X, std::uint32_t* out) const {
    const std::size_t n = std::size_t(X.rows());
    parallel_for(n, query_block, threads_, [&](std::size_t i0, std::size_t i1) {
      for (std::size_t b = i0; b < i1; b += query_block) search(X, b, std::min(i1, b + query_block), out);
    });
  }

 private:
  static constexpr std::size_t query_block = 2048;

  void build_cells(const RowMatrixXf& C, std::size_t probes) {
    const std::size_t k = std::size_t(C.rows());
    std::size_t nc = 1;
    while (nc * nc < k) nc *= 2;
    cells_ = nc;
    probes_ = std::min(std::max<std::size_t>(probes, 1), nc);
    // Coarse centers: every (k / nc)-th centroid, then a few exact Lloyd steps.
    RowMatrixXf centers(Eigen::Index(nc), C.cols());
    for (std::size_t c = 0; c < nc; ++c) centers.row(Eigen::Index(c)) = C.row(Eigen::Index(c * k / nc));
    std::vector<std::uint32_t> cell(k);
    for (int it = 0; it < 4; ++it) {
      CentroidSearch(centers, 1, nc, threads_).nearest(C, cell.data());
      Eigen::MatrixXf sum = Eigen::MatrixXf::Zero(Eigen::Index(nc), C.cols());
      std::vector<std::size_t> count(nc, 0);
      for (std::size_t i = 0; i < k; ++i) {
        sum.row(cell[i]) += C.row(Eigen::Index(i));
        ++count[cell[i]];
      }
      for (std::size_t c = 0; c < nc; ++c)
        if (count[c]) centers.row(Eigen::Index(c)) = sum.row(Eigen::Index(c)) / float(count[c]);
    }
    coarse_ = std::make_shared<const CentroidSearch>(centers, 1, nc, threads_);
    coarse_->nearest(C, cell.data());
    // Centroids stored cell by cell.
    start_.assign(nc + 1, 0);
    for (std::uint32_t c : cell) ++start_[c + 1];
    std::partial_sum(start_.begin(), start_.end(), start_.begin());
    std::vector<std::size_t> at(start_.begin(), start_.end() - 1);
    ids_.resize(k);
    C_.resize(C.rows(), C.cols());
    for (std::size_t i = 0; i < k; ++i) {
      const std::size_t j = at[cell[i]]++;
      ids_[j] = std::uint32_t(i);
      C_.row(Eigen::Index(j)) = C.row(Eigen::Index(i));
    }
  }

  // Best of centroids [c0, c1) (storage order) for the queries Q (m x v);
  // improves best/score in place. Blocks of at most 1024 x 256 distances
  // (1 MiB, reused); the column minima are vectorized (Eigen), the position
  // is looked up only where a column improves.
  void scan(std::size_t c0, std::size_t c1, const RowMatrixXf& Q, std::uint32_t* best, float* score) const {
    thread_local Eigen::MatrixXf D;
    for (Eigen::Index q0 = 0; q0 < Q.rows(); q0 += 256) {
      const Eigen::Index nq = std::min<Eigen::Index>(256, Q.rows() - q0);
      for (std::size_t b0 = c0; b0 < c1; b0 += 1024) {
        const Eigen::Index n = Eigen::Index(std::min<std::size_t>(1024, c1 - b0));
        D.resize(n, nq);
        D.noalias() = -C_.middleRows(Eigen::Index(b0), n) * Q.middleRows(q0, nq).transpose();
        D.colwise() += half_norm_.segment(Eigen::Index(b0), n).transpose();
        const Eigen::RowVectorXf mins = D.colwise().minCoeff();
        for (Eigen::Index j = 0; j < nq; ++j) {
          if (!(mins[j] < score[q0 + j])) continue;
          const float* d = D.col(j).data();
          Eigen::Index c = 0;
          while (d[c] != mins[j]) ++c;
          score[q0 + j] = mins[j];
          best[q0 + j] = ids_[b0 + std::size_t(c)];
        }
      }
    }
  }

  void search(const RowMatrixXf& X, std::size_t i0, std::size_t i1, std::uint32_t* out) const {
    const std::size_t m = i1 - i0;
    const RowMatrixXf Q = X.middleRows(Eigen::Index(i0), Eigen::Index(m));
    std::vector<float> score(m, std::numeric_limits<float>::infinity());
    std::fill(out + i0, out + i1, ids_[0]);
    if (cells_ == 1) return scan(0, std::size_t(C_.rows()), Q, out + i0, score.data());
    // The probes nearest non-empty cells of each query (a small insertion
    // list), then one product per cell with the queries that probe it.
    Eigen::MatrixXf Dc = (-coarse_->C_) * Q.transpose();  // cells x m (coarse_ is exact: storage = id order)
    Dc.colwise() += coarse_->half_norm_.transpose();
    std::vector<std::uint32_t> probe(m * probes_), count(cells_ + 1, 0);
    std::vector<float> top(probes_);
    for (std::size_t j = 0; j < m; ++j) {
      const float* d = Dc.col(Eigen::Index(j)).data();
      std::uint32_t* pj = probe.data() + j * probes_;
      std::size_t have = 0;
      for (std::size_t c = 0; c < cells_; ++c) {
        if (start_[c] == start_[c + 1] || (have == probes_ && !(d[c] < top[have - 1]))) continue;
        std::size_t at = std::min(have, probes_ - 1);
        for (; at > 0 && d[c] < top[at - 1]; --at) {
          top[at] = top[at - 1];
          pj[at] = pj[at - 1];
        }
        top[at] = d[c];
        pj[at] = std::uint32_t(c);
        have = std::min(have + 1, probes_);
      }
      for (std::size_t p = 0; p < have; ++p) ++count[pj[p] + 1];
      for (std::size_t p = have; p < probes_; ++p) pj[p] = std::uint32_t(-1);
    }
    // Queries grouped by cell (counting sort).
    for (std::size_t c = 0; c < cells_; ++c) count[c + 1] += count[c];
    std::vector<std::uint32_t> by_cell(count[cells_]), at(count.begin(), count.end() - 1);
    for (std::size_t j = 0; j < m; ++j)
      for (std::size_t p = 0; p < probes_; ++p)
        if (probe[j * probes_ + p] != std::uint32_t(-1)) by_cell[at[probe[j * probes_ + p]]++] = std::uint32_t(j);
    RowMatrixXf Qc;
    std::vector<std::uint32_t> b;
    std::vector<float> sc;
    for (std::size_t c = 0; c < cells_; ++c) {
      const std::size_t q0 = count[c], nq = count[c + 1] - q0;
      if (nq == 0) continue;
      Qc.resize(Eigen::Index(nq), X.cols());
      b.resize(nq);
      sc.resize(nq);
      for (std::size_t t = 0; t < nq; ++t) {
        const std::uint32_t j = by_cell[q0 + t];
        Qc.row(Eigen::Index(t)) = Q.row(Eigen::Index(j));
        b[t] = out[i0 + j];
        sc[t] = score[j];
      }
      scan(start_[c], start_[c + 1], Qc, b.data(), sc.data());
      for (std::size_t t = 0; t < nq; ++t) {
        const std::uint32_t j = by_cell[q0 + t];
        out[i0 + j] = b[t];
        score[j] = sc[t];
      }
    }
  }

  int threads_ = 1;
  std::size_t cells_ = 1, probes_ = 1;
  std::vector<std::size_t> start_;   // cell c holds storage rows [start_[c], start_[c+1])
  std::vector<std::uint32_t> ids_;   // centroid id of each storage row
  RowMatrixXf C_;                    // centroids in storage order
  Eigen::RowVectorXf half_norm_;     // |c|^2 / 2, storage order
  std::shared_ptr<const CentroidSearch> coarse_;
};

// Weighted k-means of the rows of X (n x v) with weights w (n, >= 0; all
// zero: unweighted) into k centroids (k x v).
inline RowMatrixXf kmeans(const RowMatrixXf& X, const std::vector<float>& w, std::size_t k, const KmeansOptions& o,
                          const char* where) {
  const std::size_t n = std::size_t(X.rows());
  LOWBIT_CHECK(k >= 1 && n >= k, where, "a codebook of ", k, " entries needs at least ", k, " vectors, got ", n);
  LOWBIT_CHECK(w.size() == n, where, "k-means weights have ", w.size(), " entries for ", n, " vectors");
  std::mt19937_64 rng(o.seed);
  // Training set: all rows, or a uniform sample without replacement.
  std::vector<std::uint32_t> rows(n);
  std::iota(rows.begin(), rows.end(), std::uint32_t(0));
  const std::size_t ns = std::max(k, std::min(n, o.max_samples));
  for (std::size_t i = 0; i < ns && ns < n; ++i)
    std::swap(rows[i], rows[i + std::uniform_int_distribution<std::size_t>(0, n - 1 - i)(rng)]);
  rows.resize(ns);
  RowMatrixXf S(Eigen::Index(ns), X.cols());
  std::vector<double> sw(ns);
  double wsum = 0;
  for (std::size_t i = 0; i < ns; ++i) {
    S.row(Eigen::Index(i)) = X.row(Eigen::Index(rows[i]));
    sw[i] = double(w[rows[i]]);
    wsum += sw[i];
  }
  if (!(wsum > 0)) std::fill(sw.begin(), sw.end(), 1.0);
  // init='random': k distinct training vectors, preferring positive weights.
  std::vector<std::uint32_t> order(ns);
  std::iota(order.begin(), order.end(), std::uint32_t(0));
  std::shuffle(order.begin(), order.end(), rng);
  std::stable_partition(order.begin(), order.end(), [&](std::uint32_t i) { return sw[i] > 0; });
  RowMatrixXf C(Eigen::Index(k), X.cols());
  for (std::size_t c = 0; c < k; ++c) C.row(Eigen::Index(c)) = S.row(Eigen::Index(order[c]));

  std::vector<std::uint32_t> label(ns);
  double prev = std::numeric_limits<double>::infinity();
  for (std::size_t it = 0; it < o.iterations; ++it) {
    CentroidSearch(C, o.probes, exact_search_limit, o.threads).nearest(S, label.data());
    Eigen::MatrixXd sum = Eigen::MatrixXd::Zero(Eigen::Index(k), X.cols());
    std::vector<double> mass(k, 0.0);
    double inertia = 0;
    for (std::size_t i = 0; i < ns; ++i) {
      const auto r = S.row(Eigen::Index(i));
      sum.row(label[i]) += sw[i] * r.cast<double>();
      mass[label[i]] += sw[i];
      inertia += sw[i] * double((r - C.row(label[i])).squaredNorm());
    }
    for (std::size_t c = 0; c < k; ++c)
      if (mass[c] > 0) C.row(Eigen::Index(c)) = (sum.row(Eigen::Index(c)) / mass[c]).cast<float>();
      else C.row(Eigen::Index(c)) = S.row(Eigen::Index(std::uniform_int_distribution<std::size_t>(0, ns - 1)(rng)));
    // inertia is that of this round's assignment to last round's centroids.
    if (std::isfinite(prev) && prev - inertia <= o.tol * prev) break;
    prev = inertia;
  }
  return C;
}

}  // namespace lowbit::detail
