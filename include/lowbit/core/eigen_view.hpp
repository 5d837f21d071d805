// Eigen interop for lowbit's matrix views: map a view as an Eigen matrix
// (no copy) and view an Eigen row-major matrix as a lowbit view.
#pragma once

#include <Eigen/Core>

#include "view.hpp"

namespace lowbit {

template <class T>
using EigenRowMajor = Eigen::Matrix<std::remove_const_t<T>, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Eigen::Map over a lowbit view (row-major, with the view's row stride).
template <class T>
auto eigen_map(const MatrixView<T>& v) {
  using Base = std::conditional_t<std::is_const_v<T>, const EigenRowMajor<T>, EigenRowMajor<T>>;
  return Eigen::Map<Base, Eigen::Unaligned, Eigen::OuterStride<>>(
      v.data(), Eigen::Index(v.rows()), Eigen::Index(v.cols()), Eigen::OuterStride<>(Eigen::Index(v.stride())));
}

// A lowbit view of a row-major Eigen matrix, Map or Block (anything with
// data(), rows(), cols() and outerStride()).
template <class Derived>
auto view_of(Eigen::PlainObjectBase<Derived>& m) {
  static_assert(Derived::IsRowMajor, "lowbit views are row-major: use a RowMajor Eigen matrix");
  using T = typename Derived::Scalar;
  return MatrixView<T>(m.data(), std::size_t(m.rows()), std::size_t(m.cols()), std::size_t(m.outerStride()));
}
template <class Derived>
auto view_of(const Eigen::PlainObjectBase<Derived>& m) {
  static_assert(Derived::IsRowMajor, "lowbit views are row-major: use a RowMajor Eigen matrix");
  using T = const typename Derived::Scalar;
  return MatrixView<T>(m.data(), std::size_t(m.rows()), std::size_t(m.cols()), std::size_t(m.outerStride()));
}

}  // namespace lowbit
