// A Llama decoder on lowbit: the llama2.c architecture (RMSNorm, RoPE,
// grouped-query attention over a KV cache, SwiGLU feed-forward), written for
// reading, with every matrix product a lowbit kernel in whichever format a
// quantizer produced and the KV cache in fp32 or KIVI. The llama example and
// the real-model tests share it.
#pragma once

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include <lowbit/lowbit.hpp>
#include <lowbit/model/llama2c.hpp>

namespace llama {

using lowbit::bf16;
using lowbit::Matrix;

// A plain bf16 matrix (the model DFloat11 must reproduce bit for bit).
struct Bf16Matrix {
  std::size_t rows = 0, cols = 0;
  std::vector<bf16> w;
};

// One linear layer, y = W x, in any lowbit format.
struct Linear {
  std::variant<Matrix, Bf16Matrix, lowbit::GroupQuantMatrix, lowbit::SpqrMatrix, lowbit::VqMatrix, lowbit::Dfloat11Matrix>
      w;
  std::vector<float> in_scale;  // AWQ's s (empty: none): y = W' (x / s), W' = W diag(s) quantized

  std::size_t rows() const {
    return std::visit([](const auto& m) { return dims(m).first; }, w);
  }
  std::size_t cols() const {
    return std::visit([](const auto& m) { return dims(m).second; }, w);
  }

  // Bytes stored: the format's arrays, plus s in fp16. (An engine folds s
  // into the preceding RMSNorm or linear where it can; counted anyway.)
  std::size_t bytes() const {
    const std::size_t b = std::visit(
        [](const auto& m) -> std::size_t {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, Matrix>) return 4 * m.rows() * m.cols();
          else if constexpr (std::is_same_v<T, Bf16Matrix>) return 2 * m.w.size();
          else return m.bytes();
        },
        w);
    return b + 2 * in_scale.size();
  }

  // The papers' accounting: every code at exactly b bits. bytes() also
  // counts the padding of lowbit's bit layout (core/bitpack.hpp: each row
  // padded to whole 32-byte chunks per bit plane), which is nil for rows of
  // a multiple of 256 codes but large on a model as narrow as stories260K.
  // VQ index streams carry only a few pad bytes; codebooks count in both.
  double payload_bits() const {
    const double b = 8.0 * double(bytes());
    return std::visit(
        [&](const auto& m) {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, lowbit::GroupQuantMatrix> || std::is_same_v<T, lowbit::SpqrMatrix>) {
            return b - 8.0 * double(m.codes.size()) + double(m.rows * m.cols) * double(m.bits);
          } else if constexpr (std::is_same_v<T, lowbit::VqMatrix>) {
            double p = b;
            auto part = [&](const std::vector<lowbit::VqCodebook>& levels, std::size_t cols) {
              for (const auto& c : levels)
                p += double(m.vectors(cols) * std::size_t(c.index_bits())) - 8.0 * double(c.indices.size());
            };
            part(m.outlier, m.outlier_columns);
            part(m.main, m.cols - m.outlier_columns);
            return p;
          } else {
            return b;
          }
        },
        w);
  }

  void operator()(const float* x, float* y, std::vector<float>& scratch, int threads) const {
    const std::size_t K = cols();
    if (!in_scale.empty()) {
      scratch.resize(K);
      for (std::size_t k = 0; k < K; ++k) scratch[k] = x[k] / in_scale[k];
      x = scratch.data();
    }
    const lowbit::span<const float> xs(x, K);
    const lowbit::span<float> ys(y, rows());
    const lowbit::RunOptions run{lowbit::Activations::fp32, threads};
    std::visit(
        [&](const auto& m) {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, Matrix>) {
            Eigen::Map<Eigen::VectorXf>(y, Eigen::Index(m.rows())) =
                lowbit::eigen_map(m.view()) * Eigen::Map<const Eigen::VectorXf>(x, Eigen::Index(K));
          } else if constexpr (std::is_same_v<T, Bf16Matrix>) {
            lowbit::gemv(lowbit::ConstMatrixView<bf16>(m.w.data(), m.rows, m.cols), xs, ys, run);
          } else {
            lowbit::gemv(m, xs, ys, run);
          }
        },
        w);
  }

 private:
  static std::pair<std::size_t, std::size_t> dims(const Matrix& m) { return {m.rows(), m.cols()}; }
  template <class T>
  static std::pair<std::size_t, std::size_t> dims(const T& m) { return {m.rows, m.cols}; }
};

// The inputs a hook sees: one per group of linears sharing an input.
enum class Site { attn_in, wo_in, ffn_in, w2_in, cls_in };
inline constexpr int sites_per_layer = 4;  // cls_in: once, after the last layer
using Hook = std::function<void(int layer, Site site, const float* x, std::size_t n)>;

struct Model {
  lowbit::llama2c::Config config;
  Matrix embedding;  // fp32: a table lookup per token
  struct Layer {
    std::vector<float> rms_att, rms_ffn;
    Linear wq, wk, wv, wo, w1, w2, w3;
    std::vector<const Linear*> linears() const { return {&wq, &wk, &wv, &wo, &w1, &w2, &w3}; }
  };
  std::vector<Layer> layers;
  std::vector<float> rms_final;
  Linear classifier;
  bool quantized_classifier = false;  // else the classifier is the embedding (or wcls) in fp32

  // Weights and bytes of the quantized linears: the seven of every layer,
  // and the classifier when it was quantized too.
  std::size_t quantized_weights() const { return sum<std::size_t>([](const Linear& l) { return l.rows() * l.cols(); }); }
  std::size_t quantized_bytes() const { return sum<std::size_t>([](const Linear& l) { return l.bytes(); }); }
  double bits_per_weight() const { return 8.0 * double(quantized_bytes()) / double(quantized_weights()); }
  double payload_bits_per_weight() const {
    return sum<double>([](const Linear& l) { return l.payload_bits(); }) / double(quantized_weights());
  }

  // Everything stored: embedding, norms, linears, a separate classifier.
  std::size_t bytes() const {
    const std::size_t norms = 4 * (rms_final.size() + 2 * layers.size() * std::size_t(config.dim));
    const bool fp32_wcls = !config.shared_classifier && !quantized_classifier;  // else counted already
    return 4 * embedding.rows() * embedding.cols() + norms + quantized_bytes() + (fp32_wcls ? classifier.bytes() : 0);
  }

 private:
  template <class T, class F>
  T sum(F f) const {
    T s = quantized_classifier ? f(classifier) : T(0);
    for (const Layer& l : layers)
      for (const Linear* p : l.linears()) s += f(*p);
    return s;
  }
};

// The fp32 model of a checkpoint.
inline Model dense_model(const lowbit::llama2c::Checkpoint& ck) {
  Model m;
  m.config = ck.config;
  m.embedding = ck.embedding;
  m.rms_final = ck.rms_final;
  m.classifier.w = ck.classifier();
  for (const auto& l : ck.layers)
    m.layers.push_back({l.rms_att, l.rms_ffn, {l.wq, {}}, {l.wk, {}}, {l.wv, {}}, {l.wo, {}}, {l.w1, {}}, {l.w2, {}},
                        {l.w3, {}}});
  return m;
}

// The KV cache: fp32, or KIVI with `bits` (group and window as kivi::Options;
// group 0: the largest of 32, 16, 8 dividing head_size).
struct KvOptions {
  int bits = 0;  // 0: fp32
  int group = 0;
  int residual = 128;
  std::string name() const { return bits ? "kivi" + std::to_string(bits) : "fp32"; }
};

// One sequence being decoded: its KV caches and scratch.
class Decoder {
 public:
  Decoder(const Model& m, const KvOptions& kv = {}, int threads = 1) : m_(m), threads_(threads) {
    const auto& c = m.config;
    const auto L = std::size_t(c.layers), KV = std::size_t(c.kv_dim()), S = std::size_t(c.seq_len);
    if (kv.bits == 0) {
      k_.assign(L, std::vector<float>(S * KV));
      v_.assign(L, std::vector<float>(S * KV));
    } else {
      int group = kv.group;
      for (int g = 32; group == 0 && g >= 8; g /= 2)
        if (c.head_size() % g == 0) group = g;
      kivi_.assign(L, lowbit::kivi::Cache({c.heads, c.kv_heads, c.head_size(), kv.bits, group, kv.residual, S}));
    }
    const auto D = std::size_t(c.dim), H = std::size_t(c.hidden);
    x_.resize(D), xb_.resize(D), xb2_.resize(D), q_.resize(D), att_.resize(D), k1_.resize(KV), v1_.resize(KV);
    h1_.resize(H), h3_.resize(H), logits_.resize(std::size_t(c.vocab)), rope_.resize(std::size_t(c.head_size()));
  }

  int position() const noexcept { return pos_; }

  // Feeds `token` at the next position; returns the logits for the one after.
  const std::vector<float>& step(int token, const Hook& hook = {}) {
    const auto& c = m_.config;
    LOWBIT_CHECK(pos_ < c.seq_len, "Decoder::step", "position ", pos_, " is past seq_len ", c.seq_len);
    LOWBIT_CHECK(token >= 0 && token < c.vocab, "Decoder::step", "token ", token, " outside [0, ", c.vocab, ")");
    const auto D = std::size_t(c.dim), KV = std::size_t(c.kv_dim()), HS = std::size_t(c.head_size()),
               S = std::size_t(c.seq_len), H = std::size_t(c.hidden);
    const float* e = m_.embedding.row(std::size_t(token));
    x_.assign(e, e + D);
    // RoPE angles for this position: pair i of a head turns by pos * 10000^(-2i / head_size).
    for (std::size_t i = 0; i < HS; i += 2) {
      const float a = float(pos_) * (1.0f / std::pow(10000.0f, float(i) / float(HS)));
      rope_[i] = std::cos(a), rope_[i + 1] = std::sin(a);
    }
    auto see = [&](int l, Site s, const std::vector<float>& v, std::size_t n) {
      if (hook) hook(l, s, v.data(), n);
    };
    for (std::size_t l = 0; l < m_.layers.size(); ++l) {
      const Model::Layer& L = m_.layers[l];
      const int li = int(l);
      rmsnorm(x_, L.rms_att, xb_);
      see(li, Site::attn_in, xb_, D);
      L.wq(xb_.data(), q_.data(), scratch_, threads_);
      L.wk(xb_.data(), k1_.data(), scratch_, threads_);
      L.wv(xb_.data(), v1_.data(), scratch_, threads_);
      rotate(q_.data(), D);
      rotate(k1_.data(), KV);
      lowbit::AttentionOptions ao;
      ao.threads = threads_;
      if (kivi_.empty()) {  // fp32 cache: kv_heads x seq_len x head_size
        for (std::size_t h = 0; h < std::size_t(c.kv_heads); ++h) {
          std::copy_n(k1_.data() + h * HS, HS, k_[l].data() + (h * S + std::size_t(pos_)) * HS);
          std::copy_n(v1_.data() + h * HS, HS, v_[l].data() + (h * S + std::size_t(pos_)) * HS);
        }
        const lowbit::AttentionShape shape{c.heads, c.kv_heads, c.head_size(), S};
        lowbit::attention(shape, k_[l].data(), v_[l].data(), std::size_t(pos_) + 1, q_.data(), att_.data(), ao);
      } else {
        kivi_[l].append(k1_.data(), v1_.data());
        lowbit::attention(kivi_[l], q_.data(), att_.data(), ao);
      }
      see(li, Site::wo_in, att_, D);
      L.wo(att_.data(), xb2_.data(), scratch_, threads_);
      for (std::size_t i = 0; i < D; ++i) x_[i] += xb2_[i];
      rmsnorm(x_, L.rms_ffn, xb_);
      see(li, Site::ffn_in, xb_, D);
      L.w1(xb_.data(), h1_.data(), scratch_, threads_);
      L.w3(xb_.data(), h3_.data(), scratch_, threads_);
      for (std::size_t i = 0; i < H; ++i) h1_[i] = h1_[i] / (1.0f + std::exp(-h1_[i])) * h3_[i];  // SwiGLU
      see(li, Site::w2_in, h1_, H);
      L.w2(h1_.data(), xb2_.data(), scratch_, threads_);
      for (std::size_t i = 0; i < D; ++i) x_[i] += xb2_[i];
    }
    rmsnorm(x_, m_.rms_final, xb_);
    see(c.layers, Site::cls_in, xb_, D);
    m_.classifier(xb_.data(), logits_.data(), scratch_, threads_);
    ++pos_;
    return logits_;
  }

  std::size_t kv_bytes() const {
    std::size_t b = 0;
    for (const auto& k : kivi_) b += k.memory_bytes();
    return kivi_.empty() ? 2 * 4 * std::size_t(pos_) * std::size_t(m_.config.kv_dim() * m_.config.layers) : b;
  }

 private:
  static void rmsnorm(const std::vector<float>& x, const std::vector<float>& g, std::vector<float>& out) {
    float ss = 0;
    for (float v : x) ss += v * v;
    const float r = 1.0f / std::sqrt(ss / float(x.size()) + 1e-5f);
    for (std::size_t i = 0; i < x.size(); ++i) out[i] = g[i] * (r * x[i]);
  }
  // RoPE on the first n entries of v, head by head.
  void rotate(float* v, std::size_t n) const {
    const std::size_t HS = rope_.size();
    for (std::size_t i = 0; i < n; i += 2) {
      const float c = rope_[i % HS], s = rope_[i % HS + 1], a = v[i], b = v[i + 1];
      v[i] = a * c - b * s;
      v[i + 1] = a * s + b * c;
    }
  }

  const Model& m_;
  int threads_;
  int pos_ = 0;
  std::vector<std::vector<float>> k_, v_;
  std::vector<lowbit::kivi::Cache> kivi_;
  std::vector<float> x_, xb_, xb2_, q_, att_, k1_, v1_, h1_, h3_, logits_, rope_, scratch_;
};

// Mean negative log-likelihood of next-token prediction over token sequences.
struct Score {
  double nll = 0;
  std::size_t predictions = 0;
  double perplexity() const { return std::exp(nll / double(predictions)); }
};

// Every position of every sequence predicts the next token. Sequences run in
// parallel (one decoder each, kernels single-threaded), summed in order: the
// score does not depend on the thread count.
inline Score perplexity(const Model& m, const KvOptions& kv, const std::vector<std::vector<int>>& seqs,
                        int threads = 0) {
  std::vector<double> nll(seqs.size());
  lowbit::parallel_for(seqs.size(), 1, threads, [&](std::size_t b, std::size_t e) {
    for (std::size_t s = b; s < e; ++s) {
      Decoder d(m, kv, 1);
      const auto& t = seqs[s];
      for (std::size_t i = 0; i + 1 < t.size(); ++i) {
        const std::vector<float>& z = d.step(t[i]);
        const float mx = *std::max_element(z.begin(), z.end());
        double sum = 0;
        for (float v : z) sum += std::exp(double(v) - double(mx));
        nll[s] += std::log(sum) + double(mx) - double(z[std::size_t(t[i + 1])]);
      }
    }
  });
  Score sc;
  for (std::size_t s = 0; s < seqs.size(); ++s) {
    sc.nll += nll[s];
    sc.predictions += seqs[s].empty() ? 0 : seqs[s].size() - 1;
  }
  return sc;
}

// Stories of a text file, separated by blank lines.
inline std::vector<std::string> read_stories(const std::string& path) {
  std::ifstream f(path);
  LOWBIT_CHECK(f, "read_stories", "cannot open '", path, "'");
  std::vector<std::string> out;
  std::string line, cur;
  while (std::getline(f, line)) {
    if (line.empty()) {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += cur.empty() ? line : "\n" + line;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

// The stories encoded (BOS, no EOS) and cut to `max_tokens`.
inline std::vector<std::vector<int>> encode_all(const lowbit::llama2c::Tokenizer& tok,
                                                const std::vector<std::string>& stories, std::size_t max_tokens) {
  std::vector<std::vector<int>> out;
  for (const auto& s : stories) {
    out.push_back(tok.encode(s));
    if (out.back().size() > max_tokens) out.back().resize(max_tokens);
  }
  return out;
}

}  // namespace llama
