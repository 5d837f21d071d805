// Storage (io/): XXH64 against xxhsum, round trips of every format through
// save/load/map/parse, zero-copy mapping, plain safetensors checkpoints, and
// bad files: every truncation, corruptions, and one test per rule of the
// safetensors and lowbit layers.
#include <cstdio>
#include <fstream>
#include <limits>
#include <random>

#include "test_util.hpp"

using namespace lowbit;

namespace {

std::string temp_path(const char* name) { return (std::string(P_tmpdir) + "/lowbit_test_io_") + name; }

std::vector<std::uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// A KIVI cache after `tokens` tokens: with R = 64, 150 tokens leave 22 keys
// in the window and wrap the values' ring.
kivi::Cache sample_cache(std::size_t tokens) {
  kivi::Options o;
  o.heads = 4, o.kv_heads = 2, o.head_dim = 64, o.group = 32, o.residual = 64, o.bits = 2;
  kivi::Cache c(o);
  const Matrix kv = test::llm_weights(tokens, 2 * 64, 11);
  for (std::size_t t = 0; t < tokens; ++t) c.append(kv.data() + t * 128, kv.data() + (tokens - 1 - t) * 128);
  return c;
}

// One item of each kind and flavour, from the real quantizers.
io::Items sample_items() {
  io::Items items;
  const Matrix W = test::llm_weights(48, 200, 1);  // ragged: 200 = 1 group of 128 + 72
  rtn::Options o;
  o.bits = 3;
  items["rtn3_asym_fp16"] = rtn::quantize(W, o);
  o.bits = 4, o.symmetric = true, o.scale_type = ScaleType::fp32, o.group = 64;
  items["rtn4_sym_fp32"] = rtn::quantize(W, o);
  o.bits = 2, o.symmetric = false, o.group = 200;
  items["rtn2"] = rtn::quantize(W, o);
  Matrix X(300, 200);
  const auto g = test::gaussian(300 * 200, 2);
  std::copy(g.begin(), g.end(), X.data());
  Calibration cal(200);
  cal.add(X);
  const Eigen::MatrixXd H = cal.hessian();
  spqr::Options so;
  so.outlier_threshold = 0.5f;
  items["spqr_perm"] = spqr::quantize(W, H, so);
  so.act_order = false, so.outlier_threshold = std::numeric_limits<float>::infinity();
  items["spqr_plain"] = spqr::quantize(W, H, so);
  vptq::Options vo;  // every optional part: permutation, outlier part, residual level, normalization
  vo.vector = 4, vo.codebook = 64, vo.residual_codebook = 16, vo.outlier_percent = 5, vo.outlier_codebook = 32;
  vo.normalize = true;
  items["vq_full"] = vptq::quantize(W, H, vo);
  vptq::Options vi;  // input axis, no permutation, one level
  vi.vector = 8, vi.codebook = 16, vi.axis = VqAxis::input, vi.act_order = false;
  items["vq_input"] = vptq::quantize(W, H, vi);
  std::vector<bf16> b(48 * 200);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = bf16::from_float(W.data()[i]);
  items["df11"] = dfloat11::compress(ConstMatrixView<bf16>(b.data(), 48, 200), {64});
  items["norm"] = test::llm_weights(1, 200, 3);
  items["kv"] = sample_cache(150);
  items["empty"] = Matrix();
  return items;
}

bool same_items(const io::Items& a, const io::Items& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, item] : a) {
    const auto it = b.find(name);
    if (it == b.end() || !(it->second == item)) return false;
  }
  return true;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const error& e) {
    return e.what();
  }
  return "";
}

// A saved file, to edit its JSON header (data kept).
struct SavedFile {
  std::vector<std::uint8_t> file, data;
  std::string header;
  SavedFile(const io::Items& items, const std::string& path) {
    io::save(path, items);
    file = read_bytes(path);
    std::remove(path.c_str());
    const std::uint64_t n = io::detail::read_u64le(file.data());
    header.assign(file.begin() + 8, file.begin() + 8 + std::ptrdiff_t(n));
    data.assign(file.begin() + 8 + std::ptrdiff_t(n), file.end());
  }
  // The file with its JSON header replaced (padded as the writer pads it).
  std::vector<std::uint8_t> with_header(std::string h) const {
    h.append((64 - (8 + h.size()) % 64) % 64, ' ');
    std::string head(8, '\0');
    const std::uint64_t len = h.size();
    std::memcpy(&head[0], &len, 8);
    head += h;
    std::vector<std::uint8_t> f(head.begin(), head.end());
    f.insert(f.end(), data.begin(), data.end());
    return f;
  }
  // The file with the first `from` of its header replaced by `to`.
  std::vector<std::uint8_t> replaced(const std::string& from, const std::string& to) const {
    std::string h = header;
    const std::size_t at = h.find(from);
    REQUIRE(at != std::string::npos);
    h.replace(at, from.size(), to);
    while (!h.empty() && h.back() == ' ') h.pop_back();
    return with_header(h);
  }
  // The error of loading f with checksums off ("" if it loads): the
  // structural rule must catch a change by itself.
  static std::string unverified_error(const std::vector<std::uint8_t>& f) {
    io::LoadOptions fast;
    fast.verify_checksums = false;
    return error_of([&] { io::parse(f.data(), f.size(), fast); });
  }
};

// One header edit and the error it must give.
struct HeaderRule {
  const char *from, *to, *error;
};
void check_rules(const SavedFile& f, std::initializer_list<HeaderRule> rules) {
  for (const auto& r : rules) {
    INFO(r.from << " -> " << r.to);
    CHECK_THAT(SavedFile::unverified_error(f.replaced(r.from, r.to)), Catch::Matchers::Contains(r.error));
  }
}

}  // namespace

TEST_CASE("xxh64 matches xxhsum -H1", "[io]") {
  // Bytes (7 i + 3) mod 251; values printed by xxhsum 0.8.1 (Debian's xxhash).
  const std::pair<std::size_t, std::uint64_t> ref[] = {
      {0, 0xef46db3751d8e999}, {1, 0x1f25c8d0bc1f4bb6},  {3, 0x31d2363f52e564c9},  {4, 0x9bb64b7d66ee9fda},
      {7, 0x9a7b149959ce60d8}, {8, 0xdab99d95c6f90092},  {31, 0xa2aa5f33cc4a6119}, {32, 0x23c3c17ef790fd97},
      {33, 0x50a7cfc7ba588784}, {100, 0x778e26df8290f456}, {1000, 0x021f7a7424085ea4}};
  for (const auto& [n, h] : ref) {
    std::vector<std::uint8_t> b(n);
    for (std::size_t i = 0; i < n; ++i) b[i] = std::uint8_t((i * 7 + 3) % 251);
    INFO(n << " bytes");
    CHECK(xxh64(b.data(), n) == h);
  }
}

TEST_CASE("io: every format round-trips bit-identically through save, load, map and parse", "[io]") {
  const io::Items items = sample_items();
  const std::string path = temp_path("roundtrip.safetensors");
  io::save(path, items);
  const auto bytes = read_bytes(path);
  CHECK(same_items(io::load(path), items));
  CHECK(same_items(io::map(path), items));
  CHECK(same_items(io::parse(bytes.data(), bytes.size()), items));
  io::LoadOptions fast;
  fast.verify_checksums = false;
  CHECK(same_items(io::map(path, fast), items));
  // Deterministic: the same items give the same bytes.
  io::save(path, io::Items(items.rbegin(), items.rend()));
  CHECK(read_bytes(path) == bytes);
  // Every tensor starts on a 64-byte boundary of the file, and the layout
  // obeys the safetensors rules (parse_header enforces them).
  const io::Header h = io::parse_header(bytes.data(), bytes.size());
  CHECK(h.data_begin % 64 == 0);
  for (const io::TensorInfo& t : h.tensors) {
    if (t.name.rfind("__pad.", 0) == 0) continue;
    INFO(t.name);
    CHECK((t.bytes() == 0 || (h.data_begin + t.begin) % 64 == 0));
  }
  CHECK(h.find("rtn3_asym_fp16.codes") != nullptr);
  CHECK(h.find("rtn4_sym_fp32.zeros") == nullptr);  // symmetric: no zeros stored
  CHECK(h.metadata.at("lowbit.format.rtn4_sym_fp32") ==
        "group_quant bits=4 cols=200 group=64 rows=48 scale_type=fp32 symmetric=1");
  std::remove(path.c_str());
}

TEST_CASE("io: mapped formats are views of the file, kernels run on them, writes copy", "[io]") {
  const io::Items items = sample_items();
  const std::string path = temp_path("map.safetensors");
  io::save(path, items);
  const auto before = read_bytes(path);
  io::Items m = io::map(path);
  std::remove(path.c_str());  // the mapping outlives the name
  auto& q = std::get<GroupQuantMatrix>(m.at("rtn3_asym_fp16"));
  const auto& s = std::get<SpqrMatrix>(m.at("spqr_perm"));
  const auto& d = std::get<Dfloat11Matrix>(m.at("df11"));
  const auto& v = std::get<VqMatrix>(m.at("vq_full"));
  CHECK(q.codes.is_view());
  CHECK(v.main[1].indices.is_view());
  CHECK(v.outlier[0].centroids.is_view());
  CHECK(q.scales.is_view());
  CHECK(s.outlier_val.is_view());
  CHECK(d.sign_mantissa.is_view());
  CHECK(std::get<Matrix>(m.at("norm")).buffer().is_view());
  const auto x = test::llm_activations(200, 5);
  std::vector<float> y(48), y0(48);
  for (const char* name : {"rtn3_asym_fp16", "spqr_perm", "df11", "vq_full", "vq_input"}) {
    std::visit(
        [&](const auto& f) {
          using T = std::decay_t<decltype(f)>;
          if constexpr (!std::is_same_v<T, Matrix> && !std::is_same_v<T, kivi::Cache>) {
            gemv(f, x, y);
            gemv(std::get<std::decay_t<decltype(f)>>(items.at(name)), x, y0);
          }
        },
        std::as_const(m).at(name));
    INFO(name);
    CHECK(y == y0);
  }
  // Copy on write: the item changes, the file does not.
  const std::uint8_t c0 = std::as_const(q).codes[0];
  q.codes[0] = std::uint8_t(c0 ^ 0xFF);
  CHECK(!q.codes.is_view());
  CHECK(q.scales.is_view());
  CHECK(std::as_const(q).codes[0] == std::uint8_t(c0 ^ 0xFF));
  CHECK(std::get<GroupQuantMatrix>(io::parse(before.data(), before.size()).at("rtn3_asym_fp16")).codes[0] == c0);
}

TEST_CASE("io: a KV-cache snapshot restores the cache, which streams on identically", "[io][kivi]") {
  for (std::size_t tokens : {0, 1, 63, 64, 150}) {
    INFO(tokens << " tokens");
    io::Items items;
    items["kv"] = sample_cache(tokens);
    const std::string path = temp_path("kv.safetensors");
    io::save(path, items);
    kivi::Cache a = std::get<kivi::Cache>(items.at("kv")), b = std::get<kivi::Cache>(io::load(path).at("kv"));
    std::remove(path.c_str());
    REQUIRE(a == b);
    // 70 more tokens on both (crosses a keys window and shifts the ring),
    // then decode attention: bit-identical.
    const Matrix kv = test::llm_weights(70, 128, 12);
    for (std::size_t t = 0; t < 70; ++t) {
      a.append(kv.data() + t * 128, kv.data() + t * 128);
      b.append(kv.data() + t * 128, kv.data() + t * 128);
    }
    CHECK(a == b);
    const auto q = test::gaussian(4 * 64, 13);
    std::vector<float> ya(4 * 64), yb(4 * 64);
    attention(a, q.data(), ya.data());
    attention(b, q.data(), yb.data());
    CHECK(ya == yb);
  }
  // Parts that do not fit the token count or the options are refused.
  const kivi::Cache c = sample_cache(150);
  std::vector<kivi::Cache::Head> heads = {c.head(0), c.head(1)};
  CHECK_NOTHROW(kivi::Cache::restore(c.options(), 150, heads));
  CHECK_THROWS_AS(kivi::Cache::restore(c.options(), 151, heads), error);
  CHECK_THROWS_AS(kivi::Cache::restore(c.options(), 150, {c.head(0)}), error);
  heads[1].values.scale.pop_back();
  CHECK_THROWS_AS(kivi::Cache::restore(c.options(), 150, heads), error);
  heads[1] = c.head(1);
  heads[0].key_window[0] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(kivi::Cache::restore(c.options(), 150, heads), error);
}

TEST_CASE("io: plain safetensors checkpoints (F32, F16, BF16) load as matrices", "[io]") {
  const std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-3f};
  std::vector<std::uint16_t> f16, b16;
  for (float v : f32) f16.push_back(fp16::from_float(v).bits), b16.push_back(bf16::from_float(v).bits);
  const std::vector<io::TensorData> t = {{"a.f32", io::Dtype::F32, {2, 3}, f32.data(), 24},
                                         {"b.f16", io::Dtype::F16, {6}, f16.data(), 12},
                                         {"c.bf16", io::Dtype::BF16, {1, 2, 3}, b16.data(), 12}};
  const io::Layout l = io::layout_safetensors(t, {{"format", "pt"}});
  std::vector<std::uint8_t> file(l.head.begin(), l.head.end());
  for (std::size_t i = 0; i < t.size(); ++i) {
    file.resize(l.head.size() + l.begin[i], 0);
    const auto* p = static_cast<const std::uint8_t*>(t[i].data);
    file.insert(file.end(), p, p + t[i].bytes);
  }
  const io::Items items = io::parse(file.data(), file.size());
  REQUIRE(items.size() == 3);
  const Matrix& a = std::get<Matrix>(items.at("a.f32"));
  const Matrix& b = std::get<Matrix>(items.at("b.f16"));
  const Matrix& c = std::get<Matrix>(items.at("c.bf16"));
  CHECK((a.rows() == 2 && a.cols() == 3 && b.rows() == 1 && b.cols() == 6 && c.rows() == 2 && c.cols() == 3));
  for (std::size_t i = 0; i < 6; ++i) {
    CHECK(a.data()[i] == f32[i]);
    CHECK(b.data()[i] == fp16::from_bits(f16[i]).to_float());
    CHECK(c.data()[i] == bf16::from_bits(b16[i]).to_float());
  }
  // An integer tensor is not a matrix.
  const std::int64_t ids[2] = {1, 2};
  const io::Layout l2 = io::layout_safetensors({{"ids", io::Dtype::I64, {2}, ids, 16}}, {});
  std::vector<std::uint8_t> f2(l2.head.begin(), l2.head.end());
  f2.resize(f2.size() + 16);
  std::memcpy(f2.data() + l2.head.size(), ids, 16);
  CHECK_THAT(error_of([&] { io::parse(f2.data(), f2.size()); }), Catch::Matchers::Contains("dtype I64"));
}

TEST_CASE("io: every truncation and random corruptions give lowbit::error, never a crash", "[io]") {
  io::Items small;
  rtn::Options o;
  o.group = 32;
  small["w"] = rtn::quantize(test::llm_weights(4, 64, 7), o);
  small["n"] = test::llm_weights(1, 8, 8);
  const std::string path = temp_path("small.safetensors");
  io::save(path, small);
  const auto file = read_bytes(path);
  std::remove(path.c_str());
  for (std::size_t n = 0; n < file.size(); ++n) {
    INFO("truncated to " << n << " of " << file.size());
    CHECK_THROWS_AS(io::parse(file.data(), n), error);
  }
  std::vector<std::uint8_t> longer = file;
  longer.push_back(0);
  CHECK_THROWS_AS(io::parse(longer.data(), longer.size()), error);
  // Any byte changed: the header no longer parses or validates, or a
  // checksum fails; with checksums off, the result is an error or a valid
  // item (the codes themselves can be anything).
  std::mt19937 rng(9);
  io::LoadOptions fast;
  fast.verify_checksums = false;
  int accepted_unverified = 0;
  for (int i = 0; i < 3000; ++i) {
    std::vector<std::uint8_t> bad = file;
    const std::size_t at = rng() % bad.size();
    const auto flip = std::uint8_t(1u << (rng() % 8));
    bad[at] ^= flip;
    INFO("byte " << at << " ^= " << int(flip));
    CHECK_THROWS_AS(io::parse(bad.data(), bad.size()), error);
    try {
      io::parse(bad.data(), bad.size(), fast);
      ++accepted_unverified;
    } catch (const error&) {
    }
  }
  INFO(accepted_unverified << " of 3000 corruptions pass structural checks without checksums");
  CHECK(accepted_unverified > 0);  // code bytes are not structural
}

TEST_CASE("io: each rule of the file layout has its error", "[io]") {
  io::Items one;
  rtn::Options o;
  o.group = 32;
  one["w"] = rtn::quantize(test::llm_weights(4, 64, 7), o);
  const std::string path = temp_path("rules.safetensors");
  const SavedFile saved(one, path);
  const std::vector<std::uint8_t>& file = saved.file;
  const std::string& header = saved.header;
  auto with_header = [&](const std::string& h) { return saved.with_header(h); };
  auto replaced = [&](const std::string& from, const std::string& to) { return saved.replaced(from, to); };
  auto message = [](const std::vector<std::uint8_t>& f) { return SavedFile::unverified_error(f); };
  auto verified = [&](const std::vector<std::uint8_t>& f) {
    return error_of([&] { io::parse(f.data(), f.size()); });
  };
  using Catch::Matchers::Contains;
  // The unchanged header (padding stripped and re-added) still loads.
  CHECK(message(replaced("{", "{")).empty());
  CHECK(verified(replaced("{", "{")).empty());
  std::vector<std::uint8_t> huge = file;
  const std::uint64_t big = std::uint64_t(1) << 62;
  std::memcpy(huge.data(), &big, 8);
  CHECK_THAT(message(huge), Contains("exceeds the 100 MB limit"));
  const std::uint64_t past = file.size();
  std::memcpy(huge.data(), &past, 8);
  CHECK_THAT(message(huge), Contains("exceeds the file"));
  // One header edit per rule, and the error it must give.
  check_rules(saved, {
      {"\"lowbit.version\":\"2\"", "\"lowbit.version\":\"1\"", "format version"},
      {"group_quant ", "vector_quant ", "unknown format kind"},
      {"bits=4", "bits=4 colour=blue", "unknown parameter"},
      {"bits=4", "bits=04", "not an integer"},
      {"bits=4", "bits=5", "not a valid format"},
      {"rows=4", "rows=5", "has shape"},
      {"\"w.scales\":{\"dtype\":\"F16\"", "\"w.scales\":{\"dtype\":\"BF16\"", "has dtype BF16, expected F16"},
      {"\"w.scales\":{\"dtype\":\"F16\"", "\"w.scales\":{\"dtype\":\"F17\"", "unsupported dtype"},
      {"\"w.codes\":", "\"w.kodes\":", "tensor \"w.codes\" is missing"},
      {"\"shape\":[4,32]", "\"shape\":[4,33]", "bytes for"},
      {"\"shape\":[4,", "\"shape\":[4000000000000,4000000000000,", "shape overflows"},
      {"\"data_offsets\":[0,", "\"data_offsets\":[1,", "tile the data buffer"},
      {"{", "{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},", "tile the data buffer"},
      {"{", "{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"y\":1},", "unknown field"},
      {"\"w.codes\":", "\"w.codes\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},\"w.codes\":",
       "duplicate tensor"},
      {"{", "{\"__metadata__\":{},", "duplicate key"},
      {"\"lowbit.version\":\"2\"", "\"lowbit.version\":2", "not a string"},
      {"\"lowbit.version\"", "\"lowbit.\xC0\xAF\"", "invalid UTF-8"},
      {"\"lowbit.version\"", "\"lowbit.\\ud800\"", "surrogate"},
      {"\"lowbit.version\"", "\"lowbit.\tx\"", "control character"},
      {"{", "{{", "expected '\"'"},
      {"\"data_offsets\":[0,", "\"data_offsets\":[0.0,", "unsigned integer"},
      {"\"data_offsets\":[0,", "\"data_offsets\":[99999999999999999999,", "out of range"},
  });
  // Checksums: the header's, then each tensor's.
  CHECK_THAT(verified(replaced("cols=64", "cols=60")), Contains("header checksum mismatch"));
  CHECK(message(replaced("cols=64", "cols=60")).empty());  // same bytes, another valid matrix: only the checksum sees it
  CHECK_THAT(verified(replaced("\"lowbit.xxh64.__header__\":", "\"lowbit.xxh64.__headers__\":")),
             Contains("no checksum"));
  std::vector<std::uint8_t> flipped = file;
  flipped.back() ^= 1;
  CHECK_THAT(verified(flipped), Contains("checksum mismatch (file says"));
  CHECK(message(flipped).empty());
  std::vector<std::uint8_t> trailing = with_header(header + "x");
  CHECK_THAT(message(trailing), Contains("after the header"));
  // Names save refuses.
  io::Items reserved;
  reserved["__pad.0"] = Matrix(1, 1);
  CHECK_THROWS_AS(io::save(path, reserved), error);
  io::Items clash;
  clash["a"] = std::get<GroupQuantMatrix>(one.at("w"));
  clash["a.codes"] = Matrix(1, 1);
  CHECK_THAT(error_of([&] { io::save(path, clash); }), Contains("two items produce"));
  CHECK_THAT(error_of([&] { io::load(temp_path("does_not_exist")); }), Contains("cannot open"));
  CHECK_THAT(error_of([&] { io::map(temp_path("does_not_exist")); }), Contains("cannot open"));
  std::ofstream(path, std::ios::binary).close();  // an empty file
  CHECK_THAT(error_of([&] { io::map(path); }), Contains("is empty"));
  CHECK_THAT(error_of([&] { io::load(path); }), Contains("shorter than the 8-byte header length"));
  // Writer and Matrix inputs that disagree with their shapes.
  const float two[2] = {1, 2};
  CHECK_THAT(error_of([&] { io::layout_safetensors({{"t", io::Dtype::F32, {3}, two, 8}}, {}); }),
             Contains("8 bytes for 3 elements of F32"));
  CHECK_THAT(error_of([&] { Matrix(2, 2, Buffer<float>(3)); }), Contains("3 elements for 2 x 2"));
  CHECK_THAT(error_of([&] { Matrix(2, 0, Buffer<float>(1)); }), Contains("1 elements for 2 x 0"));
  std::remove(path.c_str());
}

TEST_CASE("io: VQ parameters and arrays are checked against each other", "[io][vptq]") {
  io::Items one;
  vptq::Options vo;
  vo.vector = 4, vo.codebook = 16, vo.residual_codebook = 4;
  const Matrix W = test::llm_weights(8, 64, 9);
  one["v"] = vptq::quantize(W, test::neighbour_hessian(64, 9, 256), vo);
  const SavedFile saved(one, temp_path("vq_rules.safetensors"));
  CHECK(SavedFile::unverified_error(saved.replaced("{", "{")).empty());
  check_rules(saved, {
      {"axis=output", "axis=diagonal", "unknown axis"},
      {"main0_k=16", "main0_k=12", "not a power of two"},
      {"main0_k=16", "main0_k=32", "has shape"},
      {"main_levels=2", "main_levels=1", "unknown parameter \"main1_k\""},
      {"main_levels=2", "main_levels=3", "not an integer in [0, 2]"},
      {"vector=4", "vector=17", "not an integer in [0, 16]"},
      {"vector=4", "vector=1", "not a valid format"},
      {"vector=4", "vector=8", "has shape"},
      {"rows=8", "rows=6", "has shape"},
      {"permuted=1", "permuted=0", "\"v.perm\" has dtype U32: not part of a lowbit format"},
      {"normalized=0", "normalized=1", "tensor \"v.scale\" is missing"},
      {"outlier_columns=0", "outlier_columns=65", "not an integer in [0, 64]"},
      {"outlier_columns=0", "outlier_columns=8", "\"v.main0.indices\" has shape [66], expected [58]"},
  });
}
