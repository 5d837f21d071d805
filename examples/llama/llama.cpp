// End to end on a real llama2.c model: load the checkpoint and tokenizer,
// capture calibration statistics on calibration text, quantize every linear
// with each lowbit method, and report perplexity on held-out text and decode
// speed. Prints a table, writes it as CSV and plots perplexity against
// bits/weight as SVG.
//
//   llama [--data DIR] [--model F --tokenizer F --calib F --eval F]
//         [--eval-stories N] [--calib-stories N] [--tokens N] [--group G]
//         [--classifier] [--threads N] [--out PREFIX] [--methods a,b,...]
//
// --data DIR reads DIR/stories260K.bin, tok512.bin, calib.txt, eval.txt
// (../shared/data/stories260K by default).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "methods.hpp"

using namespace llama;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Args {
  std::string model, tokenizer, calib, eval, out = "llama";
  std::size_t eval_stories = 300, calib_stories = 300, tokens = 0;
  std::size_t group = 0;
  bool classifier = false;
  int threads = 0;
  std::vector<std::string> methods;
};

Args parse(int argc, char** argv) {
  Args a;
  std::string data = "../shared/data/stories260K";
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(k + " needs a value");
      return argv[++i];
    };
    if (k == "--data") data = val();
    else if (k == "--model") a.model = val();
    else if (k == "--tokenizer") a.tokenizer = val();
    else if (k == "--calib") a.calib = val();
    else if (k == "--eval") a.eval = val();
    else if (k == "--out") a.out = val();
    else if (k == "--eval-stories") a.eval_stories = std::stoul(val());
    else if (k == "--calib-stories") a.calib_stories = std::stoul(val());
    else if (k == "--tokens") a.tokens = std::stoul(val());
    else if (k == "--group") a.group = std::stoul(val());
    else if (k == "--threads") a.threads = std::stoi(val());
    else if (k == "--classifier") a.classifier = true;
    else if (k == "--methods") {
      std::stringstream ss(val());
      for (std::string m; std::getline(ss, m, ',');) a.methods.push_back(m);
    } else {
      throw std::runtime_error("unknown option " + k + " (see the top of examples/llama/llama.cpp)");
    }
  }
  if (a.model.empty()) a.model = data + "/stories260K.bin";
  if (a.tokenizer.empty()) a.tokenizer = data + "/tok512.bin";
  if (a.calib.empty()) a.calib = data + "/calib.txt";
  if (a.eval.empty()) a.eval = data + "/eval.txt";
  if (a.threads <= 0) a.threads = int(std::max(1u, std::thread::hardware_concurrency()));
  return a;
}

// A row of the table: a weight method and a KV cache.
struct Row {
  std::string key;  // for --methods
  Method method;
  KvOptions kv;
};

std::vector<Row> all_rows(std::size_t g) {
  using K = Method::Kind;
  auto m = [&](K k, int bits) {
    Method x;
    x.kind = k, x.bits = bits, x.group = g;
    return x;
  };
  Method spqr3 = m(K::spqr, 3), spqr4 = m(K::spqr, 4);
  spqr3.spqr.bits = 3;  // the paper's defaults: 3-bit weights, beta1 = beta2 = 16, 3-bit statistics, tau 0.2
  spqr4.spqr.bits = 4;  // at GPTQ int4 g32's budget: beta1 = 32, 4-bit statistics (beta2 = 16, tau 0.2)
  spqr4.spqr.group = 32;
  spqr4.spqr.stat_bits = 4;
  std::vector<Row> rows = {
      {"fp32", m(K::fp32, 32), {}},         {"bf16", m(K::bf16, 16), {}},     {"dfloat11", m(K::dfloat11, 16), {}},
      {"rtn4", m(K::rtn, 4), {}},           {"awq4", m(K::awq, 4), {}},       {"gptq4", m(K::gptq, 4), {}},
      {"spqr3", spqr3, {}},                 {"spqr4", spqr4, {}},             {"rtn3", m(K::rtn, 3), {}},       {"awq3", m(K::awq, 3), {}},
      {"gptq3", m(K::gptq, 3), {}},         {"rtn2", m(K::rtn, 2), {}},       {"gptq2", m(K::gptq, 2), {}},
      {"vptq2", m(K::vptq, 2), {}},
      {"kivi4", m(K::fp32, 32), {4, 0, 128}}, {"kivi2", m(K::fp32, 32), {2, 0, 128}},
  };
  return rows;
}

struct Result {
  Row row;
  double bpw = 0, payload_bpw = 0, ppl = 0, tps1 = 0, tpsn = 0;
  std::size_t bytes = 0, kv_bytes = 0;
};

// Decode speed of one sequence: tokens per second over `seq`, median of 3;
// and the KV cache's bytes at its end.
double tokens_per_second(const Model& m, const KvOptions& kv, const std::vector<int>& seq, int threads,
                         std::size_t* kv_bytes = nullptr) {
  std::vector<double> r;
  for (int rep = 0; rep < 3; ++rep) {
    Decoder d(m, kv, threads);
    const auto t0 = Clock::now();
    for (int t : seq) d.step(t);
    r.push_back(double(seq.size()) / seconds_since(t0));
    if (kv_bytes) *kv_bytes = d.kv_bytes();
  }
  std::sort(r.begin(), r.end());
  return r[1];
}

void write_svg(const std::string& path, const std::vector<Result>& res, double fp32_ppl) {
  // x: bits/weight on a log2 axis; y: perplexity on a log axis.
  const double W = 760, H = 480, L = 70, R = 200, T = 30, B = 50;
  double ymin = fp32_ppl, ymax = fp32_ppl;
  for (const auto& r : res) ymin = std::min(ymin, r.ppl), ymax = std::max(ymax, r.ppl);
  ymin /= 1.05, ymax *= 1.2;
  const double xmin = std::log2(1.5), xmax = std::log2(40.0);
  auto X = [&](double b) { return L + (std::log2(b) - xmin) / (xmax - xmin) * (W - L - R); };
  auto Y = [&](double p) { return T + (std::log(ymax) - std::log(p)) / (std::log(ymax) - std::log(ymin)) * (H - T - B); };
  std::ofstream f(path);
  f << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H
    << "' font-family='sans-serif' font-size='11'>\n<rect width='100%' height='100%' fill='white'/>\n";
  f << "<line x1='" << L << "' y1='" << H - B << "' x2='" << W - R << "' y2='" << H - B << "' stroke='black'/>\n";
  f << "<line x1='" << L << "' y1='" << T << "' x2='" << L << "' y2='" << H - B << "' stroke='black'/>\n";
  for (double b : {2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0})
    f << "<text x='" << X(b) << "' y='" << H - B + 16 << "' text-anchor='middle'>" << b << "</text>\n";
  for (double p = std::pow(10.0, std::floor(std::log10(ymin))); p <= ymax; p *= 10)
    for (double m : {1.0, 2.0, 5.0})
      if (p * m >= ymin && p * m <= ymax)
        f << "<text x='" << L - 6 << "' y='" << Y(p * m) + 4 << "' text-anchor='end'>" << p * m << "</text>\n"
          << "<line x1='" << L << "' y1='" << Y(p * m) << "' x2='" << W - R << "' y2='" << Y(p * m)
          << "' stroke='#ddd'/>\n";
  f << "<text x='" << (L + W - R) / 2 << "' y='" << H - 12 << "' text-anchor='middle'>bits per weight, codes at b bits (log scale)</text>\n"
    << "<text transform='translate(16," << (T + H - B) / 2 << ") rotate(-90)' text-anchor='middle'>"
    << "eval perplexity (log scale)</text>\n";
  f << "<line x1='" << L << "' y1='" << Y(fp32_ppl) << "' x2='" << W - R << "' y2='" << Y(fp32_ppl)
    << "' stroke='green' stroke-dasharray='4'/>\n";
  for (const auto& r : res) {
    if (r.row.kv.bits) continue;  // KV-cache rows share the fp32 weights' x
    f << "<circle cx='" << X(r.payload_bpw) << "' cy='" << Y(r.ppl) << "' r='4' fill='steelblue'/>\n"
      << "<text x='" << X(r.payload_bpw) + 6 << "' y='" << Y(r.ppl) - 4 << "'>" << r.row.method.label() << "</text>\n";
  }
  f << "</svg>\n";
}

}  // namespace

int main(int argc, char** argv) try {
  const Args a = parse(argc, argv);
  const auto t_start = Clock::now();
  const auto ck = lowbit::llama2c::load_checkpoint(a.model);
  const auto tok = lowbit::llama2c::Tokenizer::load(a.tokenizer, ck.config.vocab);
  const auto& c = ck.config;
  std::fprintf(stderr, "model %s: dim %d, hidden %d, layers %d, heads %d/%d, vocab %d, seq_len %d\n",
               a.model.c_str(), c.dim, c.hidden, c.layers, c.heads, c.kv_heads, c.vocab, c.seq_len);
  const std::size_t max_tokens = a.tokens ? std::min<std::size_t>(a.tokens, std::size_t(c.seq_len)) : std::size_t(c.seq_len);
  auto stories = [&](const std::string& path, std::size_t n) {
    auto s = read_stories(path);
    if (s.size() > n) s.resize(n);
    return encode_all(tok, s, max_tokens);
  };
  const auto eval = stories(a.eval, a.eval_stories), calib = stories(a.calib, a.calib_stories);
  const std::size_t group = a.group ? a.group : (c.dim >= 256 ? 128 : 32);

  std::vector<Row> rows;
  for (const Row& r : all_rows(group))
    if (a.methods.empty() || std::find(a.methods.begin(), a.methods.end(), r.key) != a.methods.end()) rows.push_back(r);

  const Model fp32 = dense_model(ck);
  std::unique_ptr<Calibrations> cal;
  if (std::any_of(rows.begin(), rows.end(), [](const Row& r) { return r.method.calibrated(); })) {
    const auto t0 = Clock::now();
    std::size_t n = 0;
    for (const auto& s : calib) n += s.size();
    cal = std::make_unique<Calibrations>(capture(fp32, calib));
    std::fprintf(stderr, "calibration: %zu stories, %zu tokens, %.1f s\n", calib.size(), n, seconds_since(t0));
  }

  std::vector<Result> res;
  const std::vector<int> speed_seq = eval.front();
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    const std::string name = r.method.label() + (r.kv.bits ? " + " + r.kv.name() : "");
    const auto t0 = Clock::now();
    const Model m = quantize_model(ck, r.method, cal.get(), a.classifier, [&](std::size_t done, std::size_t total) {
      const double e = seconds_since(t0);
      std::fprintf(stderr, "\r[%zu/%zu] %-28s quantizing %zu/%zu sets, %.1f s elapsed, ETA %.1f s   ", i + 1,
                   rows.size(), name.c_str(), done, total, e, e / double(done) * double(total - done));
    });
    const double tq = seconds_since(t0);
    const auto t1 = Clock::now();
    std::fprintf(stderr, "\r[%zu/%zu] %-28s evaluating %zu stories...%40s", i + 1, rows.size(), name.c_str(),
                 eval.size(), "");
    const Score sc = perplexity(m, r.kv, eval, a.threads);
    Result out{r, m.bits_per_weight(), m.payload_bits_per_weight(), sc.perplexity(), 0, 0, m.bytes(), 0};
    out.tps1 = tokens_per_second(m, r.kv, speed_seq, 1, &out.kv_bytes);
    out.tpsn = tokens_per_second(m, r.kv, speed_seq, a.threads);
    std::fprintf(stderr, "\r[%zu/%zu] %-28s ppl %.4f (quantize %.1f s, eval %.1f s)%30s\n", i + 1, rows.size(),
                 name.c_str(), out.ppl, tq, seconds_since(t1), "");
    res.push_back(out);
  }

  const double base = res.front().row.method.kind == Method::Kind::fp32 && !res.front().row.kv.bits ? res.front().ppl : 0;
  std::size_t preds = 0;
  for (const auto& s : eval) preds += s.empty() ? 0 : s.size() - 1;
  std::printf("\n%s, eval: %zu stories (%zu predictions, up to %zu tokens each), calibration: %zu stories\n",
              a.model.c_str(), eval.size(), preds, max_tokens, calib.size());
  std::printf("KV bytes: after the %zu-token speed sequence, all layers\n\n", speed_seq.size());
  std::printf("%-22s %-6s %7s %7s %9s %10s %9s %9s %9s %9s\n", "method", "KV", "bits/w", "payload", "model B",
              "perplexity", "vs fp32", "tok/s 1T", "tok/s", "KV B");
  std::printf("%-22s %-6s %7s %7s %9s %10s %9s %9s %8dT %9s\n", "", "", "", "", "", "", "", "", a.threads, "");
  std::ofstream csv(a.out + ".csv");
  csv << "method,kv,bits_per_weight,payload_bits_per_weight,model_bytes,perplexity,delta_vs_fp32_pct,tokens_per_s_1t,"
      << "tokens_per_s_" << a.threads << "t,kv_bytes\n";
  for (const auto& r : res) {
    const double delta = base > 0 ? 100.0 * (r.ppl / base - 1.0) : 0.0;
    std::printf("%-22s %-6s %7.3f %7.3f %9zu %10.4f %+8.2f%% %9.0f %9.0f %9zu\n", r.row.method.label().c_str(),
                r.row.kv.name().c_str(), r.bpw, r.payload_bpw, r.bytes, r.ppl, delta, r.tps1, r.tpsn, r.kv_bytes);
    csv << r.row.method.label() << "," << r.row.kv.name() << "," << r.bpw << "," << r.payload_bpw << "," << r.bytes
        << "," << r.ppl << "," << delta << "," << r.tps1 << "," << r.tpsn << "," << r.kv_bytes << "\n";
  }
  std::printf("\nbits/w: stored bytes of the quantized linears x 8 / weights (exact, from the formats, the bit\n"
              "layout's row padding included); payload: the papers' accounting, every code at exactly b bits.\n");
  for (const auto& r : res)
    if (r.row.method.kind == Method::Kind::vptq) {
      const auto& o = r.row.method.vptq;
      double index_bits = std::log2(double(o.codebook)) / double(o.vector);
      if (o.residual_codebook) index_bits += std::log2(double(o.residual_codebook)) / double(o.vector);
      std::printf("%s: %.3f index bits/weight; its codebooks (fp16, one per matrix) are the rest of bits/w.\n",
                  r.row.method.label().c_str(), index_bits);
    }
  if (base > 0) write_svg(a.out + ".svg", res, base);
  std::printf("wrote %s.csv%s; total %.1f s\n", a.out.c_str(), base > 0 ? (" and " + a.out + ".svg").c_str() : "",
              seconds_since(t_start));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "llama: %s\n", e.what());
  return 1;
}
