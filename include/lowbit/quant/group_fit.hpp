// Fitting one quantization group: the scale and zero point for b-bit codes,
// by min-max or by an MSE-optimal clipping search, and rounding values to
// codes. Shared by RTN (quant/rtn.hpp) and, per column, by GPTQ.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <vector>

#include "../core/error.hpp"
#include "../format/group_quant.hpp"

namespace lowbit {

// How a group's range is chosen.
enum class Clip : std::uint8_t {
  minmax,  // the group's full range
  mse,     // the shrink of the range (grid search) minimizing squared error
};

struct GroupFit {
  int bits = 4;
  bool symmetric = false;
  ScaleType scale_type = ScaleType::fp16;
  Clip clip = Clip::minmax;
  int grid = 100;          // MSE search: shrink steps of 1/grid ...
  float max_shrink = 0.8f; // ... down to a range of (1 - max_shrink); GPTQ's defaults
};

namespace detail {

struct GroupParams {
  float scale = 1.0f;  // as stored (rounded to the scale type)
  int zero = 0;
};

inline int max_code(int bits) noexcept { return (1 << bits) - 1; }

// Round half to even, exact for |v| <= 2^22: adding 1.5 * 2^23 leaves no
// fraction bits, so the FPU's default rounding does the work (std::nearbyint
// is a library call without SSE4.1, and this is the quantizers' inner loop).
inline float round_even(float v) noexcept {
  v = std::clamp(v, -4194304.0f, 4194304.0f);
#if defined(__FAST_MATH__)
  return std::nearbyint(v);  // -ffast-math would fold the trick below to v
#else
  return (v + 12582912.0f) - 12582912.0f;
#endif
}

// w -> code: clamp(round_half_even(w / s) + z, 0, 2^b - 1).
inline int quantize_code(float w, GroupParams p, int bits) noexcept {
  const float q = round_even(w / p.scale) + float(p.zero);
  return int(std::clamp(q, 0.0f, float(max_code(bits))));
}
inline float dequantize_code(int q, GroupParams p) noexcept { return p.scale * float(q - p.zero); }

// Parameters for the range [lo, hi] (asymmetric) or for the signed extreme
// `peak` (symmetric, llama.cpp q4_0 style: the extreme maps to code 0, so
// the full range of codes serves the side of the largest magnitude).
inline GroupParams params_for(float lo, float hi, float peak, const GroupFit& f) {
  GroupParams p;
  if (f.symmetric) {
    p.zero = 1 << (f.bits - 1);
    p.scale = peak == 0.0f ? 1.0f : peak / -float(p.zero);
  } else {
    lo = std::min(lo, 0.0f);  // keep 0 representable (GPTQ / AWQ)
    hi = std::max(hi, 0.0f);
    p.scale = hi == lo ? 1.0f : (hi - lo) / float(max_code(f.bits));
  }
  const float s = round_scale(p.scale, f.scale_type);
  LOWBIT_CHECK(std::isfinite(s), "quantize", "group scale ", p.scale,
               " overflows the fp16 scale type; use ScaleType::fp32");
  // A range too small for fp16 would round the scale to 0: keep the
  // smallest positive fp16 instead (the group then quantizes to ~0).
  p.scale = s != 0.0f ? s : std::copysign(fp16::from_bits(1).to_float(), p.scale);
  if (!f.symmetric) p.zero = int(std::clamp(std::nearbyint(-lo / p.scale), 0.0f, float(max_code(f.bits))));
  return p;
}

// Squared error of quantizing a group with p: the clipping search's
// criterion, written to vectorize (float sums, reciprocal scale; it ranks
// candidates, the codes themselves come from quantize_code).
inline float group_sq_error(const float* w, std::size_t n, GroupParams p, int bits) noexcept {
  const float inv = 1.0f / p.scale, z = float(p.zero), hi = float(max_code(bits));
  float e = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const float q = std::min(std::max(round_even(w[i] * inv) + z, 0.0f), hi);
    const float d = p.scale * (q - z) - w[i];
    e += d * d;
  }
  return e;
}

// Fit one group of n values (finite; callers validate).
inline GroupParams fit_group(const float* w, std::size_t n, const GroupFit& f) {
  float lo = std::numeric_limits<float>::infinity(), hi = -lo, peak = 0.0f;
  for (std::size_t i = 0; i < n; ++i) {
    lo = std::min(lo, w[i]);
    hi = std::max(hi, w[i]);
    if (std::fabs(w[i]) > std::fabs(peak)) peak = w[i];
  }
  GroupParams best = params_for(lo, hi, peak, f);
  if (f.clip == Clip::minmax) return best;
  float best_err = group_sq_error(w, n, best, f.bits);
  const int steps = int(f.max_shrink * float(f.grid));
  for (int i = 1; i < steps; ++i) {
    const float shrink = 1.0f - float(i) / float(f.grid);
    const GroupParams p = params_for(shrink * lo, shrink * hi, shrink * peak, f);
    const float e = group_sq_error(w, n, p, f.bits);
    if (e < best_err) {
      best_err = e;
      best = p;
    }
  }
  return best;
}

// Quantize-dequantize n values in groups of `group` ("fake quantization"):
// out[i] is what the stored codes would decode to. Search loops (AWQ's scale
// and clipping searches) score candidates with this.
inline void fake_quantize(const float* w, std::size_t n, std::size_t group, const GroupFit& f, float* out) {
  for (std::size_t k0 = 0; k0 < n; k0 += group) {
    const std::size_t m = std::min(group, n - k0);
    const GroupParams p = fit_group(w + k0, m, f);
    for (std::size_t k = k0; k < k0 + m; ++k) out[k] = dequantize_code(quantize_code(w[k], p, f.bits), p);
  }
}

inline void check_group_fit(const GroupFit& f, const char* where) {
  LOWBIT_CHECK(f.bits == 2 || f.bits == 3 || f.bits == 4 || f.bits == 8, where, "bits must be 2, 3, 4 or 8, got ",
               f.bits);
  LOWBIT_CHECK(f.grid >= 1, where, "clipping grid must be >= 1, got ", f.grid);
  LOWBIT_CHECK(f.max_shrink >= 0.0f && f.max_shrink < 1.0f, where, "max_shrink must be in [0, 1), got ",
               f.max_shrink);
}

// Store scale j of row r into a matrix's scale array.
inline void store_scale(GroupQuantMatrix& q, std::size_t index, float s) noexcept {
  if (q.scale_type == ScaleType::fp16) {
    const std::uint16_t h = fp16::from_float(s).bits;
    std::memcpy(q.scales.data() + 2 * index, &h, 2);
  } else {
    std::memcpy(q.scales.data() + 4 * index, &s, 4);
  }
}

// An empty M x K matrix with the arrays sized for the given settings.
inline GroupQuantMatrix make_group_matrix(std::size_t rows, std::size_t cols, std::size_t group,
                                          const GroupFit& f) {
  GroupQuantMatrix q;
  q.rows = rows;
  q.cols = cols;
  q.bits = f.bits;
  q.group = group;
  q.symmetric = f.symmetric;
  q.scale_type = f.scale_type;
  q.codes.assign(rows * q.row_bytes(), 0);
  q.scales.assign(rows * q.groups_per_row() * scale_bytes(f.scale_type), 0);
  return q;
}

// Pack the M x G zero points (one byte each) into q.zeros (asymmetric only).
inline void store_zeros(GroupQuantMatrix& q, const std::vector<std::uint8_t>& zeros) {
  if (q.symmetric) return;
  q.zeros.assign(bitpack::row_bytes(zeros.size(), q.bits), 0);
  bitpack::pack(zeros.data(), zeros.size(), q.bits, q.zeros.data());
}

}  // namespace detail
}  // namespace lowbit
