// What the machine itself gives t threads (not a Google Benchmark: a probe
// for reading bench_dfloat11's thread scaling, bench/README.md). Per-thread
// work is fixed, so rate(t) / rate(1) is the machine's scaling for
//   lookup chain: dependent loads from a 16 KiB table (a Huffman decoder's
//                 inner dependency),
//   integer ops:  independent integer arithmetic,
//   join:         DFloat11's output stage alone over a tensor of 16 / 64 /
//                 256 MiB (exponent byte + sign/mantissa byte -> bf16, no
//                 decoding): an upper bound for decompression's throughput.
// Threads are started per measurement; the best of 7 is kept.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <thread>
#include <vector>

namespace {

std::uint64_t lookup_chain(std::uint64_t seed, long n) {
  std::vector<std::uint32_t> tab(4096);
  for (std::uint32_t i = 0; i < 4096; ++i) tab[i] = ((i * 2654435761u) >> 20) & 4095;
  std::uint32_t x = std::uint32_t(seed) & 4095;
  std::uint64_t s = 0;
  for (long i = 0; i < n; ++i) {
    x = tab[x] ^ std::uint32_t(i & 7);
    s += x;
  }
  return s;
}

std::uint64_t integer_ops(std::uint64_t seed, long n) {
  std::uint64_t a = seed, b = seed * 3, c = seed * 5, d = seed * 7;
  for (long i = 0; i < n; ++i) {
    a = a * 6364136223846793005ull + 1;
    b ^= b >> 7;
    c += c << 3;
    d = d * 3 + a;
  }
  return a + b + c + d;
}

// Seconds for part(p) on threads p = 0 .. t-1, best of 7.
double timed(int t, const std::function<void(int)>& part) {
  double best = 1e30;
  for (int rep = 0; rep < 7; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> th;
    for (int p = 0; p < t; ++p) th.emplace_back(part, p);
    for (auto& x : th) x.join();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main() {
  const int counts[] = {1, 2, 4, 8, 16};
  for (int kind = 0; kind < 2; ++kind) {
    const long n = kind == 0 ? 50000000L : 100000000L;
    double base = 0;
    for (int t : counts) {
      std::vector<std::uint64_t> r(static_cast<std::size_t>(t));
      const double s = timed(t, [&](int p) {
        r[std::size_t(p)] = kind == 0 ? lookup_chain(std::uint64_t(p) + 1, n) : integer_ops(std::uint64_t(p) + 1, n);
      });
      std::uint64_t sum = 0;
      for (auto v : r) sum += v;
      const double rate = double(t) * double(n) / s;
      if (t == 1) base = rate;
      std::printf("%s threads %2d: %8.2f ms, scaling %5.2fx (checksum %llu)\n",
                  kind == 0 ? "lookup chain" : "integer ops ", t, s * 1e3, rate / base,
                  static_cast<unsigned long long>(sum & 0xffff));
    }
  }
  for (std::size_t mib : {16, 64, 256}) {
    const std::size_t n = mib << 19;  // bf16 elements
    std::vector<std::uint8_t> e(n), sm(n);
    std::vector<std::uint16_t> out(n);
    for (std::size_t i = 0; i < n; ++i) {
      e[i] = std::uint8_t(120 + i % 7);
      sm[i] = std::uint8_t(i * 37);
    }
    double base = 0;
    for (int t : counts) {
      const double s = timed(t, [&](int p) {
        const std::size_t b = n * std::size_t(p) / std::size_t(t), end = n * std::size_t(p + 1) / std::size_t(t);
        for (std::size_t i = b; i < end; ++i) out[i] = std::uint16_t((sm[i] & 0x80) << 8 | e[i] << 7 | (sm[i] & 0x7f));
      });
      const double gbps = 2.0 * double(n) / s / 1e9;
      if (t == 1) base = gbps;
      std::printf("join %4zu MiB threads %2d: %8.2f ms, %6.1f GB/s of bf16, scaling %5.2fx\n", mib, t, s * 1e3, gbps,
                  gbps / base);
    }
  }
}
