// Buffer<T>: the array type of every format (and of Matrix). It owns its
// elements, as a std::vector does, or views read-only elements that live
// elsewhere (a memory-mapped file, io/file.hpp) and are kept alive by a
// shared owner for as long as any Buffer views them.
//
// Reading never copies. The first non-const access to a view copies it into
// owned memory (copy on write), so a mapped format still behaves as a plain
// value: it can be modified, and the file is never written through. Kernels
// take formats by const reference and so always read the mapping in place.
//
// The interface is the subset of std::vector the library uses; a
// std::vector<T> converts implicitly (moved in, no copy).
#pragma once

#include <algorithm>
#include <cstddef>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <type_traits>
#include <vector>

namespace lowbit {

template <class T>
class Buffer {
  static_assert(std::is_trivially_copyable_v<T>, "Buffer holds plain data");

 public:
  using value_type = T;
  using size_type = std::size_t;
  using iterator = T*;
  using const_iterator = const T*;

  Buffer() = default;
  explicit Buffer(size_type n) : own_(n) {}
  Buffer(size_type n, const T& v) : own_(n, v) {}
  Buffer(std::initializer_list<T> l) : own_(l) {}
  template <class It, class = typename std::iterator_traits<It>::iterator_category>
  Buffer(It first, It last) : own_(first, last) {}
  Buffer(std::vector<T> v) noexcept : own_(std::move(v)) {}  // NOLINT: implicit by design

  // n elements at p, read in place; `keeper` owns the memory behind them.
  static Buffer view(const T* p, size_type n, std::shared_ptr<const void> keeper) {
    Buffer b;
    b.view_ = p;
    b.view_size_ = n;
    b.keeper_ = keeper ? std::move(keeper) : std::make_shared<int>(0);
    return b;
  }
  // True while the elements are someone else's (no write has happened).
  bool is_view() const noexcept { return keeper_ != nullptr; }

  size_type size() const noexcept { return keeper_ ? view_size_ : own_.size(); }
  bool empty() const noexcept { return size() == 0; }
  const T* data() const noexcept { return keeper_ ? view_ : own_.data(); }
  T* data() { return owned().data(); }

  const T& operator[](size_type i) const noexcept { return data()[i]; }
  T& operator[](size_type i) { return owned()[i]; }
  const T& front() const noexcept { return data()[0]; }
  const T& back() const noexcept { return data()[size() - 1]; }
  T& front() { return owned().front(); }
  T& back() { return owned().back(); }
  const_iterator begin() const noexcept { return data(); }
  const_iterator end() const noexcept { return data() + size(); }
  iterator begin() { return data(); }
  iterator end() { return data() + size(); }

  void resize(size_type n) { owned().resize(n); }
  void resize(size_type n, const T& v) { owned().resize(n, v); }
  void assign(size_type n, const T& v) { drop_view(), own_.assign(n, v); }
  template <class It, class = typename std::iterator_traits<It>::iterator_category>
  void assign(It first, It last) {
    std::vector<T> v(first, last);  // `first` may point into this buffer
    drop_view();
    own_ = std::move(v);
  }
  void reserve(size_type n) { owned().reserve(n); }
  void clear() noexcept { drop_view(), own_.clear(); }
  void push_back(const T& v) { owned().push_back(v); }
  void pop_back() { owned().pop_back(); }

  friend bool operator==(const Buffer& a, const Buffer& b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
  }
  friend bool operator!=(const Buffer& a, const Buffer& b) { return !(a == b); }

 private:
  void drop_view() noexcept {
    keeper_.reset();
    view_ = nullptr;
    view_size_ = 0;
  }
  // The owned vector, after copying a view into it.
  std::vector<T>& owned() {
    if (keeper_) {
      own_.assign(view_, view_ + view_size_);
      drop_view();
    }
    return own_;
  }

  std::vector<T> own_;
  const T* view_ = nullptr;
  size_type view_size_ = 0;
  std::shared_ptr<const void> keeper_;
};

}  // namespace lowbit
