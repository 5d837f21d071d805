// DFloat11 benchmarks, with their baselines in the same binary: memcpy of the
// bf16 bytes, zstd (levels 3 and 19) on the same bytes when libzstd is
// available, and lowbit's plain bf16 GEMV. Compare ratios of medians from one
// run (bench/README.md).
//
//   BM_memcpy/<MiB>               copy of the bf16 tensor
//   BM_df11_decompress/<MiB>      dfloat11::decompress to bf16
//   BM_zstd_decompress_l<L>/<MiB> ZSTD_decompress of the tensor compressed at level L
//   BM_bf16_gemv/<M>/<K>          y = W x, W plain bf16
//   BM_df11_gemv/<M>/<K>          y = W x, W DFloat11 (fused decode)
// Counters: GBps (bf16 bytes produced or consumed per second), ratio
// (compressed / bf16 size).
#include <cstring>
#include <map>
#include <memory>

#include <lowbit/codec/dfloat11.hpp>

#include "bench_common.hpp"

#ifdef LOWBIT_BENCH_ZSTD
#include <zstd.h>
#endif

using namespace lowbit;

namespace {

// LLM-like bf16 weights (bench::weights rounded), `mib` MiB of them.
const std::vector<bf16>& tensor(std::size_t rows, std::size_t cols) {
  static std::map<std::pair<std::size_t, std::size_t>, std::unique_ptr<std::vector<bf16>>> cache;
  auto& slot = cache[{rows, cols}];
  if (!slot) {
    const Matrix w = bench::weights(rows, cols);
    slot = std::make_unique<std::vector<bf16>>(rows * cols);
    for (std::size_t i = 0; i < rows * cols; ++i) (*slot)[i] = bf16::from_float(w.data()[i]);
  }
  return *slot;
}
const std::vector<bf16>& tensor_mib(std::size_t mib) { return tensor(mib * 512, 1024); }  // 2 KiB rows

const Dfloat11Matrix& compressed(std::size_t rows, std::size_t cols) {
  static std::map<std::pair<std::size_t, std::size_t>, std::unique_ptr<Dfloat11Matrix>> cache;
  auto& slot = cache[{rows, cols}];
  if (!slot)
    slot = std::make_unique<Dfloat11Matrix>(dfloat11::compress(ConstMatrixView<bf16>(tensor(rows, cols).data(), rows, cols)));
  return *slot;
}

RunOptions run_options() {
  RunOptions o;
  o.threads = bench::threads();
  return o;
}

void BM_memcpy(benchmark::State& st) {
  const auto& w = tensor_mib(std::size_t(st.range(0)));
  std::vector<bf16> out(w.size());
  for (auto _ : st) {
    std::memcpy(out.data(), w.data(), 2 * w.size());
    benchmark::ClobberMemory();
  }
  bench::set_bandwidth(st, 2.0 * double(w.size()));
}

void BM_df11_decompress(benchmark::State& st) {
  const std::size_t mib = std::size_t(st.range(0));
  const auto& d = compressed(mib * 512, 1024);
  std::vector<bf16> out(d.size());
  const RunOptions o = run_options();
  for (auto _ : st) {
    dfloat11::decompress(d, span<bf16>(out), o);
    benchmark::ClobberMemory();
  }
  if (std::memcmp(out.data(), tensor_mib(mib).data(), 2 * out.size()) != 0) st.SkipWithError("not lossless");
  bench::set_bandwidth(st, 2.0 * double(d.size()));
  st.counters["ratio"] = double(d.bytes()) / (2.0 * double(d.size()));
  st.counters["bound"] = dfloat11::entropy_bound(ConstMatrixView<bf16>(tensor_mib(mib).data(), d.rows, d.cols));
}

#ifdef LOWBIT_BENCH_ZSTD
void BM_zstd_decompress(benchmark::State& st, int level) {
  const auto& w = tensor_mib(std::size_t(st.range(0)));
  const std::size_t bytes = 2 * w.size();
  static std::map<std::pair<std::size_t, int>, std::vector<char>> cache;  // level 19 takes seconds
  auto& packed = cache[{bytes, level}];
  if (packed.empty()) {
    packed.resize(ZSTD_compressBound(bytes));
    const std::size_t r = ZSTD_compress(packed.data(), packed.size(), w.data(), bytes, level);
    if (ZSTD_isError(r)) return st.SkipWithError(ZSTD_getErrorName(r));
    packed.resize(r);
  }
  const std::size_t size = packed.size();
  std::vector<bf16> out(w.size());
  for (auto _ : st) {
    const std::size_t r = ZSTD_decompress(out.data(), bytes, packed.data(), size);
    if (r != bytes) return st.SkipWithError("zstd: wrong size");
    benchmark::ClobberMemory();
  }
  bench::set_bandwidth(st, double(bytes));
  st.counters["ratio"] = double(size) / double(bytes);
}
void BM_zstd_decompress_l3(benchmark::State& st) { BM_zstd_decompress(st, 3); }
void BM_zstd_decompress_l19(benchmark::State& st) { BM_zstd_decompress(st, 19); }
#endif

void BM_bf16_gemv(benchmark::State& st) {
  const std::size_t M = std::size_t(st.range(0)), K = std::size_t(st.range(1));
  const auto& w = tensor(M, K);
  const auto x = bench::activations(K);
  std::vector<float> y(M);
  const RunOptions o = run_options();
  for (auto _ : st) {
    gemv(ConstMatrixView<bf16>(w.data(), M, K), x, span<float>(y), o);
    benchmark::DoNotOptimize(y.data());
  }
  bench::set_bandwidth(st, 2.0 * double(M * K));
}

void BM_df11_gemv(benchmark::State& st) {
  const std::size_t M = std::size_t(st.range(0)), K = std::size_t(st.range(1));
  const auto& d = compressed(M, K);
  const auto x = bench::activations(K);
  std::vector<float> y(M);
  const RunOptions o = run_options();
  for (auto _ : st) {
    gemv(d, x, span<float>(y), o);
    benchmark::DoNotOptimize(y.data());
  }
  bench::set_bandwidth(st, 2.0 * double(M * K));
  st.counters["ratio"] = double(d.bytes()) / (2.0 * double(d.size()));
}

}  // namespace

BENCHMARK(BM_memcpy)->Arg(16)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_df11_decompress)->Arg(16)->Arg(64)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();
#ifdef LOWBIT_BENCH_ZSTD
BENCHMARK(BM_zstd_decompress_l3)->Arg(16)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_zstd_decompress_l19)->Arg(16)->Unit(benchmark::kMillisecond)->UseRealTime();  // level 19 compresses at ~2 MB/s
#endif
BENCHMARK(BM_bf16_gemv)->Args({4096, 4096})->Args({11008, 4096})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_df11_gemv)->Args({4096, 4096})->Args({11008, 4096})->Unit(benchmark::kMicrosecond)->UseRealTime();

int main(int argc, char** argv) { return lowbit::bench::run_main(argc, argv); }
