// Vector-quantized GEMV kernels (format/vq.hpp). Each call handles one
// codebook level of one part and adds into y; kernels/vq_gemv.hpp sums the
// parts and levels. Activations xs are already permuted and scaled.
//
//   axpy (output axis):  y[a v + t] += sum_b xs[b] C[idx(a nb + b)][t]
//   dot  (input axis):   y[a]       += sum_b sum_t C[idx(a nb + b)][t] xs[b v + t]
//
// The SIMD versions gather a centroid (fp16, converted on load) per index
// and multiply-add whole vectors: v a multiple of the float lanes, at most
// four batches per vector; other lengths take the scalar reference. Four
// independent accumulator chains hide the FMA latency (the gathers are
// independent loads from a codebook that stays in cache).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../format/vq.hpp"
#include "../simd/ops.hpp"

namespace lowbit::detail {

struct VqLevel {
  const std::uint16_t* centroids = nullptr;  // fp16, k x v
  const std::uint8_t* indices = nullptr;     // bitstream of log2(k)-bit indices
  int bits = 0;                              // log2(k)
  std::size_t v = 0;                         // vector length
  std::size_t nb = 0;                        // vectors per vector row
};

// Index i, specialized for byte and 16-bit widths (Bits 0: any width).
template <int Bits>
inline std::uint32_t vq_index_at(const std::uint8_t* s, [[maybe_unused]] int bits, std::size_t i) noexcept {
  if constexpr (Bits == 8) return s[i];
  else if constexpr (Bits == 16) return std::uint32_t(s[2 * i]) | std::uint32_t(s[2 * i + 1]) << 8;
  else return vq_index(s, bits, i);
}

template <class F>
decltype(auto) with_index_bits(int bits, F&& f) {
  switch (bits) {
    case 8: return f(std::integral_constant<int, 8>{});
    case 16: return f(std::integral_constant<int, 16>{});
    default: return f(std::integral_constant<int, 0>{});
  }
}

inline void vq_axpy_reference(const VqLevel& l, const float* xs, float* y, std::size_t a0, std::size_t a1) {
  std::vector<float> acc(l.v);
  for (std::size_t a = a0; a < a1; ++a) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (std::size_t b = 0; b < l.nb; ++b) {
      const std::uint16_t* c = l.centroids + vq_index(l.indices, l.bits, a * l.nb + b) * l.v;
      for (std::size_t t = 0; t < l.v; ++t) acc[t] += xs[b] * fp16::from_bits(c[t]).to_float();
    }
    for (std::size_t t = 0; t < l.v; ++t) y[a * l.v + t] += acc[t];
  }
}

inline void vq_dot_reference(const VqLevel& l, const float* xs, float* y, std::size_t a0, std::size_t a1) {
  for (std::size_t a = a0; a < a1; ++a) {
    float acc = 0;
    for (std::size_t b = 0; b < l.nb; ++b) {
      const std::uint16_t* c = l.centroids + vq_index(l.indices, l.bits, a * l.nb + b) * l.v;
      for (std::size_t t = 0; t < l.v; ++t) acc += fp16::from_bits(c[t]).to_float() * xs[b * l.v + t];
    }
    y[a] += acc;
  }
}

// Both SIMD kernels: per vector row, independent accumulator chains over
// the vectors (Axpy: v-wide sums of broadcast activation times centroid;
// dot: centroid times activation segment, added up at the end).
template <class Tag, int Bits, std::size_t NB, bool Axpy>
void vq_simd(const VqLevel& l, const float* xs, float* y, std::size_t a0, std::size_t a1) noexcept {
  using F = simd::f32<Tag>;
  constexpr std::size_t L = F::size, v = NB * L, chains = Axpy || NB == 1 ? 4 : (NB == 2 ? 2 : 1);
  const std::size_t nb = l.nb;
  const auto step = [&](F* acc, std::size_t a, std::size_t b) {
    const std::uint16_t* c = l.centroids + vq_index_at<Bits>(l.indices, l.bits, a * nb + b) * v;
    for (std::size_t j = 0; j < NB; ++j) {
      const F w = simd::load_halves<Tag>(c + j * L);
      acc[j] = xsimd::fma(w, Axpy ? F(xs[b]) : F::load_unaligned(xs + b * v + j * L), acc[j]);
    }
  };
  for (std::size_t a = a0; a < a1; ++a) {
    F acc[chains][NB];
    for (auto& c : acc)
      for (F& f : c) f = F(0.0f);
    std::size_t b = 0;
    for (; b + chains <= nb; b += chains)
      for (std::size_t h = 0; h < chains; ++h) step(acc[h], a, b + h);
    for (; b < nb; ++b) step(acc[0], a, b);
    for (std::size_t h = 1; h < chains; ++h)
      for (std::size_t j = 0; j < NB; ++j) acc[0][j] += acc[h][j];
    if constexpr (Axpy) {
      for (std::size_t j = 0; j < NB; ++j)
        (F::load_unaligned(y + a * v + j * L) + acc[0][j]).store_unaligned(y + a * v + j * L);
    } else {
      F s = acc[0][0];
      for (std::size_t j = 1; j < NB; ++j) s += acc[0][j];
      y[a] += xsimd::hadd(s);
    }
  }
}

// The SIMD kernel for l.v and l.bits, or the reference where v is not a
// multiple of the lanes (or above four batches).
template <class Tag, bool Axpy>
void vq_level(const VqLevel& l, const float* xs, float* y, std::size_t a0, std::size_t a1) {
  constexpr std::size_t L = simd::f32<Tag>::size;
  const auto run = [&](auto nb) {
    with_index_bits(l.bits, [&](auto B) {
      vq_simd<Tag, B(), decltype(nb)::value, Axpy>(l, xs, y, a0, a1);
    });
  };
  switch (l.v % L == 0 ? l.v / L : 0) {
    case 1: return run(std::integral_constant<std::size_t, 1>{});
    case 2: return run(std::integral_constant<std::size_t, 2>{});
    case 3: return run(std::integral_constant<std::size_t, 3>{});
    case 4: return run(std::integral_constant<std::size_t, 4>{});
    default:
      if constexpr (Axpy) vq_axpy_reference(l, xs, y, a0, a1);
      else vq_dot_reference(l, xs, y, a0, a1);
  }
}

}  // namespace lowbit::detail
