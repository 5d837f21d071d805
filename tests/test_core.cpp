// core/: error, types (bf16, fp16), view, bitpack, parallel.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <set>
#include <utility>

#include <lowbit/core/eigen_view.hpp>

#include "test_util.hpp"

using namespace lowbit;

namespace {

float next_up(float f) { return std::nextafter(f, std::numeric_limits<float>::infinity()); }
float next_down(float f) { return std::nextafter(f, -std::numeric_limits<float>::infinity()); }

// For a storage type T and a pair of adjacent finite positive encodings
// lo < hi: the midpoint must round to the even one, and one float ulp either
// side of it to the nearer one.
template <class T>
void check_rounding_between(std::uint16_t lo) {
  const std::uint16_t hi = std::uint16_t(lo + 1);
  const float a = T::from_bits(lo).to_float(), b = T::from_bits(hi).to_float();
  const float mid = float((double(a) + double(b)) / 2.0);  // exact: needs <= 12 significant bits
  REQUIRE(double(mid) == (double(a) + double(b)) / 2.0);
  const std::uint16_t even = (lo & 1) ? hi : lo;
  for (float sign : {1.0f, -1.0f}) {
    const std::uint16_t sbit = sign < 0 ? 0x8000 : 0;
    REQUIRE(T::from_float(sign * mid).bits == std::uint16_t(even | sbit));
    REQUIRE(T::from_float(sign * next_down(mid)).bits == std::uint16_t(lo | sbit));
    REQUIRE(T::from_float(sign * next_up(mid)).bits == std::uint16_t(hi | sbit));
    REQUIRE(T::from_float(sign * a).bits == std::uint16_t(lo | sbit));
  }
}

}  // namespace

TEST_CASE("error messages name the function and the values", "[core][error]") {
  try {
    LOWBIT_CHECK(1 + 1 == 3, "demo", "x has ", 5, " elements, expected ", 7);
    FAIL("no throw");
  } catch (const lowbit::error& e) {
    REQUIRE(std::string(e.what()) == "lowbit: demo: x has 5 elements, expected 7");
  }
}

TEST_CASE("fp16: all 65536 encodings round-trip through float", "[core][types]") {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const fp16 h = fp16::from_bits(std::uint16_t(b));
    const float f = h.to_float();
    const bool nan = (b & 0x7C00) == 0x7C00 && (b & 0x3FF);
    REQUIRE(std::isnan(f) == nan);
    REQUIRE(h.is_finite() == std::isfinite(f));
    REQUIRE(fp16::from_float(f).bits == b);
  }
}

TEST_CASE("fp16: values, subnormals, infinities", "[core][types]") {
  REQUIRE(fp16::from_bits(0x3C00).to_float() == 1.0f);
  REQUIRE(fp16::from_bits(0xC000).to_float() == -2.0f);
  REQUIRE(fp16::from_bits(0x7BFF).to_float() == 65504.0f);
  REQUIRE(fp16::from_bits(0x0001).to_float() == std::ldexp(1.0f, -24));
  REQUIRE(fp16::from_bits(0x03FF).to_float() == std::ldexp(1023.0f, -24));
  REQUIRE(fp16::from_bits(0x0400).to_float() == std::ldexp(1.0f, -14));
  REQUIRE(std::signbit(fp16::from_bits(0x8000).to_float()));
  REQUIRE(fp16::from_float(65519.996f).bits == 0x7BFF);
  REQUIRE(fp16::from_float(65520.0f).bits == 0x7C00);  // tie to even = Inf
  REQUIRE(fp16::from_float(1e30f).bits == 0x7C00);
  REQUIRE(fp16::from_float(-std::numeric_limits<float>::infinity()).bits == 0xFC00);
  REQUIRE(fp16::from_float(std::ldexp(1.0f, -25)).bits == 0x0000);            // tie -> 0
  REQUIRE(fp16::from_float(next_up(std::ldexp(1.0f, -25))).bits == 0x0001);   // just above
  REQUIRE(fp16::from_float(std::ldexp(3.0f, -25)).bits == 0x0002);  // 1.5 ulp: tie -> 2 (even)
  REQUIRE(fp16::from_float(-0.0f).bits == 0x8000);
  REQUIRE(fp16::from_float(1e-30f).bits == 0x0000);
}

TEST_CASE("fp16: round to nearest even between every pair of neighbours", "[core][types]") {
  for (std::uint16_t b = 0; b < 0x7BFF; ++b) check_rounding_between<fp16>(b);
}

TEST_CASE("fp16 and bf16: NaN payloads", "[core][types]") {
  const float qnan = detail::bits_float(0x7FC00001u), low_payload = detail::bits_float(0xFF800001u);
  REQUIRE(fp16::from_float(qnan).bits == 0x7E00);
  REQUIRE(fp16::from_float(low_payload).bits == 0xFE00);  // payload not representable: quiet NaN, sign kept
  REQUIRE(fp16::from_float(detail::bits_float(0x7F802000u)).bits == 0x7C01);  // top payload bit kept
  REQUIRE(bf16::from_float(low_payload).bits == 0xFFC0);
  REQUIRE(bf16::from_float(detail::bits_float(0x7F810000u)).bits == 0x7F81);
}

TEST_CASE("bf16: all 65536 encodings round-trip and round to nearest even", "[core][types]") {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const bf16 h = bf16::from_bits(std::uint16_t(b));
    REQUIRE(bf16::from_float(h.to_float()).bits == b);
    REQUIRE(detail::float_bits(h.to_float()) == b << 16);
  }
  for (std::uint16_t b = 0; b < 0x7F7F; ++b) check_rounding_between<bf16>(b);
  REQUIRE(bf16::from_float(std::numeric_limits<float>::max()).bits == 0x7F80);  // rounds up to Inf
  REQUIRE(bf16::from_float(std::numeric_limits<float>::denorm_min()).bits == 0x0000);
}

TEST_CASE("views: strides, conversions, Eigen interop", "[core][view]") {
  std::vector<float> buf(3 * 5);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = float(i);
  MatrixView<float> v(buf.data(), 3, 4, 5);
  REQUIRE(v(2, 3) == 13.0f);
  ConstMatrixView<float> c = v;
  REQUIRE(c.row(1)[0] == 5.0f);
  auto m = eigen_map(c);
  REQUIRE(m.rows() == 3);
  REQUIRE(m(2, 3) == 13.0f);
  EigenRowMajor<float> e(2, 3);
  e << 1, 2, 3, 4, 5, 6;
  REQUIRE(view_of(e)(1, 2) == 6.0f);
  REQUIRE_THROWS_AS(MatrixView<float>(buf.data(), 3, 6, 5), lowbit::error);
  REQUIRE_THROWS_AS(MatrixView<float>(nullptr, 3, 4, 4), lowbit::error);
}

TEST_CASE("bitpack: layout matches the documented table", "[core][bitpack]") {
  // 4 bits: code i of a chunk at byte i % 32, bits 4 * (i / 32).
  std::vector<std::uint8_t> codes(64);
  for (int i = 0; i < 64; ++i) codes[i] = std::uint8_t(i % 16);
  std::vector<std::uint8_t> packed(bitpack::row_bytes(64, 4));
  REQUIRE(packed.size() == 32);
  bitpack::pack(codes.data(), 64, 4, packed.data());
  for (int j = 0; j < 32; ++j) REQUIRE(packed[j] == std::uint8_t(codes[j] | (codes[32 + j] << 4)));
  // 3 bits = 2-bit plane (low bits, 128 codes per chunk) + 1-bit plane (bit 2).
  REQUIRE(bitpack::plane_count(3) == 2);
  REQUIRE(bitpack::plane_width(3, 0) == 2);
  REQUIRE(bitpack::plane_width(3, 1) == 1);
  REQUIRE(bitpack::row_bytes(300, 3) == 3 * 32 + 2 * 32);
  std::vector<std::uint8_t> c3(300, 0);
  c3[161] = 6;  // 0b110: low bits 2 -> plane 0 chunk 1 byte 1 field 1; bit 2 -> plane 1 chunk 0 byte 1 field 5
  std::vector<std::uint8_t> p3(bitpack::row_bytes(300, 3));
  bitpack::pack(c3.data(), 300, 3, p3.data());
  for (std::size_t i = 0; i < p3.size(); ++i) {
    const std::uint8_t want = i == 32 + 1 ? std::uint8_t(2 << 2) : i == 96 + 1 ? std::uint8_t(1 << 5) : 0;
    REQUIRE(int(p3[i]) == int(want));
  }
}

TEST_CASE("packed_ints: round trip, bit order, widths 0..32 and bad values", "[core][bitpack]") {
  std::mt19937_64 rng(11);
  for (int w = 0; w <= packed_ints::max_width; ++w)
    for (std::size_t n : {0u, 1u, 2u, 7u, 8u, 9u, 63u, 65u, 1001u}) {
      INFO("width " << w << " n " << n);
      std::vector<std::uint32_t> v(n);
      for (auto& x : v) x = w == 0 ? 0u : std::uint32_t(rng() >> (64 - w));
      if (n > 0 && w > 0) v[n - 1] = std::uint32_t((std::uint64_t(1) << w) - 1);  // widest value, in the last byte
      const std::vector<std::uint8_t> p = packed_ints::pack(v.data(), n, w);
      REQUIRE(p.size() == (n * std::size_t(w) + 7) / 8);
      // An exactly sized copy: get() must not read past it (ASan).
      const std::unique_ptr<std::uint8_t[]> exact(new std::uint8_t[p.size()]);
      std::copy(p.begin(), p.end(), exact.get());
      std::vector<std::uint32_t> back(n, 0xDEADBEEF);
      packed_ints::unpack(exact.get(), w, n, back.data());
      REQUIRE(back == v);
      // Bit i w + k of the stream, LSB first, is bit k of entry i; the rest is zero.
      for (std::size_t bit = 0; bit < 8 * p.size(); ++bit) {
        const bool set = (p[bit / 8] >> (bit % 8)) & 1;
        const bool want = w > 0 && bit < n * std::size_t(w) && ((v[bit / std::size_t(w)] >> (bit % std::size_t(w))) & 1);
        REQUIRE(set == want);
      }
    }
  REQUIRE(packed_ints::width_for(0) == 0);
  REQUIRE(packed_ints::width_for(1) == 1);
  REQUIRE(packed_ints::width_for(63) == 6);
  REQUIRE(packed_ints::width_for(64) == 7);
  REQUIRE(packed_ints::width_for(65536) == 17);
  const std::uint32_t too_wide[] = {3, 8};
  REQUIRE_THROWS_AS(packed_ints::pack(too_wide, 2, 3), lowbit::error);
  REQUIRE_THROWS_AS(packed_ints::pack(too_wide, 2, 33), lowbit::error);
}

TEST_CASE("bitpack: round trip for every width and ragged lengths", "[core][bitpack]") {
  std::mt19937 rng(7);
  for (int bits = 1; bits <= 8; ++bits) {
    for (std::size_t n : {0u, 1u, 7u, 31u, 32u, 33u, 63u, 64u, 65u, 127u, 128u, 129u, 255u, 256u, 257u, 1000u, 4103u}) {
      std::vector<std::uint8_t> codes(n), back(n, 0xAA);
      for (auto& c : codes) c = std::uint8_t(rng() & ((1u << bits) - 1u));
      std::vector<std::uint8_t> packed(bitpack::row_bytes(n, bits), 0xFF);
      bitpack::pack(codes.data(), n, bits, packed.data());
      bitpack::unpack(packed.data(), n, bits, back.data());
      INFO("bits " << bits << " n " << n);
      REQUIRE(back == codes);
      // Ranges at odd offsets and lengths, against get().
      for (std::size_t first : {std::size_t(0), n / 3, n > 5 ? n - 5 : 0}) {
        const std::size_t count = std::min<std::size_t>(n - first, 77);
        std::vector<std::uint8_t> part(count + 1, 0xAA);
        bitpack::unpack_range(packed.data(), n, bits, first, count, part.data());
        for (std::size_t i = 0; i < count; ++i) REQUIRE(part[i] == bitpack::get(packed.data(), n, bits, first + i));
        REQUIRE(part[count] == 0xAA);  // nothing written past the range
      }
      // The same row written range by range over a dirty buffer equals pack().
      std::vector<std::uint8_t> pieces(packed.size(), 0), noise(n);
      for (auto& c : noise) c = std::uint8_t(rng() & ((1u << bits) - 1u));
      for (std::size_t first = 0; first < n; first += 13)
        bitpack::pack_range(noise.data() + first, n, bits, first, std::min<std::size_t>(13, n - first), pieces.data());
      for (std::size_t first = 0; first < n; first += 29)  // overwrite every code
        bitpack::pack_range(codes.data() + first, n, bits, first, std::min<std::size_t>(29, n - first), pieces.data());
      REQUIRE(pieces == packed);
      // Exactly n * bits payload bits are set at most; padding is zero.
      std::size_t ones = 0, want = 0;
      for (auto b : packed) ones += std::size_t(__builtin_popcount(b));
      for (auto c : codes) want += std::size_t(__builtin_popcount(c));
      REQUIRE(ones == want);
    }
  }
  REQUIRE_THROWS_AS(bitpack::pack(nullptr, 0, 9, nullptr), lowbit::error);
  REQUIRE_THROWS_AS(bitpack::unpack(nullptr, 0, 0, nullptr), lowbit::error);
  std::vector<std::uint8_t> row(bitpack::row_bytes(40, 3)), out(8);
  REQUIRE_THROWS_AS(bitpack::unpack_range(row.data(), 40, 3, 36, 8, out.data()), lowbit::error);
  REQUIRE_THROWS_AS(bitpack::unpack_range(row.data(), 40, 3, 41, 0, out.data()), lowbit::error);
  REQUIRE_THROWS_AS(bitpack::pack_range(out.data(), 40, 3, 36, 8, row.data()), lowbit::error);
}

// Runs par(n, grain, threads, body) over a grid of shapes. The body only
// records its ranges (Catch2's assertions are not thread-safe); here they
// must tile [0, n) exactly, each non-empty and starting on a grain
// boundary, which is "every index once". check(n, grain, threads, ranges)
// adds what is particular to par.
template <class Par, class Check>
void check_ranges(Par par, Check check) {
  using Range = std::pair<std::size_t, std::size_t>;
  for (std::size_t n : {0u, 1u, 5u, 16u, 17u, 1000u})
    for (std::size_t grain : {1u, 4u, 16u})
      for (int threads : {1, 2, 3, 8}) {
        std::mutex m;
        std::vector<Range> ranges;
        par(n, grain, threads, [&](std::size_t b, std::size_t e) {
          const std::lock_guard<std::mutex> lock(m);
          ranges.emplace_back(b, e);
        });
        std::sort(ranges.begin(), ranges.end());
        std::size_t next = 0;
        for (const Range& r : ranges) {
          REQUIRE(r.first == next);
          REQUIRE(r.first < r.second);
          REQUIRE(r.first % grain == 0);
          next = r.second;
        }
        REQUIRE(next == n);
        check(n, grain, threads, ranges);
      }
}

TEST_CASE("parallel_for: covers every index once, any thread count", "[core][parallel]") {
  check_ranges([](auto... a) { parallel_for(a...); },
               [](std::size_t, std::size_t, int threads, const auto& ranges) {
                 REQUIRE(ranges.size() <= std::size_t(threads));  // one contiguous part per thread
               });
}

TEST_CASE("parallel_chunks: every chunk once, grain-aligned, exceptions stop the call", "[core][parallel]") {
  check_ranges([](auto... a) { parallel_chunks(a...); },
               [](std::size_t n, std::size_t grain, int, const auto& ranges) {
                 REQUIRE(ranges.size() == (n + grain - 1) / grain);  // exactly one chunk per call
                 for (const auto& r : ranges) REQUIRE(r.second == std::min(n, r.first + grain));
               });
  // The first exception reaches the caller. How many chunks other threads
  // finish meanwhile depends on timing; on one thread none runs after it.
  for (int threads : {1, 4}) {
    std::atomic<int> after{0};
    REQUIRE_THROWS_AS(parallel_chunks(1000, 1, threads,
                                      [&](std::size_t b, std::size_t) {
                                        if (b == 10) throw lowbit::error("boom");
                                        if (b > 10) ++after;
                                      }),
                      lowbit::error);
    if (threads == 1) REQUIRE(after == 0);
  }
  // Nested inside a worker it runs serially, like parallel_for.
  std::atomic<int> total{0};
  parallel_for(8, 1, 4, [&](std::size_t b, std::size_t e) {
    parallel_chunks(10, 3, 4, [&](std::size_t b2, std::size_t e2) { total += int((e - b) * (e2 - b2)); });
  });
  REQUIRE(total == 80);
}

TEST_CASE("parallel_for: nested calls, exceptions, thread setting", "[core][parallel]") {
  std::atomic<int> total{0};
  parallel_for(8, 1, 4, [&](std::size_t b, std::size_t e) {
    parallel_for(10, 1, 4, [&](std::size_t b2, std::size_t e2) { total += int((e - b) * (e2 - b2)); });
  });
  REQUIRE(total == 80);
  REQUIRE_THROWS_AS(parallel_for(100, 1, 4,
                                 [&](std::size_t b, std::size_t) {
                                   if (b > 0) throw lowbit::error("boom");
                                 }),
                    lowbit::error);
  const int old = num_threads();
  set_num_threads(3);
  REQUIRE(num_threads() == 3);
  set_num_threads(old);
  REQUIRE_THROWS_AS(set_num_threads(0), lowbit::error);
}
