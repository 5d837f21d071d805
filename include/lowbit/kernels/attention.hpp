// Decode attention: the queries of one new token against a KV cache, either
// a KIVI cache (quant/kivi.hpp) or a dense fp32 / bf16 cache. Query head h
// reads kv head h / (heads / kv_heads) (GQA, as llama's repeat_kv). Work is
// split over (kv head, up to four of its query heads) and runs on
// lowbit::parallel_for; kernels/attention_kernel.hpp has the arithmetic.
//
// An empty cache gives zero outputs (an empty weighted sum).
#pragma once

#include <cmath>
#include <cstddef>

#include "../core/parallel.hpp"
#include "../core/types.hpp"
#include "../quant/kivi.hpp"
#include "dispatch.hpp"

namespace lowbit {

struct AttentionOptions {
  float scale = 0.0f;  // softmax(scale * q . k); 0 means 1 / sqrt(head_dim)
  int threads = 0;     // 0: lowbit::num_threads()
  // int8: over a KIVI cache's quantized tokens, the key-scaled query of each
  // key block and the scaled probabilities of each 32-token tile are int8
  // (one step each) and the code sums integer dot products
  // (kernels/attention_kernel.hpp), when head_dim and the value group are
  // multiples of 32. fp32: exact up to float rounding. The residual window
  // and dense caches are fp32 either way.
  Activations activations = Activations::fp32;
};

// A dense cache's shape. Its K and V arrays are kv_heads x capacity x
// head_dim: each head's rows contiguous, as paged caches keep them (a
// token-major array of all heads would put a page boundary between every two
// rows of a head, which the hardware prefetchers do not cross). The first
// `tokens` rows of each head are attended; capacity 0 means tokens (a cache
// filled to its end), a decoder preallocating seq_len rows passes seq_len.
struct AttentionShape {
  int heads = 32, kv_heads = 8, head_dim = 128;
  std::size_t capacity = 0;
};

namespace detail {

// Validates the queries and runs the jobs make(kv_head) describes.
template <class MakeJob>
void run_attention(int heads, int kv_heads, int head_dim, std::size_t tokens, const float* q, float* out,
                   const AttentionOptions& o, MakeJob make) {
  const char* where = "attention";
  LOWBIT_CHECK(heads >= 1 && kv_heads >= 1 && heads % kv_heads == 0, where, "kv_heads (", kv_heads,
               ") must divide heads (", heads, ")");
  LOWBIT_CHECK(head_dim >= 8 && head_dim % 8 == 0, where, "head_dim must be a positive multiple of 8, got ", head_dim);
  LOWBIT_CHECK(q && out, where, "null query or output pointer");
  const std::size_t d = std::size_t(head_dim);
  for (std::size_t i = 0; i < std::size_t(heads) * d; ++i)
    LOWBIT_CHECK(std::isfinite(q[i]), where, "query element ", i, " is ", q[i]);
  LOWBIT_CHECK(o.scale >= 0.0f && std::isfinite(o.scale), where, "scale must be finite and >= 0, got ", o.scale);
  LOWBIT_CHECK(o.activations == Activations::fp32 || o.activations == Activations::int8, where,
               "activations must be fp32 or int8, got ", int(o.activations));
  const float scale = o.scale > 0.0f ? o.scale : 1.0f / std::sqrt(float(head_dim));
  const int group = heads / kv_heads, chunks = (group + 3) / 4;
  const kernel_table& k = active_kernels();
  const int threads = threads_for(std::size_t(heads) * d, tokens, o.threads);  // a short context: one thread
  parallel_for(std::size_t(kv_heads * chunks), 1, threads, [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) {
      const int kh = int(i) / chunks, c = int(i) % chunks;
      AttendJob job = make(kh);
      const std::size_t h0 = std::size_t(kh * group + 4 * c);
      job.dim = d;
      job.heads = std::min(4, group - 4 * c);
      job.q = q + h0 * d;
      job.out = out + h0 * d;
      job.scale = scale;
      job.int8 = o.activations == Activations::int8;
      k.attend(job);
    }
  });
}

template <class T>
void dense_attention(const AttentionShape& s, const T* K, const T* V, std::size_t tokens, const float* q, float* out,
                     const AttentionOptions& o) {
  LOWBIT_CHECK(tokens == 0 || (K && V), "attention", "null key or value pointer");
  LOWBIT_CHECK(s.capacity == 0 || tokens <= s.capacity, "attention", "tokens (", tokens, ") exceed the capacity (",
               s.capacity, ")");
  constexpr auto kind = std::is_same_v<T, float> ? KvRows::Kind::f32 : KvRows::Kind::bf16;
  const std::size_t d = std::size_t(s.head_dim), rows = s.capacity ? s.capacity : tokens;
  run_attention(s.heads, s.kv_heads, s.head_dim, tokens, q, out, o, [&](int kh) {
    AttendJob j;
    j.keys[0] = {kind, tokens, K + std::size_t(kh) * rows * d, d, nullptr, 0};
    j.values[0] = {kind, tokens, V + std::size_t(kh) * rows * d, d, nullptr, 0};
    j.key_runs = j.value_runs = 1;
    return j;
  });
}

}  // namespace detail

// q: heads x head_dim; out: heads x head_dim.
inline void attention(const kivi::Cache& cache, const float* q, float* out, const AttentionOptions& o = {}) {
  const kivi::Options& opt = cache.options();
  const std::size_t d = std::size_t(opt.head_dim), R = std::size_t(opt.residual);
  detail::run_attention(opt.heads, opt.kv_heads, opt.head_dim, cache.tokens(), q, out, o, [&](int kh) {
    using K = detail::KvRows::Kind;
    const kivi::Cache::Head& h = cache.head(kh);
    detail::AttendJob j;
    const std::size_t n1 = std::min(h.value_window_tokens, R - h.value_start);
    j.keys[0] = {K::codes, h.keys.tokens, nullptr, 0, &h.keys, 0};
    j.keys[1] = {K::f32, h.key_window_tokens, h.key_window.data(), d, nullptr, 0};
    j.values[0] = {K::codes, h.values.tokens, nullptr, 0, &h.values, 0};
    j.values[1] = {K::f32, n1, h.value_window.data() + h.value_start * d, d, nullptr, 0};
    j.values[2] = {K::f32, h.value_window_tokens - n1, h.value_window.data(), d, nullptr, 0};
    j.key_runs = 2;
    j.value_runs = 3;
    return j;
  });
}

// Dense caches: K and V are kv_heads x capacity x head_dim (AttentionShape).
inline void attention(const AttentionShape& s, const float* K, const float* V, std::size_t tokens, const float* q,
                      float* out, const AttentionOptions& o = {}) {
  detail::dense_attention(s, K, V, tokens, q, out, o);
}
inline void attention(const AttentionShape& s, const bf16* K, const bf16* V, std::size_t tokens, const float* q,
                      float* out, const AttentionOptions& o = {}) {
  static_assert(sizeof(bf16) == 2, "bf16 is its bit pattern");
  detail::dense_attention(s, reinterpret_cast<const std::uint16_t*>(K), reinterpret_cast<const std::uint16_t*>(V),
                          tokens, q, out, o);
}

}  // namespace lowbit
