// format/group_quant.hpp, quant/rtn.hpp, kernels/group_gemv.hpp (gemv, gemm),
// format/bit_plane.hpp and the bit-serial table kernel (kernels/lut_gemv.hpp)
// on every ISA available here, against the scalar reference.
#include <algorithm>
#include <cstdlib>
#include <limits>
#include <tuple>

#include "test_util.hpp"

using namespace lowbit;
using lowbit::test::for_each_isa;

namespace {

rtn::Options opts(int bits, std::size_t group, bool sym = false, ScaleType st = ScaleType::fp16) {
  rtn::Options o;
  o.bits = bits;
  o.group = group;
  o.symmetric = sym;
  o.scale_type = st;
  return o;
}

// Reference y = W x on the dequantized matrix, in double, and the scale of
// the sum (sum |w_k x_k|) for tolerances.
void reference(const GroupQuantMatrix& q, const std::vector<float>& x, bool int8, std::vector<float>& y,
               std::vector<double>& mag) {
  detail::PreparedActivations a;
  a.prepare(x.data(), q.cols, q.group, int8);
  y.assign(q.rows, 0.0f);
  detail::group_gemv_reference(q, x.data(), &a, y.data(), 0, q.rows);
  mag.assign(q.rows, 0.0);
  for (std::size_t r = 0; r < q.rows; ++r)
    for (std::size_t k = 0; k < q.cols; ++k) {
      const std::size_t j = k / q.group;
      // |s| (|q| + |z|) |x| bounds both the dot and the zero-point term the
      // fast path subtracts.
      mag[r] += std::fabs(q.scale(r, j)) * double(q.code(r, k) + q.zero(r, j)) * std::fabs(x[k]);
    }
}

// Tolerance for a float32 kernel against the double reference: the fast path
// sums K products in float over ~K/32 blocks plus one term per group; its
// rounding error is at most a few ulps per addition level. 64 eps * sqrt(K)
// of the magnitude covers that with margin, while any decoding or indexing
// error moves y by a whole product (orders of magnitude more).
double tolerance(double mag, std::size_t K) {
  return 64.0 * std::numeric_limits<float>::epsilon() * std::sqrt(double(K) + 32.0) * mag + 1e-30;
}

void check_gemv(const GroupQuantMatrix& q, const std::vector<float>& x) {
  for (bool int8 : {false, true}) {
    std::vector<float> want;
    std::vector<double> mag;
    reference(q, x, int8, want, mag);
    for_each_isa([&](isa) {
      std::vector<float> y(q.rows, -1.0f);
      RunOptions ro;
      ro.activations = int8 ? Activations::int8 : Activations::fp32;
      gemv(q, x, y, ro);
      for (std::size_t r = 0; r < q.rows; ++r) {
        INFO("int8 " << int8 << " row " << r << " bits " << q.bits << " K " << q.cols << " g " << q.group);
        REQUIRE(std::fabs(double(y[r]) - double(want[r])) <= tolerance(mag[r], q.cols));
      }
    });
  }
}

}  // namespace

TEST_CASE("rtn: error falls as bits rise, MSE clipping never worse", "[rtn]") {
  const Matrix w = test::llm_weights(64, 512, 1);
  double prev = std::numeric_limits<double>::infinity();
  for (int bits : {2, 3, 4, 8}) {
    const double e_minmax = test::frob_error(w, dequantize(rtn::quantize(w, opts(bits, 64))));
    rtn::Options o = opts(bits, 64);
    o.clip = Clip::mse;
    const double e_mse = test::frob_error(w, dequantize(rtn::quantize(w, o)));
    INFO("bits " << bits << " minmax " << e_minmax << " mse " << e_mse);
    REQUIRE(e_minmax < prev * 0.5);
    REQUIRE(e_mse <= e_minmax);
    // Heavy tails: clipping pays at low bits. Measured on this data (mse /
    // minmax): 0.64 at 2 bits, 0.83 at 3, 0.93 at 4, 1.0 at 8.
    if (bits == 2) REQUIRE(e_mse < 0.70 * e_minmax);
    if (bits == 3) REQUIRE(e_mse < 0.88 * e_minmax);
    if (bits == 4) REQUIRE(e_mse < 0.96 * e_minmax);
    prev = e_minmax;
  }
}

TEST_CASE("rtn: exact reconstruction of weights already on the grid", "[rtn]") {
  for (int bits : {2, 3, 4, 8}) {
    for (bool sym : {false, true}) {
      const std::size_t M = 5, K = 96, g = 32;
      std::mt19937 rng(3);
      Matrix w(M, K);
      const int maxq = (1 << bits) - 1;
      for (std::size_t r = 0; r < M; ++r)
        for (std::size_t j = 0; j < K / g; ++j) {
          const float s = std::ldexp(float(1 + rng() % 7), -8 - int(rng() % 4));  // exact in fp16
          const int z = sym ? (1 << (bits - 1)) : int(rng() % (maxq + 1));
          for (std::size_t k = j * g; k < (j + 1) * g; ++k) {
            int c = int(rng() % (maxq + 1));
            if (k == j * g) c = 0;  // the extremes are present, so min-max finds s and z
            if (k == j * g + 1) c = sym ? 0 : maxq;
            w(r, k) = s * float(c - z);
          }
        }
      const Matrix back = dequantize(rtn::quantize(w, opts(bits, g, sym)));
      INFO("bits " << bits << " sym " << sym);
      REQUIRE(test::frob_error(w, back) == 0.0);
    }
  }
}

TEST_CASE("group format: sizes, bits per weight, accessors", "[format]") {
  const Matrix w = test::llm_weights(8, 256, 2);
  const GroupQuantMatrix q = rtn::quantize(w, opts(4, 128));
  REQUIRE(q.codes.size() == 8 * 128);
  REQUIRE(q.scales.size() == 8 * 2 * 2);
  REQUIRE(q.zeros.size() == bitpack::row_bytes(16, 4));
  REQUIRE(q.bytes() == 8 * 128 + 32 + 32);
  REQUIRE(q.bits_per_weight() == Approx(8.0 * (1024 + 64) / 2048.0));
  const Matrix d = dequantize(q);
  for (std::size_t r = 0; r < 8; ++r)
    for (std::size_t k = 0; k < 256; ++k) REQUIRE(d(r, k) == q.weight(r, k));
  const GroupQuantMatrix s = rtn::quantize(w, opts(3, 64, true, ScaleType::fp32));
  REQUIRE(s.zeros.empty());
  REQUIRE(s.scales.size() == 8 * 4 * 4);
  REQUIRE(s == rtn::quantize(w, opts(3, 64, true, ScaleType::fp32)));  // deterministic
  REQUIRE(s != q);
}

TEST_CASE("rtn: ragged K and bad input", "[rtn]") {
  const Matrix w = test::llm_weights(3, 100, 4);
  const GroupQuantMatrix q = rtn::quantize(w, opts(4, 32));
  REQUIRE(q.groups_per_row() == 4);  // 32 + 32 + 32 + 4
  // The full groups quantize exactly as without the ragged tail; the 4-wide
  // last group gets its own range, so each of its weights is within half a
  // step of the original.
  Matrix head(3, 96);
  for (std::size_t r = 0; r < 3; ++r) std::copy(w.row(r), w.row(r) + 96, head.row(r));
  const Matrix dq = dequantize(q), dh = dequantize(rtn::quantize(head, opts(4, 32)));
  for (std::size_t r = 0; r < 3; ++r) {
    for (std::size_t k = 0; k < 96; ++k) REQUIRE(dq(r, k) == dh(r, k));
    for (std::size_t k = 96; k < 100; ++k) REQUIRE(std::fabs(dq(r, k) - w(r, k)) <= 0.5f * q.scale(r, 3) * 1.0001f);
  }
  REQUIRE_THROWS_AS(rtn::quantize(w, opts(5, 32)), lowbit::error);
  REQUIRE_THROWS_AS(rtn::quantize(w, opts(4, 0)), lowbit::error);
  REQUIRE_THROWS_AS(rtn::quantize(w, opts(4, 12)), lowbit::error);
  REQUIRE_THROWS_AS(rtn::quantize(w, opts(4, 128)), lowbit::error);  // group > K
  Matrix bad = w;
  bad(1, 7) = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_THROWS_AS(rtn::quantize(bad, opts(4, 32)), lowbit::error);
  bad(1, 7) = std::numeric_limits<float>::infinity();
  REQUIRE_THROWS_AS(rtn::quantize(bad, opts(4, 32)), lowbit::error);
  Matrix huge(1, 32, 0.0f);
  huge(0, 0) = 1e9f;
  REQUIRE_THROWS_AS(rtn::quantize(huge, opts(4, 32)), lowbit::error);  // fp16 scale overflow
  rtn::Options f32 = opts(4, 32, false, ScaleType::fp32);
  REQUIRE_NOTHROW(rtn::quantize(huge, f32));
  const Matrix zero(2, 64, 0.0f);
  REQUIRE(test::frob_error(zero, dequantize(rtn::quantize(zero, opts(2, 32)))) == 0.0);
}

TEST_CASE("gemv: every ISA matches the reference on odd shapes", "[gemv]") {
  struct Shape {
    std::size_t M, K, g;
  };
  for (Shape s : {Shape{1, 288, 32}, Shape{11, 1376, 32}, Shape{7, 4096, 128}, Shape{13, 1376, 128},
                  Shape{3, 100, 32}, Shape{5, 64, 64}, Shape{4, 200, 40}, Shape{2, 48, 16},
                  // 512-bit int8 blocks (group_rows_wide): int2 needs g % 256; for g = 512
                  // the activation segment (256) is not the group, the 256-bit kernel runs.
                  Shape{3, 768, 256}, Shape{2, 1024, 512}}) {
    for (int bits : {2, 3, 4, 8}) {
      const Matrix w = test::llm_weights(s.M, s.K, unsigned(s.M * 31 + s.K + bits));
      const std::vector<float> x = test::llm_activations(s.K, unsigned(s.K));
      check_gemv(rtn::quantize(w, opts(bits, s.g)), x);
      check_gemv(rtn::quantize(w, opts(bits, s.g, true, ScaleType::fp32)), x);
    }
  }
}

TEST_CASE("gemv: tall matrix (M = 11008)", "[gemv]") {
  const Matrix w = test::llm_weights(11008, 64, 9);
  const std::vector<float> x = test::gaussian(64, 10);
  check_gemv(rtn::quantize(w, opts(4, 32)), x);
}

TEST_CASE("gemv: adversarial activations and extreme codes", "[gemv]") {
  const std::size_t M = 6, K = 512;
  Matrix w(M, K);
  for (std::size_t r = 0; r < M; ++r)  // alternate the extremes: codes 0 and 2^b - 1
    for (std::size_t k = 0; k < K; ++k) w(r, k) = ((k + r) % 2 ? 1.0f : -1.0f) * float(r + 1);
  for (auto [bits, g] : {std::pair{2, 32}, {3, 32}, {4, 32}, {8, 32}, {2, 256}, {4, 128}, {8, 128}}) {
    const GroupQuantMatrix q = rtn::quantize(w, opts(bits, std::size_t(g)));
    std::vector<float> x(K, 0.0f);
    check_gemv(q, x);  // all zero
    for (std::size_t k = 0; k < K; ++k) x[k] = (k % 3 ? 1e-30f : 3e4f) * (k % 2 ? 1.0f : -1.0f);
    check_gemv(q, x);  // huge dynamic range
    for (std::size_t k = 0; k < K; ++k) x[k] = 1.0f;
    check_gemv(q, x);  // saturating int8 blocks: every xq = 127
  }
  const GroupQuantMatrix q = rtn::quantize(w, opts(4, 32));
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (float bad : {nan, inf, -inf}) {
    for (std::size_t at : {std::size_t(0), std::size_t(77), K - 1}) {  // ends and middle: all_finite's tails
      std::vector<float> x = test::gaussian(K, 5);
      x[at] = bad;
      for (auto act : {Activations::fp32, Activations::int8}) {
        for_each_isa([&](isa) {
          std::vector<float> y(M);
          gemv(q, x, y, RunOptions{act, 1});
          for (float v : y) REQUIRE(!std::isfinite(v));  // propagates, never silently finite
        });
      }
    }
  }
}

TEST_CASE("quantize_i8: SIMD codes and step equal the scalar reference", "[gemv]") {
  // Odd lengths (tails), an all-zero vector, exact .5 ties (round to even)
  // and the extreme +-max|v| (code +-127).
  for (std::size_t n : {0u, 1u, 7u, 31u, 32u, 33u, 100u, 257u}) {
    std::vector<std::vector<float>> cases = {test::gaussian(n, unsigned(n + 3)), std::vector<float>(n, 0.0f)};
    std::vector<float> ties(n);
    for (std::size_t i = 0; i < n; ++i) ties[i] = (float(i % 255) - 127.0f) + (i % 2 ? 0.5f : -0.5f);
    if (n > 0) ties[0] = 127.0f;  // max|v| = 127: the step is 1, ties stay ties
    cases.push_back(ties);
    for (const auto& v : cases) {
      std::vector<std::int8_t> want(n), got(n);
      const float step = detail::quantize_bytes<std::int8_t>(v.data(), n, want.data());
      for_each_isa([&](isa i) {
        std::fill(got.begin(), got.end(), std::int8_t(99));
        REQUIRE(detail::kernels_for(i).quantize_i8(v.data(), n, got.data()) == step);
        REQUIRE(got == want);
      });
    }
  }
}

TEST_CASE("gemv, gemm: bit-identical for any thread count", "[gemv]") {
  const Matrix w = test::llm_weights(1000, 512, 12);
  const std::vector<float> x = test::llm_activations(512, 13);
  const GroupQuantMatrix q = rtn::quantize(w, opts(4, 128));
  Matrix X(11, 512);  // 11 tokens: the int8 token-lane kernel, a partial second tile
  for (std::size_t n = 0; n < X.rows(); ++n) {
    const auto xn = test::llm_activations(512, unsigned(40 + n));
    std::copy(xn.begin(), xn.end(), X.row(n));
  }
  for (auto act : {Activations::fp32, Activations::int8}) {
    for_each_isa([&](isa) {
      std::vector<float> y1(1000), yn(1000);
      Matrix Y1(11, 1000), Yn(11, 1000);
      gemv(q, x, y1, RunOptions{act, 1});
      gemm(q, X, Y1, RunOptions{act, 1});
      for (int t : {2, 3, 7}) {
        gemv(q, x, yn, RunOptions{act, t});
        REQUIRE(std::memcmp(y1.data(), yn.data(), y1.size() * 4) == 0);
        gemm(q, X, Yn, RunOptions{act, t});
        REQUIRE(std::memcmp(Y1.data(), Yn.data(), 11 * 1000 * 4) == 0);
      }
    });
  }
}

TEST_CASE("gemm: equals gemv per token, any batch size", "[gemm]") {
  // K = 1376 is ragged for g = 128 and 256: the int8 token-lane kernel reads
  // int4 / int2 rows in place for g >= 64 / 128 and unpacks them otherwise.
  // K = 1024 with int4 / int8 g128 and int2 g256: the 512-bit int8 kernel
  // (group_rows_wide) in gemv and in the token tiles.
  const std::size_t M = 37;
  struct Case {
    int bits;
    std::size_t group, K;
  };
  for (const Case& c : {Case{2, 32, 1376}, {3, 32, 1376}, {4, 32, 1376}, {8, 32, 1376}, {2, 256, 1376},
                        {3, 128, 1376}, {4, 128, 1376}, {4, 128, 1024}, {8, 128, 1024}, {2, 256, 1024}}) {
    // Named copies, not a structured binding: the lambdas below capture them
    // (C++17; clang before 16 rejects captured bindings).
    const int bits = c.bits;
    const std::size_t group = c.group, K = c.K;
    const Matrix w = test::llm_weights(M, K, 21);
    const GroupQuantMatrix q = rtn::quantize(w, opts(bits, group));
    for (std::size_t N : {1u, 2u, 3u, 5u, 8u, 12u, 17u, 64u}) {
      Matrix X(N, K);
      for (std::size_t n = 0; n < N; ++n) {
        const auto x = test::llm_activations(K, unsigned(100 + n));
        std::copy(x.begin(), x.end(), X.row(n));
      }
      const Matrix wd = dequantize(q);
      // The token-lane kernel's integer sums are exact and its float steps
      // the same per lane, so every FMA ISA gives the same bits, whatever its
      // vector width (256-bit; 512-bit with VNNI from 9 tokens).
      Matrix lanes_first(N, M);
      bool have_lanes = false;
      for (auto act : {Activations::fp32, Activations::int8}) {
        for_each_isa([&](isa i) {
          Matrix Y(N, M, -1.0f);
          gemm(q, X, Y, RunOptions{act, 2});
          if (i != isa::scalar && i != isa::sse4_1 &&
              detail::choose_gemm_kernel(act == Activations::int8, i, bits, N) == detail::gemm_kernel::lanes) {
            INFO("bits " << bits << " g " << group << " K " << K << " N " << N);
            if (have_lanes) REQUIRE(std::memcmp(Y.data(), lanes_first.data(), N * M * 4) == 0);
            lanes_first = Y;
            have_lanes = true;
          }
          for (std::size_t n = 0; n < N; ++n) {
            std::vector<float> y(M);
            gemv(q, span<const float>(X.row(n), K), y, RunOptions{act, 1});
            for (std::size_t r = 0; r < M; ++r) {
              INFO("bits " << bits << " g " << group << " N " << N << " n " << n << " r " << r);
              const auto kind = detail::choose_gemm_kernel(act == Activations::int8, i, bits, N);
              if (kind == detail::gemm_kernel::tiles || i == isa::scalar) {
                REQUIRE(Y(n, r) == y[r]);  // same blocks in the same order: bit-identical
              } else {
                // Lanes or dense: the same products summed in another order, both
                // in float: |difference| <= K eps sum_k |w_k x_k| (gamma_K).
                double mag = 0;
                for (std::size_t k = 0; k < K; ++k) mag += std::fabs(double(wd(r, k)) * X(n, k));
                REQUIRE(std::fabs(double(Y(n, r)) - y[r]) <= double(K) * 1.2e-7 * mag);
              }
            }
          }
        });
      }
    }
  }
}

TEST_CASE("gemv/gemm: bad input", "[gemv]") {
  const Matrix w = test::llm_weights(4, 64, 1);
  GroupQuantMatrix q = rtn::quantize(w, opts(4, 32));
  std::vector<float> x(64), y(4);
  REQUIRE_THROWS_AS(gemv(q, span<const float>(x.data(), 63), y), lowbit::error);
  REQUIRE_THROWS_AS(gemv(q, x, span<float>(y.data(), 3)), lowbit::error);
  REQUIRE_THROWS_AS(gemv(q, span<const float>(nullptr, 64), y), lowbit::error);
  Matrix X(2, 64), Y(2, 4), Ybad(3, 4);
  REQUIRE_THROWS_AS(gemm(q, X, Ybad), lowbit::error);
  GroupQuantMatrix broken = q;
  broken.codes.pop_back();
  REQUIRE_THROWS_AS(gemv(broken, x, y), lowbit::error);
  broken = q;
  broken.bits = 5;
  REQUIRE_THROWS_AS(gemv(broken, x, y), lowbit::error);
  broken = q;
  broken.group = 0;
  REQUIRE_THROWS_AS(gemv(broken, x, y), lowbit::error);
  broken = q;
  broken.scales.resize(3);
  REQUIRE_THROWS_AS(gemm(broken, X, Y), lowbit::error);
  // Empty shapes are fine.
  GroupQuantMatrix empty = rtn::quantize(Matrix(0, 64), opts(4, 32));
  std::vector<float> none;
  REQUIRE_NOTHROW(gemv(empty, x, none));
}

namespace {

// y = W x on the dequantized matrix in double, and the bound on what int8
// tables may add to it: an entry is off by at most d/2 (d = the segment's
// table scale), a row's segment term s/2 sum_i 2^i sum_t T_t[p] so by at most
// |s| (2^b - 1) n_t d / 4 (n_t quads), plus float rounding.
void bit_plane_reference(const GroupQuantMatrix& q, const BitPlaneMatrix& bp, const std::vector<float>& x,
                         std::vector<double>& y, std::vector<double>& bound) {
  const Matrix wd = dequantize(q);
  const detail::BitPlaneTables tb(bp, x.data(), true);
  y.assign(q.rows, 0.0);
  bound.assign(q.rows, 0.0);
  const std::size_t Q = bp.quads(), gq = q.group / 4;
  for (std::size_t r = 0; r < q.rows; ++r) {
    double mag = 0;
    for (std::size_t k = 0; k < q.cols; ++k) {
      y[r] += double(wd(r, k)) * x[k];
      mag += std::fabs(double(q.scale(r, k / q.group))) * double(1 << q.bits) * std::fabs(x[k]);
    }
    for (std::size_t t0 = 0; t0 < Q; t0 += tb.segment) {
      const std::size_t nt = std::min({Q, t0 + tb.segment, (t0 / gq + 1) * gq}) - t0;
      bound[r] += std::fabs(double(q.scale(r, t0 / gq))) * double((1 << q.bits) - 1) * double(nt) *
                  double(tb.half_scale[t0 / tb.segment]) / 2;
    }
    bound[r] = bound[r] * (1 + 1e-5) + tolerance(mag, q.cols);
  }
}

void check_bit_planes(const GroupQuantMatrix& q, const std::vector<float>& x) {
  const BitPlaneMatrix bp = to_bit_planes(q);
  std::vector<double> want, bound;
  bit_plane_reference(q, bp, x, want, bound);
  const detail::BitPlaneTables tb(bp, x.data(), true);
  std::vector<float> ref(q.rows, -1.0f);
  detail::bit_plane_gemv_reference(bp, tb, ref.data(), 0, bp.tiles());
  for (std::size_t r = 0; r < q.rows; ++r) {
    INFO("row " << r << " bits " << q.bits << " M " << q.rows << " K " << q.cols << " g " << q.group);
    REQUIRE(std::fabs(double(ref[r]) - want[r]) <= bound[r]);
  }
  for_each_isa([&](isa i) {
    std::vector<float> y(q.rows, -1.0f);
    gemv(bp, x, y, RunOptions{Activations::int8, 2});
    if (i != isa::sse4_1) {
      REQUIRE(std::memcmp(y.data(), ref.data(), 4 * y.size()) == 0);  // same integer sums, same float steps
    } else {
      // SSE4.1 has no FMA (its multiply-adds round twice): the bound of W x.
      for (std::size_t r = 0; r < q.rows; ++r) REQUIRE(std::fabs(double(y[r]) - want[r]) <= bound[r]);
    }
  });
}

}  // namespace

TEST_CASE("bit planes: the layout holds every code, padding is zero", "[bitplane]") {
  for (int bits : {2, 3, 4}) {
    for (auto [M, K, g] : {std::tuple<std::size_t, std::size_t, std::size_t>{1, 8, 8}, {33, 100, 32}, {70, 1376, 128},
                           {32, 4104, 4104}}) {
      const GroupQuantMatrix q = rtn::quantize(test::llm_weights(M, K, unsigned(K + bits)), opts(bits, g));
      const BitPlaneMatrix bp = to_bit_planes(q);
      REQUIRE_NOTHROW(bp.validate());
      REQUIRE(bp.planes.size() == (M + 31) / 32 * ((K + 3) / 4) * std::size_t((bits + 1) / 2) * 32);
      REQUIRE(bp.bits_per_weight() == 8.0 * double(bp.bytes()) / double(M * K));
      for (std::size_t r = 0; r < bp.tiles() * 32; ++r)
        for (std::size_t k = 0; k < 4 * bp.quads(); ++k) {
          INFO("r " << r << " k " << k);
          REQUIRE(bp.code(r, k) == (r < M && k < K ? q.code(r, k) : 0));
        }
      for (std::size_t r = 0; r < M; ++r)
        for (std::size_t j = 0; j < q.groups_per_row(); ++j) {
          const std::size_t i = (r / 32 * q.groups_per_row() + j) * 32 + r % 32;
          REQUIRE(bp.scale[i] == q.scale(r, j));
          REQUIRE(bp.offset[i] == q.scale(r, j) * (float((1 << bits) - 1) / 2 - float(q.zero(r, j))));
        }
    }
  }
}

TEST_CASE("bit-plane gemv: every ISA equals the reference, within the table bound of W x", "[bitplane]") {
  struct Shape {
    std::size_t M, K, g;
  };
  for (Shape s : {Shape{1, 288, 32}, Shape{31, 1376, 32}, Shape{33, 4096, 128}, Shape{70, 1000, 40},
                  Shape{5, 102, 8}, Shape{64, 1024, 512}, Shape{3, 4104, 4104}, Shape{40, 130, 128}}) {
    for (int bits : {2, 3, 4}) {
      const Matrix w = test::llm_weights(s.M, s.K, unsigned(s.M * 7 + s.K + bits));
      const std::vector<float> x = test::llm_activations(s.K, unsigned(s.K + 1));
      check_bit_planes(rtn::quantize(w, opts(bits, s.g)), x);
      check_bit_planes(rtn::quantize(w, opts(bits, s.g, true, ScaleType::fp32)), x);
    }
  }
}

TEST_CASE("bit-plane gemv: adversarial activations and extreme codes", "[bitplane]") {
  const std::size_t M = 40, K = 260;
  Matrix w(M, K);
  for (std::size_t r = 0; r < M; ++r)  // alternate the extremes: codes 0 and 2^b - 1
    for (std::size_t k = 0; k < K; ++k) w(r, k) = ((k + r) % 2 ? 1.0f : -1.0f) * float(r + 1);
  for (int bits : {2, 3, 4}) {
    const GroupQuantMatrix q = rtn::quantize(w, opts(bits, 64));
    std::vector<float> x(K, 0.0f);
    check_bit_planes(q, x);  // all zero: zero tables
    for (std::size_t k = 0; k < K; ++k) x[k] = (k % 3 ? 1e-30f : 3e4f) * (k % 2 ? 1.0f : -1.0f);
    check_bit_planes(q, x);  // huge dynamic range
    for (std::size_t k = 0; k < K; ++k) x[k] = 1.0f;
    check_bit_planes(q, x);  // every table at +-127: the int16 sums' largest values
  }
  const BitPlaneMatrix bp = to_bit_planes(rtn::quantize(w, opts(2, 64)));
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    std::vector<float> x = test::gaussian(K, 5);
    x[77] = bad;
    for_each_isa([&](isa) {
      std::vector<float> y(M);
      gemv(bp, x, y, RunOptions{Activations::int8, 1});
      for (float v : y) REQUIRE(!std::isfinite(v));  // float tables: propagates, never silently finite
    });
  }
}

TEST_CASE("bit-plane gemv: float tables give W x, int8 tables the q8 path's accuracy", "[bitplane]") {
  const std::size_t M = 256, K = 4096;
  const Matrix w = test::llm_weights(M, K, 3);
  const std::vector<float> x = test::llm_activations(K, 4);
  const GroupQuantMatrix q = rtn::quantize(w, opts(2, 128));
  const BitPlaneMatrix bp = to_bit_planes(q);
  const Matrix wd = dequantize(q);
  std::vector<double> exact(M, 0.0);
  for (std::size_t r = 0; r < M; ++r)
    for (std::size_t k = 0; k < K; ++k) exact[r] += double(wd(r, k)) * x[k];
  const auto rel_error = [&](const std::vector<float>& y) {
    double e = 0, n = 0;
    for (std::size_t r = 0; r < M; ++r) e += (y[r] - exact[r]) * (y[r] - exact[r]), n += exact[r] * exact[r];
    return std::sqrt(e / n);
  };
  std::vector<float> yf(M), y8(M), yq8(M);
  const detail::BitPlaneTables tf(bp, x.data(), false);
  detail::bit_plane_gemv_reference(bp, tf, yf.data(), 0, bp.tiles());
  gemv(bp, x, y8, RunOptions{Activations::int8, 1});
  gemv(q, x, yq8, RunOptions{Activations::int8, 1});
  const double ef = rel_error(yf), e8 = rel_error(y8), eq8 = rel_error(yq8);
  INFO("float tables " << ef << ", int8 tables " << e8 << ", q8 group kernel " << eq8);
  REQUIRE(ef < 1e-6);  // the +-1 identity is exact up to float rounding
  REQUIRE(e8 > ef);
  REQUIRE(e8 < 2 * eq8);  // int8 sums of 4 activations: no worse than twice int8 activations
}

TEST_CASE("bit-plane gemv: bit-identical for any thread count, bad input", "[bitplane]") {
  const Matrix w = test::llm_weights(1000, 512, 12);
  const std::vector<float> x = test::llm_activations(512, 13);
  const BitPlaneMatrix bp = to_bit_planes(rtn::quantize(w, opts(3, 128)));
  for_each_isa([&](isa) {
    std::vector<float> y1(1000), yn(1000);
    gemv(bp, x, y1, RunOptions{Activations::int8, 1});
    for (int t : {2, 3, 7}) {
      gemv(bp, x, yn, RunOptions{Activations::int8, t});
      REQUIRE(std::memcmp(y1.data(), yn.data(), y1.size() * 4) == 0);
    }
  });
  std::vector<float> y(1000);
  REQUIRE_THROWS_AS(gemv(bp, x, y), lowbit::error);  // fp32 activations: the tables are int8
  REQUIRE_THROWS_AS(gemv(bp, span<const float>(x.data(), 511), y, RunOptions{Activations::int8}), lowbit::error);
  REQUIRE_THROWS_AS(gemv(bp, x, span<float>(y.data(), 999), RunOptions{Activations::int8}), lowbit::error);
  REQUIRE_THROWS_AS(to_bit_planes(rtn::quantize(w, opts(8, 128))), lowbit::error);
  BitPlaneMatrix broken = bp;
  broken.planes.pop_back();
  REQUIRE_THROWS_AS(gemv(broken, x, y, RunOptions{Activations::int8}), lowbit::error);
  broken = bp;
  broken.scale.pop_back();
  REQUIRE_THROWS_AS(gemv(broken, x, y, RunOptions{Activations::int8}), lowbit::error);
  broken = bp;
  broken.group = 6;
  REQUIRE_THROWS_AS(gemv(broken, x, y, RunOptions{Activations::int8}), lowbit::error);
  broken = bp;
  broken.bits = 5;
  REQUIRE_THROWS_AS(gemv(broken, x, y, RunOptions{Activations::int8}), lowbit::error);
  const BitPlaneMatrix empty = to_bit_planes(rtn::quantize(Matrix(0, 64), opts(2, 32)));
  std::vector<float> x64(64), none;
  REQUIRE_NOTHROW(gemv(empty, x64, none, RunOptions{Activations::int8}));
}

TEST_CASE("isa selection", "[simd]") {
  const auto av = available_isas();
  REQUIRE(av.front() == isa::scalar);
  // The best available ISA, unless LOWBIT_ISA forces one (.ci/portability
  // runs the suite with avx2, sse4_1 and scalar forced).
  const char* forced = std::getenv("LOWBIT_ISA");
  REQUIRE(active_isa() == (forced && *forced ? parse_isa(forced) : av.back()));
  // Each available ISA runs its own kernels, not the scalar fallback.
  for (isa i : av) {
    CHECK(detail::kernels_for(i).id == i);
    if (i != isa::scalar) CHECK(detail::kernels_for(i).f32_lanes >= 4);
  }
#if defined(__aarch64__)
  // The NEON kernels are compiled in and chosen on every aarch64 CPU.
  REQUIRE(av.back() == isa::neon64);
  CHECK(detail::kernels_for(isa::neon64).f32_lanes == 4);
#elif defined(__x86_64__) && defined(LOWBIT_DISPATCH_AVX2)
  if (simd::cpu_supports(isa::avx2)) REQUIRE(std::count(av.begin(), av.end(), isa::avx2) == 1);
#endif
  set_isa(isa::scalar);
  REQUIRE(active_isa() == isa::scalar);
  reset_isa();
  REQUIRE_THROWS_AS(parse_isa("avx9000"), lowbit::error);
  REQUIRE(parse_isa("avx2") == isa::avx2);
  for (isa i : all_isas)
    if (!simd::cpu_supports(i) || !simd::compiled_in(i)) REQUIRE_THROWS_AS(set_isa(i), lowbit::error);
}
