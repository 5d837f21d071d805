// llama2.c checkpoint and tokenizer loaders (model/llama2c.hpp): round trips
// of synthetic files, and every malformed file a clear lowbit::error.
#include <cstring>
#include <random>
#include <sstream>

#include <lowbit/model/llama2c.hpp>

#include "test_util.hpp"

using namespace lowbit;

namespace {

// A llama2.c checkpoint of random weights, as bytes.
std::string checkpoint_bytes(const llama2c::Config& c, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::string out;
  auto put = [&](const void* p, std::size_t n) { out.append(static_cast<const char*>(p), n); };
  const std::int32_t h[7] = {c.dim, c.hidden, c.layers, c.heads, c.kv_heads, c.shared_classifier ? c.vocab : -c.vocab,
                             c.seq_len};
  put(h, sizeof h);
  const std::uint64_t floats = (llama2c::file_bytes(c) - 28) / 4;
  for (std::uint64_t i = 0; i < floats; ++i) {
    const float v = nd(rng);
    put(&v, 4);
  }
  return out;
}

llama2c::Checkpoint parse(const std::string& bytes) {
  std::istringstream in(bytes);
  return llama2c::read_checkpoint(in, bytes.size());
}

llama2c::Config tiny(bool shared) {
  llama2c::Config c;
  c.dim = 16, c.hidden = 24, c.layers = 2, c.heads = 4, c.kv_heads = 2, c.vocab = 11, c.seq_len = 6;
  c.shared_classifier = shared;
  return c;
}

// A tokenizer file of these pieces and scores.
std::string tokenizer_file(const std::vector<std::pair<std::string, float>>& v) {
  std::string out;
  const std::int32_t max_len = 8;
  out.append(reinterpret_cast<const char*>(&max_len), 4);
  for (const auto& [p, s] : v) {
    const auto len = std::int32_t(p.size());
    out.append(reinterpret_cast<const char*>(&s), 4);
    out.append(reinterpret_cast<const char*>(&len), 4);
    out += p;
  }
  return out;
}

// llama2.c's layout: the 3 specials, 256 byte pieces, then `extra`.
std::string tokenizer_bytes(const std::vector<std::pair<std::string, float>>& extra) {
  std::vector<std::pair<std::string, float>> v = {{"<unk>", 0}, {"<s>", 0}, {"</s>", 0}};
  for (int b = 0; b < 256; ++b) {
    char p[8];
    std::snprintf(p, sizeof p, "<0x%02X>", b);
    v.push_back({p, 0});
  }
  v.insert(v.end(), extra.begin(), extra.end());
  return tokenizer_file(v);
}

llama2c::Tokenizer parse_tokenizer(const std::string& bytes, int vocab) {
  std::istringstream in(bytes);
  return llama2c::Tokenizer(in, bytes.size(), vocab);
}

}  // namespace

TEST_CASE("llama2c: checkpoints load in llama2.c's tensor order, shared or separate classifier", "[llama2c]") {
  for (bool shared : {true, false}) {
    const llama2c::Config c = tiny(shared);
    const std::string bytes = checkpoint_bytes(c, 7);
    REQUIRE(bytes.size() == llama2c::file_bytes(c));
    const llama2c::Checkpoint m = parse(bytes);
    REQUIRE(m.config.dim == 16);
    REQUIRE(m.config.kv_dim() == 8);
    REQUIRE(m.config.shared_classifier == shared);
    REQUIRE(m.layers.size() == 2);
    // Spot-check offsets: the embedding first, layer 1's wk after all wq,
    // rms_final after all w3, wcls last.
    auto at = [&](std::size_t float_index) {
      float v;
      std::memcpy(&v, bytes.data() + 28 + 4 * float_index, 4);
      return v;
    };
    const std::size_t D = 16, H = 24, KV = 8, V = 11, L = 2;
    REQUIRE(m.embedding(3, 5) == at(3 * D + 5));
    const std::size_t wk = V * D + L * D + L * D * D;
    REQUIRE(m.layers[1].wk(2, 3) == at(wk + KV * D + 2 * D + 3));
    const std::size_t w3 = wk + 2 * L * KV * D + L * D * D + L * D + 2 * L * H * D;
    REQUIRE(m.layers[1].w3(H - 1, D - 1) == at(w3 + L * H * D - 1));
    REQUIRE(m.rms_final[D - 1] == at(w3 + L * H * D + D - 1));
    if (shared) {
      REQUIRE(m.wcls.rows() == 0);
      REQUIRE(&m.classifier() == &m.embedding);
    } else {
      REQUIRE(m.wcls(V - 1, D - 1) == at((bytes.size() - 28) / 4 - 1));
      REQUIRE(&m.classifier() == &m.wcls);
    }
  }
}

TEST_CASE("llama2c: truncated, padded, corrupted and inconsistent checkpoints are errors", "[llama2c][bad]") {
  const std::string good = checkpoint_bytes(tiny(false), 3);
  for (std::size_t n = 0; n < good.size(); n += (n < 64 ? 1 : 37)) REQUIRE_THROWS_AS(parse(good.substr(0, n)), error);
  REQUIRE_THROWS_AS(parse(good + std::string(4, '\0')), error);
  auto with_header = [&](int field, std::int32_t v) {
    std::string b = good;
    std::memcpy(b.data() + 4 * field, &v, 4);
    return b;
  };
  for (auto [field, v] : {std::pair{0, 0}, {0, -16}, {1, 0}, {2, 0}, {3, 0}, {4, 0}, {5, 0}, {6, 0},
                          {3, 5},                        // heads do not divide dim
                          {4, 3},                        // kv_heads do not divide heads
                          {0, 1 << 30}, {5, INT32_MIN},  // absurd sizes: rejected before any allocation
                          {1, 25}})                      // consistent but the file size disagrees
    REQUIRE_THROWS_AS(parse(with_header(field, v)), error);
  {
    llama2c::Config odd = tiny(true);
    odd.heads = 16, odd.kv_heads = 16;  // head size 1: RoPE needs pairs
    REQUIRE_THROWS_AS(parse(checkpoint_bytes(odd, 1)), error);
  }
  std::string nan = good;
  const float q = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(nan.data() + 28 + 4 * 200, &q, 4);
  REQUIRE_THROWS_WITH(parse(nan), Catch::Contains("is nan"));
  // Random corruption of the header and the first weights: a model or an
  // error, never a crash (ASan/UBSan builds run this too).
  std::mt19937 rng(5);
  for (int i = 0; i < 3000; ++i) {
    std::string b = good;
    for (int k = 0; k < 3; ++k) b[rng() % 64] = char(rng());
    try {
      (void)parse(b);
    } catch (const error&) {
    }
  }
  REQUIRE_THROWS_AS(llama2c::load_checkpoint("/nonexistent/model.bin"), error);
}

TEST_CASE("llama2c: tokenizer encodes with llama2.c's merges and byte fallback, decodes", "[llama2c]") {
  const std::string bytes = tokenizer_bytes({{" ", 0}, {"a", 0}, {"b", 0}, {"ab", 1}, {" ab", 2}, {"ba", 3}, {"\xc3\xa9", 0}});
  const int V = 259 + 7;
  const llama2c::Tokenizer t = parse_tokenizer(bytes, V);
  const int sp = 259, a = 260, b = 261, ab = 262, sab = 263, ba = 264, e = 265;
  REQUIRE(t.encode("") == std::vector<int>{1});
  // " ab": pairs (" ", a) no piece, (a, b) -> ab, then (" ", ab) -> " ab".
  REQUIRE(t.encode("ab") == std::vector<int>{1, sab});
  // "bab": (b, a) -> ba scores 3, better than ab's 1; leftmost first.
  REQUIRE(t.encode("bab") == std::vector<int>{1, sp, ba, b});
  // A UTF-8 character with a piece, and one without: its bytes (3 + byte).
  REQUIRE(t.encode("\xc3\xa9") == std::vector<int>{1, sp, e});
  REQUIRE(t.encode("\xc3\xa8") == std::vector<int>{1, sp, 3 + 0xc3, 3 + 0xa8});
  REQUIRE(t.decode(1, sab) == "ab");  // no leading space after BOS
  REQUIRE(t.decode(a, sab) == " ab");
  REQUIRE(t.decode(a, 3 + 'A') == "A");
  REQUIRE(t.piece(ab) == "ab");
}

TEST_CASE("llama2c: truncated and malformed tokenizers are errors", "[llama2c][bad]") {
  const std::string good = tokenizer_bytes({{" ", 0}, {"ab", 1}});
  const int V = 261;
  REQUIRE_NOTHROW(parse_tokenizer(good, V));
  for (std::size_t n = 0; n < good.size(); n += (n < 64 ? 1 : 13)) REQUIRE_THROWS_AS(parse_tokenizer(good.substr(0, n), V), error);
  REQUIRE_THROWS_AS(parse_tokenizer(good + "x", V), error);   // trailing bytes
  REQUIRE_THROWS_AS(parse_tokenizer(good, V + 1), error);     // fewer tokens than the model's vocab
  REQUIRE_THROWS_AS(parse_tokenizer(good, 0), error);
  auto set = [&](std::size_t at, std::int32_t v) {
    std::string b = good;
    std::memcpy(b.data() + at, &v, 4);
    return b;
  };
  REQUIRE_THROWS_AS(parse_tokenizer(set(0, 0), V), error);        // max_token_length 0
  REQUIRE_THROWS_AS(parse_tokenizer(set(8, -1), V), error);       // negative length of token 0
  REQUIRE_THROWS_AS(parse_tokenizer(set(8, 1 << 30), V), error);  // longer than max_token_length
  const float inf = std::numeric_limits<float>::infinity();
  std::string b = good;
  std::memcpy(b.data() + 4, &inf, 4);
  REQUIRE_THROWS_AS(parse_tokenizer(b, V), error);
  // A vocabulary too small for the byte fallback fails at encode, clearly.
  const llama2c::Tokenizer small = parse_tokenizer(tokenizer_file({{"<unk>", 0}, {"<s>", 0}, {"</s>", 0}, {" ", 0}}), 4);
  REQUIRE_THROWS_AS(small.encode("\xff"), error);
}
