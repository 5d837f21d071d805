// A small fp32 llama2.c model for tests: loads ../shared/data/stories260K
// (format in that folder's README), encodes text with its tokenizer, and
// runs the forward pass with a hook on the input of every linear, so tests
// get real activations and real weights. Test-only code: the forward is
// llama2.c's (RMSNorm, RoPE, grouped-query attention, SwiGLU), written for
// clarity, not speed.
#pragma once

#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <lowbit/core/view.hpp>

namespace lowbit::test {

struct Llama2c {
  int dim = 0, hidden = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab = 0, seq_len = 0;
  Matrix emb;  // [vocab, dim], shared with the classifier
  struct Layer {
    std::vector<float> rms_att, rms_ffn;
    Matrix wq, wk, wv, wo, w1, w2, w3;  // [out, in]
  };
  std::vector<Layer> layers;
  std::vector<float> rms_final;
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::map<std::string, int> piece_id;

  int kv_dim() const { return dim * n_kv_heads / n_heads; }
  int head_size() const { return dim / n_heads; }

  // Returns false when the files are absent.
  bool load(const std::string& dir) {
    std::ifstream f(dir + "/stories260K.bin", std::ios::binary), t(dir + "/tok512.bin", std::ios::binary);
    if (!f || !t) return false;
    std::int32_t h[7];
    f.read(reinterpret_cast<char*>(h), sizeof h);
    dim = h[0], hidden = h[1], n_layers = h[2], n_heads = h[3], n_kv_heads = h[4], vocab = std::abs(h[5]),
    seq_len = h[6];
    auto mat = [&](int r, int c) {
      Matrix m(static_cast<std::size_t>(r), static_cast<std::size_t>(c));
      f.read(reinterpret_cast<char*>(m.data()), std::streamsize(sizeof(float)) * r * c);
      return m;
    };
    auto vec = [&](int n) {
      std::vector<float> v(static_cast<std::size_t>(n));
      f.read(reinterpret_cast<char*>(v.data()), std::streamsize(sizeof(float)) * n);
      return v;
    };
    emb = mat(vocab, dim);
    layers.resize(std::size_t(n_layers));
    for (auto& l : layers) l.rms_att = vec(dim);
    for (auto& l : layers) l.wq = mat(dim, dim);
    for (auto& l : layers) l.wk = mat(kv_dim(), dim);
    for (auto& l : layers) l.wv = mat(kv_dim(), dim);
    for (auto& l : layers) l.wo = mat(dim, dim);
    for (auto& l : layers) l.rms_ffn = vec(dim);
    for (auto& l : layers) l.w1 = mat(hidden, dim);
    for (auto& l : layers) l.w2 = mat(dim, hidden);
    for (auto& l : layers) l.w3 = mat(hidden, dim);
    rms_final = vec(dim);
    if (!f) return false;
    std::int32_t max_len = 0;
    t.read(reinterpret_cast<char*>(&max_len), 4);
    for (int i = 0; i < vocab; ++i) {
      float sc = 0;
      std::int32_t len = 0;
      t.read(reinterpret_cast<char*>(&sc), 4);
      t.read(reinterpret_cast<char*>(&len), 4);
      std::string p(std::size_t(len), '\0');
      t.read(p.data(), len);
      scores.push_back(sc);
      pieces.push_back(p);
      piece_id.emplace(p, i);
    }
    return bool(t);
  }

  // llama2.c's encode: BOS, a dummy prefix space, UTF-8 characters (byte
  // fallback: id = byte + 3), then merge the best-scoring adjacent pair
  // until none merges.
  std::vector<int> encode(const std::string& text) const {
    std::vector<int> ids = {1};
    if (text.empty()) return ids;
    std::vector<int> tok = {piece_id.at(" ")};
    for (std::size_t i = 0; i < text.size();) {
      std::size_t n = 1;
      while (i + n < text.size() && (static_cast<unsigned char>(text[i + n]) & 0xC0) == 0x80 && n < 4) ++n;
      const auto it = piece_id.find(text.substr(i, n));
      if (it != piece_id.end()) {
        tok.push_back(it->second);
      } else {
        for (std::size_t j = 0; j < n; ++j) tok.push_back(static_cast<unsigned char>(text[i + j]) + 3);
      }
      i += n;
    }
    for (;;) {
      float best = -1e10f;
      int best_id = -1;
      std::size_t best_i = 0;
      for (std::size_t i = 0; i + 1 < tok.size(); ++i) {
        const auto it = piece_id.find(pieces[std::size_t(tok[i])] + pieces[std::size_t(tok[i + 1])]);
        if (it != piece_id.end() && scores[std::size_t(it->second)] > best) {
          best = scores[std::size_t(it->second)];
          best_id = it->second;
          best_i = i;
        }
      }
      if (best_id < 0) break;
      tok[best_i] = best_id;
      tok.erase(tok.begin() + std::ptrdiff_t(best_i) + 1);
    }
    ids.insert(ids.end(), tok.begin(), tok.end());
    return ids;
  }

  // Which linear a hook sees, and the linear itself.
  enum class Site { attn_in, wo_in, ffn_in, w2_in };

  // y = W x for one linear; tests swap in quantized versions.
  using LinearFn = std::function<void(int layer, const char* name, const Matrix& w, const float* x, float* y)>;
  using Hook = std::function<void(int layer, Site site, const float* x, std::size_t n)>;

  static void dense(const Matrix& w, const float* x, float* y) {
    for (std::size_t r = 0; r < w.rows(); ++r) {
      float acc = 0;
      for (std::size_t k = 0; k < w.cols(); ++k) acc += w(r, k) * x[k];
      y[r] = acc;
    }
  }

  // Logits [tokens.size(), vocab] for every position.
  Matrix forward(const std::vector<int>& tokens, const Hook& hook = {}, const LinearFn& linear = {}) const {
    const std::size_t T = tokens.size(), D = std::size_t(dim), KV = std::size_t(kv_dim()),
                      HS = std::size_t(head_size()), Hd = std::size_t(hidden);
    auto lin = [&](int l, const char* name, const Matrix& w, const float* x, float* y) {
      if (linear)
        linear(l, name, w, x, y);
      else
        dense(w, x, y);
    };
    auto rmsnorm = [&](const float* x, const std::vector<float>& g, float* out) {
      float ss = 0;
      for (std::size_t i = 0; i < D; ++i) ss += x[i] * x[i];
      ss = 1.0f / std::sqrt(ss / float(D) + 1e-5f);
      for (std::size_t i = 0; i < D; ++i) out[i] = g[i] * (ss * x[i]);
    };
    std::vector<Matrix> kc(std::size_t(n_layers), Matrix(T, KV)), vc(std::size_t(n_layers), Matrix(T, KV));
    Matrix logits(T, std::size_t(vocab));
    std::vector<float> x(D), xb(D), xb2(D), q(D), h1(Hd), h3(Hd), att(T);
    for (std::size_t pos = 0; pos < T; ++pos) {
      std::copy(emb.row(std::size_t(tokens[pos])), emb.row(std::size_t(tokens[pos])) + D, x.begin());
      for (int l = 0; l < n_layers; ++l) {
        const Layer& L = layers[std::size_t(l)];
        rmsnorm(x.data(), L.rms_att, xb.data());
        if (hook) hook(l, Site::attn_in, xb.data(), D);
        float* k = kc[std::size_t(l)].row(pos);
        float* v = vc[std::size_t(l)].row(pos);
        lin(l, "wq", L.wq, xb.data(), q.data());
        lin(l, "wk", L.wk, xb.data(), k);
        lin(l, "wv", L.wv, xb.data(), v);
        for (std::size_t i = 0; i < D; i += 2) {  // RoPE
          const float freq = 1.0f / std::pow(10000.0f, float(i % HS) / float(HS));
          const float val = float(pos) * freq, fcr = std::cos(val), fci = std::sin(val);
          for (int which = 0; which < (i < KV ? 2 : 1); ++which) {
            float* vec = which == 0 ? q.data() : k;
            const float v0 = vec[i], v1 = vec[i + 1];
            vec[i] = v0 * fcr - v1 * fci;
            vec[i + 1] = v0 * fci + v1 * fcr;
          }
        }
        const std::size_t group = std::size_t(n_heads / n_kv_heads);
        for (std::size_t h = 0; h < std::size_t(n_heads); ++h) {
          const float* qh = q.data() + h * HS;
          const std::size_t kvo = (h / group) * HS;
          float mx = -1e30f;
          for (std::size_t t = 0; t <= pos; ++t) {
            float s = 0;
            for (std::size_t i = 0; i < HS; ++i) s += qh[i] * kc[std::size_t(l)](t, kvo + i);
            att[t] = s / std::sqrt(float(HS));
            mx = std::max(mx, att[t]);
          }
          float sum = 0;
          for (std::size_t t = 0; t <= pos; ++t) sum += att[t] = std::exp(att[t] - mx);
          for (std::size_t i = 0; i < HS; ++i) {
            float acc = 0;
            for (std::size_t t = 0; t <= pos; ++t) acc += att[t] / sum * vc[std::size_t(l)](t, kvo + i);
            xb[h * HS + i] = acc;
          }
        }
        if (hook) hook(l, Site::wo_in, xb.data(), D);
        lin(l, "wo", L.wo, xb.data(), xb2.data());
        for (std::size_t i = 0; i < D; ++i) x[i] += xb2[i];
        rmsnorm(x.data(), L.rms_ffn, xb.data());
        if (hook) hook(l, Site::ffn_in, xb.data(), D);
        lin(l, "w1", L.w1, xb.data(), h1.data());
        lin(l, "w3", L.w3, xb.data(), h3.data());
        for (std::size_t i = 0; i < Hd; ++i) h1[i] = h1[i] / (1.0f + std::exp(-h1[i])) * h3[i];
        if (hook) hook(l, Site::w2_in, h1.data(), Hd);
        lin(l, "w2", L.w2, h1.data(), xb2.data());
        for (std::size_t i = 0; i < D; ++i) x[i] += xb2[i];
      }
      rmsnorm(x.data(), rms_final, xb.data());
      dense(emb, xb.data(), logits.row(pos));
    }
    return logits;
  }
};

// Stories of a data file (separated by blank lines).
inline std::vector<std::string> read_stories(const std::string& path) {
  std::ifstream f(path);
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

}  // namespace lowbit::test
