// DFloat11: lossless compression of BFloat16 tensors (format/dfloat11.hpp).
//
//   auto d = dfloat11::compress(W);        // W: ConstMatrixView<bf16> or a span
//   dfloat11::decompress(d, out_bf16);      // bit-exact
//   dfloat11::decompress(d, out_f32);       // the same values as floats
//   gemv(d, x, y);                          // fused: never materializes W
//
// The paper's observation (§2): of a bf16 weight's 16 bits, the 8 exponent
// bits carry only ~2.6 bits of information, so Huffman-coding them and
// keeping sign and mantissa raw stores weights in ~11 bits, losslessly. The
// decoder (kernels/huffman_decode.hpp) runs four blocks' streams interleaved
// per thread and blocks in parallel across threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "../core/parallel.hpp"
#include "../core/types.hpp"
#include "../core/view.hpp"
#include "../format/dfloat11.hpp"
#include "../kernels/gemv.hpp"
#include "../kernels/huffman_decode.hpp"
#include "huffman.hpp"

namespace lowbit {
namespace dfloat11 {

struct Options {
  std::size_t block = 16384;  // exponents per independently decodable block (>= 16): 0.036% metadata
};

inline std::uint8_t exponent_of(bf16 v) noexcept { return std::uint8_t(v.bits >> 7); }
inline std::uint8_t sign_mantissa_of(bf16 v) noexcept {
  return std::uint8_t((v.bits >> 8 & 0x80u) | (v.bits & 0x7Fu));
}

inline Dfloat11Matrix compress(ConstMatrixView<bf16> w, const Options& opt = {}) {
  LOWBIT_CHECK(opt.block >= 16 && opt.block <= (std::size_t(1) << 32), "dfloat11::compress", "block = ",
               opt.block, " outside [16, 2^32]");
  Dfloat11Matrix d;
  d.rows = w.rows();
  d.cols = w.cols();
  d.block = opt.block;
  const std::size_t n = d.size();
  d.sign_mantissa.resize(n);
  std::vector<std::uint64_t> hist(256, 0);
  for (std::size_t r = 0; r < d.rows; ++r)
    for (std::size_t c = 0; c < d.cols; ++c) {
      const bf16 v = w(r, c);
      ++hist[exponent_of(v)];
      d.sign_mantissa[r * d.cols + c] = sign_mantissa_of(v);
    }
  d.code_lengths = huffman::code_lengths(hist, huffman::table_bits);
  const huffman::Code code = huffman::Code::canonical(d.code_lengths, huffman::table_bits);
  huffman::BitWriter out;
  d.block_start.reserve(d.blocks() + 1);
  std::size_t i = 0;
  for (std::size_t r = 0; r < d.rows; ++r)
    for (std::size_t c = 0; c < d.cols; ++c, ++i) {
      if (i % d.block == 0) d.block_start.push_back(out.bits());
      const std::uint8_t e = exponent_of(w(r, c));
      out.put(code.word[e], code.len[e]);
    }
  d.block_start.push_back(out.bits());
  d.exponents = out.finish();
  return d;
}

inline Dfloat11Matrix compress(span<const bf16> w, const Options& opt = {}) {
  return compress(ConstMatrixView<bf16>(w.data(), 1, w.size()), opt);
}

namespace detail {

inline constexpr std::size_t interleave = 4;  // blocks decoded together by one thread

// The decode table of a code, from a small process-wide cache keyed by the
// code lengths. Building one costs tens of microseconds (4096 windows):
// per call, that would dominate gemv on every matrix below ~100K weights,
// e.g. all of a small model's layers decoded once per token. The cache holds
// the last 64 codes (~3 MiB); tables are immutable and shared.
inline std::shared_ptr<const huffman::DecodeTable> decode_table(const huffman::Lengths& len) {
  static std::mutex m;
  static std::deque<std::pair<huffman::Lengths, std::shared_ptr<const huffman::DecodeTable>>> cache;
  {
    const std::lock_guard<std::mutex> lock(m);
    for (const auto& [l, t] : cache)
      if (l == len) return t;
  }
  auto t = std::make_shared<const huffman::DecodeTable>(len);  // built outside the lock; may throw
  const std::lock_guard<std::mutex> lock(m);
  cache.emplace_back(len, t);
  if (cache.size() > 64) cache.pop_front();
  return t;
}

// Decodes the exponents of blocks [b0, b1) into exp[0, ...) (elements from
// b0 * block on). Throws lowbit::error if any block is corrupt.
inline void decode_exponents(const Dfloat11Matrix& d, const huffman::DecodeTable& t, std::size_t b0,
                             std::size_t b1, std::uint8_t* exp, const char* where) {
  const std::size_t n = d.size();
  auto stream = [&](std::size_t b) {
    huffman::Stream s;
    s.pos = d.block_start[b];
    s.end = d.block_start[b + 1];
    s.out = exp + (b - b0) * d.block;
    s.count = std::min(n, (b + 1) * d.block) - b * d.block;
    return s;
  };
  std::size_t b = b0;
  for (; b + interleave <= b1; b += interleave) {
    huffman::Stream s[interleave] = {stream(b), stream(b + 1), stream(b + 2), stream(b + 3)};
    if (!huffman::decode_streams<interleave>(t, d.exponents.data(), d.exponents.size(), s))
      lowbit::detail::fail(where, "corrupt exponent stream in blocks ", b, "..", b + interleave - 1,
                           " (invalid code, or codes do not fill the block's bits exactly)");
  }
  for (; b < b1; ++b) {
    huffman::Stream s = stream(b);
    if (!huffman::decode_streams<1>(t, d.exponents.data(), d.exponents.size(), &s))
      lowbit::detail::fail(where, "corrupt exponent stream in block ", b,
                           " (invalid code, or codes do not fill the block's bits exactly)");
  }
}

// Calls fn(first_element, exponents, count) for consecutive runs of
// decoded elements covering blocks [b0, b1), `interleave` blocks at a time.
template <class Fn>
void for_each_decoded(const Dfloat11Matrix& d, const huffman::DecodeTable& t, std::size_t b0, std::size_t b1,
                      const char* where, Fn&& fn) {
  thread_local std::vector<std::uint8_t> exp;
  for (std::size_t b = b0; b < b1; b += interleave) {
    const std::size_t be = std::min(b1, b + interleave);
    const std::size_t first = b * d.block, last = std::min(d.size(), be * d.block);
    if (exp.size() < last - first) exp.resize(last - first);
    decode_exponents(d, t, b, be, exp.data(), where);
    fn(first, exp.data(), last - first);
  }
}

// Calls emit(first, exponents, sign_mantissas, count) for every decoded run.
template <class Emit>
void decompress_into(const Dfloat11Matrix& d, std::size_t size, const RunOptions& opt, Emit emit) {
  const char* where = "dfloat11::decompress";
  d.validate();
  LOWBIT_CHECK(size == d.size(), where, "output has ", size, " elements, the tensor has ", d.size());
  if (d.size() == 0) return;
  const auto table = detail::decode_table(d.code_lengths);
  const huffman::DecodeTable& t = *table;
  // Chunks of `interleave` blocks claimed dynamically: every block decodes
  // the same way wherever it runs, and on shared or busy cores the threads'
  // speeds differ (fixed parts left the fastest waiting for the slowest).
  parallel_chunks(d.blocks(), interleave, lowbit::detail::threads_for(d.rows, d.cols, opt.threads), [&](std::size_t b0, std::size_t b1) {
    for_each_decoded(d, t, b0, b1, where, [&](std::size_t first, const std::uint8_t* exp, std::size_t count) {
      emit(first, exp, d.sign_mantissa.data() + first, count);
    });
  });
}

}  // namespace detail

// bf16 outputs of at least this many bytes are written with non-temporal
// stores (simd::store_stream): an output this large leaves the caches
// anyway, and a plain store first reads each output line from memory, a
// third more memory traffic for a decoder that runs into the memory system
// on several threads. Measured (bench/README.md, DFloat11): 256 MiB on 2
// Zen 4 threads 1.2-1.45x faster; on the 16-vCPU Xeon no loss at 256 MiB,
// but 8% slower on 16 threads at 64 MiB, which its 300 MiB L3 holds.
inline constexpr std::size_t stream_min_bytes = std::size_t(128) << 20;

inline void decompress(const Dfloat11Matrix& d, span<bf16> out, const RunOptions& opt = {}) {
  static_assert(sizeof(bf16) == 2, "bf16 is its 16 bits");
  auto* o = reinterpret_cast<std::uint16_t*>(out.data());
  const bool stream = 2 * out.size() >= stream_min_bytes;
  const auto join = lowbit::detail::active_kernels().join_bf16_words;
  detail::decompress_into(d, out.size(), opt, [&](std::size_t first, const std::uint8_t* exp, const std::uint8_t* sm, std::size_t count) {
    join(exp, sm, count, o + first, stream);
  });
}

inline void decompress(const Dfloat11Matrix& d, span<float> out, const RunOptions& opt = {}) {
  detail::decompress_into(d, out.size(), opt, [&](std::size_t first, const std::uint8_t* exp, const std::uint8_t* sm, std::size_t count) {
    float* o = out.data() + first;
    for (std::size_t i = 0; i < count; ++i)  // vectorized by the compiler
      o[i] = lowbit::detail::bits_float(std::uint32_t(lowbit::detail::join_bf16(exp[i], sm[i])) << 16);
  });
}

inline std::vector<bf16> decompress(const Dfloat11Matrix& d, const RunOptions& opt = {}) {
  d.validate();
  std::vector<bf16> out(d.size());
  decompress(d, span<bf16>(out), opt);
  return out;
}

// Shannon bound of this format for the tensor: (8 + H(exponents)) / 16 of
// the bf16 size, H in bits per exponent (the paper's Table 1 figure).
inline double entropy_bound(ConstMatrixView<bf16> w) {
  std::vector<double> hist(256, 0.0);
  for (std::size_t r = 0; r < w.rows(); ++r)
    for (std::size_t c = 0; c < w.cols(); ++c) hist[exponent_of(w(r, c))] += 1;
  const double n = double(w.rows() * w.cols());
  double h = 0;
  for (double c : hist)
    if (c > 0) h -= c / n * std::log2(c / n);
  return (8.0 + h) / 16.0;
}

}  // namespace dfloat11

// y = W x with W decoded a few blocks at a time into a thread-local buffer
// (exponents only, ~4 blocks: cache-resident) and multiplied at once from
// the split form. Each row's dot product is summed per block segment in
// block order, so y is bit-identical for any thread count.
inline void gemv(const Dfloat11Matrix& d, span<const float> x, span<float> y, const RunOptions& opt = {}) {
  const char* where = "gemv(Dfloat11Matrix)";
  d.validate();
  LOWBIT_CHECK(x.size() == d.cols, where, "x has ", x.size(), " elements, W has K = ", d.cols, " columns");
  LOWBIT_CHECK(y.size() == d.rows, where, "y has ", y.size(), " elements, W has M = ", d.rows, " rows");
  if (d.rows == 0) return;
  for (float& v : y) v = 0.0f;
  if (d.cols == 0) return;
  const auto& k = detail::active_kernels();
  const auto table = dfloat11::detail::decode_table(d.code_lengths);
  const huffman::DecodeTable& t = *table;
  const std::size_t K = d.cols, B = d.block;
  const std::size_t grain = std::max<std::size_t>(1, dfloat11::detail::interleave * B / K);
  parallel_for(d.rows, grain, detail::threads_for(d.rows, d.cols, opt.threads), [&](std::size_t r0, std::size_t r1) {
    const std::size_t e0 = r0 * K, e1 = r1 * K;
    dfloat11::detail::for_each_decoded(
        d, t, e0 / B, (e1 + B - 1) / B, where, [&](std::size_t first, const std::uint8_t* exp, std::size_t count) {
          for (std::size_t bs = first; bs < first + count; bs += B) {  // block segments
            std::size_t s = std::max(e0, bs);
            const std::size_t end = std::min({e1, bs + B, first + count});
            while (s < end) {
              const std::size_t r = s / K, seg = std::min(end, (r + 1) * K);
              y[r] += k.split_bf16_dot(exp + (s - first), d.sign_mantissa.data() + s, x.data() + (s - r * K), seg - s);
              s = seg;
            }
          }
        });
  });
}

}  // namespace lowbit
