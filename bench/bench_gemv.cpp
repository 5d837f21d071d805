// GEMV/GEMM benchmarks for group-quantized weights, with their baselines in
// the same binary: a plain memory-read loop (BM_read_bandwidth) and Eigen's
// fp32 GEMV. Compare ratios of medians from one run (bench/README.md).
//
//   BM_read_bandwidth/<MiB>          sum of a float array (GBps)
//   BM_gemv_fp32_eigen/<M>/<K>       Eigen y = W x, fp32 row-major
//   BM_gemv_int<b>_g128[_q8]/<M>/<K> lowbit gemv, fp32 (or int8) activations
//   BM_gemv_int<b>_g128_lut/<M>/<K>  the same matrix in bit planes: T-MAC int8 tables
//                                    (kernels/lut_gemv.hpp)
//   BM_gemv_int4_g128[_q8|_lut]_dram/<M>/<K>  the same, cycling over copies
//                                    totalling >= 4x the last-level cache
//   BM_gemm_int4_g128[_q8]/<M>/<K>/<N>  lowbit gemm, N tokens
//   BM_gemv_spqr[_q8]/<M>/<K>        SpQR 3-bit beta 16/16, ~1% outliers, fp32 (or int8)
//                                    activations
//   BM_gemv_vq2/<M>/<K>              VQ, v = 8, k = 65536 (16-bit indices, 2 bits/weight),
//                                    output axis (VPTQ's layout): gathered centroids
//   BM_gemv_vq2_lut/<M>/<K>          VQ, v = 4, k = 256 (8-bit indices), input axis:
//                                    lookup tables (kernels/lut_gemv.hpp)
// Counters: weight_bytes (stored bytes of W), GBps (stored bytes read / s).
#include <map>
#include <numeric>
#include <random>
#include <memory>
#include <tuple>

#include <Eigen/Core>
#include <xsimd/xsimd.hpp>

#include "bench_common.hpp"

using namespace lowbit;

namespace {

const GroupQuantMatrix& quantized(std::size_t M, std::size_t K, int bits) {
  static std::map<std::tuple<std::size_t, std::size_t, int>, std::unique_ptr<GroupQuantMatrix>> cache;
  auto& slot = cache[{M, K, bits}];
  if (!slot) {
    rtn::Options o;
    o.bits = bits;
    o.group = 128;
    slot = std::make_unique<GroupQuantMatrix>(rtn::quantize(bench::weights(M, K), o));
  }
  return *slot;
}

void BM_read_bandwidth(benchmark::State& st) {
  const std::size_t n = std::size_t(st.range(0)) << 18;  // MiB of floats
  std::vector<float> a(n, 1.0f);
  const int t = bench::threads();
  std::vector<float> partial(std::size_t(t) * 16);
  for (auto _ : st) {
    parallel_for(n, 1 << 16, t, [&](std::size_t b, std::size_t e) {
      // Widest vectors of the build, 4 independent sums: bound by loads, not
      // by add latency (a scalar or single-chain loop would measure the
      // adder, and flatter every kernel compared with it).
      using V = xsimd::batch<float>;
      constexpr std::size_t L = V::size;
      V s0(0.0f), s1(0.0f), s2(0.0f), s3(0.0f);
      std::size_t i = b;
      for (; i + 4 * L <= e; i += 4 * L) {
        s0 += V::load_unaligned(&a[i]);
        s1 += V::load_unaligned(&a[i + L]);
        s2 += V::load_unaligned(&a[i + 2 * L]);
        s3 += V::load_unaligned(&a[i + 3 * L]);
      }
      float tot = xsimd::hadd((s0 + s1) + (s2 + s3));
      for (; i < e; ++i) tot += a[i];
      partial[(b / (1 << 16)) % partial.size()] = tot;
    });
    benchmark::DoNotOptimize(partial.data());
  }
  bench::set_bandwidth(st, double(n) * 4);
}

void BM_gemv_fp32_eigen(benchmark::State& st) {
  const auto M = Eigen::Index(st.range(0)), K = Eigen::Index(st.range(1));
  const Matrix w = bench::weights(std::size_t(M), std::size_t(K));
  Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> W(w.data(), M, K);
  const std::vector<float> xv = bench::activations(std::size_t(K));
  Eigen::Map<const Eigen::VectorXf> x(xv.data(), K);
  Eigen::VectorXf y(M);
  for (auto _ : st) {
    y.noalias() = W * x;
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["weight_bytes"] = double(M) * double(K) * 4;
  bench::set_bandwidth(st, double(M) * double(K) * 4);
}

// gemv on q with activations `act`; DRAM-resident: on copies of q totalling
// >= 4x the LLC, used in turn. Counters: q's bytes and bits per weight.
template <class Q>
void time_gemv(benchmark::State& st, const Q& q, Activations act = Activations::fp32, bool dram = false) {
  std::vector<Q> copies;
  if (dram) copies.assign(4 * bench::llc_bytes() / q.bytes() + 2, q);
  const std::vector<float> x = bench::activations(q.cols);
  std::vector<float> y(q.rows);
  const RunOptions ro{act, bench::threads()};
  std::size_t i = 0;
  for (auto _ : st) {
    gemv(dram ? copies[i++ % copies.size()] : q, x, y, ro);
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["weight_bytes"] = double(q.bytes());
  st.counters["bpw"] = q.bits_per_weight();
  if (dram) st.counters["copies"] = double(copies.size());
  bench::set_bandwidth(st, double(q.bytes()));
}

void run_gemv(benchmark::State& st, int bits, Activations act, bool dram) {
  time_gemv(st, quantized(std::size_t(st.range(0)), std::size_t(st.range(1)), bits), act, dram);
}

// SpQR with ~1% outliers: weights with rare large entries, tau chosen to
// keep about 1% (the paper's typical rate), on a neighbour-correlated Hessian.
void run_spqr(benchmark::State& st, Activations act) {
  const auto M = std::size_t(st.range(0)), K = std::size_t(st.range(1));
  static std::map<std::pair<std::size_t, std::size_t>, std::unique_ptr<SpqrMatrix>> cache;
  auto& slot = cache[{M, K}];
  if (!slot) {
    Matrix w = bench::weights(M, K);
    for (std::size_t i = 0; i < M * K; i += 211) w.data()[i] *= 12.0f;
    Eigen::MatrixXd H = Eigen::MatrixXd::Identity(Eigen::Index(K), Eigen::Index(K));
    for (Eigen::Index k = 1; k < Eigen::Index(K); ++k) H(k, k - 1) = H(k - 1, k) = 0.4;
    spqr::Options o;
    o.outlier_threshold = 0.4f;  // 1.0% outliers at 4096 x 4096
    slot = std::make_unique<SpqrMatrix>(spqr::quantize(w, H, o));
  }
  time_gemv(st, *slot, act);
  st.counters["outlier_pct"] = 100.0 * double(slot->outliers()) / double(M * K);
}
void BM_gemv_spqr(benchmark::State& st) { run_spqr(st, Activations::fp32); }
void BM_gemv_spqr_q8(benchmark::State& st) { run_spqr(st, Activations::int8); }

// A VQ matrix with random centroids and indices: kernel speed does not
// depend on the values, and quantizing 4096 x 4096 to 65,536 centroids
// takes minutes (bench_quantize measures that).
VqMatrix random_vq(std::size_t M, std::size_t K, std::size_t v, std::size_t k, VqAxis axis) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  VqMatrix q;
  q.rows = M;
  q.cols = K;
  q.vector = v;
  q.axis = axis;
  VqCodebook c;
  c.entries = k;
  std::vector<std::uint16_t> cent(k * v);
  for (auto& h : cent) h = fp16::from_float(nd(rng)).bits;
  c.centroids = std::move(cent);
  const std::size_t n = q.vector_rows() * q.vectors_per_row(K);
  std::vector<std::uint32_t> idx(n);
  for (auto& i : idx) i = std::uint32_t(rng() % k);
  c.indices = lowbit::detail::vq_pack_indices(idx.data(), n, c.index_bits());
  q.main.push_back(std::move(c));
  std::vector<std::uint32_t> perm(K);
  std::iota(perm.begin(), perm.end(), 0u);
  std::shuffle(perm.begin(), perm.end(), rng);
  q.perm = std::move(perm);
  q.validate();
  return q;
}

void run_vq(benchmark::State& st, std::size_t v, std::size_t k, VqAxis axis) {
  const auto M = std::size_t(st.range(0)), K = std::size_t(st.range(1));
  time_gemv(st, random_vq(M, K, v, k, axis));
}

void BM_gemv_vq2(benchmark::State& st) { run_vq(st, 8, 65536, VqAxis::output); }
void BM_gemv_vq2_lut(benchmark::State& st) { run_vq(st, 4, 256, VqAxis::input); }

void BM_gemv_int4_g128(benchmark::State& st) { run_gemv(st, 4, Activations::fp32, false); }
void BM_gemv_int4_g128_q8(benchmark::State& st) { run_gemv(st, 4, Activations::int8, false); }
void BM_gemv_int3_g128(benchmark::State& st) { run_gemv(st, 3, Activations::fp32, false); }
void BM_gemv_int2_g128(benchmark::State& st) { run_gemv(st, 2, Activations::fp32, false); }
void BM_gemv_int2_g128_q8(benchmark::State& st) { run_gemv(st, 2, Activations::int8, false); }

// The same RTN matrices in bit planes (format/bit_plane.hpp), T-MAC's int8
// tables (kernels/lut_gemv.hpp); the table build is inside the timing.
// GBps counts the bit-plane bytes read.
void run_lut(benchmark::State& st, int bits, bool dram) {
  const BitPlaneMatrix p = to_bit_planes(quantized(std::size_t(st.range(0)), std::size_t(st.range(1)), bits));
  time_gemv(st, p, Activations::int8, dram);
}
void BM_gemv_int2_g128_lut(benchmark::State& st) { run_lut(st, 2, false); }
void BM_gemv_int3_g128_lut(benchmark::State& st) { run_lut(st, 3, false); }
void BM_gemv_int4_g128_lut(benchmark::State& st) { run_lut(st, 4, false); }
void BM_gemv_int4_g128_lut_dram(benchmark::State& st) { run_lut(st, 4, true); }
void BM_gemv_int4_g128_dram(benchmark::State& st) { run_gemv(st, 4, Activations::fp32, true); }
void BM_gemv_int4_g128_q8_dram(benchmark::State& st) { run_gemv(st, 4, Activations::int8, true); }

void run_gemm(benchmark::State& st, Activations act) {
  const auto M = std::size_t(st.range(0)), K = std::size_t(st.range(1)), N = std::size_t(st.range(2));
  const GroupQuantMatrix& q = quantized(M, K, 4);
  Matrix X(N, K), Y(N, M);
  for (std::size_t n = 0; n < N; ++n) {
    const auto x = bench::activations(K, unsigned(n + 3));
    std::copy(x.begin(), x.end(), X.row(n));
  }
  const RunOptions ro{act, bench::threads()};
  for (auto _ : st) {
    gemm(q, X, Y, ro);
    benchmark::DoNotOptimize(Y.data());
  }
  st.counters["weight_bytes"] = double(q.bytes());
  bench::set_bandwidth(st, double(q.bytes()));
}
void BM_gemm_int4_g128(benchmark::State& st) { run_gemm(st, Activations::fp32); }
void BM_gemm_int4_g128_q8(benchmark::State& st) { run_gemm(st, Activations::int8); }

void shapes(benchmark::internal::Benchmark* b) {
  for (auto [m, k] : {std::pair{4096, 4096}, {11008, 4096}, {4096, 11008}, {4096, 14336}}) b->Args({m, k});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_read_bandwidth)->Arg(8)->Arg(64)->Arg(1024)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_gemv_fp32_eigen)->Apply(shapes);
BENCHMARK(BM_gemv_int4_g128)->Apply(shapes);
BENCHMARK(BM_gemv_int4_g128_q8)->Apply(shapes);
BENCHMARK(BM_gemv_int3_g128)->Apply(shapes);
BENCHMARK(BM_gemv_int2_g128)->Apply(shapes);
BENCHMARK(BM_gemv_int2_g128_q8)->Apply(shapes);
BENCHMARK(BM_gemv_int2_g128_lut)->Apply(shapes);
BENCHMARK(BM_gemv_int3_g128_lut)->Apply(shapes);
BENCHMARK(BM_gemv_int4_g128_lut)->Apply(shapes);
BENCHMARK(BM_gemv_vq2)->Apply(shapes);
BENCHMARK(BM_gemv_vq2_lut)->Apply(shapes);
BENCHMARK(BM_gemv_spqr)->Args({4096, 4096})->Args({11008, 4096})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_gemv_spqr_q8)->Args({4096, 4096})->Args({11008, 4096})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_gemv_int4_g128_dram)->Args({4096, 4096})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_gemv_int4_g128_q8_dram)->Args({4096, 4096})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_gemv_int4_g128_lut_dram)->Args({4096, 4096})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_gemm_int4_g128)->ArgsProduct({{4096}, {4096}, {2, 8, 32, 64}})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_gemm_int4_g128_q8)->ArgsProduct({{4096}, {4096}, {2, 8, 32, 64}})->Unit(benchmark::kMicrosecond)->UseRealTime();

int main(int argc, char** argv) { return lowbit::bench::run_main(argc, argv); }
