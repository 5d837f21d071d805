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
#include <thread>
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

// Activations as LLM layers see them: channels strongly correlated (a few
// dozen latent directions plus a little independent noise) and ~1% outlier
// channels 40x larger. The mixing is fixed; `seed` draws the tokens.
Matrix make_activations(std::size_t N, std::size_t K, unsigned seed = 2) {
  constexpr std::size_t latent = 32;
  std::mt19937 mix_rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> mix(latent * K);
  for (float& v : mix) v = nd(mix_rng) / std::sqrt(float(latent));
  std::mt19937 rng(seed);
  Matrix x(N, K);
  std::vector<float> u(latent);
  for (std::size_t n = 0; n < N; ++n) {
    for (float& v : u) v = nd(rng);
    for (std::size_t k = 0; k < K; ++k) {
      float v = 0.3f * nd(rng);
      for (std::size_t j = 0; j < latent; ++j) v += u[j] * mix[j * K + k];
      x(n, k) = v * (k % 97 == 7 ? 40.0f : 1.0f);
    }
  }
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

// KV cache: one decode step of attention (32 query heads, 8 kv heads, head
// dim 128) over a long context, dense fp32 / bf16 against KIVI.
void kv_cache_tour(std::size_t T) {
  const int heads = 32, kvh = 8, d = 128;
  const std::size_t row = std::size_t(kvh * d);
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> k(T * row), v(T * row), q(std::size_t(heads * d));  // T x (kv heads * dim)
  for (std::size_t i = 0; i < k.size(); ++i) {
    k[i] = i % std::size_t(d) % 13 == 5 ? 8.0f * nd(rng) + 6.0f : nd(rng);  // outlier channels (KIVI Sec. 3.1)
    v[i] = nd(rng);
  }
  for (float& x : q) x = 0.3f * nd(rng);
  // The dense caches keep each kv head's rows together.
  std::vector<float> kd(k.size()), vd(v.size());
  for (std::size_t t = 0; t < T; ++t)
    for (std::size_t h = 0; h < std::size_t(kvh); ++h)
      for (std::size_t c = 0; c < std::size_t(d); ++c) {
        kd[(h * T + t) * d + c] = k[t * row + h * d + c];
        vd[(h * T + t) * d + c] = v[t * row + h * d + c];
      }
  std::vector<bf16> kb(k.size()), vb(v.size());
  for (std::size_t i = 0; i < k.size(); ++i) {
    kb[i] = bf16::from_float(kd[i]);
    vb[i] = bf16::from_float(vd[i]);
  }
  AttentionOptions one;
  one.threads = 1;
  const AttentionShape shape{heads, kvh, d};
  std::vector<float> ref(q.size()), out(q.size());
  const double t_fp32 = time_it([&] { attention(shape, kd.data(), vd.data(), T, q.data(), ref.data(), one); });
  std::printf("\nKV cache, one decode step over %zu tokens (%d query heads, %d kv heads, head dim %d), 1 thread:\n", T,
              heads, kvh, d);
  std::printf("%-22s %10s %13s %11s %10s %9s\n", "cache", "MiB", "B/token/head", "rel. error", "attn us", "speed-up");
  auto line = [&](const char* name, std::size_t bytes, double secs) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < q.size(); ++i) {
      num += double(out[i] - ref[i]) * double(out[i] - ref[i]);
      den += double(ref[i]) * double(ref[i]);
    }
    std::printf("%-22s %10.2f %13.1f %11.4f %10.1f %8.2fx\n", name, double(bytes) / 1048576.0,
                double(bytes) / double(T * std::size_t(kvh)), std::sqrt(num / den), secs * 1e6, t_fp32 / secs);
  };
  out = ref;
  line("fp32", 2 * T * row * 4, t_fp32);
  const double t_bf16 = time_it([&] { attention(shape, kb.data(), vb.data(), T, q.data(), out.data(), one); });
  line("bf16", 2 * T * row * 2, t_bf16);
  for (int bits : {2, 4}) {
    kivi::Options o;  // G = 32, R = 128
    o.bits = bits;
    kivi::Cache cache(o);
    cache.append_bulk(k.data(), v.data(), T);
    const double t = time_it([&] { attention(cache, q.data(), out.data(), one); });
    line(bits == 2 ? "KIVI 2-bit G32 R128" : "KIVI 4-bit G32 R128", cache.memory_bytes(), t);
    AttentionOptions int8 = one;  // int8 queries and probability weights, integer dot products on the codes
    int8.activations = Activations::int8;
    const double t8 = time_it([&] { attention(cache, q.data(), out.data(), int8); });
    line("  int8 arithmetic", cache.memory_bytes(), t8);
  }
  std::printf("rel. error = ||out - out_fp32|| / ||out_fp32||; attention times are medians of 9.\n");
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

  // Calibration for the activation-aware methods: tokens from the same
  // distribution as X, but not X itself (the error is measured held-out).
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  Calibration calib(K, CalibrationOptions{true, 512, 0});
  calib.add(make_activations(512, K, 3));

  // A method: quantized matrix, the scales its input is divided by (AWQ;
  // folded into the previous op in a real model), the activation path.
  struct Quantized {
    GroupQuantMatrix q;
    std::vector<float> input_scales;
  };
  struct Method {
    std::string name;
    std::function<Quantized()> make;
    Activations act;
    bool lut = false;  // run as bit planes with T-MAC's int8 tables (format/bit_plane.hpp)
  };
  auto rtn_method = [&](int bits, Clip clip) {
    return [&w, bits, clip] {
      rtn::Options o;
      o.bits = bits;
      o.clip = clip;
      return Quantized{rtn::quantize(w, o), {}};
    };
  };
  auto awq_method = [&](int bits) {
    return [&w, &calib, bits, hw] {
      awq::Options o;
      o.bits = bits;
      o.loss_rows = 512;  // scale search scored on 512 rows: a full one costs M / 512 times more
      o.threads = int(hw);
      awq::Result r = awq::quantize(w, calib, o);
      return Quantized{std::move(r.weights[0]), std::move(r.scales)};
    };
  };
  const Eigen::MatrixXd H = calib.hessian();
  auto gptq_method = [&](int bits, bool act_order) {
    return [&w, &H, bits, act_order, hw] {
      gptq::Options o;
      o.bits = bits;
      o.act_order = o.static_groups = act_order;
      o.threads = int(hw);
      return Quantized{gptq::quantize(w, H, o).weights, {}};
    };
  };
  const std::vector<Method> methods = {
      {"RTN int8 g128", rtn_method(8, Clip::minmax), Activations::fp32},
      {"RTN int4 g128", rtn_method(4, Clip::minmax), Activations::fp32},
      {"RTN int4 g128 (int8 act)", rtn_method(4, Clip::minmax), Activations::int8},
      {"RTN int4 g128 (T-MAC LUT)", rtn_method(4, Clip::minmax), Activations::int8, true},
      {"RTN int4 g128 MSE-clip", rtn_method(4, Clip::mse), Activations::fp32},
      {"AWQ int4 g128", awq_method(4), Activations::fp32},
      {"AWQ int4 g128 (int8 act)", awq_method(4), Activations::int8},
      {"GPTQ int4 g128", gptq_method(4, false), Activations::fp32},
      {"GPTQ int4 g128 act-order", gptq_method(4, true), Activations::fp32},
      {"RTN int3 g128", rtn_method(3, Clip::minmax), Activations::fp32},
      {"RTN int3 g128 MSE-clip", rtn_method(3, Clip::mse), Activations::fp32},
      {"AWQ int3 g128", awq_method(3), Activations::fp32},
      {"GPTQ int3 g128 act-order", gptq_method(3, true), Activations::fp32},
      {"RTN int2 g128 MSE-clip", rtn_method(2, Clip::mse), Activations::fp32},
      {"RTN int2 g128 MSE (LUT)", rtn_method(2, Clip::mse), Activations::int8, true},
  };

  std::printf("%-26s %8s %11s %11s %10s %9s %9s\n", "method", "bits/w", "bytes", "rel. error", "GEMV us",
              "speed-up", "quant s");
  std::printf("%-26s %8.3f %11zu %11s %10.1f %9s %9s\n", "fp32", 32.0, M * K * 4, "0", t_fp32 * 1e6, "1.00x", "-");
  // One table row: the error of `run` against fp32 over the N vectors, and
  // its median GEMV time on vector 0.
  auto row = [&](const std::string& name, double bpw, std::size_t bytes, double t_quant,
                 const std::function<void(std::size_t n, float* out)>& run) {
    double num = 0, den = 0;
    for (std::size_t n = 0; n < N; ++n) {
      run(n, y.data());
      for (std::size_t r = 0; r < M; ++r) {
        const double d = double(y[r]) - double(Yref(n, r));
        num += d * d;
        den += double(Yref(n, r)) * double(Yref(n, r));
      }
    }
    const double t = time_it([&] { run(0, y.data()); });
    std::printf("%-26s %8.3f %11zu %11.4f %10.1f %8.2fx %9s\n", name.c_str(), bpw, bytes, std::sqrt(num / den),
                t * 1e6, t_fp32 / t, t_quant < 0 ? "-" : std::to_string(t_quant).substr(0, 5).c_str());
  };
  auto seconds_since = [](std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  std::vector<float> xs(K);
  for (const Method& m : methods) {
    const auto t0 = std::chrono::steady_clock::now();
    const Quantized mq = m.make();
    const double t_quant = seconds_since(t0);
    const RunOptions ro{m.act, 1};
    const BitPlaneMatrix planes = m.lut ? to_bit_planes(mq.q) : BitPlaneMatrix{};
    row(m.name, mq.q.bits_per_weight(), mq.q.bytes(), t_quant, [&](std::size_t n, float* out) {
      span<const float> x(X.row(n), K);
      if (!mq.input_scales.empty()) {
        for (std::size_t k = 0; k < K; ++k) xs[k] = X(n, k) / mq.input_scales[k];
        x = span<const float>(xs);
      }
      if (m.lut) gemv(planes, x, span<float>(out, M), ro);
      else gemv(mq.q, x, span<float>(out, M), ro);
    });
  }

  // SpQR: 3-bit groups of 16 with 3-bit statistics and fp16 outliers.
  {
    const auto t0 = std::chrono::steady_clock::now();
    spqr::Options o;
    o.threads = int(hw);
    const SpqrMatrix s = spqr::quantize(w, H, o);
    for (const Activations act : {Activations::fp32, Activations::int8})
      row(act == Activations::fp32 ? "SpQR w3 beta16 tau0.2" : "SpQR w3 beta16 (int8 act)", s.bits_per_weight(),
          s.bytes(), act == Activations::fp32 ? seconds_since(t0) : -1, [&](std::size_t n, float* out) {
            gemv(s, span<const float>(X.row(n), K), span<float>(out, M), {act, 1});
          });
  }

  // VPTQ at 2 bits: 8-bit indices of 4-weight vectors along the input axis
  // (the lookup-table kernel), a 256-entry fp16 codebook.
  {
    const auto t0 = std::chrono::steady_clock::now();
    vptq::Options o;
    o.vector = 4;
    o.codebook = 256;
    o.axis = VqAxis::input;
    o.threads = int(hw);
    const VqMatrix v = vptq::quantize(w, H, o);
    row("VPTQ v4 k256 (LUT)", v.bits_per_weight(), v.bytes(), seconds_since(t0),
        [&](std::size_t n, float* out) { gemv(v, span<const float>(X.row(n), K), span<float>(out, M), {Activations::fp32, 1}); });
  }

  // bf16 and DFloat11: lossless, so their outputs differ from fp32 only by
  // bf16 rounding of the weights, and the two agree with each other.
  std::vector<bf16> wb(M * K);
  for (std::size_t i = 0; i < M * K; ++i) wb[i] = bf16::from_float(w.data()[i]);
  const ConstMatrixView<bf16> wbv(wb.data(), M, K);
  row("bf16", 16.0, 2 * M * K, -1,
      [&](std::size_t n, float* out) { gemv(wbv, span<const float>(X.row(n), K), span<float>(out, M), {Activations::fp32, 1}); });
  {
    const auto t0 = std::chrono::steady_clock::now();
    const Dfloat11Matrix d = dfloat11::compress(wbv);
    const double t_quant = seconds_since(t0);
    const bool lossless = dfloat11::decompress(d) == wb;
    row(lossless ? "DFloat11 (== bf16)" : "DFloat11 (NOT LOSSLESS)", d.bits_per_weight(), d.bytes(), t_quant,
        [&](std::size_t n, float* out) { gemv(d, span<const float>(X.row(n), K), span<float>(out, M), {Activations::fp32, 1}); });
    if (!lossless) return 1;
  }
  std::printf("\nrel. error = ||y - y_fp32|| / ||y_fp32|| over %zu activation vectors (AWQ: calibrated on 512\n"
              "other tokens, GPTQ: their Hessian); GEMV times are medians of 9 on 1 thread; quant s: quantization time on %u threads.\n",
              N, hw);
  kv_cache_tour(8192);
  return 0;
}
