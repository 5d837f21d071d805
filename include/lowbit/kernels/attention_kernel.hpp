// The decode-attention kernel for one kv head: out_h = softmax(scale q_h K^T) V
// for the query heads sharing it (GQA), over keys and values stored as runs
// of fp32 rows, bf16 rows or KIVI codes (format/kv_cache.hpp). Codes are never
// dequantized; their statistics are folded into the other operand (KIVI
// Sec. 3.3):
//
//   keys, per channel over a block of G tokens (scale s_c, min m_c):
//     q . k_t = sum_c (q_c s_c) code_tc + sum_c q_c m_c
//     -> q~ = q * s once per block, plus one bias per block and head;
//   values, per token over G channels (scale s_tg, min m_tg):
//     sum_t p_t v_tc = sum_t (p_t s_tg) code_tc + sum_t p_t m_tg
//     -> each probability scaled once per token and group, plus one offset
//        per group and head added at the end.
//
// A code becomes a float exactly (a small integer), so the result differs
// from attention over the dequantized cache by float rounding only. Codes
// are decoded a tile of up to 32 tokens at a time into an L1-resident float
// tile shared by up to four query heads (register blocking), the memory
// traffic is the codes' (2 or 4 bits per element), and the softmax is exact
// (max subtracted, xsimd::exp).
//
// int8 arithmetic (AttendJob::int8, AttentionOptions::activations = int8),
// on the code runs of a head_dim that is whole 32-code fields: the scaled
// query q~ of each key block and head becomes int8 (one step), the scaled
// probabilities p_t s_tg of each tile of 32 value tokens and head become
// uint8 (one step; they are >= 0), and the sums over codes become integer
// dot products (vpdpbusd / pmaddubsw / NEON; simd/ops.hpp), as llama.cpp
// turns the query into q8 blocks for a quantized K cache. The windows stay fp32.
// Scores put one token in each int32 lane (scores_i8_words: no reduction
// across lanes); value sums put four tokens of a channel in each lane with
// VNNI (accumulate_i8: one vpdpbusd per head and four tokens).
//
// The kernel is bound by its instruction count, so with AVX-512 VNNI it runs
// on 512-bit batches (simd::avx512vnni_zmm_tag, kernels/dispatch.hpp) where
// Attend::fits: a batch of codes is then two fields of one chunk.
#pragma once

#include <algorithm>
#include <array>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../core/types.hpp"
#include "../format/kv_cache.hpp"
#include "../simd/ops.hpp"
#include "byte_quant.hpp"

LOWBIT_AVX512_INTRINSICS_BEGIN

namespace lowbit::detail {

// A run of one kv head's key or value rows, in one storage.
struct KvRows {
  enum class Kind : std::uint8_t { f32, bf16, codes };
  Kind kind = Kind::f32;
  std::size_t tokens = 0;
  const void* data = nullptr;      // f32 / bf16: row t at data + t * stride elements
  std::size_t stride = 0;
  const KvCodes* codes = nullptr;  // codes: tokens [first, first + tokens) of *codes
  std::size_t first = 0;
};

// The query heads `heads` that share one kv head, and its rows: keys and
// values are runs in token order covering the same tokens.
struct AttendJob {
  std::size_t dim = 0;
  int heads = 0;
  const float* q = nullptr;  // heads x dim
  float* out = nullptr;      // heads x dim
  float scale = 1.0f;        // softmax(scale * q . k)
  KvRows keys[2], values[3];
  int key_runs = 0, value_runs = 0;
  bool int8 = false;  // int8 dot products on the code runs where int8_keys / int8_values allow
};

// The code runs the int8 arithmetic applies to: whole 32-code fields per
// token row, and (values) channel groups of whole fields, so that a field
// has one statistic per token.
inline bool int8_keys(const AttendJob& j, const KvRows& r) noexcept {
  return j.int8 && r.kind == KvRows::Kind::codes && j.dim % bitpack::chunk_bytes == 0;
}
inline bool int8_values(const AttendJob& j, const KvRows& r) noexcept {
  return int8_keys(j, r) && r.codes->group % bitpack::chunk_bytes == 0;
}

// Value tokens per pass of the kernel (their rows stay in L1); int8 weights
// are quantized per such tile.
inline constexpr std::size_t attend_tile = 32;

inline float kv_element(const KvRows& r, std::size_t t, std::size_t c) noexcept {
  switch (r.kind) {
    case KvRows::Kind::f32: return static_cast<const float*>(r.data)[t * r.stride + c];
    case KvRows::Kind::bf16: return bf16::from_bits(static_cast<const std::uint16_t*>(r.data)[t * r.stride + c]).to_float();
    case KvRows::Kind::codes: return r.codes->value(r.first + t, c);
  }
  return 0.0f;
}

// Scalar reference: element by element from the stored (or dequantized)
// values, double accumulation.
// With job.int8, the code runs that int8_keys / int8_values allow are
// computed as the kernel does: quantized q~ per key block, quantized
// p_t s_tg per tile and group, exact integer sums.
inline void attend_reference(const AttendJob& job) {
  const std::size_t d = job.dim;
  std::size_t T = 0;
  for (int r = 0; r < job.key_runs; ++r) T += job.keys[r].tokens;
  std::vector<double> p(T);
  std::vector<float> qe(d), w;
  std::vector<std::int8_t> q8(d);
  std::vector<std::uint8_t> w8;
  for (int h = 0; h < job.heads; ++h) {
    const float* q = job.q + std::size_t(h) * d;
    float* out = job.out + std::size_t(h) * d;
    double top = -std::numeric_limits<double>::infinity(), sum = 0;
    for (int r = 0, t0 = 0; r < job.key_runs; t0 += int(job.keys[r].tokens), ++r) {
      const KvRows& run = job.keys[r];
      const bool i8 = int8_keys(job, run);
      double step = 0, bias = 0;
      for (std::size_t t = 0; t < run.tokens; ++t) {
        if (i8) {
          const KvCodes& c = *run.codes;
          const std::size_t a = run.first + t;
          if (t == 0 || a % c.group == 0) {  // a new key block: q~ = (q scale) s_c, quantized
            bias = 0;
            for (std::size_t ch = 0; ch < d; ++ch) {
              const std::size_t i = c.stat_index(a, ch);
              qe[ch] = q[ch] * job.scale * fp16::from_bits(c.scale[i]).to_float();
              bias += double(q[ch]) * double(fp16::from_bits(c.min[i]).to_float());
            }
            step = quantize_bytes(qe.data(), d, q8.data());
            bias *= double(job.scale);
          }
          std::int64_t dot = 0;
          for (std::size_t ch = 0; ch < d; ++ch) dot += std::int64_t(q8[ch]) * c.code(a, ch);
          p[std::size_t(t0) + t] = step * double(dot) + bias;
        } else {
          double s = 0;
          for (std::size_t ch = 0; ch < d; ++ch) s += double(q[ch]) * double(kv_element(run, t, ch));
          p[std::size_t(t0) + t] = s * double(job.scale);
        }
        top = std::max(top, p[std::size_t(t0) + t]);
      }
    }
    for (double& x : p) sum += (x = std::exp(x - top));
    std::vector<double> o(d, 0.0);
    for (int r = 0, t0 = 0; r < job.value_runs; t0 += int(job.values[r].tokens), ++r) {
      const KvRows& run = job.values[r];
      if (!int8_values(job, run)) {
        for (std::size_t t = 0; t < run.tokens; ++t)
          for (std::size_t ch = 0; ch < d; ++ch) o[ch] += p[std::size_t(t0) + t] * double(kv_element(run, t, ch));
        continue;
      }
      const KvCodes& c = *run.codes;
      const std::size_t ng = d / c.group;
      w.resize(ng * attend_tile);
      w8.resize(ng * attend_tile);
      std::vector<double> zero(ng);
      for (std::size_t a = 0; a < run.tokens; a += attend_tile) {  // tiles from the run's start, as the kernel
        const std::size_t n = std::min(attend_tile, run.tokens - a);
        for (std::size_t g = 0; g < ng; ++g) {  // w[g][t] = p_t s_tg, one step for the tile
          zero[g] = 0;
          for (std::size_t t = 0; t < n; ++t) {
            const std::size_t i = c.stat_index(run.first + a + t, g * c.group);
            const float pt = float(p[std::size_t(t0) + a + t]);
            w[g * n + t] = pt * fp16::from_bits(c.scale[i]).to_float();
            zero[g] += double(pt) * double(fp16::from_bits(c.min[i]).to_float());
          }
        }
        const double step = quantize_bytes(w.data(), ng * n, w8.data());
        for (std::size_t ch = 0; ch < d; ++ch) {
          const std::size_t g = ch / c.group;
          std::int64_t dot = 0;
          for (std::size_t t = 0; t < n; ++t) dot += std::int64_t(w8[g * n + t]) * c.code(run.first + a + t, ch);
          o[ch] += step * double(dot) + zero[g];
        }
      }
    }
    for (std::size_t ch = 0; ch < d; ++ch) out[ch] = T ? float(o[ch] / sum) : 0.0f;
  }
}

template <class Tag>
struct Attend {
  using F = simd::f32<Tag>;
  using I = simd::i32<Tag>;
  static constexpr std::size_t L = F::size;
  static constexpr std::size_t tile = attend_tile;  // value tokens per pass: their rows stay in L1

  // Row cursors: c(m) is the float batch of channels L*m .. L*m + L - 1.
  struct F32Row {
    const float* r;
    F operator()(std::size_t m) const noexcept { return F::load_unaligned(r + L * m); }
  };
  struct Bf16Row {
    const std::uint16_t* r;
    F operator()(std::size_t m) const noexcept {
      return simd::bitcast<float>(simd::widen_u16<Tag>(r + L * m) << 16);
    }
  };
  template <int B>
  struct CodeRow {
    static constexpr std::size_t chunk = 8 * bitpack::chunk_bytes / B;  // codes per 32-byte chunk
    const std::uint8_t* page;
    std::size_t first;  // index of the row's first code in its page
    // Codes i .. i + 31 of the page (i a multiple of 32: one field of a
    // chunk, core/bitpack.hpp): the chunk's bytes and the field's shift.
    struct Field {
      const std::uint8_t* bytes;
      int shift;
    };
    Field field_at(std::size_t i) const noexcept {
      return {page + (i / chunk) * bitpack::chunk_bytes, int(B * ((i % chunk) / bitpack::chunk_bytes))};
    }
    F operator()(std::size_t m) const noexcept {
      const std::size_t i = first + L * m;  // L codes, one run of one chunk
      const I w = simd::widen_u8<Tag>(page + (i / chunk) * bitpack::chunk_bytes + i % bitpack::chunk_bytes);
      return xsimd::to_float((w >> int(B * ((i % chunk) / bitpack::chunk_bytes))) & I((1 << B) - 1));
    }
  };
  struct F32Rows {
    const float* data;
    std::size_t stride;
    F32Row row(std::size_t t) const noexcept { return {data + t * stride}; }
  };
  struct Bf16Rows {
    const std::uint16_t* data;
    std::size_t stride;
    Bf16Row row(std::size_t t) const noexcept { return {data + t * stride}; }
  };
  template <int B>
  struct CodeRows {
    const std::uint8_t* pages;
    std::size_t page_bytes, dim;
    unsigned page_shift;  // page_tokens() is a power of two
    explicit CodeRows(const KvCodes& c)
        : pages(c.pages.data()), page_bytes(c.page_bytes()), dim(c.dim),
          page_shift(unsigned(__builtin_ctzll(c.page_tokens()))) {}
    CodeRow<B> row(std::size_t t) const noexcept {
      const std::size_t within = t & ((std::size_t(1) << page_shift) - 1);
      return {pages + (t >> page_shift) * page_bytes, within * dim};
    }
  };

  // Rows [t0, t0 + n) of codes as floats, row t at out + t * dim. Decoding
  // a tile once into L1 and running the fp32 loops on it costs one pass of
  // loads, shifts and conversions per code, shared by every query head;
  // decoding inside the dot products repeated the index arithmetic per
  // batch. With dim % 32 == 0 a row is whole 32-code fields of its page
  // (core/bitpack.hpp), each one byte run at one shift.
  template <int B>
  static void decode(const CodeRows<B>& rows, std::size_t t0, std::size_t n, std::size_t dim, float* out) noexcept {
    const I mask((1 << B) - 1);
    for (std::size_t t = 0; t < n; ++t) {
      const CodeRow<B> r = rows.row(t0 + t);
      float* o = out + t * dim;
      if (dim % field != 0) {
        for (std::size_t m = 0; m < dim / L; ++m) r(m).store_unaligned(o + L * m);
        continue;
      }
      for (std::size_t j = 0; j < dim; j += field) {
        const auto f = r.field_at(r.first + j);
        for (std::size_t k = 0; k < field; k += L)
          xsimd::to_float((simd::widen_u8<Tag>(f.bytes + k) >> f.shift) & mask).store_unaligned(o + j + k);
      }
    }
  }

  // s[h * lds + t] = bias[h] + qe_h . row(t0 + t), t < n: TT = L / HB tokens
  // at a time, so the HB * TT dot products reduce with one haddp.
  template <int HB, class Rows>
  static void scores(const Rows& rows, std::size_t t0, std::size_t n, std::size_t dim, const float* qe,
                     const float* bias, float* s, std::size_t lds) noexcept {
    constexpr std::size_t TT = L / HB;
    static_assert(HB * TT == L, "heads per pass must divide the lane count");
    const std::size_t nvec = dim / L;
    for (std::size_t t = 0; t < n; t += TT) {
      F acc[L];
      for (auto& a : acc) a = F(0.0f);
      decltype(rows.row(0)) r[TT];
      for (std::size_t k = 0; k < TT; ++k) r[k] = rows.row(t0 + std::min(t + k, n - 1));
      for (std::size_t m = 0; m < nvec; ++m)
        for (std::size_t k = 0; k < TT; ++k) {
          const F x = r[k](m);
          for (int h = 0; h < HB; ++h)
            acc[std::size_t(h) * TT + k] =
                xsimd::fma(x, F::load_unaligned(qe + std::size_t(h) * dim + L * m), acc[std::size_t(h) * TT + k]);
        }
      alignas(64) float sum[L];
      simd::haddp<Tag>(acc).store_aligned(sum);
      for (int h = 0; h < HB; ++h)
        for (std::size_t k = 0; k < TT && t + k < n; ++k)
          s[std::size_t(h) * lds + t + k] = sum[std::size_t(h) * TT + k] + bias[h];
    }
  }

  // acc[h * dim + c] += sum_t w[(h * ng + g(c)) * n + t] * row(t0 + t)[c],
  // g(c) = c / group, n <= tile: two batches of channels per pass, HB heads each.
  template <int HB, class Rows>
  static void accumulate(const Rows& rows, std::size_t t0, std::size_t n, std::size_t dim, const float* w,
                         std::size_t ng, std::size_t group, float* acc) noexcept {
    const std::size_t nvec = dim / L;
    decltype(rows.row(0)) cur[tile];
    for (std::size_t t = 0; t < n; ++t) cur[t] = rows.row(t0 + t);
    for (std::size_t m0 = 0; m0 < nvec; m0 += 2) {
      const std::size_t m1 = std::min(m0 + 1, nvec - 1);  // odd nvec: the last pass repeats m0 into a1, unused
      const std::size_t g0 = L * m0 / group, g1 = L * m1 / group;
      F a0[HB], a1[HB];
      for (int h = 0; h < HB; ++h) {
        a0[h] = F::load_unaligned(acc + std::size_t(h) * dim + L * m0);
        a1[h] = F::load_unaligned(acc + std::size_t(h) * dim + L * m1);
      }
      // One weight per head and token when both batches lie in one group.
      auto pass = [&](auto same_group) {
        for (std::size_t t = 0; t < n; ++t) {
          const F x0 = cur[t](m0), x1 = cur[t](m1);
          for (int h = 0; h < HB; ++h) {
            const float* wh = w + std::size_t(h) * ng * n + t;
            const F w0(wh[g0 * n]);
            a0[h] = xsimd::fma(w0, x0, a0[h]);
            a1[h] = xsimd::fma(same_group ? w0 : F(wh[g1 * n]), x1, a1[h]);
          }
        }
      };
      if (g0 == g1)
        pass(std::true_type{});
      else
        pass(std::false_type{});
      for (int h = 0; h < HB; ++h) {
        a0[h].store_unaligned(acc + std::size_t(h) * dim + L * m0);
        if (m1 != m0) a1[h].store_unaligned(acc + std::size_t(h) * dim + L * m1);
      }
    }
  }

  // --- int8 arithmetic (int8_keys / int8_values) ---
  using U8 = simd::u8<Tag>;
  using S8 = simd::i8<Tag>;
  using I16 = simd::i16<Tag>;
  static constexpr std::size_t W = U8::size;                 // bytes per batch (16, 32 or 64)
  static constexpr std::size_t field = bitpack::chunk_bytes;  // codes per field: channels 32 j .. 32 j + 31

  // Can this instantiation run the job? 512-bit batches (W = 64, L = 16) take
  // a head_dim of whole batches, so that a batch of codes is two fields of
  // one chunk, and key blocks of whole L-token batches (scores_i8_words).
  static bool fits(const AttendJob& j) noexcept {
    if (j.dim % L != 0 || (W > field && j.dim % W != 0)) return false;
    for (int r = 0; r < j.key_runs; ++r)
      if (j.keys[r].kind == KvRows::Kind::codes && j.keys[r].codes->group % L != 0) return false;
    return true;
  }

  // Codes of channels c .. c + W - 1 of a code row (c a multiple of W): the
  // bytes of their field's chunk at its shift (core/bitpack.hpp); W = 64 is
  // two fields of one chunk. OnePage: pages of one token (page_tokens() ==
  // 1, e.g. dim 128), so every row starts a page and the place of channel c
  // is the same for all rows.
  template <bool OnePage, int B>
  static LOWBIT_ALWAYS_INLINE U8 part_codes(const CodeRow<B>& r, std::size_t c) noexcept {
    const auto f = r.field_at((OnePage ? 0 : r.first) + c - c % field);
    if constexpr (W > field) return simd::shr_mask_pair<Tag>(f.bytes, f.shift, f.shift + B, (1 << B) - 1);
    else return simd::shr_mask<Tag>(U8::load_unaligned(f.bytes + c % field), f.shift, (1 << B) - 1);
  }

  // s[h * lds + t] = bias[h] + step[h] * (q8_h . codes of row t0 + t), t < n.
  template <int HB, bool OnePage, int B>
  static void scores_i8(const CodeRows<B>& rows, std::size_t t0, std::size_t n, std::size_t dim,
                        const std::int8_t* q8, const float* step, const float* bias, float* s,
                        std::size_t lds) noexcept {
    if constexpr (OnePage) scores_i8_words<HB, B>(rows, t0, n, dim, q8, step, bias, s, lds);
    else scores_i8_reduce<HB, B>(rows, t0, n, dim, q8, step, bias, s, lds);
  }

  // Rows of one page each, n a multiple of L; L tokens at a time, one per
  // int32 lane. The 32-bit words of four rows are transposed within each
  // 128-bit lane (lane k holds rows 4k .. 4k + 3), so a dot of a word batch
  // with one broadcast word of q8 (four channels) adds to every token's own
  // lane, and the scores come out as one batch: no reduction across lanes
  // (scores_i8_reduce's haddp and per-score stores took a third of its
  // instructions).
  template <int HB, int B>
  static void scores_i8_words(const CodeRows<B>& rows, std::size_t t0, std::size_t n, std::size_t dim,
                              const std::int8_t* q8, const float* step, const float* bias, float* s,
                              std::size_t lds) noexcept {
    using I64 = xsimd::batch<std::int64_t, typename Tag::arch>;
    constexpr std::size_t fields = 8 / B, lanes = W / 16;
    const std::size_t row_bytes = dim * B / 8;
    const auto w64 = [](I v) { return simd::bitcast<std::int64_t>(v); };
    assert(n % L == 0);  // a key block: a multiple of 8 tokens
    for (std::size_t t = 0; t < n; t += L) {
      const std::uint8_t* r[L];
      for (std::size_t k = 0; k < L; ++k) r[k] = rows.row(t0 + t + k).page;
      I acc[HB][2];  // two chains per head (even and odd fields)
      for (auto& a : acc) a[0] = a[1] = I(0);
      for (std::size_t off = 0; off < row_bytes; off += 16) {
        I x[4];
        for (std::size_t i = 0; i < 4; ++i) {
          const std::uint8_t* p[lanes];
          for (std::size_t l = 0; l < lanes; ++l) p[l] = r[4 * l + i] + off;
          x[i] = simd::bitcast<std::int32_t>(simd::load_lanes<Tag>(p));
        }
        const I a01 = xsimd::zip_lo(x[0], x[1]), b01 = xsimd::zip_hi(x[0], x[1]);
        const I a23 = xsimd::zip_lo(x[2], x[3]), b23 = xsimd::zip_hi(x[2], x[3]);
        const I64 v64[4] = {xsimd::zip_lo(w64(a01), w64(a23)), xsimd::zip_hi(w64(a01), w64(a23)),
                            xsimd::zip_lo(w64(b01), w64(b23)), xsimd::zip_hi(w64(b01), w64(b23))};
        // Word k of this 16-byte part: codes of channels c0 + 32 f + 4 k + (0 .. 3) at shift B f.
        const std::size_t c0 = off / bitpack::chunk_bytes * fields * field + off % bitpack::chunk_bytes;
#pragma GCC unroll 4
        for (std::size_t f = 0; f < fields; ++f)
          for (std::size_t k = 0; k < 4; ++k) {
            const U8 c = simd::shr_mask<Tag>(simd::bitcast<std::uint8_t>(v64[k]), int(B * f), (1 << B) - 1);
            for (int h = 0; h < HB; ++h)
              acc[h][f % 2] =
                  simd::dot_u8i8_word<Tag>(acc[h][f % 2], c, q8 + std::size_t(h) * dim + c0 + field * f + 4 * k);
          }
      }
      for (int h = 0; h < HB; ++h)  // exact sums
        xsimd::fma(xsimd::to_float(acc[h][0] + acc[h][1]), F(step[h]), F(bias[h]))
            .store_unaligned(s + std::size_t(h) * lds + t);
    }
  }

  // Any rows: TT = L / HB tokens at a time, int32 sums, one haddp per HB * TT scores.
  template <int HB, int B>
  static void scores_i8_reduce(const CodeRows<B>& rows, std::size_t t0, std::size_t n, std::size_t dim,
                               const std::int8_t* q8, const float* step, const float* bias, float* s,
                               std::size_t lds) noexcept {
    constexpr std::size_t TT = L / HB;
    for (std::size_t t = 0; t < n; t += TT) {
      I acc[L];
      for (auto& a : acc) a = I(0);
      CodeRow<B> r[TT];
      for (std::size_t k = 0; k < TT; ++k) r[k] = rows.row(t0 + std::min(t + k, n - 1));
      for (std::size_t c0 = 0; c0 < dim; c0 += W)
        for (std::size_t k = 0; k < TT; ++k) {
          const U8 c = part_codes<false>(r[k], c0);
          for (int h = 0; h < HB; ++h)
            acc[std::size_t(h) * TT + k] = simd::dot_u8i8<Tag>(acc[std::size_t(h) * TT + k], c,
                                                               S8::load_unaligned(q8 + std::size_t(h) * dim + c0));
        }
      F f[L];
      for (std::size_t i = 0; i < L; ++i) f[i] = xsimd::to_float(acc[i]);  // exact: |sum| < 2^24
      alignas(64) float sum[L];
      simd::haddp<Tag>(f).store_aligned(sum);
      for (int h = 0; h < HB; ++h)
        for (std::size_t k = 0; k < TT && t + k < n; ++k)
          s[std::size_t(h) * lds + t + k] = sum[std::size_t(h) * TT + k] * step[h] + bias[h];
    }
  }

  // Four rows' codes byte-interleaved within 128-bit lanes (xsimd zip on
  // x86): each 32-bit word of z[m] is one channel's codes of the four tokens.
  static LOWBIT_ALWAYS_INLINE void interleave4(const U8 (&c)[4], U8 (&z)[4]) noexcept {
    using U16 = xsimd::batch<std::uint16_t, typename Tag::arch>;
    const auto w16 = [](U8 v) { return simd::bitcast<std::uint16_t>(v); };
    const auto u8 = [](U16 v) { return simd::bitcast<std::uint8_t>(v); };
    const U8 l01 = xsimd::zip_lo(c[0], c[1]), h01 = xsimd::zip_hi(c[0], c[1]);
    const U8 l23 = xsimd::zip_lo(c[2], c[3]), h23 = xsimd::zip_hi(c[2], c[3]);
    z[0] = u8(xsimd::zip_lo(w16(l01), w16(l23)));
    z[1] = u8(xsimd::zip_hi(w16(l01), w16(l23)));
    z[2] = u8(xsimd::zip_lo(w16(h01), w16(h23)));
    z[3] = u8(xsimd::zip_hi(w16(h01), w16(h23)));
  }

  // The channel (within its W-channel part of a field) of each float that
  // accumulate_i8 writes, found by running its interleave on the channel
  // numbers: with VNNI four rows (interleave4, int32 lanes), else pairs of
  // rows (int16 pair sums, widened in order).
  static const std::uint8_t* value_order() noexcept {
    static const auto order = [] {
      alignas(64) std::uint8_t idx[W], z[4][W], lo[W], hi[W];
      for (std::size_t i = 0; i < W; ++i) idx[i] = std::uint8_t(i);
      const U8 v = U8::load_aligned(idx);
      std::array<std::uint8_t, W> o{};
      if constexpr (Tag::vnni) {
        U8 zv[4];
        interleave4({v, v, v, v}, zv);
        for (std::size_t m = 0; m < 4; ++m) zv[m].store_aligned(z[m]);
        for (std::size_t m = 0; m < 4; ++m)
          for (std::size_t i = 0; i < L; ++i) o[m * L + i] = z[m][4 * i];
      } else {
        xsimd::zip_lo(v, v).store_aligned(lo);
        xsimd::zip_hi(v, v).store_aligned(hi);
        for (std::size_t j = 0; j < W / 2; ++j) {
          o[j] = lo[2 * j];
          o[W / 2 + j] = hi[2 * j];
        }
      }
      return o;
    }();
    return order.data();
  }

  // acc[h * dim + c0 + i] += step[h] * sum_t w8[(h * ng + g) * ws + t] code(t0 + t, c),
  // c0 a multiple of W, c = c0 + value_order()[i], g = c / group, ng = dim /
  // group; n <= tile, ws >= n a multiple of 4, w8 zero from n to ws (the
  // padding tokens repeat the last row).
  template <int HB, bool OnePage, int B>
  static void accumulate_i8(const CodeRows<B>& rows, std::size_t t0, std::size_t n, std::size_t dim,
                            const std::uint8_t* w8, std::size_t ws, const float* step, std::size_t group,
                            float* acc) noexcept {
    const std::size_t ng = dim / group;
    static_assert(tile % 4 == 0, "ws <= tile");
    CodeRow<B> cur[tile];
    for (std::size_t t = 0; t < n; ++t) cur[t] = rows.row(t0 + t);
    for (std::size_t t = n; t < ws; ++t) cur[t] = cur[n - 1];
    const auto flush = [&](int h, std::size_t c0, std::size_t m, I sum) LOWBIT_ALWAYS_INLINE {
      float* o = acc + std::size_t(h) * dim + c0 + m * L;
      xsimd::fma(F(step[h]), xsimd::to_float(sum), F::load_unaligned(o)).store_unaligned(o);
    };
    for (std::size_t c0 = 0; c0 < dim; c0 += W) {
      const std::size_t g = c0 / group;
      if constexpr (Tag::vnni) {  // four tokens of a channel per int32 lane: one vpdpbusd per head
        const auto quad = [&](int h, std::size_t gg, std::size_t t) LOWBIT_ALWAYS_INLINE {
          std::int32_t q;
          std::memcpy(&q, w8 + (std::size_t(h) * ng + gg) * ws + t, 4);
          return q;
        };
        const auto pass = [&](auto two_groups) LOWBIT_ALWAYS_INLINE {
          I sum[HB][4];
          for (auto& a : sum) a[0] = a[1] = a[2] = a[3] = I(0);
          for (std::size_t t = 0; t < ws; t += 4) {
            U8 z[4];
            interleave4({part_codes<OnePage>(cur[t], c0), part_codes<OnePage>(cur[t + 1], c0),
                         part_codes<OnePage>(cur[t + 2], c0), part_codes<OnePage>(cur[t + 3], c0)},
                        z);
            for (int h = 0; h < HB; ++h) {
              I wv;
              if constexpr (two_groups()) wv = simd::words_pair<Tag>(quad(h, g, t), quad(h, g + 1, t));
              else wv = I(quad(h, g, t));
              const U8 wq = simd::bitcast<std::uint8_t>(wv);
              for (std::size_t m = 0; m < 4; ++m)
                sum[h][m] = simd::dot_u8i8<Tag>(sum[h][m], wq, simd::bitcast<std::int8_t>(z[m]));
            }
          }
          for (int h = 0; h < HB; ++h)
            for (std::size_t m = 0; m < 4; ++m) flush(h, c0, m, sum[h][m]);
        };
        // W = 64: the halves (fields) may lie in two groups, each with its own weights.
        if constexpr (W > field) {
          if ((c0 + field) / group != g) {
            pass(std::true_type{});
            continue;
          }
        }
        pass(std::false_type{});
      } else {  // pairs of tokens byte-interleaved: one pmaddubsw per head, int16 sums flushed before they overflow
        constexpr std::size_t flush_pairs = 32767 / (2 * 255 * ((1 << B) - 1));  // 21 at 2 bits, 4 at 4
        const std::size_t np = ws / 2;
        for (std::size_t p0 = 0; p0 < np; p0 += flush_pairs) {
          I16 lo[HB], hi[HB];
          for (int h = 0; h < HB; ++h) lo[h] = hi[h] = I16(0);
          for (std::size_t pi = p0; pi < std::min(np, p0 + flush_pairs); ++pi) {
            const U8 ca = part_codes<OnePage>(cur[2 * pi], c0), cb = part_codes<OnePage>(cur[2 * pi + 1], c0);
            const U8 zl = xsimd::zip_lo(ca, cb), zh = xsimd::zip_hi(ca, cb);
            for (int h = 0; h < HB; ++h) {
              std::int16_t pair;
              std::memcpy(&pair, w8 + (std::size_t(h) * ng + g) * ws + 2 * pi, 2);
              const U8 wp = simd::bitcast<std::uint8_t>(I16(pair));
              lo[h] += simd::madd_u8u7<Tag>(wp, zl);
              hi[h] += simd::madd_u8u7<Tag>(wp, zh);
            }
          }
          for (int h = 0; h < HB; ++h) {
            const auto [l0, l1] = simd::widen_i16<Tag>(lo[h]);
            const auto [h0, h1] = simd::widen_i16<Tag>(hi[h]);
            flush(h, c0, 0, l0);
            flush(h, c0, 1, l1);
            flush(h, c0, 2, h0);
            flush(h, c0, 3, h1);
          }
        }
      }
    }
  }

  // f(rows, one_page): the code rows of c at their bit width, and whether
  // its pages hold one token each (std::true_type / std::false_type).
  template <class F_>
  static void with_code_rows(const KvCodes& c, F_&& f) {
    const auto go = [&](const auto& rows) {
      if (rows.page_shift == 0) f(rows, std::true_type{});
      else f(rows, std::false_type{});
    };
    if (c.bits == 2) go(CodeRows<2>(c));
    else go(CodeRows<4>(c));
  }

  template <class F_>
  static void with_rows(const KvRows& r, F_&& f) {
    switch (r.kind) {
      case KvRows::Kind::f32: return f(F32Rows{static_cast<const float*>(r.data), r.stride});
      case KvRows::Kind::bf16: return f(Bf16Rows{static_cast<const std::uint16_t*>(r.data), r.stride});
      case KvRows::Kind::codes: break;  // decoded a tile at a time (decode), then the f32 loops
    }
  }

  // Heads [h0, h0 + HB) of the job, the whole pipeline.
  template <int HB>
  static void heads(const AttendJob& job, int h0, std::size_t T) {
    const std::size_t d = job.dim;
    thread_local std::vector<float> S, qs, qe, w, acc, acc8, zsum, zlanes, st_scale, st_min, raw, rows_f;
    thread_local std::vector<std::int8_t> q8;
    thread_local std::vector<std::uint8_t> w8;
    rows_f.resize(tile * d);
    const auto decode_codes = [&](const KvCodes& c, std::size_t first, std::size_t n, std::size_t dim) {
      with_code_rows(c, [&](const auto& rows, auto) { decode(rows, first, n, dim, rows_f.data()); });
    };
    S.resize(HB * T);
    qe.resize(HB * d);
    acc.assign(HB * d, 0.0f);
    const float* q = job.q + std::size_t(h0) * d;
    float bias[HB];

    // Scores.
    q8.resize(HB * d);
    qs.resize(HB * d);  // the scaled queries: scale * q
    for (std::size_t i = 0; i < HB * d; ++i) qs[i] = q[i] * job.scale;
    std::size_t t_off = 0;
    for (int ri = 0; ri < job.key_runs; t_off += job.keys[ri].tokens, ++ri) {
      const KvRows& run = job.keys[ri];
      if (run.kind != KvRows::Kind::codes) {
        for (float& b : bias) b = 0.0f;
        with_rows(run,
                  [&](const auto& rows) { scores<HB>(rows, 0, run.tokens, d, qs.data(), bias, S.data() + t_off, T); });
        continue;
      }
      const KvCodes& c = *run.codes;  // per channel, blocks of c.group tokens
      for (std::size_t a = run.first; a < run.first + run.tokens;) {
        const std::size_t blk = a / c.group, end = std::min((blk + 1) * c.group, run.first + run.tokens);
        // q~ = qs * s and the bias qs . m, the block's statistics converted once for all heads.
        F m[HB], b[HB];
        for (int h = 0; h < HB; ++h) m[h] = b[h] = F(0.0f);
        for (std::size_t ch = 0; ch < d; ch += L) {
          const F sc = simd::load_halves<Tag>(c.scale.data() + blk * d + ch);
          const F mn = simd::load_halves<Tag>(c.min.data() + blk * d + ch);
          for (int h = 0; h < HB; ++h) {
            const F qv = F::load_unaligned(qs.data() + std::size_t(h) * d + ch), x = qv * sc;
            x.store_unaligned(qe.data() + std::size_t(h) * d + ch);
            m[h] = xsimd::max(m[h], xsimd::abs(x));
            b[h] = xsimd::fma(qv, mn, b[h]);
          }
        }
        float top[HB];  // max |q~| per head
        for (int h = 0; h < HB; ++h) {
          bias[h] = xsimd::hadd(b[h]);
          top[h] = simd::reduce_max<Tag>(m[h]);
        }
        if (int8_keys(job, run)) {
          float step[HB];
          for (int h = 0; h < HB; ++h) {
            const std::size_t o = std::size_t(h) * d;
            step[h] = quantize_bytes_simd<Tag>(qe.data() + o, d, top[h], q8.data() + o);
          }
          with_code_rows(c, [&](const auto& rows, auto one_page) {
            float* sa = S.data() + t_off + (a - run.first);
            scores_i8<HB, one_page()>(rows, a, end - a, d, q8.data(), step, bias, sa, T);
          });
          a = end;
          continue;
        }
        for (std::size_t a1 = a; a1 < end; a1 += tile) {
          const std::size_t n = std::min(tile, end - a1);
          decode_codes(c, a1, n, d);
          scores<HB>(F32Rows{rows_f.data(), d}, 0, n, d, qe.data(), bias, S.data() + t_off + (a1 - run.first), T);
        }
        a = end;
      }
    }

    // Softmax (unnormalized; the sum divides at the end).
    float total[HB];
    for (int h = 0; h < HB; ++h) {
      float* s = S.data() + std::size_t(h) * T;
      float top = -std::numeric_limits<float>::infinity();
      {
        F vtop(top);
        std::size_t t = 0;
        for (; t + L <= T; t += L) vtop = xsimd::max(vtop, F::load_unaligned(s + t));
        top = simd::reduce_max<Tag>(vtop);
        for (; t < T; ++t) top = std::max(top, s[t]);
      }
      F vsum(0.0f);
      std::size_t t = 0;
      for (; t + L <= T; t += L) {
        const F e = xsimd::exp(F::load_unaligned(s + t) - F(top));
        e.store_unaligned(s + t);
        vsum += e;
      }
      float sum = xsimd::hadd(vsum);
      for (; t < T; ++t) sum += (s[t] = std::exp(s[t] - top));
      total[h] = sum;
    }

    // Weighted values.
    bool any8 = false;  // acc8 holds sums of int8 runs
    std::size_t ngz = 0;
    t_off = 0;
    for (int ri = 0; ri < job.value_runs; t_off += job.values[ri].tokens, ++ri) {
      const KvRows& run = job.values[ri];
      const bool codes = run.kind == KvRows::Kind::codes;
      const std::size_t group = codes ? run.codes->group : d, ng = d / group;
      if (codes && ngz == 0) {
        ngz = ng;
        zsum.assign(HB * ng, 0.0f);
        zlanes.assign(HB * ng * L, 0.0f);  // per (head, group): lane sums of p_t m_tg, added up at the end
      }
      const bool i8 = codes && int8_values(job, run);
      w.resize(HB * tile * ng);  // per run, not per tile: resize() is a call
      if (codes) {
        raw.resize(tile * ng);
        st_scale.resize(tile * ng);
        st_min.resize(tile * ng);
      }
      if (i8) w8.resize(HB * tile * ng);
      for (std::size_t t0 = 0; t0 < run.tokens; t0 += tile) {
        const std::size_t n = std::min(tile, run.tokens - t0), ws = i8 ? (n + 3) / 4 * 4 : n;  // w's stride per group
        if (codes) {  // the tile's statistics as floats, transposed to [g][t], once for all heads
          const auto to_float_gt = [&](const std::uint16_t* src, std::vector<float>& dst) {
            simd::halves_to_float<Tag>(src + (run.first + t0) * ng, n * ng, raw.data());
            // Constant group counts let the compiler turn the stride into shuffles.
            const auto transpose = [&](auto groups) {
              const std::size_t G = groups;
              for (std::size_t t = 0; t < n; ++t)
                for (std::size_t g = 0; g < G; ++g) dst[g * n + t] = raw[t * G + g];
            };
            if (ng == 4) transpose(std::integral_constant<std::size_t, 4>{});
            else if (ng == 2) transpose(std::integral_constant<std::size_t, 2>{});
            else transpose(ng);
          };
          to_float_gt(run.codes->scale.data(), st_scale);
          to_float_gt(run.codes->min.data(), st_min);
        }
        float wtop[HB] = {};
        // Per head: w[g][t] = p_t s_tg, its maximum, and the lane sums of
        // p_t m_tg. A whole tile (nn a constant) unrolls without tails.
        const auto weigh = [&](auto nn) LOWBIT_ALWAYS_INLINE {
          const std::size_t len = nn;
          for (int h = 0; h < HB; ++h) {
            const float* p = S.data() + std::size_t(h) * T + t_off + t0;
            float* wh = w.data() + std::size_t(h) * ng * ws;
            if (!codes) {
              std::copy(p, p + len, wh);
              continue;
            }
            F m(0.0f);  // max weight of the head's tile (weights are >= 0)
            float mt = 0.0f;
            for (std::size_t g = 0; g < ng; ++g) {
              const float *sc = st_scale.data() + g * len, *mn = st_min.data() + g * len;
              F zv(0.0f);
              std::size_t t = 0;
              for (; t + L <= len; t += L) {
                const F pv = F::load_unaligned(p + t), x = pv * F::load_unaligned(sc + t);
                x.store_unaligned(wh + g * ws + t);
                m = xsimd::max(m, x);
                zv = xsimd::fma(pv, F::load_unaligned(mn + t), zv);
              }
              float* zl = zlanes.data() + (std::size_t(h) * ng + g) * L;
              (F::load_unaligned(zl) + zv).store_unaligned(zl);
              for (; t < len; ++t) {
                mt = std::max(mt, wh[g * ws + t] = p[t] * sc[t]);
                zsum[std::size_t(h) * ng + g] += p[t] * mn[t];
              }
              std::fill(wh + g * ws + len, wh + (g + 1) * ws, 0.0f);  // int8: padding tokens weigh 0
            }
            wtop[h] = std::max(mt, simd::reduce_max<Tag>(m));
          }
        };
        if (n == tile) weigh(std::integral_constant<std::size_t, tile>{});
        else weigh(n);
        if (i8) {  // one step per head and tile, over all its groups
          float step[HB];
          for (std::size_t h = 0; h < HB; ++h)
            step[h] = quantize_bytes_simd<Tag>(w.data() + h * ng * ws, ng * ws, wtop[h], w8.data() + h * ng * ws);
          if (!any8) acc8.assign(HB * d, 0.0f);  // the int8 runs' sums, in value_order() within each part
          any8 = true;
          with_code_rows(*run.codes, [&](const auto& rows, auto one_page) {
            accumulate_i8<HB, one_page()>(rows, run.first + t0, n, d, w8.data(), ws, step, group, acc8.data());
          });
        } else if (codes) {
          decode_codes(*run.codes, run.first + t0, n, d);
          accumulate<HB>(F32Rows{rows_f.data(), d}, 0, n, d, w.data(), ng, group, acc.data());
        } else {
          with_rows(run, [&](const auto& rows) { accumulate<HB>(rows, t0, n, d, w.data(), ng, group, acc.data()); });
        }
      }
    }

    if (ngz)  // this call's code runs (zsum and zlanes are the thread's, sized for them)
      for (std::size_t i = 0; i < zsum.size(); ++i) zsum[i] += xsimd::hadd(F::load_unaligned(zlanes.data() + i * L));
    if (any8) {
      const std::uint8_t* order = value_order();
      for (std::size_t h = 0; h < HB; ++h)
        for (std::size_t c0 = 0; c0 < d; c0 += W)
          for (std::size_t i = 0; i < W; ++i) acc[h * d + c0 + order[i]] += acc8[h * d + c0 + i];
    }
    for (int h = 0; h < HB; ++h) {
      float* out = job.out + std::size_t(h0 + h) * d;
      const float inv = T ? 1.0f / total[h] : 0.0f;
      for (std::size_t ch = 0; ch < d; ++ch)
        out[ch] = (acc[std::size_t(h) * d + ch] + (ngz ? zsum[std::size_t(h) * ngz + ch / (d / ngz)] : 0.0f)) * inv;
    }
  }

  static void run(const AttendJob& job) {
    std::size_t T = 0;
    for (int r = 0; r < job.key_runs; ++r) T += job.keys[r].tokens;
    int h = 0;
    if constexpr (L >= 4) for (; h + 4 <= job.heads; h += 4) heads<4>(job, h, T);
    for (; h + 2 <= job.heads; h += 2) heads<2>(job, h, T);
    for (; h < job.heads; ++h) heads<1>(job, h, T);
  }
};

}  // namespace lowbit::detail

LOWBIT_AVX512_INTRINSICS_END
