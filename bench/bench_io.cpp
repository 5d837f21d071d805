// Loading lowbit files (io/file.hpp), against memcpy of the same bytes.
//
//   BM_memcpy/<MiB>      memcpy of the file's size between two buffers
//                        allocated (and touched) once: the baseline
//   BM_load_read/<MiB>   io::load: read into a fresh aligned allocation,
//                        XXH64 of every tensor, validate, views
//   BM_load_read_unverified/<MiB>  the same without checksums
//   BM_load_mmap/<MiB>   io::map without checksums: header and validation
//                        only; should not grow with the file
//   BM_load_mmap_verified/<MiB>  io::map with checksums (reads every page)
//
// The files hold 64 int4 g128 group-quantized 4096-wide matrices (random
// codes; rows chosen for the size), so their headers are alike,
// written to $TMPDIR once and read from the page cache, as a server
// reloading a model would. The loaders use LOWBIT_BENCH_THREADS threads
// (default 1); memcpy uses one.
#include <cstdio>
#include <cstring>
#include <map>

#include "bench_common.hpp"

using namespace lowbit;

namespace {

std::map<std::size_t, std::string> files;  // MiB -> file written by this run

std::string file_of(std::size_t mib) {
  auto it = files.find(mib);
  if (it != files.end()) return it->second;
  const char* tmp = std::getenv("TMPDIR");
  const std::string path = std::string(tmp && *tmp ? tmp : "/tmp") + "/lowbit_bench_io_" + std::to_string(mib) + ".safetensors";
  // 4096 columns, int4 g128, fp16 scales, asymmetric: 2120 bytes per row.
  std::mt19937 rng(1);
  io::Items items;
  // 64 items whatever the size, so that the header is the same size.
  for (int i = 0; i < 64; ++i) {
    GroupQuantMatrix q;
    q.rows = std::max<std::size_t>(1, (mib << 20) / 64 / 2120);
    q.cols = 4096, q.bits = 4, q.group = 128;
    q.codes.resize(q.rows * q.row_bytes());
    for (auto& c : q.codes) c = std::uint8_t(rng());
    q.scales.resize(q.rows * q.groups_per_row() * 2);
    for (std::size_t j = 0; j < q.scales.size(); j += 2) {
      const std::uint16_t h = fp16::from_float(0.01f + 0.001f * float(rng() % 100)).bits;
      std::memcpy(&q.scales[j], &h, 2);
    }
    q.zeros.resize(bitpack::row_bytes(q.rows * q.groups_per_row(), 4));
    for (auto& z : q.zeros) z = std::uint8_t(rng());
    items["layer" + std::to_string(i)] = std::move(q);
  }
  io::save(path, items);
  return files[mib] = path;
}

std::size_t size_of(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  std::fseek(f, 0, SEEK_END);
  const long n = std::ftell(f);
  std::fclose(f);
  return std::size_t(n);
}

void BM_memcpy(benchmark::State& state) {
  const std::size_t n = size_of(file_of(std::size_t(state.range(0))));
  std::vector<char> a(n, 1), b(n, 2);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), n);
    benchmark::DoNotOptimize(b.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(n));
}

// io::load or io::map of the file for state.range(0) MiB.
void load(benchmark::State& state, bool mapped, bool verify) {
  const std::string path = file_of(std::size_t(state.range(0)));
  io::LoadOptions opt;
  opt.verify_checksums = verify;
  opt.threads = bench::threads();
  for (auto _ : state) benchmark::DoNotOptimize(mapped ? io::map(path, opt) : io::load(path, opt));
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(size_of(path)));
}
void BM_load_read(benchmark::State& state) { load(state, false, true); }
void BM_load_read_unverified(benchmark::State& state) { load(state, false, false); }
void BM_load_mmap(benchmark::State& state) { load(state, true, false); }
void BM_load_mmap_verified(benchmark::State& state) { load(state, true, true); }

void sizes(benchmark::internal::Benchmark* b) {
  for (int mib : {16, 256, 1024}) b->Arg(mib);
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_memcpy)->Apply(sizes);
BENCHMARK(BM_load_read)->Apply(sizes);
BENCHMARK(BM_load_read_unverified)->Apply(sizes);
BENCHMARK(BM_load_mmap)->Apply(sizes);
BENCHMARK(BM_load_mmap_verified)->Apply(sizes);

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  bench::set_context();
  benchmark::RunSpecifiedBenchmarks();
  for (const auto& f : files) std::remove(f.second.c_str());
  benchmark::Shutdown();
  return 0;
}
