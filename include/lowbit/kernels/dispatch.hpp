// The table of kernels for one ISA, and the lookup by ISA.
//
// Header-only builds fill the table of the TU's native ISA in place; with
// runtime dispatch (cmake: lowbit_add_dispatch) each ISA's table is built in
// its own translation unit (kernels/dispatch_tu.hpp) and declared here.
#pragma once

#include <cassert>
#include <cstddef>

#include "../simd/arch.hpp"
#include "attention_kernel.hpp"
#include "bf16_dot.hpp"
#include "code_dot.hpp"
#include "group_gemm.hpp"
#include "lut_gemv.hpp"
#include "sparse.hpp"
#include "vq_kernel.hpp"

namespace lowbit::detail {

struct kernel_table {
  isa id = isa::scalar;
  int f32_lanes = 0;  // float lanes of the fp32 kernels (activation layout, see PreparedActivations)
  void (*group_gemv)(const GroupQuantMatrix&, const PreparedActivations&, float* y, std::size_t r0,
                     std::size_t r1) = nullptr;
  float (*quantize_i8)(const float* v, std::size_t n, std::int8_t* q);  // byte_quant.hpp
  void (*group_gemm)(const GroupQuantMatrix&, const PreparedActivations* a, std::size_t n, float* Y,
                     std::size_t ldy, std::size_t r0, std::size_t r1) = nullptr;
  float (*bf16_dot)(const std::uint16_t* w, const float* x, std::size_t n) = nullptr;
  float (*split_bf16_dot)(const std::uint8_t* exponent, const std::uint8_t* sign_mantissa, const float* x,
                          std::size_t n) = nullptr;
  void (*join_bf16_words)(const std::uint8_t* exponent, const std::uint8_t* sign_mantissa, std::size_t n,
                    std::uint16_t* out, bool stream) = nullptr;  // DFloat11's output stage (bf16_dot.hpp)
  // One row of SpQR's dense part (code_dot.hpp): x in this table's lane
  // order (f32_lanes; natural order for scalar), K a multiple of 32.
  float (*spqr_row)(const std::uint8_t* row, std::size_t K, int bits, const float* x, const SubgroupStats&) = nullptr;
  // The same with int8 activations in natural order.
  float (*spqr_row_q8)(const std::uint8_t* row, std::size_t K, int bits, const std::int8_t* x,
                       const SubgroupStats&) = nullptr;
  // One CSR row of fp16 outliers against x (sparse.hpp).
  float (*sparse_dot)(const std::uint16_t* col, const std::uint16_t* val, std::size_t n, const float* x) = nullptr;
  // SpQR's per-block statistic arrays (code_dot.hpp).
  void (*fold_stats)(const float* par, const float* A, std::size_t T, std::size_t per, float* const* out) = nullptr;
  void (*halves_to_float)(const std::uint16_t* h, std::size_t n, float* out) = nullptr;  // fp16 arrays (simd/ops.hpp)
  // bitpack::unpack_range, whole runs in SIMD (code_dot.hpp).
  void (*unpack_codes)(const std::uint8_t* row, std::size_t n, int bits, std::size_t first, std::size_t count,
                       std::uint8_t* out) = nullptr;
  void (*attend)(const AttendJob&) = nullptr;  // decode attention for the query heads of one kv head
  // One level of a VQ part (vq_kernel.hpp): output axis, input axis.
  void (*vq_axpy)(const VqLevel&, const float* xs, float* y, std::size_t a0, std::size_t a1) = nullptr;
  void (*vq_dot)(const VqLevel&, const float* xs, float* y, std::size_t a0, std::size_t a1) = nullptr;
  // Lookup tables of segments [b0, b1) (lut_gemv.hpp).
  void (*lut_build)(const float* ct, std::size_t k, std::size_t v, const float* xs, std::size_t b0, std::size_t b1,
                    float* T) = nullptr;
  // Bit-serial table GEMV, int8 tables, rows of tiles [t0, t1) (lut_gemv.hpp).
  void (*bit_plane_gemv)(const BitPlaneMatrix&, const BitPlaneTables&, float* y, std::size_t t0,
                         std::size_t t1) = nullptr;
};

template <class F>
decltype(auto) with_bits(int bits, F&& f) {
  switch (bits) {
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    default: return f(std::integral_constant<int, 8>{});
  }
}

template <class Tag>
kernel_table make_kernel_table() {
  kernel_table t;
  t.id = Tag::id;
  if constexpr (std::is_same_v<Tag, simd::scalar_tag>) {
    t.bf16_dot = bf16_dot_reference;
    t.split_bf16_dot = split_bf16_dot_reference;
    t.join_bf16_words = join_bf16_words_reference;
    t.quantize_i8 = quantize_bytes<std::int8_t>;
    t.spqr_row = spqr_row_reference<float>;
    t.spqr_row_q8 = spqr_row_reference<std::int8_t>;
    t.fold_stats = fold_stats_reference;
    t.sparse_dot = sparse_dot_reference;
    t.unpack_codes = bitpack::unpack_range;
    t.halves_to_float = [](const std::uint16_t* h, std::size_t n, float* out) {
      for (std::size_t i = 0; i < n; ++i) out[i] = fp16::from_bits(h[i]).to_float();
    };
    t.attend = attend_reference;
    t.vq_axpy = vq_axpy_reference;
    t.vq_dot = vq_dot_reference;
    t.lut_build = lut_build_reference;
    t.bit_plane_gemv = bit_plane_gemv_reference;
    t.group_gemv = [](const GroupQuantMatrix& w, const PreparedActivations& a, float* y, std::size_t r0,
                      std::size_t r1) { group_gemv_reference(w, a.x.data(), &a, y, r0, r1); };
    t.group_gemm = [](const GroupQuantMatrix& w, const PreparedActivations* a, std::size_t n, float* Y,
                      std::size_t ldy, std::size_t r0, std::size_t r1) {
      std::vector<float> y(w.rows);
      for (std::size_t i = 0; i < n; ++i) {
        group_gemv_reference(w, a[i].x.data(), &a[i], y.data(), r0, r1);
        for (std::size_t r = r0; r < r1; ++r) Y[i * ldy + r] = y[r];
      }
    };
  } else {
    t.f32_lanes = int(simd::f32<Tag>::size);
    t.bf16_dot = bf16_dot<Tag>;
    t.split_bf16_dot = split_bf16_dot<Tag>;
    t.join_bf16_words = join_bf16_words<Tag>;
    t.attend = Attend<Tag>::run;
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
    if constexpr (std::is_same_v<Tag, simd::avx512vnni_tag>)
      t.attend = [](const AttendJob& j) {  // instruction-bound: 512-bit batches where the shapes allow (simd/arch.hpp)
        using Z = Attend<simd::avx512vnni_zmm_tag>;
        if (Z::fits(j)) Z::run(j);
        else Attend<Tag>::run(j);
      };
#endif
    t.vq_axpy = vq_level<Tag, true>;
    t.vq_dot = vq_level<Tag, false>;
    t.lut_build = lut_build<Tag>;
    t.quantize_i8 = quantize_i8<Tag>;
    t.halves_to_float = simd::halves_to_float<Tag>;
    t.fold_stats = fold_stats<Tag>;
    t.sparse_dot = sparse_dot<Tag>;
    t.unpack_codes = unpack_codes<Tag>;
    t.bit_plane_gemv = [](const BitPlaneMatrix& w, const BitPlaneTables& tb, float* y, std::size_t t0,
                          std::size_t t1) {
      switch (w.bits) {
        case 2: return bit_plane_gemv<Tag, 2>(w, tb, y, t0, t1);
        case 3: return bit_plane_gemv<Tag, 3>(w, tb, y, t0, t1);
        default: return bit_plane_gemv<Tag, 4>(w, tb, y, t0, t1);
      }
    };
    // One body for both activation types (x: const float* or const int8_t*).
    constexpr auto row16 = [](const std::uint8_t* row, std::size_t K, int bits, const auto* x,
                              const SubgroupStats& st) {
      return with_bits(bits, [&](auto B) { return spqr_row<Tag, B()>(row, K, x, st); });
    };
    t.spqr_row = row16;
    t.spqr_row_q8 = row16;
    t.group_gemv = [](const GroupQuantMatrix& w, const PreparedActivations& a, float* y, std::size_t r0,
                      std::size_t r1) {
      if (w.group % act_block != 0) return group_gemv_reference(w, a.x.data(), &a, y, r0, r1);
      assert(a.int8 || a.lanes == int(simd::f32<Tag>::size));
      with_bits(w.bits, [&](auto B) { group_gemv_rows<Tag, B()>(w, a, y, r0, r1); });
    };
    t.group_gemm = [](const GroupQuantMatrix& w, const PreparedActivations* a, std::size_t n, float* Y,
                      std::size_t ldy, std::size_t r0, std::size_t r1) {
      if (w.group % act_block != 0) return make_kernel_table<simd::scalar_tag>().group_gemm(w, a, n, Y, ldy, r0, r1);
      with_bits(w.bits, [&](auto B) { group_gemm_rows<Tag, B()>(w, a, n, Y, ldy, r0, r1); });
    };
  }
  return t;
}

#if defined(LOWBIT_DISPATCH)
// Defined in the per-ISA translation units made by lowbit_add_dispatch().
#ifdef LOWBIT_DISPATCH_SSE4_1
const kernel_table& kernels_isa_sse4_1();
#endif
#ifdef LOWBIT_DISPATCH_AVX2
const kernel_table& kernels_isa_avx2();
#endif
#ifdef LOWBIT_DISPATCH_AVX512BW
const kernel_table& kernels_isa_avx512bw();
#endif
#ifdef LOWBIT_DISPATCH_AVX512VNNI
const kernel_table& kernels_isa_avx512vnni();
#endif
#ifdef LOWBIT_DISPATCH_NEON64
const kernel_table& kernels_isa_neon64();
#endif
#else
template <isa I> struct tag_of;
template <> struct tag_of<isa::scalar> { using type = simd::scalar_tag; };
template <> struct tag_of<isa::sse4_1> { using type = simd::sse4_1_tag; };
template <> struct tag_of<isa::avx2> { using type = simd::avx2_tag; };
template <> struct tag_of<isa::avx512bw> { using type = simd::avx512bw_tag; };
template <> struct tag_of<isa::avx512vnni> { using type = simd::avx512vnni_tag; };
template <> struct tag_of<isa::neon64> { using type = simd::neon64_tag; };
#endif

inline const kernel_table& kernels_for(isa i) {
  static const kernel_table scalar = make_kernel_table<simd::scalar_tag>();
  switch (i) {
#if defined(LOWBIT_DISPATCH)
#ifdef LOWBIT_DISPATCH_SSE4_1
    case isa::sse4_1: return kernels_isa_sse4_1();
#endif
#ifdef LOWBIT_DISPATCH_AVX2
    case isa::avx2: return kernels_isa_avx2();
#endif
#ifdef LOWBIT_DISPATCH_AVX512BW
    case isa::avx512bw: return kernels_isa_avx512bw();
#endif
#ifdef LOWBIT_DISPATCH_AVX512VNNI
    case isa::avx512vnni: return kernels_isa_avx512vnni();
#endif
#ifdef LOWBIT_DISPATCH_NEON64
    case isa::neon64: return kernels_isa_neon64();
#endif
#else
    case native_isa(): {
      static const kernel_table native = make_kernel_table<typename tag_of<native_isa()>::type>();
      return native;
    }
#endif
    default: return scalar;
  }
}

inline const kernel_table& active_kernels() { return kernels_for(active_isa()); }

}  // namespace lowbit::detail
