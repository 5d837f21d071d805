// libFuzzer target for the file loader (io/file.hpp): the input is a whole
// file. It must load or throw lowbit::error, never read out of bounds or
// allocate without bound; whatever loads must then survive the kernels
// (dequantize, gemv, DFloat11 decompress; attention and append on a KV-cache
// snapshot), which trust validate() and Cache::restore().
// Checksums are off for the kernels' pass, so that mutations reach the
// structure checks instead of stopping at a checksum mismatch.
//
// With LOWBIT_FUZZ_SEEDS=<dir> in the environment, LLVMFuzzerInitialize
// writes small valid lowbit files there first, as a seed corpus.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <lowbit/lowbit.hpp>

using namespace lowbit;

namespace {

Matrix weights(std::size_t rows, std::size_t cols, unsigned seed) {
  Matrix w(rows, cols);
  for (std::size_t i = 0; i < rows * cols; ++i) w.data()[i] = 0.05f * float(((i + seed) * 2654435761u) % 1000) / 1000.0f - 0.025f;
  return w;
}

void run(const kivi::Cache& c) {  // a KV-cache snapshot: attend, then stream on
  const kivi::Options& o = c.options();
  std::vector<float> q(std::size_t(o.heads * o.head_dim), 0.5f), out(q.size());
  attention(c, q.data(), out.data());
  if (o.max_tokens && c.tokens() >= o.max_tokens) return;
  kivi::Cache more = c;
  std::vector<float> kv(std::size_t(o.kv_heads * o.head_dim), 0.25f);
  more.append(kv.data(), kv.data());
  attention(more, q.data(), out.data());
}

template <class T>
void run(const T& f) {
  std::vector<float> x(f.cols, 1.0f), y(f.rows);
  gemv(f, x, y);
  if constexpr (std::is_same_v<T, Dfloat11Matrix>) {
    (void)dfloat11::decompress(f);
  } else {
    (void)dequantize(f);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = std::getenv("LOWBIT_FUZZ_SEEDS");
  if (!dir) return 0;
  for (unsigned i = 0; i < 8; ++i) {
    const std::size_t rows = 1 + i, cols = 16 * (1 + i % 3) + 8 * (i % 2);
    const Matrix w = weights(rows, cols, i);
    io::Items items;
    rtn::Options o;
    o.bits = i % 2 ? 3 : 4, o.group = 8, o.symmetric = i % 3 == 0;
    items["q"] = rtn::quantize(w, o);
    if (i % 2) {
      spqr::Options so;
      so.outlier_threshold = 0.5f;
      so.act_order = i % 4 == 1;
      items["s"] = spqr::quantize(w, Eigen::MatrixXd::Identity(Eigen::Index(cols), Eigen::Index(cols)), so);
    } else {
      std::vector<bf16> b(rows * cols);
      for (std::size_t k = 0; k < b.size(); ++k) b[k] = bf16::from_float(w.data()[k]);
      items["d"] = dfloat11::compress(ConstMatrixView<bf16>(b.data(), rows, cols), {16});
    }
    items["m"] = weights(1, cols, i + 1);
    vptq::Options vo;  // input axis (cols is a multiple of 8); every other seed with residual and normalization
    vo.vector = 8, vo.codebook = 2, vo.axis = VqAxis::input;  // as many centroids as the fewest vectors
    if (i % 2 == 0) vo.residual_codebook = 2, vo.normalize = true;
    items["v"] = vptq::quantize(w, Eigen::MatrixXd::Identity(Eigen::Index(cols), Eigen::Index(cols)), vo);
    kivi::Options ko;  // a KV-cache snapshot mid-stream: windows partly full, the value ring wrapped
    ko.heads = 2, ko.kv_heads = 1 + i % 2, ko.head_dim = 32, ko.group = 16, ko.residual = 32, ko.bits = i % 2 ? 4 : 2;
    ko.heads = 2 * ko.kv_heads;
    kivi::Cache kc(ko);
    const Matrix kv = weights(37 + 5 * i, std::size_t(ko.kv_heads * ko.head_dim), i + 7);
    kc.append_bulk(kv.data(), kv.data(), kv.rows());
    items["kv"] = std::move(kc);
    io::save(std::string(dir) + "/seed" + std::to_string(i), items);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    (void)io::parse(data, size);  // checksums on
  } catch (const lowbit::error&) {
  }
  try {
    io::LoadOptions opt;
    opt.verify_checksums = false;
    const io::Items items = io::parse(data, size, opt);
    for (const auto& [name, item] : items)
      std::visit(
          [](const auto& f) {
            if constexpr (!std::is_same_v<std::decay_t<decltype(f)>, Matrix>) run(f);
          },
          item);
  } catch (const lowbit::error&) {
  }
  return 0;
}
