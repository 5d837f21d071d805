// End to end on the real stories260K model (../shared/data; skipped cleanly
// when absent): the llama example's decoder and quantization pipeline,
// perplexity on eval.txt for every method, asserted against llama2.c's
// reference numbers and against each method's baseline. Slow (an
// evaluation per method): its own binary, ctest label `real`.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>

#include "../examples/llama/methods.hpp"
#include "test_util.hpp"

using namespace lowbit;
using llama::Method;

namespace {

struct Setup {
  llama2c::Checkpoint ck;
  std::vector<std::vector<int>> eval, calib;
  std::vector<std::vector<int>> eval_part;  // the first 100 stories: comparisons between methods
  std::unique_ptr<llama::Calibrations> cal;
  struct Run {
    double ppl, bpw, payload;
  };
  std::map<std::string, Run> runs;  // by method, cache and evaluation set: each evaluated once
};

Setup* setup() {
  static const std::unique_ptr<Setup> s = []() -> std::unique_ptr<Setup> {
    if (!std::ifstream(test::stories260k_dir() + "/stories260K.bin")) return nullptr;
    auto r = std::make_unique<Setup>();
    r->ck = llama2c::load_checkpoint(test::stories260k_dir() + "/stories260K.bin");
    const auto tok = llama2c::Tokenizer::load(test::stories260k_dir() + "/tok512.bin", r->ck.config.vocab);
    // As the reference perplexities: every story, BOS, no EOS, cut to 512.
    r->eval = llama::encode_all(tok, llama::read_stories(test::stories260k_dir() + "/eval.txt"), 512);
    r->eval_part.assign(r->eval.begin(), r->eval.begin() + 100);
    // 128 calibration stories (the AWQ/GPTQ references use 128 samples).
    auto cs = llama::read_stories(test::stories260k_dir() + "/calib.txt");
    cs.resize(128);
    r->calib = llama::encode_all(tok, cs, 512);
    return r;
  }();
  if (!s) WARN("../shared/data/stories260K absent: skipped");
  return s.get();
}

Method method(Method::Kind k, int bits, ScaleType st = ScaleType::fp16) {
  Method m;
  m.kind = k, m.bits = bits, m.group = 32, m.scale_type = st;
  return m;
}

// Perplexity of a method and KV cache on all of eval.txt (`full`, to compare
// with the reference numbers) or on its first 100 stories (25,000
// predictions: enough to rank methods, a third of the time), memoized; and
// the quantized model's bits/weight.
double perplexity(Setup& s, const Method& m, const llama::KvOptions& kv = {}, bool full = false, double* bpw = nullptr,
                  double* payload = nullptr) {
  const std::string key = m.label() + "/" + kv.name() + (full ? "/all" : "/100");
  auto it = s.runs.find(key);
  if (it == s.runs.end()) {
    if (m.calibrated() && !s.cal)
      s.cal = std::make_unique<llama::Calibrations>(llama::capture(llama::dense_model(s.ck), s.calib));
    const llama::Model model = llama::quantize_model(s.ck, m, s.cal.get());
    const Setup::Run r{llama::perplexity(model, kv, full ? s.eval : s.eval_part).perplexity(), model.bits_per_weight(),
                model.payload_bits_per_weight()};
    WARN(key << ": perplexity " << r.ppl << " (" << r.bpw << " bits/weight stored, " << r.payload << " payload)");
    it = s.runs.emplace(key, r).first;
  }
  if (bpw) *bpw = it->second.bpw;
  if (payload) *payload = it->second.payload;
  return it->second.ppl;
}

}  // namespace

TEST_CASE("llama: fp32 reproduces llama2.c's perplexity, RTN the reference's RTN rows", "[real][llama]") {
  Setup* s = setup();
  if (!s) return;
  const llama::Score sc = llama::perplexity(llama::dense_model(s->ck), {}, s->eval);
  INFO("fp32: mean NLL " << sc.nll / double(sc.predictions) << " over " << sc.predictions << " predictions");
  REQUIRE(sc.predictions == 75974);
  // Reference: 2.6849, mean NLL 0.987657 (llama2.c's forward, summed in
  // another order; the difference is float rounding).
  REQUIRE(std::fabs(sc.nll / double(sc.predictions) - 0.987657) < 2e-6);
  s->runs["fp32/fp32/all"] = {sc.perplexity(), 32.0, 32.0};
  // The reference's RTN: fp32 scales, min-max, zero = round(-min / scale).
  for (const auto& [bits, ref] : {std::pair{4, 2.9355}, {3, 4.7480}, {2, 261.86}}) {
    const double p = perplexity(*s, method(Method::Kind::rtn, bits, ScaleType::fp32), {}, true);
    INFO("RTN int" << bits << " g32, fp32 scales: " << p << ", reference " << ref);
    REQUIRE(std::fabs(p / ref - 1.0) < 0.005);
  }
}

TEST_CASE("llama: DFloat11 evaluates exactly as the bf16 model", "[real][llama][dfloat11]") {
  Setup* s = setup();
  if (!s) return;
  double bpw = 0;
  const double df = perplexity(*s, method(Method::Kind::dfloat11, 16), {}, false, &bpw);
  const double bf = perplexity(*s, method(Method::Kind::bf16, 16));
  INFO("DFloat11 " << df << " (" << bpw << " bits/weight), bf16 " << bf);
  // Same weights bit for bit (tested in test_dfloat11 / test_real_model);
  // the fused kernel sums each row in block segments, the bf16 kernel in
  // one pass, so logits differ in the last float bits at most.
  REQUIRE(std::fabs(df / bf - 1.0) < 1e-6);
  REQUIRE(bpw < 11.5);
}

TEST_CASE("llama: AWQ and GPTQ int4 g32 beat RTN int4 g32, GPTQ int2 beats RTN int2", "[real][llama][awq][gptq]") {
  Setup* s = setup();
  if (!s) return;
  const double rtn4 = perplexity(*s, method(Method::Kind::rtn, 4)), awq4 = perplexity(*s, method(Method::Kind::awq, 4)),
               gptq4 = perplexity(*s, method(Method::Kind::gptq, 4)), rtn2 = perplexity(*s, method(Method::Kind::rtn, 2)),
               gptq2 = perplexity(*s, method(Method::Kind::gptq, 2));
  INFO("int4 g32: RTN " << rtn4 << ", AWQ " << awq4 << ", GPTQ " << gptq4 << "; int2 g32: RTN " << rtn2 << ", GPTQ "
                        << gptq2);
  CHECK(awq4 < rtn4);
  CHECK(gptq4 < rtn4);
  CHECK(gptq2 < rtn2);
}

TEST_CASE("llama: SpQR at no more bits per weight than GPTQ int4 g32 beats it", "[real][llama][spqr]") {
  Setup* s = setup();
  if (!s) return;
  // 4-bit weights in groups of beta1 = 32 with 4-bit statistics (beta2 =
  // 16), outliers at tau 0.2, act-order: every overhead counted (packed
  // permutation and outlier counts, 32 bits per outlier). The paper's
  // beta1 = 16 with 3-bit statistics spends 0.625 bits per weight on
  // statistics, as much as GPTQ int4 g32's fp16 scale and 4-bit zero per 32
  // weights, leaving nothing for outliers and the permutation (measured
  // 2.7824 at 4.79 payload bits).
  Method sq = method(Method::Kind::spqr, 4);
  sq.spqr.bits = 4;
  sq.spqr.group = 32;
  sq.spqr.stat_bits = 4;
  double sq_bpw = 0, sq_pay = 0, g_bpw = 0, g_pay = 0;
  const double spqr = perplexity(*s, sq, {}, false, &sq_bpw, &sq_pay);
  const double gptq = perplexity(*s, method(Method::Kind::gptq, 4), {}, false, &g_bpw, &g_pay);
  WARN("SpQR w4 b32 s4: " << spqr << " at " << sq_pay << " bits/weight (payload; " << sq_bpw
                          << " stored), GPTQ int4 g32: " << gptq << " at " << g_pay << " (" << g_bpw << ")");
  // Measured on these 100 stories: 2.7766 at 4.5605 (4.6735 stored) vs
  // 2.7968 at 4.6497 (4.7627).
  CHECK(sq_pay <= g_pay);
  CHECK(sq_bpw <= g_bpw);
  CHECK(spqr < gptq);
}

TEST_CASE("llama: VPTQ at 2 index bits per weight beats RTN int2 and GPTQ int2 g32", "[real][llama][vptq]") {
  Setup* s = setup();
  if (!s) return;
  const Method vq = method(Method::Kind::vptq, 2);  // v = 4, k = 256: 8-bit indices per 4 weights
  REQUIRE(std::log2(double(vq.vptq.codebook)) / double(vq.vptq.vector) == 2.0);
  double bpw = 0, pay = 0;
  const double vptq = perplexity(*s, vq, {}, false, &bpw, &pay);
  const double rtn2 = perplexity(*s, method(Method::Kind::rtn, 2)), gptq2 = perplexity(*s, method(Method::Kind::gptq, 2));
  WARN(vq.label() << ": perplexity " << vptq << " at 2 index bits/weight, " << pay << " with its codebooks (" << bpw
                  << " stored); RTN int2 g32 " << rtn2 << ", GPTQ int2 g32 " << gptq2);
  CHECK(vptq < rtn2);
  CHECK(vptq < gptq2);
}

TEST_CASE("llama: KIVI-4 within 1% of the fp32 KV cache, KIVI-2 reported", "[real][llama][kivi]") {
  Setup* s = setup();
  if (!s) return;
  const double fp = perplexity(*s, method(Method::Kind::fp32, 32));
  const double k4 = perplexity(*s, method(Method::Kind::fp32, 32), {4, 0, 128});
  const double k2 = perplexity(*s, method(Method::Kind::fp32, 32), {2, 0, 128});
  INFO("fp32 cache " << fp << ", KIVI-4 " << k4 << ", KIVI-2 " << k2);
  CHECK(k4 < fp * 1.01);
  CHECK(k2 > k4);
}
