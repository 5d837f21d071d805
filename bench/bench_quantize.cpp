// Offline quantization cost: AWQ's searches against plain RTN, same run.
//
//   BM_rtn_quantize/<M>/<K>            RTN min-max, int4 g128
//   BM_gptq_quantize/<M>/<K>           GPTQ int4 g128, Hessian given (its
//                                      preparation is not timed)
//   BM_spqr_quantize/<M>/<K>           SpQR defaults (3-bit, beta1 = beta2 = 16,
//                                      tau 0.2, act-order), Hessian given
//   BM_vptq_quantize/<M>/<K>           VPTQ 2 bits: v = 8, k = 65536, output axis,
//                                      act-order, default k-means, Hessian given
//   BM_awq_quantize/<M>/<K>/<tokens>   AWQ int4 g128, default options, a
//                                      calibration sample of <tokens> tokens
// Threads: LOWBIT_BENCH_THREADS (default 1).
#include "bench_common.hpp"

using namespace lowbit;

namespace {

void BM_rtn_quantize(benchmark::State& st) {
  const auto M = std::size_t(st.range(0)), K = std::size_t(st.range(1));
  const Matrix w = bench::weights(M, K);
  rtn::Options o;
  o.threads = bench::threads();
  for (auto _ : st) benchmark::DoNotOptimize(rtn::quantize(w, o).codes.data());
}

void BM_awq_quantize(benchmark::State& st) {
  const auto M = std::size_t(st.range(0)), K = std::size_t(st.range(1)), T = std::size_t(st.range(2));
  const Matrix w = bench::weights(M, K);
  Calibration calib(K, CalibrationOptions{false, T, 0});
  Matrix X(T, K);
  for (std::size_t t = 0; t < T; ++t) {
    const auto x = bench::activations(K, unsigned(t + 10));
    std::copy(x.begin(), x.end(), X.row(t));
  }
  calib.add(X);
  awq::Options o;
  o.threads = bench::threads();
  float alpha = 0;
  for (auto _ : st) {
    const awq::Result r = awq::quantize(w, calib, o);
    alpha = r.alpha;
    benchmark::DoNotOptimize(r.weights[0].codes.data());
  }
  st.counters["alpha"] = alpha;
}

// A correlated Hessian from bench activations (outlier channels included).
Eigen::MatrixXd bench_hessian(std::size_t K, std::size_t tokens) {
  Calibration calib(K, CalibrationOptions{true, 0, 0});
  Matrix X(tokens, K);
  for (std::size_t t = 0; t < tokens; ++t) {
    const auto x = bench::activations(K, unsigned(t + 10));
    for (std::size_t k = 0; k < K; ++k) X(t, k) = x[k] + 0.5f * x[(k + 1) % K];  // neighbour correlation
  }
  calib.add(X);
  return calib.hessian();
}

void BM_gptq_quantize(benchmark::State& st) {
  const auto M = std::size_t(st.range(0)), K = std::size_t(st.range(1));
  const Matrix w = bench::weights(M, K);
  const Eigen::MatrixXd H = bench_hessian(K, 512);
  gptq::Options o;
  o.threads = bench::threads();
  for (auto _ : st) benchmark::DoNotOptimize(gptq::quantize(w, H, o).weights.codes.data());
}

void BM_spqr_quantize(benchmark::State& st) {
  const auto M = std::size_t(st.range(0)), K = std::size_t(st.range(1));
  const Matrix w = bench::weights(M, K);
  const Eigen::MatrixXd H = bench_hessian(K, 512);
  spqr::Options o;
  o.threads = bench::threads();
  spqr::Stats s;
  for (auto _ : st) benchmark::DoNotOptimize(spqr::quantize(w, H, o, &s).codes.data());
  st.counters["outlier_pct"] = 100.0 * double(s.outliers) / double(M * K);
}

void BM_vptq_quantize(benchmark::State& st) {
  const auto M = std::size_t(st.range(0)), K = std::size_t(st.range(1));
  const Matrix w = bench::weights(M, K);
  const Eigen::MatrixXd H = bench_hessian(K, 512);
  vptq::Options o;
  o.threads = bench::threads();
  double bpw = 0;
  for (auto _ : st) {
    const VqMatrix q = vptq::quantize(w, H, o);
    bpw = q.bits_per_weight();
    benchmark::DoNotOptimize(q.main[0].indices.data());
  }
  st.counters["bpw"] = bpw;
}

}  // namespace

BENCHMARK(BM_vptq_quantize)->Args({4096, 4096})->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
BENCHMARK(BM_spqr_quantize)->Args({4096, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_gptq_quantize)->Args({4096, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_rtn_quantize)->Args({4096, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_awq_quantize)->Args({4096, 4096, 512})->Unit(benchmark::kMillisecond)->UseRealTime();

int main(int argc, char** argv) { return lowbit::bench::run_main(argc, argv); }
