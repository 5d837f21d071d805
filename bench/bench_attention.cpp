// Decode attention benchmarks: one step (32 query heads, 8 kv heads, head
// dim 128) over a context of T tokens, with the dense caches it is compared
// with in the same binary. Compare ratios of medians from one run
// (bench/README.md).
//
//   BM_attention_fp32/<T>       dense fp32 cache
//   BM_attention_bf16/<T>       dense bf16 cache
//   BM_attention_kivi2/<T>      KIVI 2-bit, G = 32, R = 128 (the defaults)
//   BM_attention_kivi2_g64/<T>  KIVI 2-bit, G = 64
//   BM_attention_kivi4/<T>      KIVI 4-bit, G = 32
//   BM_attention_kivi{2,4}_q8/<T>  the same with int8 arithmetic
//                               (AttentionOptions::activations = int8)
// Counters: GBps (cache bytes per second), bytes_tok_head (cache bytes per
// token and kv head, windows included), vs_bf16 (cache size / bf16 cache).
#include <map>
#include <memory>

#include "bench_common.hpp"

using namespace lowbit;

namespace {

constexpr int heads = 32, kv_heads = 8, dim = 128;
constexpr std::size_t row = std::size_t(kv_heads * dim);

// Keys with outlier channels (KIVI Sec. 3.1), values Gaussian, both
// kv_heads x T x dim (the dense caches' layout).
const std::pair<std::vector<float>, std::vector<float>>& kv(std::size_t T) {
  static std::map<std::size_t, std::unique_ptr<std::pair<std::vector<float>, std::vector<float>>>> cache;
  auto& slot = cache[T];
  if (!slot) {
    slot = std::make_unique<std::pair<std::vector<float>, std::vector<float>>>(
        bench::activations(T * row, 3), bench::activations(T * row, 4));
    for (float& x : slot->first) x *= 0.25f;  // activations() already has every 97th channel x40
    // The dense caches' layout (kv_heads x T x dim) from the projections' (T x kv_heads * dim).
    for (auto* x : {&slot->first, &slot->second}) {
      std::vector<float> y(x->size());
      for (std::size_t t = 0; t < T; ++t)
        for (std::size_t h = 0; h < std::size_t(kv_heads); ++h)
          std::copy_n(x->data() + (t * kv_heads + h) * dim, dim, y.data() + (h * T + t) * dim);
      x->swap(y);
    }
  }
  return *slot;
}

AttentionOptions options(Activations a = Activations::fp32) {
  AttentionOptions o;
  o.threads = bench::threads();
  o.activations = a;
  return o;
}

void counters(benchmark::State& st, std::size_t bytes, std::size_t T) {
  bench::set_bandwidth(st, double(bytes));
  st.counters["bytes_tok_head"] = double(bytes) / double(T * kv_heads);
  st.counters["vs_bf16"] = double(bytes) / double(T * row * 2 * 2);
}

void BM_attention_fp32(benchmark::State& st) {
  const std::size_t T = std::size_t(st.range(0));
  const auto& [k, v] = kv(T);
  const std::vector<float> q = bench::activations(heads * dim, 5);
  std::vector<float> out(q.size());
  for (auto _ : st) {
    attention(AttentionShape{heads, kv_heads, dim}, k.data(), v.data(), T, q.data(), out.data(), options());
    benchmark::DoNotOptimize(out.data());
  }
  counters(st, T * row * 4 * 2, T);
}

void BM_attention_bf16(benchmark::State& st) {
  const std::size_t T = std::size_t(st.range(0));
  const auto& [k, v] = kv(T);
  std::vector<bf16> kb(k.size()), vb(v.size());
  for (std::size_t i = 0; i < k.size(); ++i) {
    kb[i] = bf16::from_float(k[i]);
    vb[i] = bf16::from_float(v[i]);
  }
  const std::vector<float> q = bench::activations(heads * dim, 5);
  std::vector<float> out(q.size());
  for (auto _ : st) {
    attention(AttentionShape{heads, kv_heads, dim}, kb.data(), vb.data(), T, q.data(), out.data(), options());
    benchmark::DoNotOptimize(out.data());
  }
  counters(st, T * row * 2 * 2, T);
}

void kivi_bench(benchmark::State& st, int bits, int group, Activations a = Activations::fp32) {
  const std::size_t T = std::size_t(st.range(0));
  const auto& [k, v] = kv(T);
  kivi::Cache cache(kivi::Options{heads, kv_heads, dim, bits, group});
  std::vector<float> kt(k.size()), vt(v.size());  // append_bulk's layout: T x (kv_heads * dim)
  for (std::size_t h = 0; h < std::size_t(kv_heads); ++h)
    for (std::size_t t = 0; t < T; ++t) {
      std::copy_n(k.data() + (h * T + t) * dim, dim, kt.data() + (t * kv_heads + h) * dim);
      std::copy_n(v.data() + (h * T + t) * dim, dim, vt.data() + (t * kv_heads + h) * dim);
    }
  cache.append_bulk(kt.data(), vt.data(), T);
  const std::vector<float> q = bench::activations(heads * dim, 5);
  std::vector<float> out(q.size());
  for (auto _ : st) {
    attention(cache, q.data(), out.data(), options(a));
    benchmark::DoNotOptimize(out.data());
  }
  counters(st, cache.memory_bytes(), T);
}
void BM_attention_kivi2(benchmark::State& st) { kivi_bench(st, 2, 32); }
void BM_attention_kivi2_g64(benchmark::State& st) { kivi_bench(st, 2, 64); }
void BM_attention_kivi4(benchmark::State& st) { kivi_bench(st, 4, 32); }
void BM_attention_kivi2_q8(benchmark::State& st) { kivi_bench(st, 2, 32, Activations::int8); }
void BM_attention_kivi4_q8(benchmark::State& st) { kivi_bench(st, 4, 32, Activations::int8); }

#define LOWBIT_ATTENTION_BENCH(fn) BENCHMARK(fn)->Arg(1024)->Arg(4096)->Arg(32768)->Unit(benchmark::kMicrosecond)
LOWBIT_ATTENTION_BENCH(BM_attention_fp32);
LOWBIT_ATTENTION_BENCH(BM_attention_bf16);
LOWBIT_ATTENTION_BENCH(BM_attention_kivi2);
LOWBIT_ATTENTION_BENCH(BM_attention_kivi2_g64);
LOWBIT_ATTENTION_BENCH(BM_attention_kivi4);
LOWBIT_ATTENTION_BENCH(BM_attention_kivi2_q8);
LOWBIT_ATTENTION_BENCH(BM_attention_kivi4_q8);

}  // namespace

int main(int argc, char** argv) { return bench::run_main(argc, argv); }
