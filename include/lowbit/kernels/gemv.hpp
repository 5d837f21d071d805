// One verb for every format: gemv(W, x, y) computes y = W x, and
// gemm(W, X, Y) computes Y = X W^T for a batch of tokens (X: N x K, one
// token per row; Y: N x M), i.e. a linear layer applied to N tokens.
//
// With Activations::int8, activations are quantized per block of 32 and the
// products are integer dot products (kernels/group_gemv.hpp). Activations
// with NaN or Inf take the fp32 path, so they propagate as IEEE arithmetic
// would rather than being quantized into garbage.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "../core/parallel.hpp"
#include "../core/types.hpp"
#include "../core/view.hpp"
#include "../format/bit_plane.hpp"
#include "dispatch.hpp"

namespace lowbit {

namespace detail {

// No NaN or Inf in x: an all-ones exponent. Integer OR, so the compiler
// vectorizes it (a float sum is one serial chain: 4 cycles per element, 5 us
// for K = 4096).
inline bool all_finite(const float* x, std::size_t n) noexcept {
  std::uint32_t bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t u;
    std::memcpy(&u, x + i, 4);
    bad |= std::uint32_t((u & 0x7F800000u) == 0x7F800000u);
  }
  return bad == 0;
}

// The activation layout the kernel table expects for w (the scalar
// reference, and the fallback for g % 32 != 0, read natural order).
inline int x_lanes(const kernel_table& k, const GroupQuantMatrix& w) noexcept {
  return w.group % act_block == 0 ? k.f32_lanes : 0;
}

}  // namespace detail

inline void gemv(const GroupQuantMatrix& w, span<const float> x, span<float> y, const RunOptions& opt = {}) {
  w.validate();
  LOWBIT_CHECK(x.size() == w.cols, "gemv", "x has ", x.size(), " elements, W has K = ", w.cols, " columns");
  LOWBIT_CHECK(y.size() == w.rows, "gemv", "y has ", y.size(), " elements, W has M = ", w.rows, " rows");
  LOWBIT_CHECK(x.data() != nullptr || x.empty(), "gemv", "x is null");
  LOWBIT_CHECK(y.data() != nullptr || y.empty(), "gemv", "y is null");
  if (w.rows == 0) return;
  if (w.cols == 0) {
    for (float& v : y) v = 0.0f;
    return;
  }
  const auto& k = detail::active_kernels();
  detail::PreparedActivations a;
  const bool int8 = opt.activations == Activations::int8 && detail::all_finite(x.data(), x.size());
  a.prepare(x.data(), w.cols, w.group, int8, detail::x_lanes(k, w), k.quantize_i8);
  parallel_for(w.rows, 16, detail::threads_for(w.rows, w.cols, opt.threads),
               [&](std::size_t r0, std::size_t r1) { k.group_gemv(w, a, y.data(), r0, r1); });
}

inline void gemm(const GroupQuantMatrix& w, ConstMatrixView<float> X, MatrixView<float> Y,
                 const RunOptions& opt = {}) {
  w.validate();
  LOWBIT_CHECK(X.cols() == w.cols, "gemm", "X has ", X.cols(), " columns, W has K = ", w.cols);
  LOWBIT_CHECK(Y.rows() == X.rows(), "gemm", "Y has ", Y.rows(), " rows for ", X.rows(), " tokens in X");
  LOWBIT_CHECK(Y.cols() == w.rows, "gemm", "Y has ", Y.cols(), " columns, W has M = ", w.rows, " rows");
  const std::size_t n = X.rows();
  if (n == 0 || w.rows == 0) return;
  if (w.cols == 0) {
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t r = 0; r < w.rows; ++r) Y(i, r) = 0.0f;
    return;
  }
  bool int8 = opt.activations == Activations::int8;
  for (std::size_t i = 0; i < n && int8; ++i) int8 = detail::all_finite(X.row(i), X.cols());
  const auto& k = detail::active_kernels();
  std::vector<detail::PreparedActivations> a(n);
  for (std::size_t i = 0; i < n; ++i)
    a[i].prepare(X.row(i), w.cols, w.group, int8, detail::x_lanes(k, w), k.quantize_i8);
  parallel_for(w.rows, 16, detail::threads_for(w.rows * n, w.cols, opt.threads),
               [&](std::size_t r0, std::size_t r1) { k.group_gemm(w, a.data(), n, Y.data(), Y.stride(), r0, r1); });
}

// y = W x with the bit-serial lookup-table kernel (format/bit_plane.hpp,
// kernels/lut_gemv.hpp). Its tables hold sums of 4 activations as int8, so
// the caller says Activations::int8; activations with NaN or Inf take float
// tables (scalar) and propagate.
inline void gemv(const BitPlaneMatrix& w, span<const float> x, span<float> y, const RunOptions& opt = {}) {
  w.validate();
  LOWBIT_CHECK(x.size() == w.cols, "gemv", "x has ", x.size(), " elements, W has K = ", w.cols, " columns");
  LOWBIT_CHECK(y.size() == w.rows, "gemv", "y has ", y.size(), " elements, W has M = ", w.rows, " rows");
  LOWBIT_CHECK(opt.activations == Activations::int8, "gemv",
               "the bit-plane (T-MAC) kernel's tables are int8: pass RunOptions{Activations::int8}");
  LOWBIT_CHECK(x.data() != nullptr || x.empty(), "gemv", "x is null");
  LOWBIT_CHECK(y.data() != nullptr || y.empty(), "gemv", "y is null");
  if (w.rows == 0) return;
  const int threads = detail::threads_for(w.rows, w.cols, opt.threads);
  const detail::BitPlaneTables tb(w, x.data(), detail::all_finite(x.data(), x.size()), threads);
  const auto& k = tb.int8 ? detail::active_kernels() : detail::kernels_for(isa::scalar);
  parallel_for(w.tiles(), 2, threads,
               [&](std::size_t t0, std::size_t t1) { k.bit_plane_gemv(w, tb, y.data(), t0, t1); });
}

// y = W x for a plain bf16 matrix (the baseline DFloat11 is measured against).
inline void gemv(ConstMatrixView<bf16> w, span<const float> x, span<float> y, const RunOptions& opt = {}) {
  LOWBIT_CHECK(x.size() == w.cols(), "gemv(bf16)", "x has ", x.size(), " elements, W has K = ", w.cols());
  LOWBIT_CHECK(y.size() == w.rows(), "gemv(bf16)", "y has ", y.size(), " elements, W has M = ", w.rows());
  const auto& k = detail::active_kernels();
  parallel_for(w.rows(), 16, detail::threads_for(w.rows(), w.cols(), opt.threads), [&](std::size_t r0, std::size_t r1) {
    for (std::size_t r = r0; r < r1; ++r)
      y[r] = k.bf16_dot(reinterpret_cast<const std::uint16_t*>(w.row(r)), x.data(), w.cols());
  });
}

}  // namespace lowbit
