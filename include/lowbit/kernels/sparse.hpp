// Sparse outlier add: y[r] += sum_i val[i] x[col[i]] over a CSR matrix with
// fp16 values (the outlier part of SpQR). A gather per nonzero: at ~1%
// density its cost is small beside the dense part, so one loop serves every
// ISA (and is its own scalar reference).
#pragma once

#include <cstdint>

#include "../core/types.hpp"

namespace lowbit::detail {

inline void csr_add(const std::uint32_t* row_ptr, const std::uint16_t* col, const std::uint16_t* val, const float* x,
                    float* y, std::size_t r0, std::size_t r1) noexcept {
  for (std::size_t r = r0; r < r1; ++r) {
    float acc = 0;
    for (std::uint32_t i = row_ptr[r]; i < row_ptr[r + 1]; ++i) acc += fp16::from_bits(val[i]).to_float() * x[col[i]];
    y[r] += acc;
  }
}

}  // namespace lowbit::detail
