// Validation of a stored input permutation (SpQR, VQ formats).
#pragma once

#include <cstdint>
#include <vector>

#include "buffer.hpp"
#include "error.hpp"

namespace lowbit::detail {

// perm (`size` entries) is empty (identity) or a permutation of 0 .. n-1.
inline void check_permutation(const std::uint32_t* perm, std::size_t size, std::size_t n, const char* where) {
  if (size == 0) return;
  LOWBIT_CHECK(size == n, where, "perm has ", size, " entries, K = ", n);
  std::vector<char> seen(n, 0);
  for (std::size_t i = 0; i < size; ++i) {
    const std::uint32_t p = perm[i];
    LOWBIT_CHECK(p < n && !seen[p], where, "perm is not a permutation of 0..K-1 (entry ", p, ")");
    seen[p] = 1;
  }
}
template <class Array>
void check_permutation(const Array& perm, std::size_t n, const char* where) {
  check_permutation(perm.data(), perm.size(), n, where);
}

}  // namespace lowbit::detail
