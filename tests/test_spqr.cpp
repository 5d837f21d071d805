// format/spqr.hpp, quant/spqr.hpp, kernels/spqr_gemv.hpp, kernels/sparse.hpp
#include <cstring>
#include <random>

#include "test_util.hpp"

using namespace lowbit;

namespace {

// LLM-like weights with rare large entries (the weights SpQR keeps in fp16).
Matrix weights_with_outliers(std::size_t M, std::size_t K, unsigned seed) {
  Matrix w = test::llm_weights(M, K, seed);
  std::mt19937 rng(seed + 1);
  std::uniform_int_distribution<std::size_t> pick(0, M * K - 1);
  for (int i = 0; i < int(M * K / 300); ++i) w.data()[pick(rng)] *= 12.0f;
  return w;
}

}  // namespace

TEST_CASE("spqr: beats GPTQ int4 g128 at ~3.6-4 bits, outliers help", "[spqr]") {
  const std::size_t M = 256, K = 512;
  const Matrix W = weights_with_outliers(M, K, 1);
  const Eigen::MatrixXd H = test::neighbour_hessian(K, 2);
  // tau = 1 keeps ~0.4% of the weights here (tau = 0.2, the default, 2.2%).
  spqr::Options o;
  o.outlier_threshold = 1.0f;
  spqr::Stats st;
  const SpqrMatrix q = spqr::quantize(W, H, o, &st);
  o.outlier_threshold = std::numeric_limits<float>::infinity();
  const SpqrMatrix q0 = spqr::quantize(W, H, o);
  gptq::Options go;
  go.act_order = go.static_groups = true;
  const GroupQuantMatrix g4 = gptq::quantize(W, H, go).weights;
  const double e = test::hessian_error(W, dequantize(q), H), e0 = test::hessian_error(W, dequantize(q0), H),
               eg = test::hessian_error(W, dequantize(g4), H);
  INFO("spqr " << q.bits_per_weight() << " bpw, " << st.outliers << " outliers ("
               << 100.0 * double(st.outliers) / double(M * K) << "%): error " << e << "; without outliers "
               << q0.bits_per_weight() << " bpw: " << e0 << "; gptq int4 g128 act-order " << g4.bits_per_weight()
               << " bpw: " << eg);
  REQUIRE(q.bits_per_weight() < 4.0);
  REQUIRE(q0.outliers() == 0);
  REQUIRE(st.outliers > 0);
  // Measured: spqr 3.79 bpw (3.93 with 32-bit row pointers and permutation),
  // error 0.45x GPTQ int4 g128 act-order (4.16 bpw); outliers take the error
  // from 13.6 to 5.6 (0.41x).
  REQUIRE(e < 0.6 * eg);
  REQUIRE(e < 0.6 * e0);
}

TEST_CASE("spqr: format accounting, dequantize and gemv agree", "[spqr]") {
  // K = 200: ragged last group (12 * 16 + 8), the reference path; K = 256:
  // the SIMD kernel (kernels/code_dot.hpp) on every ISA, beta1 = 16 and 32
  // (each scale used for two 16-code subgroups); K = 96 with beta1 = 64: the
  // SIMD kernel with a ragged last group (64 + 32); K = 288: nine 32-code
  // blocks, a partial decoder unit after whole ones for every width (units
  // of 8, 4 and 2 blocks at 3, 2 and 4 bits). M = 37: ragged row block.
  for (const std::size_t K : {std::size_t(200), std::size_t(256), std::size_t(96), std::size_t(288)})
  for (const int bits : {2, 3, 4})
  for (const std::size_t group : {std::size_t(16), std::size_t(32), std::size_t(64)})
  for (bool act : {false, true}) {
    if (K == 200 && (bits != 3 || group != 16)) continue;
    if (K == 256 && (group == 64 || (group == 32 && bits != 4))) continue;
    if (K == 96 && (group != 64 || bits != 4)) continue;
    if (K == 288 && group != 16) continue;
    INFO("K " << K << " bits " << bits << " group " << group << " act_order " << act);
    const std::size_t M = 37;
    const Matrix W = weights_with_outliers(M, K, 3);
    const Eigen::MatrixXd H = test::neighbour_hessian(K, 4, 512);
    spqr::Options o;
    o.act_order = act;
    o.bits = bits;
    o.group = group;
    const SpqrMatrix q = spqr::quantize(W, H, o);
    REQUIRE_NOTHROW(q.validate());
    // Permutation: K entries of ceil(log2 K) bits (8 at K = 200 and 256, 7 at
    // 96, 9 at 288); outlier counts: M entries of the widest count's bits.
    REQUIRE(q.perm.size() == (act ? (K * (K == 96 ? 7 : K == 288 ? 9 : 8) + 7) / 8 : 0));
    REQUIRE(q.outliers() > 0);
    std::size_t widest = 0;
    for (std::size_t r = 0; r < M; ++r) widest = std::max(widest, q.row_count(r));
    REQUIRE(q.count_bits == packed_ints::width_for(widest));
    REQUIRE(q.validate_unpacked().starts.back() == q.outliers());
    const std::size_t G = (K + group - 1) / group;
    const std::size_t expect = M * bitpack::row_bytes(K, bits) + 2 * bitpack::row_bytes(M * G, 3) +
                               2 * 4 * ((M + 15) / 16) * G + q.perm.size() + (M * std::size_t(q.count_bits) + 7) / 8 +
                               4 * q.outliers();
    REQUIRE(q.bytes() == expect);
    REQUIRE(q.bits_per_weight() == Approx(8.0 * double(expect) / double(M * K)));
    // gemv = dequantize() then a double-precision reference product. With
    // int8 activations, on x_perm quantized per 32 (the group kernels' q8
    // rounding, detail::PreparedActivations), for the dense part and the
    // outliers alike.
    const Matrix Wd = dequantize(q);
    const auto x = test::llm_activations(K, 5);
    const std::vector<std::uint32_t> perm = q.permutation();
    std::vector<float> xp(K), xv(K), xq(K);
    for (std::size_t p = 0; p < K; ++p) xp[p] = x[perm.empty() ? p : perm[p]];
    detail::PreparedActivations pa;
    pa.prepare(xp.data(), K, detail::act_block, true);
    pa.values(xv.data(), K, 0);
    for (std::size_t p = 0; p < K; ++p) xq[perm.empty() ? p : perm[p]] = xv[p];
    test::for_each_isa([&](isa) {
      for (const Activations act8 : {Activations::fp32, Activations::int8}) {
        const bool int8 = act8 == Activations::int8;
        INFO("int8 activations " << int8);
        std::vector<float> y(M), y2(M);
        gemv(q, x, y, RunOptions{act8, 1});
        gemv(q, x, y2, RunOptions{act8, 3});
        REQUIRE(y == y2);  // any thread count, same bits
        for (std::size_t r = 0; r < M; ++r) {
          double ref = 0, mag = 0;
          for (std::size_t k = 0; k < K; ++k) {
            const double t = double(Wd(r, k)) * (int8 ? xq[k] : x[k]);
            ref += t;
            mag += std::fabs(t);
          }
          REQUIRE(std::fabs(y[r] - ref) <= 4e-6 * mag + 1e-6);  // float sums in another order
        }
      }
    });
  }
}

TEST_CASE("spqr: int8 activations add little error, outliers included", "[spqr]") {
  // Outlier activation channels (40x) and act-order, as in LLM layers. The
  // outliers meet the same quantized activations as the dense part, so the
  // error is that of W x_q (kernels/spqr_gemv.hpp says why: on the main
  // example's matrix, fp32 x for the outliers gave 6.9%, x_q 0.54%).
  const std::size_t M = 128, K = 512, T = 1024, latent = 16;
  const Matrix W = weights_with_outliers(M, K, 11);
  // Tokens from a few latent directions plus noise, outlier channels 40x
  // (the main example's activations): a strongly correlated Hessian.
  std::mt19937 rng(12);
  std::normal_distribution<double> nd;
  Eigen::MatrixXd mix(latent, K), X(T + 4, K);
  for (Eigen::Index i = 0; i < mix.size(); ++i) mix.data()[i] = nd(rng) / std::sqrt(double(latent));
  for (Eigen::Index t = 0; t < X.rows(); ++t) {
    Eigen::VectorXd u(latent);
    for (Eigen::Index j = 0; j < u.size(); ++j) u[j] = nd(rng);
    X.row(t) = u.transpose() * mix;
    for (Eigen::Index k = 0; k < Eigen::Index(K); ++k) X(t, k) = (X(t, k) + 0.3 * nd(rng)) * (k % 97 == 7 ? 40.0 : 1.0);
  }
  const Eigen::MatrixXd H = X.topRows(T).transpose() * X.topRows(T) / double(T);
  const SpqrMatrix q = spqr::quantize(W, H, spqr::Options{});
  REQUIRE(q.outliers() > 0);
  REQUIRE(!q.perm.empty());
  double num = 0, den = 0;
  for (Eigen::Index t = T; t < X.rows(); ++t) {  // tokens outside the calibration set
    std::vector<float> x(K);
    for (std::size_t k = 0; k < K; ++k) x[k] = float(X(t, Eigen::Index(k)));
    std::vector<float> y(M), y8(M);
    gemv(q, x, y);
    gemv(q, x, y8, RunOptions{Activations::int8});
    for (std::size_t r = 0; r < M; ++r) {
      num += double(y8[r] - y[r]) * double(y8[r] - y[r]);
      den += double(y[r]) * double(y[r]);
    }
  }
  INFO("int8 vs fp32 activations: relative output difference " << std::sqrt(num / den));
  REQUIRE(std::sqrt(num / den) < 0.02);  // measured 0.012
}

TEST_CASE("spqr: empty shapes give empty or zero products", "[spqr]") {
  for (const auto& [M, K] : {std::pair<std::size_t, std::size_t>{3, 0}, {0, 32}, {0, 0}}) {
    SpqrMatrix q;  // no codes, statistics or outliers: the sizes validate() asks for at M x K
    q.rows = M;
    q.cols = K;
    REQUIRE_NOTHROW(q.validate());
    std::vector<float> x(K, 1.0f), y(M, -1.0f);
    for (const Activations act : {Activations::fp32, Activations::int8}) {
      gemv(q, x, y, RunOptions{act});
      REQUIRE(y == std::vector<float>(M, 0.0f));
    }
  }
}

TEST_CASE("spqr: row kernel equals its reference on every ISA", "[spqr]") {
  // Random codes, statistic codes and folded parameters; K from one 32-code
  // block to whole and partial spans of every decoder unit; the padding's
  // statistic codes are the largest byte (their zero parameters must
  // cancel them). Extreme codes every fifth row, a NaN activation last.
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  for (const int bits : {2, 3, 4, 8})
    for (const std::size_t K : {32u, 96u, 288u, 1376u, 4096u})
      for (int trial = 0; trial < 6; ++trial) {
        const bool extreme = trial == 4, nan = trial == 5;
        const std::size_t T = K / 16, padded = (T + detail::spqr_span - 1) / detail::spqr_span * detail::spqr_span;
        std::vector<std::uint8_t> codes(K), row(bitpack::row_bytes(K, bits)), sc(padded, 0xFF), zc(padded, 0xFF);
        for (auto& c : codes) c = std::uint8_t(extreme ? (1u << bits) - 1 : rng() % (1u << bits));
        bitpack::pack(codes.data(), K, bits, row.data());
        std::vector<float> p(padded), pz(padded), qa(padded), qza(padded), xs(padded);
        for (std::size_t t = 0; t < T; ++t) {
          sc[t] = std::uint8_t(extreme ? 7 : rng() % 8);
          zc[t] = std::uint8_t(rng() % 8);
          p[t] = u(rng), pz[t] = u(rng), qa[t] = 50.0f * u(rng), qza[t] = 50.0f * u(rng);
          xs[t] = std::ldexp(1.0f + 0.25f * u(rng), -int(rng() % 12));
        }
        std::vector<float> x = test::llm_activations(K, unsigned(trial) + 20);
        std::vector<std::int8_t> q(K);
        for (auto& v : q) v = std::int8_t(extreme ? -127 : int(rng() % 255) - 127);
        if (nan) x[K / 3] = std::nanf("");
        // fp32: the subgroups' sums and x scaled by 2^x_exp as the gemv does
        // (for up to 4 bits the largest magnitude just below 2^126: the
        // kernel's floats carry 2^-126, code_dot.hpp).
        std::vector<float> A(padded), xe(K);
        float m = 0;
        for (std::size_t k = 0; k < K; ++k) A[k / 16] += x[k], m = std::max(m, std::fabs(x[k]));
        const int x_exp = detail::spqr_x_exp(bits, m);
        if (bits <= 4) REQUIRE(x_exp > 100);  // |x| < 2^26
        for (std::size_t k = 0; k < K; ++k) xe[k] = std::ldexp(x[k], x_exp);
        detail::SubgroupStats st{sc.data(), zc.data(), p.data(), pz.data(), qa.data(), qza.data(), A.data()};
        st.x_exp = x_exp;
        detail::SubgroupStats st8{sc.data(), zc.data(), p.data(), pz.data(), qa.data(), qza.data()};
        st8.xs = xs.data();
        const float ref = detail::spqr_row_reference(row.data(), K, bits, xe.data(), st);
        const float ref8 = detail::spqr_row_reference(row.data(), K, bits, q.data(), st8);
        double mag = 0, mag8 = 0;  // sums of the magnitudes of every product
        for (std::size_t t = 0; t < T; ++t) {
          const double s = double(p[t]) * sc[t] - pz[t], za = std::fabs(s * (double(qa[t]) * zc[t] - qza[t]));
          for (std::size_t k = 16 * t; k < 16 * t + 16; ++k) {
            mag += std::fabs(s * codes[k] * x[k]);
            mag8 += std::fabs(s * xs[t] * codes[k] * q[k]);
          }
          mag += za, mag8 += za;
        }
        test::for_each_isa([&](isa i) {
          INFO("bits " << bits << " K " << K << " trial " << trial);
          const auto& kt = detail::kernels_for(i);
          detail::PreparedActivations a;
          a.prepare(xe.data(), K, 16, false, kt.f32_lanes);
          const float y = kt.spqr_row(row.data(), K, bits, a.x.data(), st);
          const float y8 = kt.spqr_row_q8(row.data(), K, bits, q.data(), st8);
          if (nan) {
            REQUIRE(std::isnan(ref));
            REQUIRE(std::isnan(y));
          } else {
            REQUIRE(std::fabs(double(y) - ref) <= 1e-6 * mag);  // float sums in another order
          }
          REQUIRE(std::fabs(double(y8) - ref8) <= 1e-6 * mag8);
        });
      }
}

TEST_CASE("spqr: statistic folding and the sparse add equal their references on every ISA", "[spqr]") {
  std::mt19937 rng(10);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  // Folding: the same products, bit for bit (beta1 = 16 per: per = 1 is the
  // SIMD path; T not a multiple of any batch leaves a tail).
  for (const std::size_t per : {1u, 2u, 8u})
    for (const std::size_t T : {1u, 7u, 8u, 13u, 86u, 256u}) {
      const std::size_t G = (T + per - 1) / per;
      std::vector<float> par(4 * G), A(T);
      for (float& v : par) v = u(rng);
      for (float& v : A) v = 30.0f * u(rng);
      std::vector<std::vector<float>> ref(4, std::vector<float>(T)), got(4, std::vector<float>(T + 1, -7.0f));
      float* const r_out[4] = {ref[0].data(), ref[1].data(), ref[2].data(), ref[3].data()};
      detail::fold_stats_reference(par.data(), A.data(), T, per, r_out);
      test::for_each_isa([&](isa i) {
        INFO("per " << per << " T " << T);
        float* const out[4] = {got[0].data(), got[1].data(), got[2].data(), got[3].data()};
        detail::kernels_for(i).fold_stats(par.data(), A.data(), T, per, out);
        for (int k = 0; k < 4; ++k) {
          REQUIRE(std::memcmp(got[std::size_t(k)].data(), ref[std::size_t(k)].data(), 4 * T) == 0);
          REQUIRE(got[std::size_t(k)][T] == -7.0f);  // nothing written past T
        }
      });
    }
  // The sparse add: any columns (repeats too), lengths around the batch
  // sizes; an infinite x at an outlier's column and a NaN elsewhere.
  const std::size_t K = 1000;
  for (const std::size_t n : {0u, 1u, 3u, 4u, 8u, 9u, 17u, 41u, 100u})
    for (int trial = 0; trial < 3; ++trial) {
      std::vector<std::uint16_t> col(n), val(n);
      for (auto& c : col) c = std::uint16_t(rng() % K);
      for (auto& v : val) v = fp16::from_float(u(rng)).bits;
      std::vector<float> x = test::llm_activations(K, unsigned(n) + 40);
      if (trial == 1 && n > 0) x[col[n - 1]] = INFINITY;
      if (trial == 2) x[(n > 0 ? col[0] + 1 : 0) % K] = std::nanf("");  // at an outlier's column only by chance
      const float ref = detail::sparse_dot_reference(col.data(), val.data(), n, x.data());
      double mag = 0;
      for (std::size_t i = 0; i < n; ++i) mag += std::fabs(double(fp16::from_bits(val[i]).to_float()) * x[col[i]]);
      test::for_each_isa([&](isa i) {
        INFO("n " << n << " trial " << trial);
        const float got = detail::kernels_for(i).sparse_dot(col.data(), val.data(), n, x.data());
        if (!std::isfinite(ref)) {
          REQUIRE(std::isinf(ref) == std::isinf(got));
          REQUIRE(std::isnan(ref) == std::isnan(got));
        } else {
          REQUIRE(std::fabs(double(got) - ref) <= 1e-6 * mag);
        }
      });
    }
}

TEST_CASE("spqr: statistic-code unpack and fp16 widening equal their references on every ISA", "[spqr]") {
  std::mt19937 rng(9);
  for (int bits = 1; bits <= 8; ++bits)
    for (std::size_t n : {32u, 100u, 1024u, 4096u + 64u}) {
      std::vector<std::uint8_t> codes(n);
      for (auto& c : codes) c = std::uint8_t(rng() % (1u << bits));
      std::vector<std::uint8_t> row(bitpack::row_bytes(n, bits));
      bitpack::pack(codes.data(), n, bits, row.data());
      // Whole runs (the SIMD path) and ranges with partial runs (scalar).
      for (const auto& range : {std::pair<std::size_t, std::size_t>{0, n / 32 * 32}, {32, n / 32 * 32 - 32},
                                {5, n - 9}, {n / 32 * 32 - 32, 32}, {0, 0}}) {
        const std::size_t first = range.first, count = range.second;  // captured below: no structured binding (C++17)
        std::vector<std::uint8_t> out(count + 1, 0xAB);
        test::for_each_isa([&](isa i) {
          INFO("bits " << bits << " n " << n << " first " << first << " count " << count);
          std::fill(out.begin(), out.end(), std::uint8_t(0xAB));
          detail::kernels_for(i).unpack_codes(row.data(), n, bits, first, count, out.data());
          REQUIRE(std::equal(out.begin(), out.begin() + std::ptrdiff_t(count), codes.begin() + std::ptrdiff_t(first)));
          REQUIRE(out[count] == 0xAB);  // nothing written past the range
        });
      }
      test::for_each_isa([&](isa i) {
        std::vector<std::uint8_t> out(n);
        REQUIRE_THROWS_AS(detail::kernels_for(i).unpack_codes(row.data(), n, bits, 32, n, out.data()), lowbit::error);
      });
    }
  // Every finite fp16 value and both infinities, in an array with a tail.
  std::vector<std::uint16_t> h;
  for (std::uint32_t b = 0; b < 65536; ++b)
    if ((b & 0x7C00u) != 0x7C00u || (b & 0x3FFu) == 0) h.push_back(std::uint16_t(b));
  h.push_back(0x3C00);
  std::vector<float> ref(h.size()), f(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) ref[i] = fp16::from_bits(h[i]).to_float();
  test::for_each_isa([&](isa i) {
    detail::kernels_for(i).halves_to_float(h.data(), h.size(), f.data());
    REQUIRE(std::memcmp(f.data(), ref.data(), 4 * f.size()) == 0);
  });
}

TEST_CASE("spqr: corrupted structure and bad input are rejected", "[spqr]") {
  const Matrix W = weights_with_outliers(32, 64, 6);
  const Eigen::MatrixXd H = test::neighbour_hessian(64, 7, 256);
  const SpqrMatrix q = spqr::quantize(W, H);
  REQUIRE(q.outliers() > 0);
  std::vector<float> x(64, 1.0f), y(32);
  auto broken = [&](auto&& edit) {
    SpqrMatrix b = q;
    edit(b);
    REQUIRE_THROWS_AS(b.validate(), lowbit::error);
    REQUIRE_THROWS_AS(gemv(b, x, y), lowbit::error);
  };
  // Packed permutation and counts, edited through their unpacked values.
  const auto repack = [](std::vector<std::uint32_t> v, int width) { return packed_ints::pack(v.data(), v.size(), width); };
  auto counts = [](const SpqrMatrix& b) {
    std::vector<std::uint32_t> c(b.rows);
    for (std::size_t r = 0; r < b.rows; ++r) c[r] = std::uint32_t(b.row_count(r));
    return c;
  };
  broken([&](SpqrMatrix& b) {
    auto p = b.permutation();
    p[3] = p[4];
    b.perm = repack(p, b.perm_bits());
  });
  broken([](SpqrMatrix& b) { b.perm.pop_back(); });
  broken([&](SpqrMatrix& b) {
    auto p = b.permutation();
    b.perm = repack(p, b.perm_bits() + 1);  // entries of the wrong width
  });
  broken([&](SpqrMatrix& b) {  // one outlier more than stored
    auto c = counts(b);
    c.back() += 1;
    b.count_bits = 8;
    b.row_counts = repack(c, 8);
  });
  broken([&](SpqrMatrix& b) {  // one fewer
    auto c = counts(b);
    for (auto& n : c)
      if (n > 0) {
        --n;
        break;
      }
    b.row_counts = repack(c, b.count_bits);
  });
  // A first row claiming more outliers than there are, the rest as before
  // (validate must not read past the outlier arrays).
  broken([&](SpqrMatrix& b) {
    auto c = counts(b);
    c[0] = std::uint32_t(b.outliers() + 5);
    b.count_bits = 16;
    b.row_counts = repack(c, 16);
  });
  broken([](SpqrMatrix& b) { b.row_counts.push_back(0); });
  broken([](SpqrMatrix& b) { b.count_bits = SpqrMatrix::max_count_bits + 1; });
  broken([](SpqrMatrix& b) { b.outlier_col[0] = 64; });
  broken([&](SpqrMatrix& b) {  // a row's columns out of order, all in range
    std::size_t i = 0, r = 0;
    while (b.row_count(r) < 2) i += b.row_count(r++);
    std::swap(b.outlier_col[i], b.outlier_col[i + 1]);
  });
  broken([](SpqrMatrix& b) { b.outlier_col.back() = 64; });  // the last row's last column
  broken([](SpqrMatrix& b) { b.outlier_val[0] = 0x7C00; });  // +inf
  broken([](SpqrMatrix& b) { b.stat_params[2] = 0x7E00; });  // NaN
  broken([](SpqrMatrix& b) { b.codes.pop_back(); });
  broken([](SpqrMatrix& b) { b.scale_codes.clear(); });
  broken([](SpqrMatrix& b) { b.group = 24; });
  REQUIRE_THROWS_AS(gemv(q, std::vector<float>(63), y), lowbit::error);

  spqr::Options o;
  o.outlier_threshold = 0.0f;
  REQUIRE_THROWS_AS(spqr::quantize(W, H, o), lowbit::error);
  o = {};
  o.group = 128;  // > K
  REQUIRE_THROWS_AS(spqr::quantize(W, H, o), lowbit::error);
  o = {};
  o.group = 24;
  REQUIRE_THROWS_AS(spqr::quantize(W, H, o), lowbit::error);
  REQUIRE_THROWS_AS(spqr::quantize(W, Eigen::MatrixXd::Identity(63, 63)), lowbit::error);
  REQUIRE_THROWS_AS(spqr::quantize(W, -Eigen::MatrixXd::Identity(64, 64)), lowbit::error);
}

TEST_CASE("spqr: statistics with a tiny range far from zero stay finite in fp16", "[spqr]") {
  // Two rows whose group scales are nearly equal: min-max fitting of the
  // scales gives a zero point beyond fp16's range (found by fuzz_io's seed
  // generator). The stored statistics must stay finite and accurate.
  Matrix w(2, 40);
  for (std::size_t i = 0; i < 80; ++i) w.data()[i] = 0.05f * float(((i + 1) * 2654435761u) % 1000) / 1000.0f - 0.025f;
  spqr::Options o;
  o.outlier_threshold = 0.5f;
  const SpqrMatrix q = spqr::quantize(w, Eigen::MatrixXd::Identity(40, 40), o);
  REQUIRE_NOTHROW(q.validate());
  CHECK(test::frob_error(w, dequantize(q)) < 0.1 * test::frob_error(w, Matrix(2, 40)));
}
