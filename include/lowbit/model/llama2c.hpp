// llama2.c checkpoints and tokenizers (Karpathy's llama2.c, "legacy"
// export), so that users can feed real Llama-architecture models to the
// quantizers. Both loaders read untrusted bytes: every size is checked
// against the file before anything is allocated, and a bad file is a
// lowbit::error naming the field, never a partial model.
//
// Checkpoint (little endian):
//   field                  type / shape
//   header                 7 x i32: dim, hidden_dim, n_layers, n_heads,
//                          n_kv_heads, vocab_size, seq_len; vocab_size < 0
//                          means the classifier is stored (not shared)
//   token_embedding        f32 [vocab, dim]
//   rms_att                f32 [L, dim]
//   wq, wk, wv, wo         f32 [L, dim, dim], [L, kv_dim, dim] x 2, [L, dim, dim]
//   rms_ffn                f32 [L, dim]
//   w1, w2, w3             f32 [L, hidden, dim], [L, dim, hidden], [L, hidden, dim]
//   rms_final              f32 [dim]
//   freq_cis_real, _imag   f32 [seq_len, head_size / 2] each (unused: RoPE is
//                          recomputed)
//   wcls                   f32 [vocab, dim], only when vocab_size < 0
// with kv_dim = dim * n_kv_heads / n_heads, head_size = dim / n_heads. Every
// matrix is [out_features, in_features]: y = W x. The file size must match
// the header exactly.
//
// Tokenizer: i32 max_token_length, then per token: f32 score, i32 length,
// `length` bytes. Encoding is llama2.c's: BOS, a dummy-prefix space, one
// piece per UTF-8 character (bytes without a piece fall back to ids 3 + byte),
// then repeatedly merge the adjacent pair whose merged piece scores best.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <istream>
#include <limits>
#include <string>
#include <unordered_map>
#include <vector>

#include "../core/error.hpp"
#include "../core/view.hpp"

namespace lowbit::llama2c {

struct Config {
  int dim = 0, hidden = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0, seq_len = 0;
  bool shared_classifier = true;

  int kv_dim() const noexcept { return dim / heads * kv_heads; }
  int head_size() const noexcept { return dim / heads; }
};

struct Layer {
  std::vector<float> rms_att, rms_ffn;
  Matrix wq, wk, wv, wo, w1, w2, w3;  // [out, in]
};

struct Checkpoint {
  Config config;
  Matrix embedding;  // [vocab, dim]
  Matrix wcls;       // [vocab, dim]; empty when shared with the embedding
  std::vector<Layer> layers;
  std::vector<float> rms_final;

  const Matrix& classifier() const noexcept { return config.shared_classifier ? embedding : wcls; }
};

namespace detail {

// Reads exactly n floats or fails, naming the tensor; rejects NaN and Inf
// (no trained weight is one, and a corrupted file often has them).
inline void read_floats(std::istream& in, float* out, std::size_t n, const char* what, int layer) {
  in.read(reinterpret_cast<char*>(out), std::streamsize(n * sizeof(float)));
  LOWBIT_CHECK(std::size_t(in.gcount()) == n * sizeof(float), "llama2c::read_checkpoint", "file ends inside ", what);
  for (std::size_t i = 0; i < n; ++i)
    LOWBIT_CHECK(std::isfinite(out[i]), "llama2c::read_checkpoint", what, layer >= 0 ? " of layer " : "",
                 layer >= 0 ? std::to_string(layer) : std::string(), " element ", i, " is ", out[i]);
}

}  // namespace detail

// Rejects a header no llama2.c model can have.
inline void check(const Config& c) {
  const char* where = "llama2c::read_checkpoint";
  constexpr int big = 1 << 20;  // far beyond any llama2.c model; keeps every product below 2^63
  for (const auto& [v, name] : {std::pair{c.dim, "dim"}, {c.hidden, "hidden_dim"}, {c.layers, "n_layers"},
                                {c.heads, "n_heads"}, {c.kv_heads, "n_kv_heads"}, {c.vocab, "|vocab_size|"},
                                {c.seq_len, "seq_len"}})
    LOWBIT_CHECK(v >= 1 && v <= big, where, "header field ", name, " = ", v, " is outside [1, ", big, "]");
  LOWBIT_CHECK(c.dim % c.heads == 0, where, "n_heads (", c.heads, ") does not divide dim (", c.dim, ")");
  LOWBIT_CHECK(c.heads % c.kv_heads == 0, where, "n_kv_heads (", c.kv_heads, ") does not divide n_heads (", c.heads,
               ")");
  LOWBIT_CHECK(c.head_size() % 2 == 0, where, "head size ", c.head_size(), " is odd (RoPE rotates pairs)");
}

// The file size a valid header implies, in bytes.
inline std::uint64_t file_bytes(const Config& c) {
  const std::uint64_t d = std::uint64_t(c.dim), h = std::uint64_t(c.hidden), kv = std::uint64_t(c.kv_dim()),
                      L = std::uint64_t(c.layers), V = std::uint64_t(c.vocab);
  const std::uint64_t per_layer = 2 * d + 2 * d * d + 2 * kv * d + 3 * h * d;
  const std::uint64_t floats = V * d + L * per_layer + d + std::uint64_t(c.seq_len) * std::uint64_t(c.head_size()) +
                               (c.shared_classifier ? 0 : V * d);
  return 28 + 4 * floats;
}

// Reads a checkpoint of `size` bytes from `in`.
inline Checkpoint read_checkpoint(std::istream& in, std::uint64_t size) {
  const char* where = "llama2c::read_checkpoint";
  std::int32_t h[7] = {};
  in.read(reinterpret_cast<char*>(h), sizeof h);
  LOWBIT_CHECK(in.gcount() == std::streamsize(sizeof h), where, "file has ", size,
               " bytes, shorter than the 28-byte header");
  Checkpoint m;
  Config& c = m.config;
  c.dim = h[0], c.hidden = h[1], c.layers = h[2], c.heads = h[3], c.kv_heads = h[4], c.seq_len = h[6];
  c.shared_classifier = h[5] > 0;
  c.vocab = h[5] == std::numeric_limits<std::int32_t>::min() ? 0 : std::abs(h[5]);
  check(c);
  LOWBIT_CHECK(size == file_bytes(c), where, "file has ", size, " bytes, the header (dim ", c.dim, ", hidden ",
               c.hidden, ", layers ", c.layers, ", heads ", c.heads, "/", c.kv_heads, ", vocab ", h[5], ", seq_len ",
               c.seq_len, ") implies ", file_bytes(c));
  const auto D = std::size_t(c.dim), H = std::size_t(c.hidden), KV = std::size_t(c.kv_dim()),
             V = std::size_t(c.vocab);
  auto mat = [&](Matrix& w, std::size_t r, std::size_t k, const char* what, int layer) {
    w = Matrix(r, k);
    detail::read_floats(in, w.data(), r * k, what, layer);
  };
  auto vec = [&](std::vector<float>& v, const char* what, int layer) {
    v.resize(D);
    detail::read_floats(in, v.data(), D, what, layer);
  };
  m.layers.resize(std::size_t(c.layers));
  auto each = [&](auto&& f) {
    for (std::size_t l = 0; l < m.layers.size(); ++l) f(m.layers[l], int(l));
  };
  mat(m.embedding, V, D, "token_embedding", -1);
  each([&](Layer& l, int i) { vec(l.rms_att, "rms_att", i); });
  each([&](Layer& l, int i) { mat(l.wq, D, D, "wq", i); });
  each([&](Layer& l, int i) { mat(l.wk, KV, D, "wk", i); });
  each([&](Layer& l, int i) { mat(l.wv, KV, D, "wv", i); });
  each([&](Layer& l, int i) { mat(l.wo, D, D, "wo", i); });
  each([&](Layer& l, int i) { vec(l.rms_ffn, "rms_ffn", i); });
  each([&](Layer& l, int i) { mat(l.w1, H, D, "w1", i); });
  each([&](Layer& l, int i) { mat(l.w2, D, H, "w2", i); });
  each([&](Layer& l, int i) { mat(l.w3, H, D, "w3", i); });
  vec(m.rms_final, "rms_final", -1);
  in.ignore(std::streamsize(std::size_t(c.seq_len) * std::size_t(c.head_size()) * sizeof(float)));
  if (!c.shared_classifier) mat(m.wcls, V, D, "wcls", -1);
  return m;
}

inline Checkpoint load_checkpoint(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  LOWBIT_CHECK(f, "llama2c::load_checkpoint", "cannot open '", path, "'");
  const auto size = std::uint64_t(f.tellg());
  f.seekg(0);
  return read_checkpoint(f, size);
}

class Tokenizer {
 public:
  static constexpr int bos = 1;

  Tokenizer() = default;

  // Reads a tokenizer of `vocab` tokens from `size` bytes of `in`.
  Tokenizer(std::istream& in, std::uint64_t size, int vocab) {
    const char* where = "llama2c::Tokenizer";
    LOWBIT_CHECK(vocab >= 4 && vocab <= (1 << 20), where, "vocab ", vocab, " is outside [4, 2^20]");
    std::int32_t max_len = 0;
    std::uint64_t left = size;
    auto take = [&](void* p, std::uint64_t n, const char* what, int i) {
      LOWBIT_CHECK(n <= left, where, "file ends inside ", what, " of token ", i);
      in.read(static_cast<char*>(p), std::streamsize(n));
      LOWBIT_CHECK(std::uint64_t(in.gcount()) == n, where, "read failed inside ", what, " of token ", i);
      left -= n;
    };
    take(&max_len, 4, "the header", -1);
    LOWBIT_CHECK(max_len >= 1 && max_len <= (1 << 16), where, "max_token_length ", max_len,
                 " is outside [1, 65536]");
    pieces_.resize(std::size_t(vocab));
    scores_.resize(std::size_t(vocab));
    for (int i = 0; i < vocab; ++i) {
      std::int32_t len = 0;
      take(&scores_[std::size_t(i)], 4, "the score", i);
      take(&len, 4, "the length", i);
      LOWBIT_CHECK(std::isfinite(scores_[std::size_t(i)]), where, "token ", i, " has score ", scores_[std::size_t(i)]);
      LOWBIT_CHECK(len >= 0 && len <= max_len, where, "token ", i, " has length ", len, ", max_token_length is ",
                   max_len);
      std::string& p = pieces_[std::size_t(i)];
      p.resize(std::size_t(len));
      take(p.data(), std::uint64_t(len), "the bytes", i);
      id_.emplace(p, i);  // the first of duplicate pieces wins, as llama2.c's sorted lookup
    }
    LOWBIT_CHECK(left == 0, where, left, " bytes after the last of ", vocab, " tokens");
  }

  static Tokenizer load(const std::string& path, int vocab) {
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    LOWBIT_CHECK(f, "llama2c::Tokenizer::load", "cannot open '", path, "'");
    const auto size = std::uint64_t(f.tellg());
    f.seekg(0);
    return Tokenizer(f, size, vocab);
  }

  int size() const noexcept { return int(pieces_.size()); }
  const std::string& piece(int id) const { return pieces_.at(std::size_t(id)); }

  // BOS, then the text's tokens (llama2.c's encode without EOS).
  std::vector<int> encode(const std::string& text) const {
    std::vector<int> out = {bos};
    if (text.empty()) return out;
    std::vector<int> t;
    if (const int sp = find(" "); sp >= 0) t.push_back(sp);  // the dummy prefix
    for (std::size_t i = 0; i < text.size();) {
      std::size_t n = 1;  // one UTF-8 character: a lead byte and up to 3 continuation bytes
      while (i + n < text.size() && n < 4 && (static_cast<unsigned char>(text[i + n]) & 0xC0) == 0x80) ++n;
      if (const int id = find(text.substr(i, n)); id >= 0) {
        t.push_back(id);
      } else {
        for (std::size_t j = 0; j < n; ++j) t.push_back(byte_id(static_cast<unsigned char>(text[i + j])));
      }
      i += n;
    }
    // Merge the best-scoring pair (ties: the leftmost) until none merges;
    // pair[i] is the piece t[i] t[i+1] would merge into, or -1, and only
    // the merged token's two pairs change.
    auto merged = [&](std::size_t i) { return find(pieces_[std::size_t(t[i])] + pieces_[std::size_t(t[i + 1])]); };
    std::vector<int> pair;
    for (std::size_t i = 0; i + 1 < t.size(); ++i) pair.push_back(merged(i));
    for (;;) {
      std::size_t at = pair.size();
      for (std::size_t i = 0; i < pair.size(); ++i)
        if (pair[i] >= 0 && (at == pair.size() || scores_[std::size_t(pair[i])] > scores_[std::size_t(pair[at])])) at = i;
      if (at == pair.size()) break;
      t[at] = pair[at];
      t.erase(t.begin() + std::ptrdiff_t(at) + 1);
      pair.erase(pair.begin() + std::ptrdiff_t(at));
      if (at < pair.size()) pair[at] = merged(at);
      if (at > 0) pair[at - 1] = merged(at - 1);
    }
    out.insert(out.end(), t.begin(), t.end());
    return out;
  }

  // The text of `token` following `prev` (llama2.c's decode: no leading
  // space after BOS, "<0xXX>" pieces are raw bytes).
  std::string decode(int prev, int token) const {
    std::string p = piece(token);
    if (prev == bos && !p.empty() && p[0] == ' ') p.erase(0, 1);
    unsigned byte = 0;
    char tail = 0;
    if (p.size() == 6 && std::sscanf(p.c_str(), "<0x%2X%c", &byte, &tail) == 2 && tail == '>')
      return std::string(1, char(byte));
    return p;
  }

 private:
  int find(const std::string& s) const {
    const auto it = id_.find(s);
    return it == id_.end() ? -1 : it->second;
  }
  // Byte fallback: ids 3..258 are the raw bytes in llama2.c's vocabularies.
  int byte_id(unsigned char b) const {
    const int id = 3 + int(b);
    LOWBIT_CHECK(id < size(), "llama2c::Tokenizer::encode", "byte ", int(b), " has no piece and the vocabulary (",
                 size(), ") has no byte fallback for it");
    return id;
  }

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int> id_;
};

}  // namespace lowbit::llama2c
