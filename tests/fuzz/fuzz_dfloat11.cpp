// libFuzzer target for the DFloat11 decoder: the input is a serialized
// Dfloat11Matrix (layout below); every field is hostile. The target must
// either decode or throw lowbit::error, never read or write out of bounds
// (built with -fsanitize=fuzzer,address,undefined; see README "Fuzzing").
//
//   u16 rows | u16 cols | u32 block | u8 code_lengths[256] | u32 n | u64 block_start[n]
//   | u32 e | u8 exponents[e] | u8 sign_mantissa[rest]          (little endian)
//
// With LOWBIT_FUZZ_SEEDS=<dir> in the environment, LLVMFuzzerInitialize
// writes valid compressed tensors there first, as a seed corpus.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <lowbit/codec/dfloat11.hpp>

using namespace lowbit;

namespace {

struct Reader {
  const std::uint8_t* p;
  std::size_t left;
  template <class T>
  bool get(T& v) {
    if (left < sizeof(T)) return false;
    std::memcpy(&v, p, sizeof(T));
    p += sizeof(T), left -= sizeof(T);
    return true;
  }
};

template <class T>
void put(std::vector<std::uint8_t>& out, T v) {
  const auto* b = reinterpret_cast<const std::uint8_t*>(&v);
  out.insert(out.end(), b, b + sizeof(T));
}

std::vector<std::uint8_t> serialize(const Dfloat11Matrix& d) {
  std::vector<std::uint8_t> out;
  put(out, std::uint16_t(d.rows));
  put(out, std::uint16_t(d.cols));
  put(out, std::uint32_t(d.block));
  out.insert(out.end(), d.code_lengths.begin(), d.code_lengths.end());
  put(out, std::uint32_t(d.block_start.size()));
  for (auto b : d.block_start) put(out, b);
  put(out, std::uint32_t(d.exponents.size()));
  out.insert(out.end(), d.exponents.begin(), d.exponents.end());
  out.insert(out.end(), d.sign_mantissa.begin(), d.sign_mantissa.end());
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = std::getenv("LOWBIT_FUZZ_SEEDS");
  if (!dir) return 0;
  std::mt19937 rng(1);
  for (int i = 0; i < 16; ++i) {
    const std::size_t rows = 1 + rng() % 8, cols = 1 + rng() % 700;
    std::normal_distribution<float> nd(0.0f, 0.02f * float(1 + i % 4));
    std::vector<bf16> w(rows * cols);
    for (auto& v : w) v = bf16::from_float(i % 5 == 4 ? float(rng() % 3) : nd(rng));
    const auto d = dfloat11::compress(ConstMatrixView<bf16>(w.data(), rows, cols), {std::size_t(16) << (i % 6)});
    const auto bytes = serialize(d);
    const std::string path = std::string(dir) + "/seed" + std::to_string(i);
    if (FILE* f = std::fopen(path.c_str(), "wb")) {
      std::fwrite(bytes.data(), 1, bytes.size(), f);
      std::fclose(f);
    }
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Reader r{data, size};
  Dfloat11Matrix d;
  std::uint16_t rows, cols;
  std::uint32_t block, n, e;
  if (!r.get(rows) || !r.get(cols) || !r.get(block)) return 0;
  d.rows = rows, d.cols = cols, d.block = block;
  for (auto& l : d.code_lengths)
    if (!r.get(l)) return 0;
  if (!r.get(n) || n > r.left / 8) return 0;
  d.block_start.resize(n);
  for (auto& b : d.block_start) r.get(b);
  if (!r.get(e) || e > r.left) return 0;
  d.exponents.assign(r.p, r.p + e);
  r.p += e, r.left -= e;
  d.sign_mantissa.assign(r.p, r.p + r.left);
  try {
    const auto out = dfloat11::decompress(d);
    std::vector<float> x(d.cols, 1.0f), y(d.rows);
    gemv(d, x, span<float>(y));
    if (out.size() != d.size()) std::abort();
  } catch (const lowbit::error&) {
  }
  return 0;
}
