// Instruction sets lowbit's kernels are built for, CPU detection, and the
// runtime choice among them (DESIGN.md, "SIMD dispatch with xsimd 8.1").
//
// Kernels are templates on an ISA *tag* (one distinct type per target, so the
// per-ISA translation units never share a kernel symbol). A tag names the
// xsimd architecture whose batches it computes with. The AVX-512 tags use
// 256-bit batches: lowbit's kernels stream 32-byte chunks (core/bitpack.hpp)
// and are memory-bound, so what AVX-512 adds here is EVEX encoding, 32 vector
// registers and, with VNNI, vpdpbusd for int8 dot products. The kernels
// bound by their instruction count instead run on 512-bit batches
// (avx512vnni_zmm_tag) in the avx512vnni table where the shapes allow: decode
// attention over a KIVI cache (kernels/attention_kernel.hpp), the int8 group
// gemv (kernels/group_gemv.hpp) and the int8 gemm with tokens in lanes
// (kernels/group_gemm.hpp).
//
// Which ISAs are compiled in:
//   header-only (default): the best one the translation unit's own flags
//     enable (e.g. -march=native), plus scalar;
//   runtime dispatch: those added by lowbit_add_dispatch() in CMake
//     (LOWBIT_DISPATCH_<ISA> macros), plus scalar.
// The active ISA is the best compiled-in one the CPU supports, unless forced
// by set_isa() or the environment variable LOWBIT_ISA (e.g. LOWBIT_ISA=avx2).
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "../core/error.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

// Forces a small per-chunk helper into its hot loop where GCC's heuristics
// would leave a call (seen on NEON, where xsimd's ops look large before
// constant folding: .ci/portability prints the hot loops' instruction mix).
#if defined(__GNUC__)
#define LOWBIT_ALWAYS_INLINE __attribute__((always_inline))
#else
#define LOWBIT_ALWAYS_INLINE
#endif

// Around code that inlines AVX-512 intrinsics on 512-bit batches: GCC 12's
// take an "undefined" register as the pass-through operand of their unmasked
// forms, which -Wmaybe-uninitialized reports at every inlined use (GCC bug
// 105593, fixed in GCC 13), so -Werror builds would fail on correct code.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#define LOWBIT_AVX512_INTRINSICS_BEGIN \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wuninitialized\"") \
      _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#define LOWBIT_AVX512_INTRINSICS_END _Pragma("GCC diagnostic pop")
#else
#define LOWBIT_AVX512_INTRINSICS_BEGIN
#define LOWBIT_AVX512_INTRINSICS_END
#endif

namespace lowbit {

enum class isa : int { scalar = 0, sse4_1 = 1, avx2 = 2, avx512bw = 3, avx512vnni = 4, neon64 = 5 };
inline constexpr isa all_isas[] = {isa::scalar, isa::sse4_1, isa::avx2, isa::avx512bw, isa::avx512vnni, isa::neon64};

inline const char* isa_name(isa i) noexcept {
  switch (i) {
    case isa::scalar: return "scalar";
    case isa::sse4_1: return "sse4_1";
    case isa::avx2: return "avx2";
    case isa::avx512bw: return "avx512bw";
    case isa::avx512vnni: return "avx512vnni";
    case isa::neon64: return "neon64";
  }
  return "?";
}

inline isa parse_isa(const std::string& name) {
  for (isa i : all_isas)
    if (name == isa_name(i)) return i;
  detail::fail("parse_isa", "unknown ISA '", name, "' (scalar, sse4_1, avx2, avx512bw, avx512vnni, neon64)");
}

// The best ISA the translation unit's own compiler flags enable.
inline constexpr isa native_isa() noexcept {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__) && defined(__FMA__) && defined(__F16C__)
  return isa::avx512vnni;
#elif defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__) && defined(__FMA__) && defined(__F16C__)
  return isa::avx512bw;
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  return isa::avx2;
#elif defined(__SSE4_1__)
  return isa::sse4_1;
#elif defined(__aarch64__) && defined(__ARM_NEON)
  return isa::neon64;
#else
  return isa::scalar;
#endif
}

namespace simd {

// ISA tags. `arch` is the xsimd architecture of the batches a kernel uses.
struct scalar_tag {
  static constexpr isa id = isa::scalar;
};
struct sse4_1_tag {
  static constexpr isa id = isa::sse4_1;
  using arch = xsimd::sse4_1;
  static constexpr bool vnni = false;
};
struct avx2_tag {
  static constexpr isa id = isa::avx2;
  using arch = xsimd::fma3<xsimd::avx2>;
  static constexpr bool vnni = false;
};
struct avx512bw_tag {
  static constexpr isa id = isa::avx512bw;
  using arch = xsimd::fma3<xsimd::avx2>;
  static constexpr bool vnni = false;
};
struct avx512vnni_tag {
  static constexpr isa id = isa::avx512vnni;
  using arch = xsimd::fma3<xsimd::avx2>;
  static constexpr bool vnni = true;
};
// The same ISA on 512-bit batches; only the kernel table of avx512vnni uses
// it (header comment).
struct avx512vnni_zmm_tag {
  static constexpr isa id = isa::avx512vnni;
  using arch = xsimd::avx512bw;
  static constexpr bool vnni = true;
};
struct neon64_tag {
  static constexpr isa id = isa::neon64;
  using arch = xsimd::neon64;
  static constexpr bool vnni = false;
};

// Does this CPU (and OS, for the AVX register state) support the ISA?
inline bool cpu_supports(isa i) noexcept {
  if (i == isa::scalar) return true;
#if defined(__x86_64__) || defined(__i386__)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  const bool sse41 = (c >> 19) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1,
             f16c = (c >> 29) & 1;
  if (i == isa::sse4_1) return sse41;
  if (!osxsave || !avx) return false;
  unsigned xlo, xhi;
  __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  const bool os_avx = (xlo & 0x6u) == 0x6u, os_avx512 = (xlo & 0xE6u) == 0xE6u;
  if (!os_avx || __get_cpuid_max(0, nullptr) < 7) return false;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1,
             avx512vl = (b >> 31) & 1, vnni = (c >> 11) & 1;
  const bool has_avx2 = avx2 && fma && f16c;
  if (i == isa::avx2) return has_avx2;
  const bool has_512 = has_avx2 && os_avx512 && avx512f && avx512dq && avx512bw && avx512vl;
  if (i == isa::avx512bw) return has_512;
  if (i == isa::avx512vnni) return has_512 && vnni;
  return false;
#elif defined(__aarch64__)
  return i == isa::neon64;
#else
  return false;
#endif
}

// Is the ISA compiled into this program (see the header comment)?
inline constexpr bool compiled_in(isa i) noexcept {
#if defined(LOWBIT_DISPATCH)
  switch (i) {
    case isa::scalar: return true;
#ifdef LOWBIT_DISPATCH_SSE4_1
    case isa::sse4_1: return true;
#endif
#ifdef LOWBIT_DISPATCH_AVX2
    case isa::avx2: return true;
#endif
#ifdef LOWBIT_DISPATCH_AVX512BW
    case isa::avx512bw: return true;
#endif
#ifdef LOWBIT_DISPATCH_AVX512VNNI
    case isa::avx512vnni: return true;
#endif
#ifdef LOWBIT_DISPATCH_NEON64
    case isa::neon64: return true;
#endif
    default: return false;
  }
#else
  return i == isa::scalar || i == native_isa();
#endif
}

}  // namespace simd

// ISAs this program can run here: compiled in and supported by the CPU,
// lowest first (scalar is always there).
inline std::vector<isa> available_isas() {
  std::vector<isa> out;
  for (isa i : all_isas)
    if (simd::compiled_in(i) && simd::cpu_supports(i)) out.push_back(i);
  return out;
}

namespace detail {
inline std::atomic<int>& forced_isa() {
  static std::atomic<int> v{-1};
  return v;
}
inline isa initial_isa() {
  if (const char* env = std::getenv("LOWBIT_ISA"); env && *env) {
    const isa want = parse_isa(env);
    LOWBIT_CHECK(simd::compiled_in(want) && simd::cpu_supports(want), "LOWBIT_ISA",
                 "ISA '", env, "' is not available here (not compiled in or not supported by this CPU)");
    return want;
  }
  return available_isas().back();
}
}  // namespace detail

// The ISA lowbit's kernels use now.
inline isa active_isa() {
  const int f = detail::forced_isa().load(std::memory_order_relaxed);
  if (f >= 0) return isa(f);
  static const isa chosen = detail::initial_isa();
  return chosen;
}

// Force an ISA (tests and benchmarks run every one this way). Throws if it is
// not compiled in or the CPU lacks it.
inline void set_isa(isa i) {
  LOWBIT_CHECK(simd::compiled_in(i), "set_isa", "ISA ", isa_name(i), " is not compiled into this program");
  LOWBIT_CHECK(simd::cpu_supports(i), "set_isa", "this CPU does not support ISA ", isa_name(i));
  detail::forced_isa() = int(i);
}
// Back to the automatic choice.
inline void reset_isa() noexcept { detail::forced_isa() = -1; }

}  // namespace lowbit
