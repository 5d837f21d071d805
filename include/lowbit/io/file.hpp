// Storage of lowbit formats: save any set of named matrices and formats in
// one safetensors file (io/safetensors.hpp), load it back into memory or
// map it and run kernels on the mapping (zero-copy).
//
//   io::Items items;                        // name -> Matrix or any format
//   items["layers.0.wq"] = awq::quantize(W, cal);
//   items["norm"] = norm_weights;            // a plain Matrix: F32 tensor
//   io::save("model.lowbit.safetensors", items);
//   io::Items m = io::map("model.lowbit.safetensors");   // O(1) in file size
//   gemv(std::get<GroupQuantMatrix>(m.at("layers.0.wq")), x, y);
//
// File layout (version 2; version 1 stored SpQR's permutation and row
// pointers as 32-bit arrays). A standard safetensors file; lowbit's part is in
// the header's __metadata__ (string values only, as the format requires):
//
//   "lowbit.version"        "2"
//   "lowbit.format.<item>"  "<kind> key=value ...": the item's kind and
//                           parameters, e.g. "group_quant rows=4096 cols=4096
//                           bits=4 group=128 symmetric=0 scale_type=fp16"
//   "lowbit.xxh64.<tensor>" 16 lowercase hex digits: XXH64 (seed 0) of the
//                           tensor's bytes (io/xxhash.hpp), one per tensor
//   "lowbit.xxh64.__header__"  XXH64 of the header's content in a canonical
//                           form (detail::header_hash): tensor entries and
//                           the other metadata, so that a damaged name,
//                           shape or parameter is caught too
//
// An item of kind K stores each array of K's format header (the field table
// at the top of format/*.hpp) as the tensor "<item>.<field>", bytes exactly
// as in memory:
//
//   group_quant  codes U8 [M, row_bytes], scales F16|F32 [M, G],
//                zeros U8 [bytes] (asymmetric only)
//   spqr         perm U8 [bytes] (optional), codes U8 [M, row_bytes],
//                scale_codes U8 [n], zero_codes U8 [n],
//                stat_params F16 [row_blocks, G, 4], row_counts U8
//                [bytes], outlier_col U16 [nnz], outlier_val F16 [nnz];
//                the parameter count_bits gives row_counts' width
//   dfloat11     code_lengths U8 [256], block_start U64 [blocks + 1],
//                exponents U8 [bytes], sign_mantissa U8 [M, K]
//   vq           perm U32 [K] (optional), scale F16 [K], bias F16 [K]
//                (optional, together), and per codebook level <part><i>
//                (outlier0, outlier1, main0, main1): <part><i>.centroids
//                F16 [k, v], <part><i>.indices U8 [bytes]; the parameters
//                give axis, outlier_columns and each level's k
//   kivi         a KV-cache snapshot (quant/kivi.hpp), per kv head h<i>:
//                h<i>.keys.pages U8 [bytes], h<i>.keys.scale F16 [n],
//                h<i>.keys.min F16 [n], the same for h<i>.values, and the
//                fp32 windows h<i>.key_window F32 [T mod R, d],
//                h<i>.value_window F32 [min(T, R), d], oldest token first
//
// A Matrix is the F32 tensor "<item>" [M, K] with no format entry. Every
// tensor starts at a multiple of 64 bytes from the start of the file
// (padding tensors "__pad.<i>" fill the gaps). A reader of another version
// number is refused with a clear error; unknown kinds and parameters too.
//
// Loading checks everything before a kernel can see it: the safetensors
// layout, checksums (unless LoadOptions::verify_checksums is false), each
// tensor's dtype and shape against the item's parameters, then the format's
// own validate(). Files without lowbit metadata (checkpoints from elsewhere)
// load as Matrix items: F32 tensors in place, F16 and BF16 converted; a
// tensor of rank > 2 becomes (product of leading dims) x (last dim), one
// with a zero last dimension 0 x 0.
#pragma once

#include <algorithm>
#include <cstdio>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "../core/buffer.hpp"
#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/types.hpp"
#include "../core/view.hpp"
#include "../format/dfloat11.hpp"
#include "../format/group_quant.hpp"
#include "../format/spqr.hpp"
#include "../format/vq.hpp"
#include "../quant/kivi.hpp"
#include "safetensors.hpp"
#include "xxhash.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <cerrno>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define LOWBIT_IO_MMAP 1
#endif

namespace lowbit::io {

using Item = std::variant<Matrix, GroupQuantMatrix, SpqrMatrix, VqMatrix, Dfloat11Matrix, kivi::Cache>;
using Items = std::map<std::string, Item>;

inline constexpr int format_version = 2;

struct LoadOptions {
  bool verify_checksums = true;  // false: O(1) mapping (nothing but the header and small arrays is read)
  int threads = 0;               // reading and checksums; <= 0: num_threads() (core/parallel.hpp)
};

namespace detail {

// A format's parameters: "<kind> key=value ...", integers or names.
class Params {
 public:
  Params(std::string kind, const std::string& item) : kind_(std::move(kind)), item_(item) {}

  static Params parse(const std::string& item, const std::string& s) {
    std::size_t at = s.find(' ');
    Params p(s.substr(0, at), item);
    while (at != std::string::npos) {
      const std::size_t next = s.find(' ', at + 1);
      const std::string kv = s.substr(at + 1, next == std::string::npos ? std::string::npos : next - at - 1);
      const std::size_t eq = kv.find('=');
      LOWBIT_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < kv.size(), "lowbit file",
                   "item \"", item, "\": malformed parameter \"", kv, "\"");
      LOWBIT_CHECK(p.values_.emplace(kv.substr(0, eq), kv.substr(eq + 1)).second, "lowbit file", "item \"", item,
                   "\": parameter \"", kv.substr(0, eq), "\" given twice");
      at = next;
    }
    return p;
  }

  const std::string& kind() const noexcept { return kind_; }
  Params& set(const std::string& k, const std::string& v) {
    values_[k] = v;
    return *this;
  }
  Params& set(const std::string& k, std::uint64_t v) { return set(k, std::to_string(v)); }
  std::string str() const {
    std::string s = kind_;
    for (const auto& [k, v] : values_) s += " " + k + "=" + v;
    return s;
  }

  // Reading marks the key used; done() rejects keys nobody read.
  const std::string& text(const std::string& k) {
    const auto it = values_.find(k);
    LOWBIT_CHECK(it != values_.end(), "lowbit file", "item \"", item_, "\" (", kind_, "): missing parameter \"", k,
                 "\"");
    used_.push_back(k);
    return it->second;
  }
  std::uint64_t integer(const std::string& k, std::uint64_t max) {
    const std::string& v = text(k);
    std::uint64_t x = 0;
    bool ok = !v.empty() && v.size() <= 20 && (v.size() == 1 || v[0] != '0');
    for (char c : v) {
      ok = ok && c >= '0' && c <= '9' && x <= (~std::uint64_t(0) - std::uint64_t(c - '0')) / 10;
      if (ok) x = x * 10 + std::uint64_t(c - '0');
    }
    LOWBIT_CHECK(ok && x <= max, "lowbit file", "item \"", item_, "\" (", kind_, "): parameter ", k, "=", v,
                 " is not an integer in [0, ", max, "]");
    return x;
  }
  void done() const {
    for (const auto& kv : values_)
      LOWBIT_CHECK(std::find(used_.begin(), used_.end(), kv.first) != used_.end(), "lowbit file", "item \"", item_,
                   "\" (", kind_, "): unknown parameter \"", kv.first, "\"");
  }

 private:
  std::string kind_, item_;
  std::map<std::string, std::string> values_;
  std::vector<std::string> used_;
};

// A format's arrays as tensors, for writing.
struct Fields {
  std::vector<TensorData> tensors;
  std::deque<std::vector<float>> scratch;  // arrays stored in another order than in memory, until written
  template <class T>
  void add(const std::string& item, const std::string& field, Dtype d, std::vector<std::uint64_t> shape,
           const T* data, std::size_t count) {
    tensors.push_back({item + "." + field, d, std::move(shape), data, std::uint64_t(count) * sizeof(T)});
  }
  template <class T>
  void add(const std::string& item, const std::string& field, Dtype d, std::vector<std::uint64_t> shape,
           const Buffer<T>& b) {
    add(item, field, d, std::move(shape), b.data(), b.size());
  }
};

// The bytes of a whole file and what keeps them alive (null: the caller's
// memory, which the loaded items then copy).
struct FileBytes {
  const std::uint8_t* data = nullptr;
  std::uint64_t size = 0;
  std::shared_ptr<const void> keeper;
};

// Reads one item's tensors out of a parsed file.
class ItemReader {
 public:
  ItemReader(const Header& h, const FileBytes& f, std::vector<char>& claimed, const std::string& item)
      : h_(h), f_(f), claimed_(claimed), item_(item) {}

  bool has(const std::string& field) const { return h_.find(item_ + "." + field) != nullptr; }

  // Tensor "<item>.<field>", which must have dtype `d` and this shape, as a
  // Buffer<T> (T of d's size, or bytes): a view of the file when the keeper
  // allows and the bytes are aligned for T, else a copy.
  template <class T>
  Buffer<T> get(const std::string& field, Dtype d, const std::vector<std::uint64_t>& shape) {
    const std::string name = item_ + "." + field;
    const TensorInfo* t = h_.find(name);
    LOWBIT_CHECK(t, "lowbit file", "tensor \"", name, "\" is missing");
    claimed_[std::size_t(t - h_.tensors.data())] = 1;
    LOWBIT_CHECK(t->dtype == d && (sizeof(T) == 1 || dtype_size(d) == sizeof(T)), "lowbit file", "tensor \"", name, "\" has dtype ",
                 dtype_name(t->dtype), ", expected ", dtype_name(d));
    LOWBIT_CHECK(t->shape == shape, "lowbit file", "tensor \"", name, "\" has shape ", shape_string(t->shape),
                 ", expected ", shape_string(shape));
    return tensor<T>(*t);
  }

  // Tensor "<item>.<field>" of dtype `d`, 1-D of whatever length it has (the
  // caller checks the length).
  template <class T>
  Buffer<T> get_1d(const std::string& field, Dtype d) {
    const TensorInfo* t = h_.find(item_ + "." + field);
    LOWBIT_CHECK(t && t->shape.size() == 1, "lowbit file", "tensor \"", item_, ".", field, "\" is missing or not 1-D");
    return get<T>(field, d, t->shape);
  }

  template <class T>
  Buffer<T> tensor(const TensorInfo& t) const {
    const std::uint8_t* p = f_.data + h_.data_begin + t.begin;
    const std::size_t n = std::size_t(t.bytes() / sizeof(T));
    if (f_.keeper && reinterpret_cast<std::uintptr_t>(p) % alignof(T) == 0)
      return Buffer<T>::view(reinterpret_cast<const T*>(p), n, f_.keeper);
    Buffer<T> b(n);
    if (n) std::memcpy(b.data(), p, n * sizeof(T));
    return b;
  }

  static std::string shape_string(const std::vector<std::uint64_t>& s) {
    std::string r = "[";
    for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
  }

 private:
  const Header& h_;
  const FileBytes& f_;
  std::vector<char>& claimed_;
  std::string item_;
};

// ---- one pair of functions per kind: parameters + arrays out, and back ----

inline constexpr std::uint64_t max_dim = std::uint64_t(1) << 40;

// M x 0 with M > 0 holds no bytes yet asks loops of M rows: refused.
inline void check_shape(std::uint64_t rows, std::uint64_t cols) {
  LOWBIT_CHECK(cols > 0 || rows == 0, "lowbit file", "a ", rows, " x 0 matrix");
}

inline Dtype scale_dtype(ScaleType t) { return t == ScaleType::fp16 ? Dtype::F16 : Dtype::F32; }

inline Params params_of(const GroupQuantMatrix& q) {
  return Params("group_quant", "")
      .set("rows", q.rows)
      .set("cols", q.cols)
      .set("bits", std::uint64_t(q.bits))
      .set("group", q.group)
      .set("symmetric", q.symmetric ? 1 : 0)
      .set("scale_type", q.scale_type == ScaleType::fp16 ? "fp16" : "fp32");
}
inline void fields_of(const std::string& n, const GroupQuantMatrix& q, Fields& f) {
  f.add(n, "codes", Dtype::U8, {q.rows, q.row_bytes()}, q.codes);
  f.add(n, "scales", scale_dtype(q.scale_type), {q.rows, q.groups_per_row()}, q.scales);
  if (!q.symmetric) f.add(n, "zeros", Dtype::U8, {q.zeros.size()}, q.zeros);
}
inline GroupQuantMatrix read_group_quant(Params& p, ItemReader& r) {
  GroupQuantMatrix q;
  q.rows = p.integer("rows", max_dim);
  q.cols = p.integer("cols", max_dim);
  q.bits = int(p.integer("bits", 8));
  q.group = p.integer("group", max_dim);
  q.symmetric = p.integer("symmetric", 1) == 1;
  const std::string& st = p.text("scale_type");
  LOWBIT_CHECK(st == "fp16" || st == "fp32", "lowbit file", "unknown scale_type \"", st, "\"");
  q.scale_type = st == "fp16" ? ScaleType::fp16 : ScaleType::fp32;
  p.done();
  check_shape(q.rows, q.cols);
  LOWBIT_CHECK(q.group >= 8 && (q.bits == 2 || q.bits == 3 || q.bits == 4 || q.bits == 8), "lowbit file",
               "group_quant: bits ", q.bits, ", group ", q.group, " are not a valid format");
  q.codes = r.get<std::uint8_t>("codes", Dtype::U8, {q.rows, q.row_bytes()});
  q.scales = r.get<std::uint8_t>("scales", scale_dtype(q.scale_type), {q.rows, q.groups_per_row()});
  if (!q.symmetric)
    q.zeros = r.get<std::uint8_t>("zeros", Dtype::U8, {bitpack::row_bytes(q.rows * q.groups_per_row(), q.bits)});
  q.validate();
  return q;
}

inline Params params_of(const SpqrMatrix& q) {
  return Params("spqr", "")
      .set("rows", q.rows)
      .set("cols", q.cols)
      .set("bits", std::uint64_t(q.bits))
      .set("group", q.group)
      .set("stat_bits", std::uint64_t(q.stat_bits))
      .set("stat_group", q.stat_group)
      .set("outliers", q.outliers())
      .set("count_bits", std::uint64_t(q.count_bits))
      .set("permuted", q.perm.empty() ? 0 : 1);
}
inline void fields_of(const std::string& n, const SpqrMatrix& q, Fields& f) {
  if (!q.perm.empty()) f.add(n, "perm", Dtype::U8, {q.perm.size()}, q.perm);
  f.add(n, "codes", Dtype::U8, {q.rows, q.row_bytes()}, q.codes);
  f.add(n, "scale_codes", Dtype::U8, {q.scale_codes.size()}, q.scale_codes);
  f.add(n, "zero_codes", Dtype::U8, {q.zero_codes.size()}, q.zero_codes);
  f.add(n, "stat_params", Dtype::F16, {q.row_blocks(), q.groups_per_row(), 4}, q.stat_params);
  f.add(n, "row_counts", Dtype::U8, {q.row_counts.size()}, q.row_counts);
  f.add(n, "outlier_col", Dtype::U16, {q.outlier_col.size()}, q.outlier_col);
  f.add(n, "outlier_val", Dtype::F16, {q.outlier_val.size()}, q.outlier_val);
}
inline SpqrMatrix read_spqr(Params& p, ItemReader& r) {
  SpqrMatrix q;
  q.rows = p.integer("rows", max_dim);
  q.cols = p.integer("cols", 65536);
  q.bits = int(p.integer("bits", 8));
  q.group = p.integer("group", 128);
  q.stat_bits = int(p.integer("stat_bits", 8));
  q.stat_group = p.integer("stat_group", max_dim);
  const std::uint64_t nnz = p.integer("outliers", max_dim);
  q.count_bits = int(p.integer("count_bits", std::uint64_t(SpqrMatrix::max_count_bits)));
  const bool permuted = p.integer("permuted", 1) == 1;
  p.done();
  check_shape(q.rows, q.cols);
  LOWBIT_CHECK(q.group >= 8 && q.stat_group >= 1 && q.stat_bits >= 1 &&
                   (q.bits == 2 || q.bits == 3 || q.bits == 4 || q.bits == 8),
               "lowbit file", "spqr: bits ", q.bits, ", group ", q.group, ", stat_bits ", q.stat_bits,
               ", stat_group ", q.stat_group, " are not a valid format");
  const std::uint64_t stat_bytes = bitpack::row_bytes(q.rows * q.groups_per_row(), q.stat_bits);
  if (permuted) q.perm = r.get<std::uint8_t>("perm", Dtype::U8, {packed_ints::bytes(q.cols, q.perm_bits())});
  q.codes = r.get<std::uint8_t>("codes", Dtype::U8, {q.rows, q.row_bytes()});
  q.scale_codes = r.get<std::uint8_t>("scale_codes", Dtype::U8, {stat_bytes});
  q.zero_codes = r.get<std::uint8_t>("zero_codes", Dtype::U8, {stat_bytes});
  q.stat_params = r.get<std::uint16_t>("stat_params", Dtype::F16, {q.row_blocks(), q.groups_per_row(), 4});
  q.row_counts = r.get<std::uint8_t>("row_counts", Dtype::U8, {packed_ints::bytes(q.rows, q.count_bits)});
  q.outlier_col = r.get<std::uint16_t>("outlier_col", Dtype::U16, {nnz});
  q.outlier_val = r.get<std::uint16_t>("outlier_val", Dtype::F16, {nnz});
  q.validate();
  return q;
}

inline Params params_of(const Dfloat11Matrix& d) {
  return Params("dfloat11", "").set("rows", d.rows).set("cols", d.cols).set("block", d.block);
}
inline void fields_of(const std::string& n, const Dfloat11Matrix& d, Fields& f) {
  f.add(n, "code_lengths", Dtype::U8, {256}, d.code_lengths.data(), 256);
  f.add(n, "block_start", Dtype::U64, {d.block_start.size()}, d.block_start);
  f.add(n, "exponents", Dtype::U8, {d.exponents.size()}, d.exponents);
  f.add(n, "sign_mantissa", Dtype::U8, {d.rows, d.cols}, d.sign_mantissa);
}
inline Dfloat11Matrix read_dfloat11(Params& p, ItemReader& r) {
  Dfloat11Matrix d;
  d.rows = p.integer("rows", max_dim);
  d.cols = p.integer("cols", max_dim);
  d.block = p.integer("block", std::uint64_t(1) << 32);
  p.done();
  check_shape(d.rows, d.cols);
  LOWBIT_CHECK(d.block >= 16, "lowbit file", "dfloat11: block ", d.block, " < 16");
  const Buffer<std::uint8_t> cl = r.get<std::uint8_t>("code_lengths", Dtype::U8, {256});
  std::copy(cl.begin(), cl.end(), d.code_lengths.begin());
  d.sign_mantissa = r.get<std::uint8_t>("sign_mantissa", Dtype::U8, {d.rows, d.cols});
  d.block_start = r.get<std::uint64_t>("block_start", Dtype::U64, {d.blocks() + 1});
  const std::uint64_t bits = d.block_start.back();
  LOWBIT_CHECK(bits <= ~std::uint64_t(0) - 7, "lowbit file", "dfloat11: stream length overflows");
  d.exponents = r.get<std::uint8_t>("exponents", Dtype::U8, {(bits + 7) / 8});
  d.validate();
  return d;
}

// Codebook levels are "<part><i>": outlier0, outlier1, main0, main1.
inline Params params_of(const VqMatrix& q) {
  Params p("vq", "");
  p.set("rows", q.rows)
      .set("cols", q.cols)
      .set("vector", q.vector)
      .set("axis", q.axis == VqAxis::output ? "output" : "input")
      .set("outlier_columns", q.outlier_columns)
      .set("permuted", q.perm.empty() ? 0 : 1)
      .set("normalized", q.scale.empty() ? 0 : 1)
      .set("outlier_levels", q.outlier.size())
      .set("main_levels", q.main.size());
  for (std::size_t i = 0; i < q.outlier.size(); ++i) p.set("outlier" + std::to_string(i) + "_k", q.outlier[i].entries);
  for (std::size_t i = 0; i < q.main.size(); ++i) p.set("main" + std::to_string(i) + "_k", q.main[i].entries);
  return p;
}
inline void fields_of(const std::string& n, const VqMatrix& q, Fields& f) {
  if (!q.perm.empty()) f.add(n, "perm", Dtype::U32, {q.perm.size()}, q.perm);
  if (!q.scale.empty()) {
    f.add(n, "scale", Dtype::F16, {q.scale.size()}, q.scale);
    f.add(n, "bias", Dtype::F16, {q.bias.size()}, q.bias);
  }
  auto levels = [&](const char* part, const std::vector<VqCodebook>& l) {
    for (std::size_t i = 0; i < l.size(); ++i) {
      const std::string level = part + std::to_string(i);
      f.add(n, level + ".centroids", Dtype::F16, {l[i].entries, q.vector}, l[i].centroids);
      f.add(n, level + ".indices", Dtype::U8, {l[i].indices.size()}, l[i].indices);
    }
  };
  levels("outlier", q.outlier);
  levels("main", q.main);
}
inline VqMatrix read_vq(Params& p, ItemReader& r) {
  VqMatrix q;
  q.rows = p.integer("rows", max_dim);
  q.cols = p.integer("cols", max_dim);
  q.vector = p.integer("vector", 16);
  const std::string& axis = p.text("axis");
  LOWBIT_CHECK(axis == "output" || axis == "input", "lowbit file", "vq: unknown axis \"", axis, "\"");
  q.axis = axis == "output" ? VqAxis::output : VqAxis::input;
  q.outlier_columns = p.integer("outlier_columns", q.cols);
  const bool permuted = p.integer("permuted", 1) == 1, normalized = p.integer("normalized", 1) == 1;
  const std::size_t n_outlier = p.integer("outlier_levels", 2), n_main = p.integer("main_levels", 2);
  auto levels = [&](const char* part, std::size_t n, std::vector<VqCodebook>& out) {
    for (std::size_t i = 0; i < n; ++i) out.push_back({p.integer(part + std::to_string(i) + "_k", 65536), {}, {}});
  };
  levels("outlier", n_outlier, q.outlier);
  levels("main", n_main, q.main);
  p.done();
  check_shape(q.rows, q.cols);
  // Sizes below multiply M by K: bounded first (a file cannot hold more).
  LOWBIT_CHECK(q.vector >= 2 && q.cols <= max_dim / std::max<std::uint64_t>(q.rows, 1), "lowbit file",
               "vq: vector ", q.vector, ", ", q.rows, " x ", q.cols, " are not a valid format");
  if (permuted) q.perm = r.get<std::uint32_t>("perm", Dtype::U32, {q.cols});
  if (normalized) {
    q.scale = r.get<std::uint16_t>("scale", Dtype::F16, {q.cols});
    q.bias = r.get<std::uint16_t>("bias", Dtype::F16, {q.cols});
  }
  auto read = [&](const char* part, std::vector<VqCodebook>& l, std::size_t n) {
    const std::size_t nv = q.vectors(n);
    for (std::size_t i = 0; i < l.size(); ++i) {
      const std::string level = part + std::to_string(i);
      const int bits = l[i].index_bits();
      LOWBIT_CHECK(l[i].entries >= 2 && bits > 0, "lowbit file", "vq: ", level, " has ", l[i].entries,
                   " entries, not a power of two in 2..65536");
      l[i].centroids = r.get<std::uint16_t>(level + ".centroids", Dtype::F16, {l[i].entries, q.vector});
      l[i].indices = r.get<std::uint8_t>(level + ".indices", Dtype::U8, {::lowbit::detail::vq_index_bytes(nv, bits)});
    }
  };
  read("outlier", q.outlier, q.outlier_columns);
  read("main", q.main, q.cols - q.outlier_columns);
  q.validate();
  return q;
}

inline constexpr std::uint64_t max_kv_window = std::uint64_t(1) << 24;

inline Params params_of(const kivi::Cache& c) {
  const kivi::Options& o = c.options();
  return Params("kivi", "")
      .set("heads", std::uint64_t(o.heads))
      .set("kv_heads", std::uint64_t(o.kv_heads))
      .set("head_dim", std::uint64_t(o.head_dim))
      .set("bits", std::uint64_t(o.bits))
      .set("group", std::uint64_t(o.group))
      .set("residual", std::uint64_t(o.residual))
      .set("max_tokens", o.max_tokens)
      .set("tokens", c.tokens());
}
inline void fields_of(const std::string& n, const kivi::Cache& c, Fields& f) {
  const std::size_t d = std::size_t(c.options().head_dim);
  for (int i = 0; i < c.options().kv_heads; ++i) {
    const kivi::Cache::Head& h = c.head(i);
    const std::string p = "h" + std::to_string(i) + ".";
    for (const auto& [part, q] : {std::pair{"keys.", &h.keys}, std::pair{"values.", &h.values}}) {
      f.add(n, p + part + "pages", Dtype::U8, {q->pages.size()}, q->pages.data(), q->pages.size());
      f.add(n, p + part + "scale", Dtype::F16, {q->scale.size()}, q->scale.data(), q->scale.size());
      f.add(n, p + part + "min", Dtype::F16, {q->min.size()}, q->min.data(), q->min.size());
    }
    f.add(n, p + "key_window", Dtype::F32, {h.key_window_tokens, d}, h.key_window.data(), h.key_window_tokens * d);
    std::vector<float>& vw = f.scratch.emplace_back(h.value_window_tokens * d);  // the ring, oldest first
    for (std::size_t t = 0; t < h.value_window_tokens; ++t) std::copy_n(c.window_row(i, false, t), d, &vw[t * d]);
    f.add(n, p + "value_window", Dtype::F32, {h.value_window_tokens, d}, vw.data(), vw.size());
  }
}
inline kivi::Cache read_kivi(Params& p, ItemReader& r) {
  kivi::Options o;
  o.heads = int(p.integer("heads", 1 << 20));
  o.kv_heads = int(p.integer("kv_heads", 1 << 20));
  o.head_dim = int(p.integer("head_dim", 1 << 20));
  o.bits = int(p.integer("bits", 8));
  o.group = int(p.integer("group", 1 << 20));
  o.residual = int(p.integer("residual", 1 << 30));
  o.max_tokens = p.integer("max_tokens", max_dim);
  const std::size_t tokens = p.integer("tokens", max_dim);
  p.done();
  kivi::check_options(o);
  // The windows are R x d floats per kv head whatever the token count: a
  // bound, so that a small hostile file cannot ask for gigabytes.
  LOWBIT_CHECK(std::uint64_t(o.kv_heads) * std::uint64_t(o.residual) * std::uint64_t(o.head_dim) <= max_kv_window,
               "lowbit file", "kivi: ", o.kv_heads, " kv heads x R ", o.residual, " x head_dim ", o.head_dim,
               " window floats exceed ", max_kv_window);
  const std::size_t d = std::size_t(o.head_dim), R = std::size_t(o.residual);
  const std::size_t kw = tokens % R, vw = std::min(tokens, R);
  std::vector<kivi::Cache::Head> heads;
  const auto vec = [](const auto& b) { return std::vector(b.begin(), b.end()); };
  for (int i = 0; i < o.kv_heads; ++i) {
    kivi::Cache::Head h = kivi::Cache::empty_head(o);
    const std::string pre = "h" + std::to_string(i) + ".";
    // Codes and statistics as stored; restore() checks their sizes.
    for (const auto& [part, q, n] : {std::tuple{"keys.", &h.keys, tokens - kw}, std::tuple{"values.", &h.values, tokens - vw}}) {
      q->pages = vec(r.get_1d<std::uint8_t>(pre + part + "pages", Dtype::U8));
      q->scale = vec(r.get_1d<std::uint16_t>(pre + part + "scale", Dtype::F16));
      q->min = vec(r.get_1d<std::uint16_t>(pre + part + "min", Dtype::F16));
      q->tokens = n;
    }
    const Buffer<float> k = r.get<float>(pre + "key_window", Dtype::F32, {kw, d});
    const Buffer<float> v = r.get<float>(pre + "value_window", Dtype::F32, {vw, d});
    std::copy(k.begin(), k.end(), h.key_window.begin());
    std::copy(v.begin(), v.end(), h.value_window.begin());
    h.key_window_tokens = kw, h.value_window_tokens = vw;
    heads.push_back(std::move(h));
  }
  return kivi::Cache::restore(o, tokens, std::move(heads));
}

inline Matrix read_matrix(const TensorInfo& t, const ItemReader& r) {
  std::uint64_t rows = 1, cols = t.shape.empty() ? 1 : t.shape.back();
  for (std::size_t i = 0; i + 1 < t.shape.size(); ++i) rows *= t.shape[i];
  if (cols == 0) rows = 0;
  if (t.dtype == Dtype::F32) return Matrix(rows, cols, r.tensor<float>(t));
  LOWBIT_CHECK(t.dtype == Dtype::F16 || t.dtype == Dtype::BF16, "lowbit file", "tensor \"", t.name, "\" has dtype ",
               dtype_name(t.dtype), ": not part of a lowbit format, and plain tensors must be F32, F16 or BF16");
  const Buffer<std::uint16_t> h = r.tensor<std::uint16_t>(t);
  Matrix m(rows, cols);
  float* out = m.data();
  for (std::size_t i = 0; i < h.size(); ++i)
    out[i] = t.dtype == Dtype::F16 ? fp16::from_bits(h[i]).to_float() : bf16::from_bits(h[i]).to_float();
  return m;
}

inline std::string hex64(std::uint64_t v) {
  char s[17];
  std::snprintf(s, sizeof s, "%016llx", static_cast<unsigned long long>(v));
  return s;
}

inline bool is_pad(const TensorInfo& t) { return t.dtype == Dtype::U8 && t.name.rfind("__pad.", 0) == 0; }

inline const std::string header_checksum_key = "lowbit.xxh64.__header__";

// XXH64 of what the header says, in a canonical form: every tensor entry
// (offset order) and every metadata entry but the header checksum itself,
// strings length-prefixed. Covers what the data checksums cannot: format
// parameters, names, shapes, padding.
inline std::uint64_t header_hash(const Header& h) {
  std::string s;
  auto str = [&](const std::string& x) { s += std::to_string(x.size()) + ":" + x; };
  for (const TensorInfo& t : h.tensors) {
    str(t.name);
    s += dtype_name(t.dtype);
    for (std::uint64_t d : t.shape) s += " " + std::to_string(d);
    s += "@" + std::to_string(t.begin) + "-" + std::to_string(t.end) + "\n";
  }
  for (const auto& [k, v] : h.metadata)
    if (k != header_checksum_key) str(k), str(v), s += "\n";
  return xxh64(s.data(), s.size());
}

// Items from a whole file in memory.
inline Items decode(const FileBytes& f, const LoadOptions& opt) {
  const Header h = parse_header(f.data, f.size);
  Items items;
  const auto version = h.metadata.find("lowbit.version");
  const bool lowbit_file = version != h.metadata.end();
  LOWBIT_CHECK(!lowbit_file || version->second == std::to_string(format_version), "lowbit file", "format version \"",
               version->second, "\" (this lowbit reads version ", format_version, ")");
  std::vector<char> claimed(h.tensors.size(), 0);
  for (std::size_t i = 0; i < h.tensors.size(); ++i) claimed[i] = is_pad(h.tensors[i]);
  if (lowbit_file && opt.verify_checksums) {
    const auto hc = h.metadata.find(header_checksum_key);
    LOWBIT_CHECK(hc != h.metadata.end(), "lowbit file", "the header has no checksum");
    LOWBIT_CHECK(hc->second == hex64(header_hash(h)), "lowbit file",
                 "header checksum mismatch: the header is corrupted");
    // Hash the tensors in parallel (one tensor per task), then compare.
    std::vector<std::uint64_t> hashes(h.tensors.size());
    parallel_for(h.tensors.size(), 1, opt.threads, [&](std::size_t b, std::size_t e) {
      for (std::size_t i = b; i < e; ++i)
        if (!claimed[i]) hashes[i] = xxh64(f.data + h.data_begin + h.tensors[i].begin, std::size_t(h.tensors[i].bytes()));
    });
    for (std::size_t i = 0; i < h.tensors.size(); ++i) {
      const TensorInfo& t = h.tensors[i];
      if (claimed[i]) {  // padding has no checksum: it must be zeros
        const std::uint8_t* p = f.data + h.data_begin + t.begin;
        LOWBIT_CHECK(std::all_of(p, p + t.bytes(), [](std::uint8_t b) { return b == 0; }), "lowbit file",
                     "padding tensor \"", t.name, "\" is not zero: the file is corrupted");
        continue;
      }
      const auto c = h.metadata.find("lowbit.xxh64." + t.name);
      LOWBIT_CHECK(c != h.metadata.end(), "lowbit file", "tensor \"", t.name, "\" has no checksum");
      const std::uint64_t x = hashes[i];
      LOWBIT_CHECK(c->second == hex64(x), "lowbit file", "tensor \"", t.name, "\": checksum mismatch (file says ",
                   c->second, ", bytes hash to ", hex64(x), "): the file is corrupted");
    }
  }
  if (lowbit_file) {
    const std::string prefix = "lowbit.format.";
    for (const auto& [key, value] : h.metadata) {
      if (key.rfind(prefix, 0) != 0) continue;
      const std::string name = key.substr(prefix.size());
      Params p = Params::parse(name, value);
      ItemReader r(h, f, claimed, name);
      if (p.kind() == "group_quant") {
        items.emplace(name, read_group_quant(p, r));
      } else if (p.kind() == "spqr") {
        items.emplace(name, read_spqr(p, r));
      } else if (p.kind() == "vq") {
        items.emplace(name, read_vq(p, r));
      } else if (p.kind() == "dfloat11") {
        items.emplace(name, read_dfloat11(p, r));
      } else if (p.kind() == "kivi") {
        items.emplace(name, read_kivi(p, r));
      } else {
        ::lowbit::detail::fail("lowbit file", "item \"", name, "\": unknown format kind \"", p.kind(), "\"");
      }
    }
  }
  ItemReader plain(h, f, claimed, "");
  for (std::size_t i = 0; i < h.tensors.size(); ++i) {
    if (claimed[i]) continue;
    const TensorInfo& t = h.tensors[i];
    LOWBIT_CHECK(items.emplace(t.name, read_matrix(t, plain)).second, "lowbit file", "tensor \"", t.name,
                 "\" has the name of a format item");
  }
  return items;
}

#ifdef LOWBIT_IO_MMAP
struct Mapping {
  void* p = nullptr;
  std::size_t n = 0;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  Mapping(void* p_, std::size_t n_) : p(p_), n(n_) {}
  ~Mapping() { ::munmap(p, n); }
};

// An open file descriptor, closed on scope exit.
struct Fd {
  int fd;
  ~Fd() { ::close(fd); }
};

inline std::size_t file_size(const Fd& f, const std::string& path, const char* where) {
  struct stat st {};
  LOWBIT_CHECK(::fstat(f.fd, &st) == 0 && st.st_size >= 0, where, "cannot stat \"", path, "\"");
  return std::size_t(st.st_size);
}

inline FileBytes map_file(const std::string& path) {
  const Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  LOWBIT_CHECK(f.fd >= 0, "io::map", "cannot open \"", path, "\"");
  const std::size_t n = file_size(f, path, "io::map");
  LOWBIT_CHECK(n > 0, "io::map", "\"", path, "\" is empty");
  void* p = ::mmap(nullptr, n, PROT_READ, MAP_PRIVATE, f.fd, 0);  // stays valid after close
  LOWBIT_CHECK(p != MAP_FAILED, "io::map", "mmap of \"", path, "\" failed");
  return {static_cast<const std::uint8_t*>(p), n, std::make_shared<Mapping>(p, n)};
}

// Reads the file into fresh anonymous memory aligned to 2 MiB with
// transparent huge pages requested: with 4 KiB pages, the page faults of a
// fresh allocation cost about as much as the copy itself.
inline FileBytes read_file(const std::string& path, int threads) {
  const Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  LOWBIT_CHECK(f.fd >= 0, "io::load", "cannot open \"", path, "\"");
  const std::size_t n = file_size(f, path, "io::load");
  constexpr std::size_t huge = std::size_t(2) << 20;
  const std::size_t len = n + huge;
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  LOWBIT_CHECK(p != MAP_FAILED, "io::load", "cannot allocate ", n, " bytes for \"", path, "\"");
  auto keeper = std::make_shared<Mapping>(p, len);
  auto* data = reinterpret_cast<std::uint8_t*>((reinterpret_cast<std::uintptr_t>(p) + huge - 1) & ~(huge - 1));
#ifdef MADV_HUGEPAGE
  ::madvise(data, n, MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
  // Chunks of 8 MiB read in parallel (the page-cache copy scales with cores).
  parallel_for(n, std::size_t(8) << 20, threads, [&](std::size_t b, std::size_t e) {
    for (std::size_t at = b; at < e;) {
      const ::ssize_t got = ::pread(f.fd, data + at, std::min<std::size_t>(e - at, std::size_t(1) << 30), ::off_t(at));
      if (got < 0 && errno == EINTR) continue;
      LOWBIT_CHECK(got > 0, "io::load", "cannot read \"", path, "\" (byte ", at, " of ", n, ")");
      at += std::size_t(got);
    }
  });
  return {data, n, std::move(keeper)};
}
#else
struct AlignedDeleter {
  void operator()(std::uint8_t* p) const noexcept { ::operator delete(p, std::align_val_t(alignment)); }
};

inline FileBytes read_file(const std::string& path, int) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  LOWBIT_CHECK(in, "io::load", "cannot open \"", path, "\"");
  const std::streamoff size = in.tellg();
  LOWBIT_CHECK(size >= 0, "io::load", "cannot get the size of \"", path, "\"");
  in.seekg(0);
  std::shared_ptr<std::uint8_t> block(
      static_cast<std::uint8_t*>(::operator new(std::size_t(size) + 1, std::align_val_t(alignment))), AlignedDeleter{});
  LOWBIT_CHECK(in.read(reinterpret_cast<char*>(block.get()), size), "io::load", "cannot read \"", path, "\"");
  return {block.get(), std::uint64_t(size), block};
}
#endif

}  // namespace detail

// Writes `items` to `path` (replacing it) in the layout documented above.
// The output is a function of the items alone: the same items give the same
// bytes on every run and machine.
inline void save(const std::string& path, const Items& items) {
  detail::Fields fields;
  std::map<std::string, std::string> meta{{"lowbit.version", std::to_string(format_version)}};
  for (const auto& [name, item] : items) {
    LOWBIT_CHECK(!name.empty() && name.rfind("__", 0) != 0, "io::save", "item name \"", name,
                 "\" is empty or starts with \"__\" (reserved)");
    std::visit(
        [&, &name = name](const auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, Matrix>) {
            fields.tensors.push_back({name, Dtype::F32, {x.rows(), x.cols()}, x.data(), 4 * std::uint64_t(x.rows() * x.cols())});
          } else {
            if constexpr (!std::is_same_v<T, kivi::Cache>) x.validate();  // a Cache keeps its invariants
            meta["lowbit.format." + name] = detail::params_of(x).str();
            detail::fields_of(name, x, fields);
          }
        },
        item);
  }
  std::map<std::string, int> names;
  for (const TensorData& t : fields.tensors) {
    LOWBIT_CHECK(++names[t.name] == 1, "io::save", "two items produce the tensor \"", t.name, "\"");
    meta["lowbit.xxh64." + t.name] = detail::hex64(xxh64(t.data, std::size_t(t.bytes)));
  }
  // The header checksum covers the header as it will be parsed back.
  const Layout l0 = layout_safetensors(fields.tensors, meta);
  meta[detail::header_checksum_key] =
      detail::hex64(detail::header_hash(detail::parse_json(l0.head.data() + 8, l0.head.size() - 8)));
  const Layout l = layout_safetensors(fields.tensors, meta);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  LOWBIT_CHECK(out, "io::save", "cannot create \"", path, "\"");
  out.write(l.head.data(), std::streamsize(l.head.size()));
  std::uint64_t at = 0;
  static const char zeros[alignment] = {};
  for (std::size_t i = 0; i < fields.tensors.size(); ++i) {
    out.write(zeros, std::streamsize(l.begin[i] - at));
    out.write(static_cast<const char*>(fields.tensors[i].data), std::streamsize(fields.tensors[i].bytes));
    at = l.begin[i] + fields.tensors[i].bytes;
  }
  out.close();
  LOWBIT_CHECK(out, "io::save", "writing \"", path, "\" failed");
}

// Reads the file into one private allocation (2 MiB-aligned anonymous
// memory where there is mmap, else 64-byte aligned); the items' arrays are
// views of it (freed with the last of them).
inline Items load(const std::string& path, const LoadOptions& opt = {}) { return detail::decode(detail::read_file(path, opt.threads), opt); }

// Maps the file read-only; the items' arrays are views of the mapping
// (unmapped with the last of them). Without checksums this reads only the
// header and what validation needs, so it is O(1) in the tensors' size for
// group-quantized and plain items. Falls back to load() where there is no
// mmap.
inline Items map(const std::string& path, const LoadOptions& opt = {}) {
#ifdef LOWBIT_IO_MMAP
  return detail::decode(detail::map_file(path), opt);
#else
  return load(path, opt);
#endif
}

// Items from a file image in memory; they copy what they keep (`data` may
// go away after the call). For files received over a network, and fuzzing.
inline Items parse(const std::uint8_t* data, std::size_t size, const LoadOptions& opt = {}) {
  return detail::decode({data, size, nullptr}, opt);
}

}  // namespace lowbit::io
