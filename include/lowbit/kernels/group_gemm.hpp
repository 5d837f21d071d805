// Y = X W^T for group-quantized W and a batch of n tokens (prefill), rows
// [r0, r1) per call (kernels/gemv.hpp runs row blocks in parallel). Three
// kernels, chosen by group_gemm_rows from the batch size and activations:
//
//  - token tiles (few tokens): group_rows of group_gemv.hpp for 1, 2 or 4
//    tokens at a time, each block decoded once per tile. Rows equal gemv's
//    bit for bit.
//  - tokens in lanes (int8 activations, 8 tokens or more): lane t of each
//    int32 vector accumulates token t,
//      acc_it += sum_{k<4} code_i[4m + k] * xq_t[4m + k]
//    by one vpdpbusd / maddubs / sdot with row i's 4 codes broadcast to all
//    lanes. No horizontal sums, and the scales become vectors over tokens
//    (d_t per segment one load, s_ig one broadcast): per segment of 128
//    codes, row and 8 tokens, 32 integer dots, one conversion and two
//    multiplies. int4 / int2 rows are read packed, int3 unpacked to bytes
//    per panel of rows (group_gemm_lanes). With AVX-512 VNNI, batches of
//    more than 8 tokens run 16 tokens to a 512-bit vector.
//  - dense fp32 (fp32 activations from 4 tokens): panels of rows dequantized
//    to fp32 and multiplied by a register tile.
//
// The last two sum in another order than gemv (float rounding only).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "code_dot.hpp"
#include "group_gemv.hpp"

LOWBIT_AVX512_INTRINSICS_BEGIN

namespace lowbit {
namespace detail {

// Rows [r0, r1) of w dequantized, in the float-lane order of float_block
// (the order PreparedActivations::values gives for the same lanes): out row
// i at out + i * ldo, whole 32-code blocks. Codes past K dequantize to the
// finite -s z and meet zero activations.
template <class Tag, int Bits>
void dequantize_rows(const GroupQuantMatrix& w, std::size_t r0, std::size_t r1, float* out, std::size_t ldo) {
  using F = simd::f32<Tag>;
  using D = block_decoder<Tag, Bits>;
  constexpr int L = int(F::size), H = D::H;
  const std::size_t K = w.cols, nb = (K + act_block - 1) / act_block, bpg = w.group / act_block;
  row_params<Tag, Bits> rp(w);
  for (std::size_t r = r0; r < r1; ++r) {
    rp.load(r);
    const D dec(w.row_codes(r), K);
    float* o = out + (r - r0) * ldo;
    for (std::size_t b = 0; b < nb; ++b) {
      const std::size_t j = b / bpg;
      const F s(rp.s[j]), sz(-rp.s[j] * rp.z[j]);
      const float_block<Tag, Bits> fb{code_block<Tag, Bits>(dec, b)};
      for (int h = 0; h < H; ++h)
        for (int p = 0; p < 4; ++p) xsimd::fma(fb.f[h][p], s, sz).store_unaligned(o + b * act_block + (4 * h + p) * L);
    }
  }
}

// C[i][j] = sum_k A[i][k] B[j][k] for A: TI x K, B: TJ x K (row strides lda,
// ldb, K a multiple of the float lanes): a register tile of TI x TJ
// accumulators; every loaded vector feeds TJ or TI FMAs.
template <class Tag, int TI, int TJ>
void dot_tile(const float* A, std::size_t lda, const float* B, std::size_t ldb, std::size_t K, float* C,
              std::size_t ldc) {
  using F = simd::f32<Tag>;
  constexpr std::size_t L = F::size;
  F acc[TI][TJ];
  for (int i = 0; i < TI; ++i)
    for (int j = 0; j < TJ; ++j) acc[i][j] = F(0.0f);
  for (std::size_t k = 0; k < K; k += L) {
    F x[TI];
    for (int i = 0; i < TI; ++i) x[i] = F::load_unaligned(A + i * lda + k);
    for (int j = 0; j < TJ; ++j) {
      const F wv = F::load_unaligned(B + j * ldb + k);
      for (int i = 0; i < TI; ++i) acc[i][j] = xsimd::fma(x[i], wv, acc[i][j]);
    }
  }
  for (int i = 0; i < TI; ++i)
    for (int j = 0; j < TJ; ++j) C[i * ldc + j] = xsimd::hadd(acc[i][j]);
}

// The int8 activations of up to NT tokens in the token-lane layout: 32-bit
// word m of token t (its q bytes 4m .. 4m + 3) at q[m NT + t], and d and the
// group sums token-minor too. Missing tokens and words past K are zeros:
// they add nothing and are never stored.
template <std::size_t NT>
struct token_lanes {
  std::vector<std::int32_t> q;
  std::vector<float> d, group_sum;

  // words: at least a[t].q.size() / 4 (more for whole chunks of blocks).
  token_lanes(const PreparedActivations* a, std::size_t n, std::size_t words, std::size_t G)
      : q(words * NT, 0), d(a[0].d.size() * NT, 0.0f), group_sum(G * NT, 0.0f) {
    const std::size_t ns = a[0].d.size(), mq = a[0].q.size() / 4;
    for (std::size_t t = 0; t < n; ++t) {
      for (std::size_t m = 0; m < mq; ++m) std::memcpy(&q[m * NT + t], a[t].q.data() + 4 * m, 4);
      for (std::size_t s = 0; s < ns; ++s) d[s * NT + t] = a[t].d[s];
      for (std::size_t g = 0; g < G; ++g) group_sum[g * NT + t] = a[t].group_sum[g];
    }
  }
};

// Rows per register tile of the token-lane kernel reading planes of width
// W with TJ vectors of tokens: as many accumulators as the registers allow
// (32 vector registers with AVX-512VL and NEON, 16 otherwise), leaving 8 for
// activations and codes. With VNNI each field has its own accumulators
// (token_lane_tile).
template <class Tag, int W, int TJ>
constexpr int lane_rows() {
  constexpr bool regs32 = Tag::id == isa::avx512bw || Tag::id == isa::avx512vnni || Tag::id == isa::neon64;
  constexpr int fields = Tag::vnni ? 8 / W : 1;
  return std::clamp((regs32 ? 24 : 8) / (fields * TJ), 1, 8);
}

// One register tile of the token-lane gemm: TI rows x TJ vectors of L
// tokens, over all K. The rows are read as one plane of width W
// (core/bitpack.hpp): a 32-byte chunk holds F = 8 / W blocks, and the dword
// at byte 4m of chunk c holds codes 4m .. 4m + 3 of blocks cF .. cF + F - 1,
// one per bit-field. So one broadcast dword gives F blocks' worth of dot
// products: W = 4 or 2 reads the packed row itself, W = 8 (F = 1) reads
// codes unpacked to bytes. A segment must be whole chunks. Fields:
//  - VNNI: masked in place (field f is 2^(Wf) times the code, still a byte
//    that vpdpbusd takes unsigned), into accumulators of their own that are
//    shifted back once per segment: one op per field and row.
//  - otherwise shifted down and masked (maddubs saturates above 127).
// Out: acc[i][j] = y for rows i, the tokens of vector j.
template <class Tag, int W, int TI, int TJ, std::size_t NT>
void token_lane_tile(const std::uint8_t* const* rows, std::size_t nb, const float* s, const float* sz,
                     std::size_t G, std::size_t seg, std::size_t segs_per_group, const token_lanes<NT>& x,
                     simd::f32<Tag> (&acc)[TI][TJ]) {
  using I = simd::i32<Tag>;
  using F = simd::f32<Tag>;
  constexpr std::size_t L = I::size;
  constexpr int Fn = 8 / W, FA = Tag::vnni ? Fn : 1;  // fields, accumulator sets
  static_assert(NT == L * TJ);
  constexpr auto field_mask = [](int f) { return std::int32_t(0x01010101u * (((1u << W) - 1u) << (W * f))); };
  // nb blocks: the row's chunks, and its segments of whole chunks (the last
  // one may end early).
  const std::size_t chunks = (nb + Fn - 1) / Fn, chunks_per_seg = seg / act_block / std::size_t(Fn);
  const std::size_t ns = (chunks + chunks_per_seg - 1) / chunks_per_seg;
  for (int i = 0; i < TI; ++i)
    for (int j = 0; j < TJ; ++j) acc[i][j] = F(0.0f);
  for (std::size_t sg = 0, g = 0, g_end = segs_per_group; sg < ns; ++sg) {
    if (sg == g_end) {
      ++g;
      g_end += segs_per_group;
    }
    I dot[FA][TI][TJ];
    for (int a = 0; a < FA; ++a)
      for (int i = 0; i < TI; ++i)
        for (int j = 0; j < TJ; ++j) dot[a][i][j] = I(0);
    for (std::size_t c = sg * chunks_per_seg; c < std::min(chunks, (sg + 1) * chunks_per_seg); ++c)
      for (std::size_t m = 0; m < act_block / 4; ++m) {
        I xv[Fn][TJ];
        for (int f = 0; f < Fn; ++f)
          for (int j = 0; j < TJ; ++j)
            xv[f][j] = I::load_unaligned(x.q.data() + ((c * Fn + std::size_t(f)) * (act_block / 4) + m) * NT +
                                         std::size_t(j) * L);
        for (int i = 0; i < TI; ++i) {
          std::int32_t word;
          std::memcpy(&word, rows[i] + c * bitpack::chunk_bytes + 4 * m, 4);
          const I v(word);
          for (int f = 0; f < Fn; ++f) {
            I code = v;
            if constexpr (W < 8) code = Tag::vnni ? (v & I(field_mask(f))) : ((v >> (W * f)) & I(field_mask(0)));
            const simd::u8<Tag> cu = simd::bitcast<std::uint8_t>(code);
            I(&d)[TI][TJ] = dot[Tag::vnni ? f : 0];
            for (int j = 0; j < TJ; ++j)
              d[i][j] = simd::dot_u8i8<Tag>(d[i][j], cu, simd::bitcast<std::int8_t>(xv[f][j]));
          }
        }
      }
    for (int a = 1; a < FA; ++a)  // exact: field a's sums are multiples of 2^(Wa)
      for (int i = 0; i < TI; ++i)
        for (int j = 0; j < TJ; ++j) dot[0][i][j] += dot[a][i][j] >> (W * a);
    for (int j = 0; j < TJ; ++j) {
      const F dv = F::load_unaligned(x.d.data() + sg * NT + std::size_t(j) * L);
      for (int i = 0; i < TI; ++i)
        acc[i][j] = xsimd::fma(xsimd::to_float(dot[0][i][j]) * dv, F(s[std::size_t(i) * G + g]), acc[i][j]);
    }
  }
  // The zero-point term sum_g s_g z_g A_g (group_gemv.hpp), per token.
  for (std::size_t g = 0; g < G; ++g)
    for (int j = 0; j < TJ; ++j) {
      const F gv = F::load_unaligned(x.group_sum.data() + g * NT + std::size_t(j) * L);
      for (int i = 0; i < TI; ++i) acc[i][j] = xsimd::fnma(F(sz[std::size_t(i) * G + g]), gv, acc[i][j]);
    }
}

// Int8 gemm with tokens in lanes (header comment), rows in panels of P,
// read as planes of width W: the packed rows themselves (W = plane width)
// or, for W = 8, each panel unpacked to bytes first, about 256 KiB that
// stay in L2 while every token tile passes over them.
template <class Tag, int Bits, int W, int TJ>
void group_gemm_lanes_w(const GroupQuantMatrix& w, const PreparedActivations* a, std::size_t n, float* Y,
                        std::size_t ldy, std::size_t r0, std::size_t r1) {
  using F = simd::f32<Tag>;
  constexpr std::size_t L = F::size, NT = L * TJ, TI = std::size_t(lane_rows<Tag, W, TJ>());
  constexpr bool in_place = W == bitpack::plane_width(Bits, 0);
  const std::size_t K = w.cols, nb = (K + act_block - 1) / act_block, Kp = nb * act_block;
  const std::size_t G = w.groups_per_row(), seg = a[0].segment;
  // Words of whole chunks: a packed row's last chunk may hold blocks past K.
  const std::size_t words = (nb + 7) / 8 * 8 * (act_block / 4);
  std::vector<token_lanes<NT>> tiles;
  for (std::size_t t0 = 0; t0 < n; t0 += NT) tiles.emplace_back(a + t0, std::min(NT, n - t0), words, G);

  const std::size_t P = in_place ? 8 * TI : std::max(TI, (std::size_t(1) << 18) / Kp / TI * TI);
  std::vector<std::uint8_t> codes(in_place ? 0 : P * Kp), zero_row(std::max(Kp, w.row_bytes()), 0);
  std::vector<float> s(P * G), sz(P * G);
  // The panel's outputs, token-major: Y rows are then written contiguously
  // (storing lanes straight into Y touched a line of Y per value).
  std::vector<float> C(tiles.size() * NT * P);
  using Natural = typename natural_order<Tag>::type;  // statistics and unpacking: 256-bit blocks
  row_params<Natural, Bits> rp(w);
  for (std::size_t p0 = r0; p0 < r1; p0 += P) {
    const std::size_t pr = std::min(P, r1 - p0);
    for (std::size_t i = 0; i < pr; ++i) {
      rp.load(p0 + i);
      for (std::size_t g = 0; g < G; ++g) {
        s[i * G + g] = rp.s[g];
        sz[i * G + g] = rp.s[g] * rp.z[g];
      }
      if constexpr (!in_place) {
        std::uint8_t* ci = codes.data() + i * Kp;
        const std::size_t whole = K / act_block * act_block;
        unpack_codes<Natural>(w.row_codes(p0 + i), K, Bits, 0, whole, ci);
        bitpack::unpack_range(w.row_codes(p0 + i), K, Bits, whole, K - whole, ci + whole);
        std::fill(ci + K, ci + Kp, std::uint8_t(0));
      }
    }
    for (std::size_t tile = 0; tile < tiles.size(); ++tile)
      for (std::size_t i0 = 0; i0 < pr; i0 += TI) {
        // Rows past the panel read zeros and are never stored.
        const std::uint8_t* rows[TI];
        for (std::size_t i = 0; i < TI; ++i)
          rows[i] = i0 + i >= pr ? zero_row.data()
                    : in_place   ? w.row_codes(p0 + i0 + i)
                                 : codes.data() + (i0 + i) * Kp;
        F acc[TI][TJ];
        token_lane_tile<Tag, W, int(TI), TJ>(rows, nb, &s[i0 * G], &sz[i0 * G], G, seg, w.group / seg, tiles[tile],
                                             acc);
        // A TI x L block per vector j, transposed through C's layout.
        alignas(64) float out[L];
        for (std::size_t i = 0; i < TI; ++i)
          for (int j = 0; j < TJ; ++j) {
            acc[i][j].store_aligned(out);
            float* c = C.data() + (tile * NT + std::size_t(j) * L) * P + i0 + i;
            for (std::size_t l = 0; l < L; ++l) c[l * P] = out[l];
          }
      }
    for (std::size_t t = 0; t < n; ++t) std::copy_n(C.data() + t * P, pr, Y + t * ldy + p0);
  }
}

// Packed rows are read in place when they are one plane whose chunks fit
// the segments (int4 with g >= 64, int2 with g >= 128, int8); otherwise
// (int3, small groups) they are unpacked to bytes. A tile holds one vector
// of tokens when all n fit in one, else two.
template <class Tag, int Bits>
void group_gemm_lanes(const GroupQuantMatrix& w, const PreparedActivations* a, std::size_t n, float* Y,
                      std::size_t ldy, std::size_t r0, std::size_t r1) {
  static_assert(Bits < 8 || Tag::vnni, "8-bit codes exceed dot_u8i8's range without VNNI");
  constexpr int W = bitpack::plane_width(Bits, 0);
  const auto run = [&](auto TJ) {
    if constexpr (bitpack::plane_count(Bits) == 1 && W < 8)
      if ((a[0].segment / act_block) % (8 / W) == 0)
        return group_gemm_lanes_w<Tag, Bits, W, TJ()>(w, a, n, Y, ldy, r0, r1);
    group_gemm_lanes_w<Tag, Bits, 8, TJ()>(w, a, n, Y, ldy, r0, r1);
  };
  if (n <= simd::i32<Tag>::size)
    run(std::integral_constant<int, 1>{});
  else
    run(std::integral_constant<int, 2>{});
}

// Which kernel gemm runs for n tokens (header comment). Measured on
// 4096 x 4096 int4 g128 (bench_gemv, BM_gemm_int4_g128*/N):
//  - int8 activations: token lanes from 8 tokens (one vector of lanes).
//    8-bit codes exceed maddubs' range, so without VNNI they keep the
//    earlier rule below.
//  - fp32 activations: dequantizing costs about one fp32 gemv, the dense
//    product about a quarter of one per token on AVX2, so dense pays from 4;
//    the int8 tiles are about 2.5x faster than fp32 ones, so from 12.
enum class gemm_kernel { tiles, lanes, dense };
inline gemm_kernel choose_gemm_kernel(bool int8, isa id, int bits, std::size_t n) noexcept {
  if (int8 && (bits < 8 || id == isa::avx512vnni)) return n >= 8 ? gemm_kernel::lanes : gemm_kernel::tiles;
  return n < (int8 ? 12u : 4u) ? gemm_kernel::tiles : gemm_kernel::dense;
}

// Tiles of NT tokens through group_rows; a short last tile repeats its last
// token and drops those results.
template <class Tag, int Bits, int NT>
void group_gemm_tiles(const GroupQuantMatrix& w, const PreparedActivations* a, std::size_t n, float* Y,
                      std::size_t ldy, std::size_t r0, std::size_t r1) {
  std::vector<float> scratch(w.rows);
  for (std::size_t n0 = 0; n0 < n; n0 += NT) {
    const PreparedActivations* in[NT];
    float* out[NT];
    for (int t = 0; t < NT; ++t) {
      const std::size_t i = n0 + std::size_t(t);
      in[t] = &a[std::min(i, n - 1)];
      out[t] = i < n ? Y + i * ldy : scratch.data();
    }
    group_rows<Tag, Bits, NT>(w, in, out, r0, r1);
  }
}

// Y[n, r] (row stride ldy) for all n tokens, rows [r0, r1), by the kernel
// choose_gemm_kernel picks. Dense: panels of rows dequantized to fp32 and
// multiplied with the activations (x, or d q_k for int8) by a 4 x 3
// register tile.
template <class Tag, int Bits>
void group_gemm_rows(const GroupQuantMatrix& w, const PreparedActivations* a, std::size_t n, float* Y,
                     std::size_t ldy, std::size_t r0, std::size_t r1) {
  const gemm_kernel kind = choose_gemm_kernel(a[0].int8, Tag::id, Bits, n);
  if constexpr (Bits < 8 || Tag::vnni)
    if (kind == gemm_kernel::lanes) {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
      // Instruction-bound: with AVX-512 VNNI, more tokens than one 256-bit
      // vector run 16 to a 512-bit vector, half the vpdpbusd per product
      // (each lane's arithmetic is the same: bit-identical results).
      if constexpr (std::is_same_v<Tag, simd::avx512vnni_tag>)
        if (n > simd::i32<Tag>::size) return group_gemm_lanes<simd::avx512vnni_zmm_tag, Bits>(w, a, n, Y, ldy, r0, r1);
#endif
      return group_gemm_lanes<Tag, Bits>(w, a, n, Y, ldy, r0, r1);
    }
  if (kind == gemm_kernel::tiles) {
    // Tiles of 1, 2 or 4 tokens (3 runs as a padded 4: one instantiation
    // less of the heaviest template, for a quarter of a tile's work).
    switch (n) {
      case 1: return group_gemm_tiles<Tag, Bits, 1>(w, a, n, Y, ldy, r0, r1);
      case 2: return group_gemm_tiles<Tag, Bits, 2>(w, a, n, Y, ldy, r0, r1);
      default: return group_gemm_tiles<Tag, Bits, 4>(w, a, n, Y, ldy, r0, r1);
    }
  }
  constexpr std::size_t TI = 4, TJ = 3;
  const std::size_t K = w.cols, Kp = (K + act_block - 1) / act_block * act_block;
  const std::size_t n4 = (n + TI - 1) / TI * TI;
  std::vector<float> X(n4 * Kp, 0.0f);
  for (std::size_t i = 0; i < n; ++i) a[i].values(X.data() + i * Kp, K, simd::f32<Tag>::size);
  // A panel of about 1 MiB of dequantized rows (at least one tile) is reused
  // by every token tile while it sits in L2.
  const std::size_t P = std::max<std::size_t>(TJ, (std::size_t(1) << 18) / Kp / TJ * TJ);
  std::vector<float> Wp(P * Kp), C(n4 * P);
  for (std::size_t p0 = r0; p0 < r1; p0 += P) {
    const std::size_t pr = std::min(P, r1 - p0), prp = (pr + TJ - 1) / TJ * TJ;
    dequantize_rows<Tag, Bits>(w, p0, p0 + pr, Wp.data(), Kp);
    std::fill(Wp.begin() + std::ptrdiff_t(pr * Kp), Wp.begin() + std::ptrdiff_t(prp * Kp), 0.0f);
    for (std::size_t j = 0; j < prp; j += TJ)
      for (std::size_t i = 0; i < n4; i += TI)
        dot_tile<Tag, TI, TJ>(X.data() + i * Kp, Kp, Wp.data() + j * Kp, Kp, Kp, C.data() + i * P + j, P);
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < pr; ++j) Y[i * ldy + p0 + j] = C[i * P + j];
  }
}

}  // namespace detail
}  // namespace lowbit

LOWBIT_AVX512_INTRINSICS_END
