// Shared by lowbit's benchmarks: thread count, cache size, data generation.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <string>

#include <lowbit/lowbit.hpp>

namespace lowbit::bench {

// Threads for lowbit and for the baselines that can use them:
// LOWBIT_BENCH_THREADS (default 1: the issue targets are single-thread).
inline int threads() {
  const char* e = std::getenv("LOWBIT_BENCH_THREADS");
  return e && *e ? std::max(1, std::atoi(e)) : 1;
}

// Last-level cache size in bytes (Linux sysfs), or 32 MiB if unknown.
inline std::size_t llc_bytes() {
  std::size_t best = 0;
  for (int i = 0; i < 8; ++i) {
    std::ifstream f("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/size");
    std::string s;
    if (!(f >> s)) continue;
    std::size_t v = std::stoul(s);
    if (s.back() == 'K') v <<= 10;
    if (s.back() == 'M') v <<= 20;
    best = std::max(best, v);
  }
  return best ? best : (std::size_t(32) << 20);
}

// LLM-like weights: Laplacian with a per-row scale.
inline Matrix weights(std::size_t rows, std::size_t cols, unsigned seed = 1) {
  std::mt19937 rng(seed);
  std::exponential_distribution<float> ex(1.0f);
  Matrix w(rows, cols);
  for (std::size_t r = 0; r < rows; ++r) {
    const float s = 0.01f + 0.03f * float(r % 17) / 17.0f;
    for (std::size_t k = 0; k < cols; ++k) w(r, k) = s * (ex(rng) - ex(rng));
  }
  return w;
}

inline std::vector<float> activations(std::size_t n, unsigned seed = 2) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = nd(rng) * (i % 97 == 7 ? 40.0f : 1.0f);
  return x;
}

inline void set_context() {
  benchmark::AddCustomContext("lowbit_isa", isa_name(active_isa()));
  benchmark::AddCustomContext("lowbit_threads", std::to_string(threads()));
  benchmark::AddCustomContext("llc_bytes", std::to_string(llc_bytes()));
}

// main() of every lowbit benchmark binary: Google Benchmark plus lowbit's context.
inline int run_main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  set_context();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

// GB/s of `bytes` read per iteration.
inline void set_bandwidth(benchmark::State& st, double bytes) {
  st.counters["GBps"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace lowbit::bench
