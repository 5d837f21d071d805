// Huffman codec, the multi-stream decoder, and DFloat11: losslessness on
// every bf16 bit pattern, compression against the entropy bound, the fused
// GEMV, and hostile input.
#include <cstring>
#include <functional>
#include <map>
#include <queue>

#include <lowbit/codec/dfloat11.hpp>

#include "test_util.hpp"

using namespace lowbit;

namespace {

// Total cost of an (unrestricted) Huffman code, the textbook way: the sum of
// all merged weights.
std::uint64_t huffman_cost(const std::vector<std::uint64_t>& hist) {
  std::priority_queue<std::uint64_t, std::vector<std::uint64_t>, std::greater<>> q;
  for (auto c : hist)
    if (c) q.push(c);
  if (q.size() == 1) return q.top();
  std::uint64_t cost = 0;
  while (q.size() > 1) {
    const auto a = q.top();
    q.pop();
    const auto b = q.top();
    q.pop();
    cost += a + b;
    q.push(a + b);
  }
  return cost;
}

std::vector<std::uint64_t> random_histogram(std::mt19937& rng, int used, bool skewed) {
  std::vector<std::uint64_t> h(256, 0);
  std::vector<int> syms(256);
  for (int i = 0; i < 256; ++i) syms[std::size_t(i)] = i;
  std::shuffle(syms.begin(), syms.end(), rng);
  std::uniform_int_distribution<std::uint64_t> u(1, 1000);
  for (int i = 0; i < used; ++i)
    h[std::size_t(syms[std::size_t(i)])] = skewed ? (std::uint64_t(1) << std::min(i, 40)) + u(rng) : u(rng);
  return h;
}

// Symbols drawn from a histogram's distribution.
std::vector<std::uint8_t> draw(std::mt19937& rng, const std::vector<std::uint64_t>& hist, std::size_t n) {
  std::vector<double> w(hist.begin(), hist.end());
  std::discrete_distribution<int> d(w.begin(), w.end());
  std::vector<std::uint8_t> s(n);
  for (auto& v : s) v = std::uint8_t(d(rng));
  return s;
}

std::vector<std::uint8_t> encode(const huffman::Lengths& len, const std::vector<std::uint8_t>& syms,
                                 std::vector<std::uint64_t>* starts = nullptr, std::size_t block = 0) {
  const auto code = huffman::Code::canonical(len, 32);
  huffman::BitWriter w;
  for (std::size_t i = 0; i < syms.size(); ++i) {
    if (starts && i % block == 0) starts->push_back(w.bits());
    w.put(code.word[syms[i]], code.len[syms[i]]);
  }
  if (starts) starts->push_back(w.bits());
  return w.finish();
}

// LLM-like bf16 weights: Gaussian or Laplacian with per-row scales in
// [0.01, 0.05].
std::vector<bf16> llm_bf16(std::size_t rows, std::size_t cols, unsigned seed, bool laplacian) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::exponential_distribution<float> ex(1.0f);
  std::uniform_real_distribution<float> us(0.01f, 0.05f);
  std::vector<bf16> w(rows * cols);
  for (std::size_t r = 0; r < rows; ++r) {
    const float s = us(rng);
    for (std::size_t c = 0; c < cols; ++c)
      w[r * cols + c] = bf16::from_float(s * (laplacian ? (ex(rng) - ex(rng)) / std::sqrt(2.0f) : nd(rng)));
  }
  return w;
}

bool same_bits(const std::vector<bf16>& a, const std::vector<bf16>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), 2 * a.size()) == 0);
}

}  // namespace

TEST_CASE("huffman: degenerate histograms", "[huffman]") {
  std::vector<std::uint64_t> h(256, 0);
  auto len = huffman::code_lengths(h, 12);
  for (auto l : len) CHECK(l == 0);
  h[42] = 7;
  len = huffman::code_lengths(h, 12);
  CHECK(len[42] == 1);
  CHECK(huffman::kraft_sum(len) == (std::uint64_t(1) << 31));  // incomplete: half the code space
  h[200] = 1000000;
  len = huffman::code_lengths(h, 12);
  CHECK(len[42] == 1);
  CHECK(len[200] == 1);
  std::vector<std::uint64_t> all(256, 5);
  len = huffman::code_lengths(all, 12);
  for (auto l : len) CHECK(l == 8);
  CHECK_THROWS_WITH(huffman::code_lengths(all, 7), Catch::Contains("max_len = 7"));
  CHECK_THROWS_WITH(huffman::code_lengths(std::vector<std::uint64_t>(3, 1), 12), Catch::Contains("3 bins"));
}

TEST_CASE("huffman: optimal without a binding limit, Kraft equality, limit respected", "[huffman]") {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 60; ++trial) {
    const int used = 2 + int(rng() % 255);
    const bool skewed = trial % 2;
    const auto h = random_histogram(rng, used, skewed);
    INFO("trial " << trial << " used " << used << " skewed " << skewed);
    const auto free = huffman::code_lengths(h, 32);
    CHECK(huffman::kraft_sum(free) == (std::uint64_t(1) << 32));
    int longest = 0;
    for (auto l : free) longest = std::max<int>(longest, l);
    if (longest < 32) CHECK(huffman::coded_bits(h, free) == huffman_cost(h));
    for (int limit : {8, 9, 10, 12}) {
      if ((1 << limit) < used) continue;
      const auto lim = huffman::code_lengths(h, limit);
      for (int s = 0; s < 256; ++s) {
        CHECK(int(lim[std::size_t(s)]) <= limit);
        CHECK((lim[std::size_t(s)] > 0) == (h[std::size_t(s)] > 0));
      }
      CHECK(huffman::kraft_sum(lim) == (std::uint64_t(1) << 32));
      CHECK(huffman::coded_bits(h, lim) >= huffman::coded_bits(h, free));
      if (longest <= limit) CHECK(huffman::coded_bits(h, lim) == huffman::coded_bits(h, free));
    }
  }
  // Fibonacci counts force a length-(n-1) code without a limit.
  std::vector<std::uint64_t> fib(256, 0);
  std::uint64_t a = 1, b = 1;
  for (int i = 0; i < 30; ++i) {
    fib[std::size_t(i)] = a;
    const auto c = a + b;
    a = b;
    b = c;
  }
  const auto unlimited = huffman::code_lengths(fib, 32);
  CHECK(*std::max_element(unlimited.begin(), unlimited.end()) == 29);
  const auto lim = huffman::code_lengths(fib, 12);
  CHECK(*std::max_element(lim.begin(), lim.end()) == 12);
  CHECK(huffman::kraft_sum(lim) == (std::uint64_t(1) << 32));
}

TEST_CASE("huffman: canonical codes are prefix-free and reject impossible lengths", "[huffman]") {
  huffman::Lengths len{};
  len[3] = 2, len[1] = 2, len[7] = 3, len[2] = 3, len[9] = 2;  // 3/4 + 2/8 = 1
  const auto c = huffman::Code::canonical(len, 12);
  CHECK(c.word[1] == 0b00);  // ties by symbol value
  CHECK(c.word[3] == 0b01);
  CHECK(c.word[9] == 0b10);
  CHECK(c.word[2] == 0b110);
  CHECK(c.word[7] == 0b111);
  len[4] = 1;
  CHECK_THROWS_WITH(huffman::Code::canonical(len, 12), Catch::Contains("Kraft"));
  CHECK_THROWS_WITH(huffman::DecodeTable(len), Catch::Contains("Kraft"));
  len.fill(0);
  len[1] = 1, len[4] = 13;
  CHECK_THROWS_WITH(huffman::DecodeTable(len), Catch::Contains("length 13"));
}

TEST_CASE("huffman: interleaved table decoding equals bit-by-bit decoding", "[huffman]") {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 40; ++trial) {
    const int used = 1 + int(rng() % 256);
    const auto h = random_histogram(rng, used, trial % 3 == 0);
    const auto len = huffman::code_lengths(h, 12);
    const std::size_t block = 16 + rng() % 300, n = rng() % 5000;
    INFO("trial " << trial << " used " << used << " block " << block << " n " << n);
    const auto syms = draw(rng, h, n);
    std::vector<std::uint64_t> starts;
    const auto buf = encode(len, syms, &starts, block);
    std::vector<std::uint8_t> ref(n);
    CHECK(huffman::decode_reference(len, buf.data(), buf.size(), 0, ref.data(), n) == starts.back());
    CHECK(ref == syms);
    const huffman::DecodeTable t(len);
    std::vector<std::uint8_t> out(n, 0xEE);
    const std::size_t blocks = starts.size() - 1;
    std::size_t b = 0;
    auto stream = [&](std::size_t i) {
      return huffman::Stream{starts[i], starts[i + 1], out.data() + i * block, std::min(n, (i + 1) * block) - i * block};
    };
    for (; b + 4 <= blocks; b += 4) {
      huffman::Stream s[4] = {stream(b), stream(b + 1), stream(b + 2), stream(b + 3)};
      CHECK(huffman::decode_streams<4>(t, buf.data(), buf.size(), s));
    }
    for (; b < blocks; ++b) {
      huffman::Stream s = stream(b);
      CHECK(huffman::decode_streams<1>(t, buf.data(), buf.size(), &s));
    }
    CHECK(out == syms);
  }
}

TEST_CASE("huffman: invalid codes and wrong lengths are reported", "[huffman]") {
  huffman::Lengths len{};
  len[9] = 1;  // single symbol: code "0", so any 1 bit is invalid
  const huffman::DecodeTable t(len);
  std::vector<std::uint8_t> buf(64, 0x00), out(200);
  huffman::Stream s{0, 200, out.data(), 200};
  CHECK(huffman::decode_streams<1>(t, buf.data(), buf.size(), &s));
  buf[3] = 0x10;
  s = huffman::Stream{0, 200, out.data(), 200};
  CHECK_FALSE(huffman::decode_streams<1>(t, buf.data(), buf.size(), &s));
  buf[3] = 0;
  s = huffman::Stream{0, 199, out.data(), 200};  // one bit short
  CHECK_FALSE(huffman::decode_streams<1>(t, buf.data(), buf.size(), &s));
  s = huffman::Stream{0, 600, out.data(), 600};  // past the buffer: zeros are read, then the end fails
  std::vector<std::uint8_t> big(600);
  s.out = big.data();
  CHECK_FALSE(huffman::decode_streams<1>(t, buf.data(), buf.size(), &s));
  // Buffers shorter than one 8-byte window, and none at all (found by the
  // fuzzer: the fast path once loaded from them).
  for (std::size_t size : {0, 1, 7}) {
    std::vector<std::uint8_t> tiny(size, 0);
    s = huffman::Stream{0, 8 * size, big.data(), 40};
    CHECK_FALSE(huffman::decode_streams<1>(t, size ? tiny.data() : nullptr, size, &s));
  }
}

TEST_CASE("dfloat11: every bf16 bit pattern round-trips bit-exactly", "[dfloat11]") {
  std::vector<bf16> all(65536);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = bf16::from_bits(std::uint16_t(i * 40503u));  // a permutation
  for (std::size_t block : {16, 1000, 8192, 100000}) {
    INFO("block " << block);
    const auto d = dfloat11::compress(span<const bf16>(all), {block});
    CHECK(d.bytes() > 2 * all.size());  // every exponent is equally likely: nothing to gain
    CHECK(same_bits(dfloat11::decompress(d), all));
    std::vector<float> f(all.size());
    dfloat11::decompress(d, span<float>(f));
    for (std::size_t i = 0; i < all.size(); ++i) {
      std::uint32_t u;
      std::memcpy(&u, &f[i], 4);
      if (u != std::uint32_t(all[i].bits) << 16) FAIL("fp32 output differs at " << i);
    }
  }
}

TEST_CASE("dfloat11: shapes, lengths 0 and 1, thread counts", "[dfloat11]") {
  for (std::size_t n : {0, 1, 2, 15, 16, 17, 4096, 8191, 8192, 8193, 70001}) {
    INFO("n " << n);
    const auto w = llm_bf16(1, n, unsigned(n), false);
    const auto d = dfloat11::compress(span<const bf16>(w), {1024});
    CHECK(d.size() == n);
    CHECK(d.blocks() == (n + 1023) / 1024);
    for (int threads : {1, 2, 3, 7}) {
      RunOptions o;
      o.threads = threads;
      CHECK(same_bits(dfloat11::decompress(d, o), w));
    }
  }
  const auto w = llm_bf16(37, 53, 3, true);
  const auto d = dfloat11::compress(ConstMatrixView<bf16>(w.data(), 37, 53));
  CHECK(d.rows == 37);
  CHECK(d.cols == 53);
  CHECK(same_bits(dfloat11::decompress(d), w));
  std::vector<bf16> strided(37 * 60);
  for (std::size_t r = 0; r < 37; ++r)
    for (std::size_t c = 0; c < 53; ++c) strided[r * 60 + c] = w[r * 53 + c];
  const auto ds = dfloat11::compress(ConstMatrixView<bf16>(strided.data(), 37, 53, 60));
  CHECK(ds.exponents == d.exponents);
  CHECK(ds.sign_mantissa == d.sign_mantissa);
}

TEST_CASE("dfloat11: compression within 0.5% of the entropy bound on LLM-like weights", "[dfloat11]") {
  for (bool laplacian : {false, true}) {
    const std::size_t rows = 1024, cols = 1024;
    const auto w = llm_bf16(rows, cols, 21, laplacian);
    const ConstMatrixView<bf16> v(w.data(), rows, cols);
    const auto d = dfloat11::compress(v);
    const double ratio = double(d.bytes()) / double(2 * w.size()), bound = dfloat11::entropy_bound(v);
    INFO((laplacian ? "laplacian" : "gaussian") << ": ratio " << ratio << " bound " << bound << " bits/weight "
                                                << d.bits_per_weight());
    CHECK(ratio <= bound * 1.005);
    CHECK(ratio < 0.72);  // ~11 bits per weight, the paper's headline
    CHECK(same_bits(dfloat11::decompress(d), w));
    WARN((laplacian ? "laplacian" : "gaussian") << " 1024x1024: " << ratio << " of bf16, bound " << bound);
  }
}

TEST_CASE("bf16 join kernel: every ISA, plain and streaming stores, any length and alignment", "[dfloat11][kernels]") {
  // Every (exponent, sign-mantissa) byte pair appears, at every offset from
  // the store alignment the streaming path needs.
  std::vector<std::uint8_t> e(65536 + 100), sm(e.size());
  for (std::size_t i = 0; i < e.size(); ++i) {
    e[i] = std::uint8_t(i >> 8);
    sm[i] = std::uint8_t(i * 7 + (i >> 8));
  }
  std::vector<std::uint16_t> ref(e.size());
  for (std::size_t i = 0; i < e.size(); ++i) ref[i] = detail::join_bf16(e[i], sm[i]);
  test::for_each_isa([&](isa) {
    const auto& k = detail::active_kernels();
    std::vector<std::uint16_t> out(e.size() + 64);
    for (bool stream : {false, true})
      for (std::size_t offset : {0, 1, 3, 8, 17})
        for (std::size_t n : {0, 1, 15, 16, 17, 31, 32, 33, 64, 1000, 65536 + 99 - 17}) {
          INFO("stream " << stream << " offset " << offset << " n " << n);
          std::fill(out.begin(), out.end(), std::uint16_t(0xDEAD));
          k.join_bf16_words(e.data() + offset, sm.data() + offset, n, out.data() + offset, stream);
          REQUIRE(std::equal(ref.begin() + offset, ref.begin() + offset + n, out.begin() + offset));
          REQUIRE(out[offset + n] == 0xDEAD);  // nothing written past the end
          REQUIRE((offset == 0 || out[offset - 1] == 0xDEAD));
        }
  });
}

TEST_CASE("bf16 dot kernels: SIMD equals the scalar reference", "[dfloat11][kernels]") {
  std::mt19937 rng(9);
  test::for_each_isa([&](isa) {
    const auto& k = detail::active_kernels();
    for (std::size_t n : {0, 1, 7, 8, 9, 31, 32, 33, 100, 1027}) {
      std::vector<std::uint16_t> w(n);
      std::vector<std::uint8_t> e(n), sm(n);
      const auto x = test::gaussian(n, unsigned(n) + 1);
      for (std::size_t i = 0; i < n; ++i) {
        w[i] = bf16::from_float(0.05f * float(int(rng() % 2001) - 1000) / 1000.0f).bits;
        e[i] = std::uint8_t(w[i] >> 7);
        sm[i] = std::uint8_t((w[i] >> 8 & 0x80) | (w[i] & 0x7F));
      }
      INFO("n " << n);
      const float ref = detail::bf16_dot_reference(w.data(), x.data(), n);
      CHECK(k.bf16_dot(w.data(), x.data(), n) == Approx(ref).margin(1e-5));
      CHECK(k.split_bf16_dot(e.data(), sm.data(), x.data(), n) == Approx(ref).margin(1e-5));
      if (n > 8) {  // Inf and NaN weights propagate as IEEE arithmetic
        w[n / 2] = 0x7F80;  // +Inf
        e[n / 2] = 0xFF, sm[n / 2] = 0x00;
        CHECK(std::isinf(k.bf16_dot(w.data(), x.data(), n)) == std::isinf(detail::bf16_dot_reference(w.data(), x.data(), n)));
        CHECK(std::isinf(k.split_bf16_dot(e.data(), sm.data(), x.data(), n)));
        w[1] = 0xFFC1;  // NaN
        e[1] = 0xFF, sm[1] = 0xC1;
        CHECK(std::isnan(k.bf16_dot(w.data(), x.data(), n)));
        CHECK(std::isnan(k.split_bf16_dot(e.data(), sm.data(), x.data(), n)));
      }
    }
  });
}

TEST_CASE("dfloat11: fused gemv equals the bf16 gemv, any thread count", "[dfloat11][kernels]") {
  struct Shape {
    std::size_t m, k, block;
  };
  for (const Shape s : {Shape{1, 1, 16}, Shape{3, 5, 16}, Shape{64, 100, 64}, Shape{37, 300, 1000}, Shape{129, 4096, 8192},
                        Shape{20, 11008, 8192}}) {
    INFO(s.m << "x" << s.k << " block " << s.block);
    const auto w = llm_bf16(s.m, s.k, unsigned(s.m * 7 + s.k), true);
    const ConstMatrixView<bf16> v(w.data(), s.m, s.k);
    const auto d = dfloat11::compress(v, {s.block});
    const auto x = test::llm_activations(s.k, 5);
    std::vector<double> ref(s.m, 0.0);
    for (std::size_t r = 0; r < s.m; ++r)
      for (std::size_t c = 0; c < s.k; ++c) ref[r] += double(w[r * s.k + c].to_float()) * double(x[c]);
    test::for_each_isa([&](isa) {
      std::vector<float> y(s.m), yb(s.m), y1(s.m);
      RunOptions one;
      one.threads = 1;
      gemv(d, x, span<float>(y1), one);
      gemv(v, x, span<float>(yb));
      for (int threads : {2, 3, 16}) {
        RunOptions o;
        o.threads = threads;
        gemv(d, x, span<float>(y), o);
        CHECK(std::memcmp(y.data(), y1.data(), 4 * s.m) == 0);
      }
      double err = 0, norm = 0, errb = 0;
      for (std::size_t r = 0; r < s.m; ++r) {
        err = std::max(err, std::abs(double(y1[r]) - ref[r]));
        errb = std::max(errb, std::abs(double(yb[r]) - ref[r]));
        norm = std::max(norm, std::abs(ref[r]));
      }
      CHECK(err <= 1e-5 * (norm + 1) * std::sqrt(double(s.k)));
      CHECK(errb <= 1e-5 * (norm + 1) * std::sqrt(double(s.k)));
    });
  }
}

TEST_CASE("dfloat11: bad and hostile input gets lowbit::error", "[dfloat11][errors]") {
  const auto w = llm_bf16(16, 1000, 4, false);
  const auto good = dfloat11::compress(ConstMatrixView<bf16>(w.data(), 16, 1000), {256});
  std::vector<float> x(1000, 1.0f), y(16);
  CHECK_THROWS_WITH(gemv(good, span<const float>(x.data(), 999), span<float>(y)), Catch::Contains("x has 999"));
  CHECK_THROWS_WITH(gemv(good, x, span<float>(y.data(), 15)), Catch::Contains("y has 15"));
  std::vector<bf16> small(5);
  CHECK_THROWS_WITH(dfloat11::decompress(good, span<bf16>(small)), Catch::Contains("output has 5"));
  CHECK_THROWS_WITH(dfloat11::compress(span<const bf16>(w), {8}), Catch::Contains("block = 8"));

  auto expect_error = [&](const Dfloat11Matrix& d, const char* what) {
    INFO(what);
    CHECK_THROWS_AS(dfloat11::decompress(d), lowbit::error);
  };
  auto d = good;
  d.exponents.pop_back();
  expect_error(d, "truncated exponents");
  d = good;
  d.sign_mantissa.resize(100);
  expect_error(d, "truncated sign_mantissa");
  d = good;
  d.block_start.pop_back();
  expect_error(d, "missing block offsets");
  d = good;
  std::swap(d.block_start[3], d.block_start[4]);
  expect_error(d, "offsets out of order");
  d = good;
  d.block_start[5] += 3;
  expect_error(d, "offset moved");
  d = good;
  d.code_lengths[0] = 1;
  expect_error(d, "Kraft violation");
  d = good;
  d.code_lengths[0] = 13;
  expect_error(d, "length over the table");
  d = good;
  d.code_lengths.fill(0);
  expect_error(d, "empty code");
  d = good;
  d.rows = std::size_t(1) << 40;
  d.cols = std::size_t(1) << 40;
  expect_error(d, "size overflow");
  d = good;
  d.block = 4;
  expect_error(d, "tiny block");

  // Random corruption of the stream and the code: an error, or a decode of
  // the right size (flipped bits that still form valid codes of the right
  // total length), never a crash (the ASan build checks the bounds).
  std::mt19937 rng(77);
  int errors = 0;
  for (int trial = 0; trial < 400; ++trial) {
    d = good;
    const int flips = 1 + int(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      if (trial % 4 == 3) {
        d.code_lengths[rng() % 256] = std::uint8_t(rng() % 14);
      } else {
        d.exponents[rng() % d.exponents.size()] ^= std::uint8_t(1u << (rng() % 8));
      }
    }
    try {
      const std::size_t n = dfloat11::decompress(d).size();
      gemv(d, x, span<float>(y));
      CHECK(n == good.size());
    } catch (const lowbit::error&) {
      ++errors;
    }
  }
  CHECK(errors > 300);  // flipping code bits almost always breaks a block's exact length
}
