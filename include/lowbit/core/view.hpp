// Spans, row-major matrix views and a small owning matrix.
//
// MatrixView<T> is (data, rows, cols, stride): element (i, j) is
// data[i * stride + j], stride >= cols. A mutable view converts to a const
// one. Eigen interop lives in core/eigen_view.hpp so that this header needs
// nothing beyond the standard library.
#pragma once

#include <array>
#include <cstddef>
#include <type_traits>
#include <vector>

#include "buffer.hpp"
#include "error.hpp"

namespace lowbit {

// C++17 stand-in for std::span (contiguous, dynamic extent).
template <class T>
class span {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;

  constexpr span() noexcept = default;
  constexpr span(T* data, std::size_t size) noexcept : data_(data), size_(size) {}
  template <class U, class = std::enable_if_t<std::is_convertible_v<U (*)[], T (*)[]>>>
  constexpr span(const span<U>& other) noexcept : data_(other.data()), size_(other.size()) {}
  template <class A>
  span(std::vector<value_type, A>& v) noexcept : data_(v.data()), size_(v.size()) {}
  template <class A, class U = T, class = std::enable_if_t<std::is_const_v<U>>>
  span(const std::vector<value_type, A>& v) noexcept : data_(v.data()), size_(v.size()) {}
  template <std::size_t N>
  constexpr span(value_type (&a)[N]) noexcept : data_(a), size_(N) {}
  template <std::size_t N>
  constexpr span(std::array<value_type, N>& a) noexcept : data_(a.data()), size_(N) {}
  template <std::size_t N, class U = T, class = std::enable_if_t<std::is_const_v<U>>>
  constexpr span(const std::array<value_type, N>& a) noexcept : data_(a.data()), size_(N) {}

  constexpr T* data() const noexcept { return data_; }
  constexpr std::size_t size() const noexcept { return size_; }
  constexpr bool empty() const noexcept { return size_ == 0; }
  constexpr T& operator[](std::size_t i) const noexcept { return data_[i]; }
  constexpr T* begin() const noexcept { return data_; }
  constexpr T* end() const noexcept { return data_ + size_; }
  constexpr span subspan(std::size_t offset, std::size_t count) const noexcept {
    return span(data_ + offset, count);
  }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

template <class T>
class MatrixView {
 public:
  constexpr MatrixView() noexcept = default;
  constexpr MatrixView(T* data, std::size_t rows, std::size_t cols) noexcept
      : MatrixView(data, rows, cols, cols) {}
  MatrixView(T* data, std::size_t rows, std::size_t cols, std::size_t stride)
      : data_(data), rows_(rows), cols_(cols), stride_(stride) {
    LOWBIT_CHECK(stride >= cols, "MatrixView", "row stride ", stride, " is smaller than cols ", cols);
    LOWBIT_CHECK(data != nullptr || rows * cols == 0, "MatrixView", "null data for a ", rows, "x",
                 cols, " view");
  }
  template <class U, class = std::enable_if_t<std::is_convertible_v<U (*)[], T (*)[]>>>
  constexpr MatrixView(const MatrixView<U>& o) noexcept
      : data_(o.data()), rows_(o.rows()), cols_(o.cols()), stride_(o.stride()) {}

  constexpr T* data() const noexcept { return data_; }
  constexpr std::size_t rows() const noexcept { return rows_; }
  constexpr std::size_t cols() const noexcept { return cols_; }
  constexpr std::size_t stride() const noexcept { return stride_; }
  constexpr T* row(std::size_t i) const noexcept { return data_ + i * stride_; }
  constexpr T& operator()(std::size_t i, std::size_t j) const noexcept { return data_[i * stride_ + j]; }
  constexpr span<T> row_span(std::size_t i) const noexcept { return span<T>(row(i), cols_); }

 private:
  T* data_ = nullptr;
  std::size_t rows_ = 0, cols_ = 0, stride_ = 0;
};

template <class T>
using ConstMatrixView = MatrixView<const T>;

// Row-major float matrix (contiguous, stride == cols) with value semantics.
// Its elements may be a read-only view (a memory-mapped file): the first
// non-const access copies them (core/buffer.hpp).
class Matrix {
 public:
  Matrix() = default;
  Matrix(std::size_t rows, std::size_t cols, float fill = 0.0f)
      : rows_(rows), cols_(cols), data_(rows * cols, fill) {}
  // rows x cols elements, row-major, from `data` (owned or a view).
  Matrix(std::size_t rows, std::size_t cols, Buffer<float> data) : rows_(rows), cols_(cols), data_(std::move(data)) {
    LOWBIT_CHECK(cols == 0 ? data_.empty() : rows <= std::size_t(-1) / cols && data_.size() == rows * cols, "Matrix",
                 "data has ", data_.size(), " elements for ", rows, " x ", cols);
  }
  const Buffer<float>& buffer() const noexcept { return data_; }

  std::size_t rows() const noexcept { return rows_; }
  std::size_t cols() const noexcept { return cols_; }
  float* data() { return data_.data(); }
  const float* data() const noexcept { return data_.data(); }
  float& operator()(std::size_t i, std::size_t j) { return data_[i * cols_ + j]; }
  float operator()(std::size_t i, std::size_t j) const noexcept { return data_[i * cols_ + j]; }
  float* row(std::size_t i) { return data_.data() + i * cols_; }
  const float* row(std::size_t i) const noexcept { return data_.data() + i * cols_; }

  MatrixView<float> view() { return {data_.data(), rows_, cols_}; }
  MatrixView<const float> view() const noexcept { return {data_.data(), rows_, cols_}; }
  operator MatrixView<float>() { return view(); }
  operator MatrixView<const float>() const noexcept { return view(); }

  friend bool operator==(const Matrix& a, const Matrix& b) {
    return a.rows_ == b.rows_ && a.cols_ == b.cols_ && a.data_ == b.data_;
  }

 private:
  std::size_t rows_ = 0, cols_ = 0;
  Buffer<float> data_;
};

}  // namespace lowbit
