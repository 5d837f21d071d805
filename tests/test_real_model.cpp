// Tests on the real stories260K model in ../shared/data (skipped cleanly
// when it is absent): the test forward reproduces llama2.c's logits, and
// quantizers are compared on real layers with the model's own activations.
#include <cstring>
#include <fstream>
#include <limits>

#include "../examples/llama/decoder.hpp"
#include "test_util.hpp"

using namespace lowbit;

namespace {

struct RealModel {
  llama2c::Checkpoint ck;
  llama2c::Tokenizer tok;
  llama::Model fp32;
};

const RealModel* model() {
  static const std::unique_ptr<RealModel> m = []() -> std::unique_ptr<RealModel> {
    if (!std::ifstream(test::stories260k_dir() + "/stories260K.bin")) return nullptr;
    auto r = std::make_unique<RealModel>();
    r->ck = llama2c::load_checkpoint(test::stories260k_dir() + "/stories260K.bin");
    r->tok = llama2c::Tokenizer::load(test::stories260k_dir() + "/tok512.bin", r->ck.config.vocab);
    r->fp32 = llama::dense_model(r->ck);
    return r;
  }();
  return m.get();
}

// The model, or nullptr after a warning when the data is absent.
const RealModel* model_or_skip() {
  const RealModel* m = model();
  if (!m) WARN("../shared/data/stories260K absent: skipped");
  return m;
}

// A layer's linears grouped by the input they share, with that input's site
// (llama::Site): q/k/v, o, gate/up, down.
std::vector<std::pair<int, std::vector<const Matrix*>>> linear_sets(const llama2c::Layer& L) {
  return {{0, {&L.wq, &L.wk, &L.wv}}, {1, {&L.wo}}, {2, {&L.w1, &L.w3}}, {3, {&L.w2}}};
}

// The inputs of every linear at every position of `n` stories of a file:
// acts[layer][site] is a (tokens x width) matrix.
using Acts = std::vector<std::vector<Matrix>>;
Acts activations(const RealModel& m, const std::string& file, std::size_t n) {
  const auto stories = llama::read_stories(test::stories260k_dir() + "/" + file);
  const auto& c = m.ck.config;
  std::vector<std::vector<std::vector<float>>> buf(std::size_t(c.layers), std::vector<std::vector<float>>(4));
  for (std::size_t s = 0; s < n && s < stories.size(); ++s) {
    auto ids = m.tok.encode(stories[s]);
    if (ids.size() > 256) ids.resize(256);
    llama::Decoder d(m.fp32);
    for (int t : ids)
      d.step(t, [&](int l, llama::Site site, const float* x, std::size_t w) {
        if (site == llama::Site::cls_in) return;
        auto& v = buf[std::size_t(l)][std::size_t(site)];
        v.insert(v.end(), x, x + w);
      });
  }
  Acts out(buf.size());
  for (std::size_t l = 0; l < buf.size(); ++l)
    for (std::size_t site = 0; site < 4; ++site) {
      const std::size_t w = site == 3 ? std::size_t(c.hidden) : std::size_t(c.dim);
      const auto& v = buf[l][site];
      Matrix X(v.size() / w, w);
      std::copy(v.begin(), v.end(), X.data());
      out[l].push_back(std::move(X));
    }
  return out;
}

// sum over tokens of |X (What - W)^T|^2 / tokens.
double output_error(const Matrix& W, const Matrix& What, const Matrix& X) {
  const auto d = (eigen_map(What.view()) - eigen_map(W.view())).cast<double>();
  return (eigen_map(X.view()).cast<double>() * d.transpose()).squaredNorm() / double(X.rows());
}

}  // namespace

// Calls fn(W, H, Xe) for every linear of every layer: H the Hessian of its
// calibration inputs, Xe its held-out inputs.
template <class Fn>
void for_each_linear_with_hessian(const RealModel& m, Fn&& fn) {
  const Acts cal = activations(m, "calib.txt", 16), ev = activations(m, "eval.txt", 8);
  for (int l = 0; l < m.ck.config.layers; ++l)
    for (const auto& [site, ws] : linear_sets(m.ck.layers[std::size_t(l)])) {
      Calibration c(cal[std::size_t(l)][std::size_t(site)].cols());
      c.add(cal[std::size_t(l)][std::size_t(site)]);
      const Eigen::MatrixXd H = c.hessian();
      for (const Matrix* w : ws) fn(*w, H, ev[std::size_t(l)][std::size_t(site)]);
    }
}

TEST_CASE("real model: the test forward reproduces llama2.c's logits", "[real]") {
  const RealModel* m = model_or_skip();
  if (!m) return;
  std::ifstream f(test::stories260k_dir() + "/ref_logits_eval0_64.bin", std::ios::binary);
  REQUIRE(f);
  std::int32_t n = 0, vocab = 0;
  f.read(reinterpret_cast<char*>(&n), 4);
  f.read(reinterpret_cast<char*>(&vocab), 4);
  REQUIRE(vocab == m->ck.config.vocab);
  std::vector<std::int32_t> ref_tokens(std::size_t(n), 0);
  f.read(reinterpret_cast<char*>(ref_tokens.data()), 4 * n);
  std::vector<float> ref(std::size_t(n) * std::size_t(vocab));
  f.read(reinterpret_cast<char*>(ref.data()), std::streamsize(4 * ref.size()));
  REQUIRE(f);
  // The tokenizer gives the same tokens for the first eval story.
  auto ids = m->tok.encode(llama::read_stories(test::stories260k_dir() + "/eval.txt").at(0));
  REQUIRE(ids.size() >= std::size_t(n));
  ids.resize(std::size_t(n));
  REQUIRE(std::vector<std::int32_t>(ids.begin(), ids.end()) == ref_tokens);
  llama::Decoder d(m->fp32);
  double worst = 0;
  for (std::size_t t = 0; t < ids.size(); ++t) {
    const std::vector<float>& z = d.step(ids[t]);
    for (std::size_t i = 0; i < z.size(); ++i)
      worst = std::max(worst, double(std::fabs(z[i] - ref[t * z.size() + i])));
  }
  INFO("max |logit - llama2.c| = " << worst);
  REQUIRE(worst < 1e-3);  // fp32, different summation order than llama2.c's matmul
}

TEST_CASE("real model: AWQ beats RTN on every layer's linears (int3 and int4, g32)", "[real][awq]") {
  const RealModel* m = model_or_skip();
  if (!m) return;
  const Acts cal = activations(*m, "calib.txt", 16), ev = activations(*m, "eval.txt", 8);
  for (int bits : {3, 4}) {
    double e_awq = 0, e_rtn = 0;
    for (int l = 0; l < m->ck.config.layers; ++l) {
      const auto& L = m->ck.layers[std::size_t(l)];
      const auto sets = linear_sets(L);
      for (const auto& [site, ws] : sets) {
        const Matrix& Xc = cal[std::size_t(l)][std::size_t(site)];
        const Matrix& Xe = ev[std::size_t(l)][std::size_t(site)];
        Calibration c(Xc.cols(), CalibrationOptions{false, 512, 1});
        c.add(Xc);
        awq::Options o;
        o.bits = bits;
        o.group = 32;
        o.clip = site != 0;  // the reference skips clipping for q/k
        std::vector<ConstMatrixView<float>> views;
        for (const Matrix* w : ws) views.push_back(*w);
        const awq::Result res = awq::quantize(views, c, o);
        rtn::Options ro;
        ro.bits = bits;
        ro.group = 32;
        for (std::size_t i = 0; i < ws.size(); ++i) {
          Matrix eff = dequantize(res.weights[i]);
          for (std::size_t r = 0; r < eff.rows(); ++r)
            for (std::size_t k = 0; k < eff.cols(); ++k) eff(r, k) /= res.scales[k];
          e_awq += output_error(*ws[i], eff, Xe);
          e_rtn += output_error(*ws[i], dequantize(rtn::quantize(*ws[i], ro)), Xe);
        }
      }
    }
    INFO("int" << bits << " g32, summed held-out output error: awq " << e_awq << ", rtn " << e_rtn << ", ratio "
               << e_awq / e_rtn);
    // Real activations have milder outliers than the synthetic ones; measured
    // ratio 0.84 (int3) and 0.88 (int4) with these stories.
    REQUIRE(e_awq < 0.9 * e_rtn);
  }
}

TEST_CASE("real model: GPTQ beats RTN on every layer's linears (int3, g32)", "[real][gptq]") {
  const RealModel* m = model_or_skip();
  if (!m) return;
  double e_rtn = 0, e_gptq = 0;
  for_each_linear_with_hessian(*m, [&](const Matrix& w, const Eigen::MatrixXd& H, const Matrix& Xe) {
    rtn::Options ro;
    ro.bits = 3;
    ro.group = 32;
    gptq::Options go;
    go.bits = 3;
    go.group = 32;
    go.act_order = go.static_groups = true;
    e_rtn += output_error(w, dequantize(rtn::quantize(w, ro)), Xe);
    e_gptq += output_error(w, dequantize(gptq::quantize(w, H, go).weights), Xe);
  });
  INFO("int3 g32 on held-out activations: rtn " << e_rtn << ", gptq act-order " << e_gptq << " (" << e_gptq / e_rtn
                                                << "x)");
  // Measured 0.64x with these stories.
  REQUIRE(e_gptq < 0.8 * e_rtn);
}

TEST_CASE("real model: DFloat11 is lossless and near the entropy bound on the weights", "[real][dfloat11]") {
  const RealModel* m = model_or_skip();
  if (!m) return;
  std::vector<const Matrix*> all{&m->ck.embedding};
  for (const auto& L : m->ck.layers)
    for (const Matrix* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w1, &L.w2, &L.w3}) all.push_back(w);
  std::vector<bf16> model;  // every weight matrix, back to back
  for (const Matrix* w : all) {
    std::vector<bf16> b(w->rows() * w->cols());
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = bf16::from_float(w->data()[i]);
    const auto d = dfloat11::compress(ConstMatrixView<bf16>(b.data(), w->rows(), w->cols()));
    const auto back = dfloat11::decompress(d);
    REQUIRE(std::memcmp(back.data(), b.data(), 2 * b.size()) == 0);
    // gemv on the compressed matrix equals the bf16 gemv up to summation order.
    const auto x = test::gaussian(w->cols(), 3);
    std::vector<float> y(w->rows()), yb(w->rows());
    gemv(d, x, span<float>(y));
    gemv(ConstMatrixView<bf16>(b.data(), w->rows(), w->cols()), x, span<float>(yb));
    for (std::size_t r = 0; r < y.size(); ++r) REQUIRE(y[r] == Approx(yb[r]).margin(1e-4));
    model.insert(model.end(), b.begin(), b.end());
  }
  const auto d = dfloat11::compress(span<const bf16>(model));
  const double ratio = double(d.bytes()) / (2.0 * double(model.size()));
  const double bound = dfloat11::entropy_bound(ConstMatrixView<bf16>(model.data(), 1, model.size()));
  WARN("stories260K, " << model.size() << " weights: DFloat11 " << ratio << " of bf16 (" << d.bits_per_weight()
                       << " bits/weight), entropy bound " << bound);
  REQUIRE(std::memcmp(dfloat11::decompress(d).data(), model.data(), 2 * model.size()) == 0);
  // Measured: 0.6758 vs bound 0.6723 (+0.52%): Huffman's own redundancy on
  // these exponents is +0.40%, the fixed 280 header bytes and the block
  // offsets are +0.12% of a model this small (0.04% at 16M weights). The
  // 0.5% target holds for tensors of realistic size (test_dfloat11.cpp).
  const double payload = double(d.exponents.size() + d.sign_mantissa.size()) / (2.0 * double(model.size()));
  INFO("payload only: " << payload);
  REQUIRE(payload <= bound * 1.005);
  REQUIRE(ratio <= bound * 1.006);
}

TEST_CASE("real model: SpQR beats RTN and GPTQ at its weight width and group size", "[real][spqr]") {
  const RealModel* m = model_or_skip();
  if (!m) return;
  double e_rtn = 0, e_gptq = 0, e_spqr = 0, e_dense = 0;
  std::size_t outliers = 0, weights = 0;
  for_each_linear_with_hessian(*m, [&](const Matrix& w, const Eigen::MatrixXd& H, const Matrix& Xe) {
    // Same weight width and group size as SpQR's defaults (3 bits, 16),
    // with fp16 statistics where SpQR quantizes them to 3 bits.
    rtn::Options ro;
    ro.bits = 3;
    ro.group = 16;
    gptq::Options go;
    go.bits = 3;
    go.group = 16;
    go.act_order = go.static_groups = true;
    spqr::Options so;  // the paper's defaults: 3-bit, beta1 = beta2 = 16, tau 0.2, act-order
    const SpqrMatrix s = spqr::quantize(w, H, so);
    so.outlier_threshold = std::numeric_limits<float>::infinity();
    e_rtn += output_error(w, dequantize(rtn::quantize(w, ro)), Xe);
    e_gptq += output_error(w, dequantize(gptq::quantize(w, H, go).weights), Xe);
    e_spqr += output_error(w, dequantize(s), Xe);
    e_dense += output_error(w, dequantize(spqr::quantize(w, H, so)), Xe);
    outliers += s.outliers();
    weights += w.rows() * w.cols();
  });
  const double pct = 100.0 * double(outliers) / double(weights);
  INFO("held-out output error: rtn int3 g16 " << e_rtn << ", gptq int3 g16 act-order " << e_gptq << ", spqr "
                                              << e_spqr << " (" << pct << "% outliers), spqr without outliers "
                                              << e_dense);
  WARN("stories260K SpQR (" << pct << "% outliers): error " << e_spqr / e_rtn << "x RTN int3 g16, " << e_spqr / e_gptq
                            << "x GPTQ int3 g16 (fp16 statistics), " << e_spqr / e_dense << "x SpQR without outliers");
  // Measured with these stories: 0.44x RTN, 0.65x GPTQ, 0.69x without
  // outliers (1.7% outliers). On matrices this small (K = 64) the bit
  // layout's 32-byte chunks, not the method, dominate bits/weight.
  CHECK(e_spqr < 0.55 * e_rtn);
  CHECK(e_spqr < 0.8 * e_gptq);
  CHECK(e_spqr < 0.85 * e_dense);
}

TEST_CASE("real model: VPTQ at 2-bit indices beats RTN and GPTQ int2", "[real][vptq]") {
  const RealModel* m = model_or_skip();
  if (!m) return;
  double e_rtn = 0, e_gptq = 0, e_vq = 0, bits = 0, weights = 0;
  for_each_linear_with_hessian(*m, [&](const Matrix& w, const Eigen::MatrixXd& H, const Matrix& Xe) {
    rtn::Options ro;
    ro.bits = 2;
    ro.group = 32;
    gptq::Options go;
    go.bits = 2;
    go.group = 32;
    go.act_order = go.static_groups = true;
    vptq::Options vo;  // 8-bit indices per 4 weights
    vo.vector = 4;
    vo.codebook = 256;
    const VqMatrix q = vptq::quantize(w, H, vo);
    e_rtn += output_error(w, dequantize(rtn::quantize(w, ro)), Xe);
    e_gptq += output_error(w, dequantize(gptq::quantize(w, H, go).weights), Xe);
    e_vq += output_error(w, dequantize(q), Xe);
    bits += 8.0 * double(q.bytes());
    weights += double(w.rows() * w.cols());
  });
  WARN("stories260K VPTQ v4 k256 (" << bits / weights << " bits/weight with its codebooks, 2 without): error "
                                    << e_vq / e_rtn << "x RTN int2 g32, " << e_vq / e_gptq << "x GPTQ int2 g32");
  // Measured with these stories: 0.25x RTN, 0.38x GPTQ (4.93 bits/weight
  // in all: on matrices this small, 64 x 64 .. 172 x 64, the 2 KiB codebook
  // per matrix is most of the bits; at 4096 x 4096 it is 0.001 bits/weight).
  CHECK(e_vq < 0.4 * e_rtn);
  CHECK(e_vq < 0.6 * e_gptq);
}
