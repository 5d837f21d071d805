// KIVI: a 2-bit (or 4-bit) KV cache, tuning-free (Liu et al., "KIVI: A
// Tuning-Free Asymmetric 2bit Quantization for KV Cache", 2024).
//
// Keys are quantized per channel and values per token (Sec. 3.2: key
// outliers sit in fixed channels, values have none), both asymmetric in
// groups of G, with the newest tokens kept in full precision (Sec. 3.3).
// Streaming policy, the reference code's (models/llama_kivi.py):
//
//   keys:   the window collects tokens; when it holds R, all R are quantized
//           (R / G blocks of G tokens, one scale and min per channel each)
//           and the window empties. Keys window: T mod R tokens.
//   values: the window holds the newest min(T, R) tokens; a token leaving it
//           is quantized on its own (one scale and min per G channels).
//
// A prefill of T tokens quantizes the same tokens (the first T - T mod R
// keys, the first max(0, T - R) values) with the same groups, so
// append_bulk() and T calls of append() build the same cache. One difference
// from the reference: it quantizes a full keys window after that step's
// attention, this cache on append, so the step that fills the window attends
// to those R keys quantized.
//
// The window is fp32 ("full precision"); statistics are fp16 as in the
// reference, so inputs must lie within fp16's range (|x| <= 65504).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "../core/error.hpp"
#include "../core/types.hpp"
#include "../core/view.hpp"
#include "../format/kv_cache.hpp"
#include "group_fit.hpp"

namespace lowbit::kivi {

struct Options {
  int heads = 32;       // query heads
  int kv_heads = 8;     // key/value heads; heads / kv_heads query heads share one (GQA)
  int head_dim = 128;   // a multiple of 8 and of group
  int bits = 2;         // 2 or 4
  int group = 32;       // G: tokens per key group, channels per value group (a multiple of 8)
  int residual = 128;   // R: full-precision window, a multiple of G
  std::size_t max_tokens = 0;  // capacity, 0 for none (memory is then reserved as the cache grows)
};

inline void check_options(const Options& o) {
  const char* w = "kivi::Options";
  LOWBIT_CHECK(o.heads >= 1 && o.kv_heads >= 1, w, "heads (", o.heads, ") and kv_heads (", o.kv_heads,
               ") must be >= 1");
  LOWBIT_CHECK(o.heads % o.kv_heads == 0, w, "kv_heads (", o.kv_heads, ") must divide heads (", o.heads, ")");
  LOWBIT_CHECK(o.head_dim >= 8 && o.head_dim % 8 == 0, w, "head_dim must be a positive multiple of 8, got ",
               o.head_dim);
  LOWBIT_CHECK(o.bits == 2 || o.bits == 4, w, "bits must be 2 or 4, got ", o.bits);
  LOWBIT_CHECK(o.group >= 8 && o.group % 8 == 0 && o.head_dim % o.group == 0, w, "group (", o.group,
               ") must be a multiple of 8 dividing head_dim (", o.head_dim, ")");
  LOWBIT_CHECK(o.residual >= o.group && o.residual % o.group == 0, w, "residual (", o.residual,
               ") must be a positive multiple of group (", o.group, ")");
}

namespace detail {

// KIVI's group quantizer: scale = (max - min) / (2^b - 1), code =
// round_half_even((x - min) / scale) clamped; scale and min are rounded to
// fp16 first and the codes computed from the stored values. n values at
// stride `stride`.
inline void quantize_group(const float* x, std::size_t n, std::size_t stride, int bits, std::uint16_t& scale,
                           std::uint16_t& min, std::uint8_t* codes) {
  float lo = x[0], hi = x[0];
  for (std::size_t i = 1; i < n; ++i) {
    lo = std::min(lo, x[i * stride]);
    hi = std::max(hi, x[i * stride]);
  }
  const float top = float((1 << bits) - 1);
  const fp16 s = fp16::from_float((hi - lo) / top), m = fp16::from_float(lo);
  scale = s.bits;
  min = m.bits;
  const float sf = s.to_float(), mf = m.to_float();
  for (std::size_t i = 0; i < n; ++i)
    codes[i] = sf > 0 ? std::uint8_t(std::clamp(lowbit::detail::round_even((x[i * stride] - mf) / sf), 0.0f, top))
                      : std::uint8_t(0);
}

// Appends one token's dim codes, starting a page when the last is full.
inline void store_token_codes(KvCodes& c, const std::uint8_t* codes) {
  const std::size_t P = c.page_tokens(), within = c.tokens % P;
  if (within == 0) c.pages.resize(c.pages.size() + c.page_bytes(), 0);
  bitpack::pack_range(codes, c.page_codes(), c.bits, within * c.dim, c.dim,
                      c.pages.data() + (c.tokens / P) * c.page_bytes());
  ++c.tokens;
}

// Appends `group` tokens (rows of x at stride ld) quantized per channel.
inline void append_channel_block(KvCodes& c, const float* x, std::size_t ld) {
  const std::size_t G = c.group, d = c.dim;
  std::vector<std::uint8_t> codes(G * d);  // [c][t]
  const std::size_t s0 = c.scale.size();
  c.scale.resize(s0 + d);
  c.min.resize(s0 + d);
  for (std::size_t ch = 0; ch < d; ++ch)
    quantize_group(x + ch, G, ld, c.bits, c.scale[s0 + ch], c.min[s0 + ch], codes.data() + ch * G);
  std::vector<std::uint8_t> row(d);
  for (std::size_t t = 0; t < G; ++t) {
    for (std::size_t ch = 0; ch < d; ++ch) row[ch] = codes[ch * G + t];
    store_token_codes(c, row.data());
  }
}

// Appends one token quantized per group of `group` channels.
inline void append_token(KvCodes& c, const float* x) {
  const std::size_t G = c.group, d = c.dim;
  std::vector<std::uint8_t> codes(d);
  for (std::size_t g = 0; g < d / G; ++g) {
    c.scale.push_back(0);
    c.min.push_back(0);
    quantize_group(x + g * G, G, 1, c.bits, c.scale.back(), c.min.back(), codes.data() + g * G);
  }
  store_token_codes(c, codes.data());
}

}  // namespace detail

class Cache {
 public:
  // One kv head: its quantized keys and values and its fp32 windows. The
  // values window is a ring of R rows: window token i (0 = oldest) is row
  // (value_start + i) mod R.
  struct Head {
    KvCodes keys, values;
    std::vector<float> key_window, value_window;  // R x head_dim each
    std::size_t key_window_tokens = 0, value_start = 0, value_window_tokens = 0;
  };

  explicit Cache(const Options& o) : o_(o) {
    heads_.assign(std::size_t(o.kv_heads), empty_head(o));
    if (o.max_tokens)
      for (Head& h : heads_) {
        const std::size_t pages = (o.max_tokens + h.keys.page_tokens() - 1) / h.keys.page_tokens();
        const std::size_t stats = (o.max_tokens / std::size_t(o.group) + 1) * std::size_t(o.head_dim);
        for (KvCodes* c : {&h.keys, &h.values}) {
          c->pages.reserve(pages * c->page_bytes());
          c->scale.reserve(stats);
          c->min.reserve(stats);
        }
      }
  }

  // A head holding no token: the codes' groupings and widths, R x head_dim
  // windows.
  static Head empty_head(const Options& o) {
    check_options(o);
    const std::size_t d = std::size_t(o.head_dim), R = std::size_t(o.residual);
    Head h;
    h.keys.axis = KvAxis::channel;
    h.values.axis = KvAxis::token;
    for (KvCodes* c : {&h.keys, &h.values}) {
      c->bits = o.bits;
      c->dim = d;
      c->group = std::size_t(o.group);
    }
    h.key_window.assign(R * d, 0.0f);
    h.value_window.assign(R * d, 0.0f);
    return h;
  }


  // A cache rebuilt from its parts (io/file.hpp's KV-cache snapshot): the
  // heads as head(h) shows them after `tokens` tokens. Every size, the
  // groupings and the windows' values are checked against the streaming
  // policy above, so a restored cache behaves as the one that was saved.
  // Nothing is reserved for o.max_tokens (the cache grows as it streams).
  static Cache restore(const Options& o, std::size_t tokens, std::vector<Head> heads) {
    check_options(o);
    const char* w = "kivi::Cache::restore";
    LOWBIT_CHECK(heads.size() == std::size_t(o.kv_heads), w, heads.size(), " heads given, options say ", o.kv_heads);
    LOWBIT_CHECK(!o.max_tokens || tokens <= o.max_tokens, w, tokens, " tokens exceed max_tokens ", o.max_tokens);
    const std::size_t d = std::size_t(o.head_dim), R = std::size_t(o.residual), G = std::size_t(o.group);
    const std::size_t kq = tokens - tokens % R, vq = tokens > R ? tokens - R : 0;
    Cache c;
    c.o_ = o;
    c.heads_ = std::move(heads);
    c.tokens_ = tokens;
    for (std::size_t i = 0; i < c.heads_.size(); ++i) {
      const Head& h = c.heads_[i];
      const auto check_codes = [&](const KvCodes& q, KvAxis axis, std::size_t n, std::size_t stats) {
        LOWBIT_CHECK(q.axis == axis && q.bits == o.bits && q.dim == d && q.group == G, w,
                     "head ", i, ": codes of another grouping or width than the options'");
        LOWBIT_CHECK(q.tokens == n && q.pages.size() == (n + q.page_tokens() - 1) / q.page_tokens() * q.page_bytes() &&
                         q.scale.size() == stats && q.min.size() == stats,
                     w, "head ", i, ": ", q.tokens, " tokens in ", q.pages.size(), " page bytes and ", q.scale.size(),
                     "/", q.min.size(), " statistics; ", tokens, " tokens need ", n, " quantized");
      };
      check_codes(h.keys, KvAxis::channel, kq, kq / G * d);
      check_codes(h.values, KvAxis::token, vq, vq * (d / G));
      LOWBIT_CHECK(h.key_window.size() == R * d && h.value_window.size() == R * d &&
                       h.key_window_tokens == tokens % R && h.value_window_tokens == tokens - vq && h.value_start < R,
                   w, "head ", i, ": windows do not match ", tokens, " tokens with R = ", R);
      for (bool keys : {true, false})
        for (std::size_t t = 0; t < (keys ? h.key_window_tokens : h.value_window_tokens); ++t)
          check_values(c.window_row(int(i), keys, t), d, keys ? "key window" : "value window");
    }
    return c;
  }

  // Same options and the same cache contents (windows compared in order).
  friend bool operator==(const Cache& a, const Cache& b) {
    const Options &x = a.o_, &y = b.o_;
    if (x.heads != y.heads || x.kv_heads != y.kv_heads || x.head_dim != y.head_dim || x.bits != y.bits ||
        x.group != y.group || x.residual != y.residual || x.max_tokens != y.max_tokens || a.tokens_ != b.tokens_)
      return false;
    for (int h = 0; h < x.kv_heads; ++h) {
      const Head &p = a.head(h), &q = b.head(h);
      if (p.keys != q.keys || p.values != q.values || p.key_window_tokens != q.key_window_tokens ||
          p.value_window_tokens != q.value_window_tokens)
        return false;
      for (bool keys : {true, false})
        for (std::size_t t = 0; t < (keys ? p.key_window_tokens : p.value_window_tokens); ++t)
          if (!std::equal(a.window_row(h, keys, t), a.window_row(h, keys, t) + x.head_dim, b.window_row(h, keys, t)))
            return false;
    }
    return true;
  }
  friend bool operator!=(const Cache& a, const Cache& b) { return !(a == b); }

  const Options& options() const noexcept { return o_; }
  std::size_t tokens() const noexcept { return tokens_; }
  const Head& head(int h) const {
    LOWBIT_CHECK(h >= 0 && std::size_t(h) < heads_.size(), "kivi::Cache::head", "head ", h, " of ", heads_.size());
    return heads_[std::size_t(h)];
  }
  // Window token i (0 = oldest) of head h's keys or values: head_dim floats.
  const float* window_row(int h, bool keys, std::size_t i) const {
    const Head& x = head(h);
    const std::size_t n = keys ? x.key_window_tokens : x.value_window_tokens;
    LOWBIT_CHECK(i < n, "kivi::Cache::window_row", keys ? "key" : "value", " window token ", i, " of ", n);
    const std::size_t d = std::size_t(o_.head_dim), R = std::size_t(o_.residual);
    return keys ? &x.key_window[i * d] : &x.value_window[((x.value_start + i) % R) * d];
  }

  // Bytes held: codes, statistics and both fp32 windows, all heads.
  std::size_t memory_bytes() const noexcept {
    std::size_t b = 0;
    for (const Head& h : heads_)
      b += h.keys.bytes() + h.values.bytes() + 4 * (h.key_window.size() + h.value_window.size());
    return b;
  }

  // One decoding step: k and v hold kv_heads x head_dim values each.
  void append(const float* k, const float* v) { append_bulk(k, v, 1); }

  // A prefill: k and v are tokens x (kv_heads * head_dim), row-major (the
  // K and V projections' output). Same cache as `tokens` calls of append().
  void append_bulk(const float* k, const float* v, std::size_t tokens) {
    const std::size_t d = std::size_t(o_.head_dim), R = std::size_t(o_.residual), ld = d * heads_.size();
    LOWBIT_CHECK(!o_.max_tokens || tokens <= o_.max_tokens - tokens_, "kivi::Cache::append", "appending ", tokens,
                 " tokens to ", tokens_, " exceeds max_tokens ", o_.max_tokens);
    if (tokens == 0) return;
    LOWBIT_CHECK(k && v, "kivi::Cache::append", "null key or value pointer");
    check_values(k, tokens * ld, "key");
    check_values(v, tokens * ld, "value");
    for (std::size_t hi = 0; hi < heads_.size(); ++hi) {
      Head& h = heads_[hi];
      const float* kh = k + hi * d;
      const float* vh = v + hi * d;
      // Keys: fill the window, quantizing it when full; whole windows'
      // worth of input go straight to the quantized part.
      for (std::size_t i = 0; i < tokens;) {
        if (h.key_window_tokens == 0 && tokens - i >= R) {
          for (std::size_t b = 0; b < R; b += std::size_t(o_.group))
            detail::append_channel_block(h.keys, kh + (i + b) * ld, ld);
          i += R;
          continue;
        }
        const std::size_t take = std::min(R - h.key_window_tokens, tokens - i);
        for (std::size_t j = 0; j < take; ++j)
          std::memcpy(&h.key_window[(h.key_window_tokens + j) * d], kh + (i + j) * ld, d * sizeof(float));
        h.key_window_tokens += take;
        i += take;
        if (h.key_window_tokens == R) {
          for (std::size_t b = 0; b < R; b += std::size_t(o_.group))
            detail::append_channel_block(h.keys, &h.key_window[b * d], d);
          h.key_window_tokens = 0;
        }
      }
      // Values: the oldest tokens beyond the newest R leave the window
      // (or skip it) quantized, oldest first.
      const std::size_t leave = h.value_window_tokens + tokens > R ? h.value_window_tokens + tokens - R : 0;
      const std::size_t from_window = std::min(leave, h.value_window_tokens);
      for (std::size_t j = 0; j < from_window; ++j) {
        detail::append_token(h.values, &h.value_window[h.value_start * d]);
        h.value_start = (h.value_start + 1) % R;
      }
      h.value_window_tokens -= from_window;
      const std::size_t skip = leave - from_window;
      for (std::size_t j = 0; j < skip; ++j) detail::append_token(h.values, vh + j * ld);
      for (std::size_t j = skip; j < tokens; ++j) {
        const std::size_t slot = (h.value_start + h.value_window_tokens) % R;
        std::memcpy(&h.value_window[slot * d], vh + j * ld, d * sizeof(float));
        ++h.value_window_tokens;
      }
    }
    tokens_ += tokens;
  }

  // Head h's keys or values as attention sees them, tokens x head_dim:
  // quantized tokens dequantized, window tokens exact. For checking.
  Matrix keys(int h) const { return rows(h, true); }
  Matrix values(int h) const { return rows(h, false); }

 private:
  static void check_values(const float* x, std::size_t n, const char* what) {
    for (std::size_t i = 0; i < n; ++i)
      LOWBIT_CHECK(std::isfinite(x[i]) && std::fabs(x[i]) <= 65504.0f, "kivi::Cache::append", what, " element ", i,
                   " is ", x[i], ": must be finite and within fp16 range (|x| <= 65504; statistics are fp16)");
  }

  Matrix rows(int h, bool keys) const {
    const std::size_t d = std::size_t(o_.head_dim);
    const KvCodes& c = keys ? head(h).keys : head(h).values;
    Matrix m(tokens_, d);
    for (std::size_t t = 0; t < c.tokens; ++t)
      for (std::size_t j = 0; j < d; ++j) m(t, j) = c.value(t, j);
    for (std::size_t t = c.tokens; t < tokens_; ++t) {
      const float* src = window_row(h, keys, t - c.tokens);
      for (std::size_t j = 0; j < d; ++j) m(t, j) = src[j];
    }
    return m;
  }

  Cache() = default;  // restore() fills in the parts it checked

  Options o_;
  std::vector<Head> heads_;
  std::size_t tokens_ = 0;
};

}  // namespace lowbit::kivi
