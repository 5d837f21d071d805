// y = W x for the VQ format (format/vq.hpp):
//
//   y = sum_p xs[p] Wn[:, p] + (bias . x),   xs[p] = x[perm[p]] scale[perm[p]]
//
// with Wn the normalized weights by position, read straight from indices
// and codebooks, one level of one part at a time (kernels/vq_kernel.hpp):
// output-axis vectors as gathered centroids times a broadcast activation;
// input-axis vectors as centroid-activation dot products, or, for codebooks
// of at most 256 entries, table lookups (kernels/lut_gemv.hpp).
// Vector rows run in parallel and every output is computed the same way for
// any thread count (bit-identical results).
#pragma once

#include <vector>

#include "../core/parallel.hpp"
#include "../format/vq.hpp"
#include "gemv.hpp"

namespace lowbit {

inline void gemv(const VqMatrix& w, span<const float> x, span<float> y, const RunOptions& opt = {}) {
  w.validate(false);
  LOWBIT_CHECK(x.size() == w.cols, "gemv", "x has ", x.size(), " elements, W has K = ", w.cols, " columns");
  LOWBIT_CHECK(y.size() == w.rows, "gemv", "y has ", y.size(), " elements, W has M = ", w.rows, " rows");
  LOWBIT_CHECK(opt.activations == Activations::fp32, "gemv", "the VQ kernel takes fp32 activations");
  const std::size_t K = w.cols, v = w.vector;
  const auto& kt = detail::active_kernels();
  std::vector<float> xs(K);
  float bias = 0;  // bias . x
  for (std::size_t p = 0; p < K; ++p) {
    const std::size_t c = w.column(p);
    xs[p] = w.scale.empty() ? x[c] : x[c] * fp16::from_bits(w.scale[c]).to_float();
  }
  for (std::size_t k = 0; k < w.bias.size(); ++k) bias += fp16::from_bits(w.bias[k]).to_float() * x[k];
  std::fill(y.begin(), y.end(), bias);

  struct Job {
    detail::VqLevel l;
    const float* xs;
    std::size_t k, table;  // table: offset into the lookup tables, or npos
  };
  constexpr std::size_t none = std::size_t(-1);
  std::vector<Job> jobs;
  std::size_t table_floats = 0;
  const auto add = [&](const std::vector<VqCodebook>& levels, std::size_t p0, std::size_t n) {
    for (const VqCodebook& c : levels) {
      Job j{{c.centroids.data(), c.indices.data(), c.index_bits(), v, w.vectors_per_row(n)}, xs.data() + p0,
            c.entries, none};
      if (w.axis == VqAxis::input && c.entries <= detail::lut_max_entries && j.l.nb > 0) {
        j.table = table_floats;
        table_floats += j.l.nb * c.entries;
      }
      jobs.push_back(j);
    }
  };
  add(w.outlier, 0, w.outlier_columns);
  add(w.main, w.outlier_columns, K - w.outlier_columns);
  const int threads = detail::threads_for(w.rows, K, opt.threads);

  // Lookup tables, in a buffer kept by the calling thread (no page faults
  // per call); the workers get its address, not their own thread_local.
  thread_local std::vector<float> tables;
  if (tables.size() < table_floats) tables.resize(table_floats);
  float* const T = tables.data();
  std::vector<float> ct;
  for (const Job& j : jobs) {
    if (j.table == none) continue;
    ct.resize(j.k * v);  // codebook as floats, transposed
    for (std::size_t c = 0; c < j.k; ++c)
      for (std::size_t t = 0; t < v; ++t) ct[t * j.k + c] = fp16::from_bits(j.l.centroids[c * v + t]).to_float();
    parallel_for(j.l.nb, 16, threads, [&](std::size_t b0, std::size_t b1) {
      kt.lut_build(ct.data(), j.k, v, j.xs, b0, b1, T + j.table);
    });
  }
  parallel_for(w.vector_rows(), w.axis == VqAxis::output ? 8 : 16, threads, [&](std::size_t a0, std::size_t a1) {
    for (const Job& j : jobs) {
      if (w.axis == VqAxis::output) kt.vq_axpy(j.l, j.xs, y.data(), a0, a1);
      else if (j.table != none)
        detail::with_index_bits(j.l.bits, [&](auto B) { detail::lut_lookup<B()>(j.l, j.k, T + j.table, y.data(), a0, a1); });
      else kt.vq_dot(j.l, j.xs, y.data(), a0, a1);
    }
  });
}

}  // namespace lowbit
