// Validation of a stored input permutation (SpQR, VQ formats).
#pragma once

#include <cstdint>
#include <vector>

#include "buffer.hpp"
#include "error.hpp"

namespace lowbit::detail {

// perm is empty (identity) or a permutation of 0 .. n-1.
inline void check_permutation(const Buffer<std::uint32_t>& perm, std::size_t n, const char* where) {
  if (perm.empty()) return;
  LOWBIT_CHECK(perm.size() == n, where, "perm has ", perm.size(), " entries, K = ", n);
  std::vector<char> seen(n, 0);
  for (std::uint32_t p : perm) {
    LOWBIT_CHECK(p < n && !seen[p], where, "perm is not a permutation of 0..K-1 (entry ", p, ")");
    seen[p] = 1;
  }
}

}  // namespace lowbit::detail
