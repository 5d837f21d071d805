// A tour of lowbit: quantize an LLM-like weight matrix with every method,
// then compare size, output error and GEMV speed against fp32.
//
// No input files: the weights are heavy-tailed (Laplacian, per-row scales)
// and the activations have a few outlier channels, as in real LLM layers.
// Usage: tour [M K]   (default 4096 4096)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <lowbit/lowbit.hpp>

using namespace lowbit;

namespace {

Matrix make_weights(std::size_t M, std::size_t K) {
  std::mt19937 rng(1);
  std::exponential_distribution<float> ex(1.0f);
  std::uniform_real_distribution<float> u(0.5f, 2.0f);
  Matrix w(M, K);
  for (std::size_t r = 0; r < M; ++r) {
    const float s = 0.02f * u(rng);
    for (std::size_t k = 0; k < K; ++k) w(r, k) = s * (ex(rng) - ex(rng));
  }
  return w;
}

Matrix make_activations(std::size_t N, std::size_t K) {
  std::mt19937 rng(2);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Matrix x(N, K);
  for (std::size_t n = 0; n < N; ++n)
    for (std::size_t k = 0; k < K; ++k) x(n, k) = nd(rng) * (k % 97 == 7 ? 40.0f : 1.0f);  // ~1% outlier channels
  return x;
}

// Median seconds of fn() over a few runs.
double time_it(const std::function<void()>& fn) {
  std::vector<double> t;
  fn();
  for (int i = 0; i < 9; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void fp32_gemv(const Matrix& w, const float* x, float* y) {
  for (std::size_t r = 0; r < w.rows(); ++r) {
    const float* row = w.row(r);
    float acc[8] = {};
    std::size_t k = 0;
    for (; k + 8 <= w.cols(); k += 8)
      for (int j = 0; j < 8; ++j) acc[j] += row[k + j] * x[k + j];
    for (; k < w.cols(); ++k) acc[0] += row[k] * x[k];
    float s = 0;
    for (float a : acc) s += a;
    y[r] = s;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t M = argc > 2 ? std::size_t(std::atol(argv[1])) : 4096;
  const std::size_t K = argc > 2 ? std::size_t(std::atol(argv[2])) : 4096;
  const std::size_t N = 8;  // activation vectors for the error estimate
  set_num_threads(1);
  std::printf("lowbit tour: W %zu x %zu, ISA %s, 1 thread\n\n", M, K, isa_name(active_isa()));

  const Matrix w = make_weights(M, K);
  const Matrix X = make_activations(N, K);
  Matrix Yref(N, M);
  for (std::size_t n = 0; n < N; ++n) fp32_gemv(w, X.row(n), Yref.row(n));
  std::vector<float> y(M);
  const double t_fp32 = time_it([&] { fp32_gemv(w, X.row(0), y.data()); });

  struct Method {
    std::string name;
    rtn::Options opt;
    Activations act;
  };
  auto rtn_opt = [](int bits, std::size_t group, Clip clip) {
    rtn::Options o;
    o.bits = bits;
    o.group = group;
    o.clip = clip;
    return o;
  };
  const std::vector<Method> methods = {
      {"RTN int8 g128", rtn_opt(8, 128, Clip::minmax), Activations::fp32},
      {"RTN int4 g128", rtn_opt(4, 128, Clip::minmax), Activations::fp32},
      {"RTN int4 g128 (int8 act)", rtn_opt(4, 128, Clip::minmax), Activations::int8},
      {"RTN int4 g128 MSE-clip", rtn_opt(4, 128, Clip::mse), Activations::fp32},
      {"RTN int3 g128", rtn_opt(3, 128, Clip::minmax), Activations::fp32},
      {"RTN int3 g128 MSE-clip", rtn_opt(3, 128, Clip::mse), Activations::fp32},
      {"RTN int2 g128 MSE-clip", rtn_opt(2, 128, Clip::mse), Activations::fp32},
  };

  std::printf("%-26s %9s %12s %12s %11s %9s\n", "method", "bits/w", "bytes", "rel. error", "GEMV us", "speed-up");
  std::printf("%-26s %9.3f %12zu %12s %11.1f %9s\n", "fp32", 32.0, M * K * 4, "0", t_fp32 * 1e6, "1.00x");
  for (const Method& m : methods) {
    const GroupQuantMatrix q = rtn::quantize(w, m.opt);
    const RunOptions ro{m.act, 1};
    double num = 0, den = 0;
    for (std::size_t n = 0; n < N; ++n) {
      gemv(q, span<const float>(X.row(n), K), y, ro);
      for (std::size_t r = 0; r < M; ++r) {
        const double d = double(y[r]) - double(Yref(n, r));
        num += d * d;
        den += double(Yref(n, r)) * double(Yref(n, r));
      }
    }
    const double t = time_it([&] { gemv(q, span<const float>(X.row(0), K), y, ro); });
    std::printf("%-26s %9.3f %12zu %12.4f %11.1f %8.2fx\n", m.name.c_str(), q.bits_per_weight(), q.bytes(),
                std::sqrt(num / den), t * 1e6, t_fp32 / t);
  }
  std::printf("\nrel. error = ||y - y_fp32|| / ||y_fp32|| over %zu activation vectors; times are medians of 9.\n", N);
  return 0;
}
