// safetensors files: the container of lowbit's storage (io/formats.hpp puts
// formats in it) and the way in for real checkpoints (F32, F16, BF16).
//
// Layout (https://github.com/huggingface/safetensors, "Format"):
//
//   bytes [0, 8)        N, unsigned 64-bit little-endian: the header's length
//   bytes [8, 8 + N)    the header: a UTF-8 JSON object
//                         "<tensor name>": {"dtype": "F32", "shape": [2, 3],
//                                           "data_offsets": [begin, end]}
//                         "__metadata__": {"<key>": "<string value>", ...}
//   bytes [8 + N, end)  the data buffer; a tensor's bytes are
//                       [begin, end) of it, row-major, little-endian
//
// The reader enforces what the reference implementation enforces: the
// tensors' byte ranges tile the buffer exactly (sorted by offset, no gap, no
// overlap, the last one ends at the end of the file), a tensor's byte count
// is its element count times its dtype's size (computed without overflow),
// names are unique, the header is at most 100 MB of valid UTF-8 JSON, and
// metadata values are strings. It also rejects duplicate JSON keys and
// nesting deeper than the format has, so every header has one meaning.
//
// Why a strict parser written here rather than a JSON library: the header is
// a small, fixed grammar (objects, strings, arrays of unsigned integers); a
// parser of exactly that grammar is about 200 lines with no dependency for
// users, its limits (size, depth, integer range) are explicit, and it is
// fuzzed with the rest of the loader (tests/fuzz/fuzz_io.cpp).
//
// The writer (write_safetensors) starts every tensor at a multiple of 64
// bytes from the file's start: the header is padded with spaces, and a gap
// before a tensor is filled by a zero tensor named "__pad.<i>" of dtype U8
// (the format allows no holes, so padding has to be a tensor to keep the file
// readable by standard readers).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../core/buffer.hpp"
#include "../core/error.hpp"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "lowbit/io reads and writes little-endian data in place: big-endian hosts are not supported"
#endif

namespace lowbit::io {

enum class Dtype : std::uint8_t { BOOL, U8, I8, F8_E5M2, F8_E4M3, U16, I16, F16, BF16, U32, I32, F32, U64, I64, F64 };

namespace detail {
struct DtypeInfo {
  Dtype dtype;
  const char* name;
  std::size_t size;
};
inline constexpr DtypeInfo dtypes[] = {
    {Dtype::BOOL, "BOOL", 1}, {Dtype::U8, "U8", 1},   {Dtype::I8, "I8", 1},     {Dtype::F8_E5M2, "F8_E5M2", 1},
    {Dtype::F8_E4M3, "F8_E4M3", 1}, {Dtype::U16, "U16", 2}, {Dtype::I16, "I16", 2}, {Dtype::F16, "F16", 2},
    {Dtype::BF16, "BF16", 2}, {Dtype::U32, "U32", 4}, {Dtype::I32, "I32", 4},   {Dtype::F32, "F32", 4},
    {Dtype::U64, "U64", 8},   {Dtype::I64, "I64", 8}, {Dtype::F64, "F64", 8}};
}  // namespace detail

inline const char* dtype_name(Dtype d) noexcept { return detail::dtypes[std::size_t(d)].name; }
inline std::size_t dtype_size(Dtype d) noexcept { return detail::dtypes[std::size_t(d)].size; }

struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::U8;
  std::vector<std::uint64_t> shape;
  std::uint64_t begin = 0, end = 0;  // byte range in the data buffer

  std::uint64_t bytes() const noexcept { return end - begin; }
  std::uint64_t elements() const noexcept {
    std::uint64_t n = 1;
    for (std::uint64_t d : shape) n *= d;
    return n;
  }
};

// A parsed header: tensors sorted by offset, and the metadata.
struct Header {
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  std::uint64_t data_begin = 0;  // 8 + N: where the data buffer starts in the file
  std::uint64_t data_bytes = 0;  // the data buffer's length
  std::map<std::string, std::size_t> index;  // name -> position in tensors
  const TensorInfo* find(const std::string& name) const {
    const auto it = index.find(name);
    return it == index.end() ? nullptr : &tensors[it->second];
  }
};

inline constexpr std::uint64_t max_header_bytes = 100'000'000;  // the reference's limit
inline constexpr std::size_t alignment = 64;                    // of every tensor lowbit writes

namespace detail {

// Strict JSON of the safetensors header grammar (see the top of the file).
class HeaderParser {
 public:
  HeaderParser(const char* p, std::size_t n) : p_(p), end_(p + n) {}

  Header parse() {
    Header h;
    ws();
    object([&](const std::string& key) {
      if (key == "__metadata__") {
        if (seen_metadata_) fail("duplicate key \"__metadata__\"");
        seen_metadata_ = true;
        metadata(h.metadata);
      } else {
        if (!names_.insert(key).second) fail("duplicate tensor \"" + key + "\"");
        h.tensors.push_back(tensor(key));
      }
    });
    ws();
    if (p_ != end_) fail("bytes after the header object");
    return h;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    ::lowbit::detail::fail("safetensors header", what, " (at byte ", consumed(), ")");
  }
  std::size_t consumed() const { return std::size_t(p_ - begin_); }
  char peek() const { return p_ < end_ ? *p_ : '\0'; }
  void expect(char c) {
    if (p_ >= end_ || *p_ != c) fail(std::string("expected '") + c + "'");
    ++p_;
  }
  void ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  static void put_utf8(std::string& s, std::uint32_t c) {
    if (c < 0x80) {
      s += char(c);
    } else if (c < 0x800) {
      s += char(0xC0 | (c >> 6)), s += char(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      s += char(0xE0 | (c >> 12)), s += char(0x80 | ((c >> 6) & 0x3F)), s += char(0x80 | (c & 0x3F));
    } else {
      s += char(0xF0 | (c >> 18)), s += char(0x80 | ((c >> 12) & 0x3F)), s += char(0x80 | ((c >> 6) & 0x3F)),
          s += char(0x80 | (c & 0x3F));
    }
  }
  std::uint32_t hex4() {
    if (end_ - p_ < 4) fail("truncated \\u escape");
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i, ++p_) {
      const char c = *p_;
      const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) fail("bad hex digit in \\u escape");
      v = v * 16 + std::uint32_t(d);
    }
    return v;
  }
  // One UTF-8 sequence, validated (shortest form, no surrogates, <= U+10FFFF).
  void utf8(std::string& s) {
    const auto b0 = static_cast<unsigned char>(*p_);
    const int n = b0 < 0xC2 ? 0 : b0 < 0xE0 ? 1 : b0 < 0xF0 ? 2 : b0 < 0xF5 ? 3 : 0;
    if (n == 0 || end_ - p_ < n + 1) fail("invalid UTF-8");
    std::uint32_t c = b0 & (0x3F >> n);
    for (int i = 1; i <= n; ++i) {
      const auto b = static_cast<unsigned char>(p_[i]);
      if ((b & 0xC0) != 0x80) fail("invalid UTF-8");
      c = (c << 6) | (b & 0x3F);
    }
    if ((n == 2 && c < 0x800) || (n == 3 && c < 0x10000) || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
      fail("invalid UTF-8");
    s.append(p_, std::size_t(n + 1));
    p_ += n + 1;
  }
  std::string string() {
    expect('"');
    std::string s;
    for (;;) {
      if (p_ >= end_) fail("unterminated string");
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        return s;
      }
      if (c < 0x20) fail("control character in a string");
      if (c >= 0x80) {
        utf8(s);
        continue;
      }
      ++p_;
      if (c != '\\') {
        s += char(c);
        continue;
      }
      if (p_ >= end_) fail("unterminated escape");
      const char e = *p_++;
      switch (e) {
        case '"': s += '"'; break;
        case '\\': s += '\\'; break;
        case '/': s += '/'; break;
        case 'b': s += '\b'; break;
        case 'f': s += '\f'; break;
        case 'n': s += '\n'; break;
        case 'r': s += '\r'; break;
        case 't': s += '\t'; break;
        case 'u': {
          std::uint32_t u = hex4();
          if (u >= 0xDC00 && u <= 0xDFFF) fail("lone low surrogate");
          if (u >= 0xD800 && u <= 0xDBFF) {
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') fail("lone high surrogate");
            p_ += 2;
            const std::uint32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("bad surrogate pair");
            u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
          }
          put_utf8(s, u);
          break;
        }
        default: fail(std::string("bad escape \\") + e);
      }
    }
  }
  std::uint64_t integer() {
    if (p_ >= end_ || *p_ < '0' || *p_ > '9') fail("expected an unsigned integer");
    if (*p_ == '0' && end_ - p_ > 1 && p_[1] >= '0' && p_[1] <= '9') fail("leading zero in an integer");
    std::uint64_t v = 0;
    for (; p_ < end_ && *p_ >= '0' && *p_ <= '9'; ++p_) {
      const auto d = std::uint64_t(*p_ - '0');
      if (v > (~std::uint64_t(0) - d) / 10) fail("integer out of range");
      v = v * 10 + d;
    }
    if (p_ < end_ && (*p_ == '.' || *p_ == 'e' || *p_ == 'E')) fail("expected an unsigned integer");
    return v;
  }
  // A comma-separated list between `open` and `close` (JSON arrays and
  // objects): item() reads one element.
  template <class F>
  void sequence(char open, char close, F&& item) {
    expect(open);
    ws();
    if (peek() == close) {
      ++p_;
      return;
    }
    for (;;) {
      item();
      ws();
      if (peek() != ',') break;
      ++p_;
      ws();
    }
    expect(close);
  }
  std::vector<std::uint64_t> integers() {
    std::vector<std::uint64_t> v;
    sequence('[', ']', [&] {
      if (v.size() >= 64) fail("more than 64 dimensions");
      v.push_back(integer());
    });
    return v;
  }
  template <class F>
  void object(F&& member) {
    sequence('{', '}', [&] {
      const std::string key = string();
      ws();
      expect(':');
      ws();
      member(key);
    });
  }
  void metadata(std::map<std::string, std::string>& m) {
    object([&](const std::string& key) {
      if (peek() != '"') fail("metadata value of \"" + key + "\" is not a string");
      if (!m.emplace(key, string()).second) fail("duplicate metadata key \"" + key + "\"");
    });
  }
  TensorInfo tensor(std::string name) {
    TensorInfo t;
    t.name = std::move(name);
    bool dtype = false, shape = false, offsets = false;
    object([&](const std::string& key) {
      if (key == "dtype") {
        if (dtype) fail("duplicate \"dtype\"");
        dtype = true;
        const std::string d = string();
        const auto* it = std::find_if(std::begin(dtypes), std::end(dtypes), [&](const DtypeInfo& i) { return d == i.name; });
        if (it == std::end(dtypes)) fail("tensor \"" + t.name + "\": unsupported dtype \"" + d + "\"");
        t.dtype = it->dtype;
      } else if (key == "shape") {
        if (shape) fail("duplicate \"shape\"");
        shape = true;
        t.shape = integers();
      } else if (key == "data_offsets") {
        if (offsets) fail("duplicate \"data_offsets\"");
        offsets = true;
        const std::vector<std::uint64_t> o = integers();
        if (o.size() != 2) fail("tensor \"" + t.name + "\": data_offsets must have two entries");
        t.begin = o[0], t.end = o[1];
      } else {
        fail("tensor \"" + t.name + "\": unknown field \"" + key + "\"");
      }
    });
    if (!dtype || !shape || !offsets) fail("tensor \"" + t.name + "\" lacks dtype, shape or data_offsets");
    return t;
  }

  const char* p_;
  const char* const end_;
  const char* const begin_ = p_;
  bool seen_metadata_ = false;
  std::set<std::string> names_;
};

inline void json_string(std::string& out, const std::string& s) {
  static const char hex[] = "0123456789abcdef";
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\', out += char(c);
    } else if (c < 0x20) {
      out += "\\u00", out += hex[c >> 4], out += hex[c & 15];
    } else {
      out += char(c);
    }
  }
  out += '"';
}

// The JSON header's content, tensors sorted by offset (not yet checked
// against a file).
inline Header parse_json(const char* json, std::size_t n) {
  Header h = HeaderParser(json, n).parse();
  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (std::size_t i = 0; i < h.tensors.size(); ++i) h.index.emplace(h.tensors[i].name, i);
  return h;
}

inline std::uint64_t read_u64le(const std::uint8_t* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace detail

// The header of the safetensors file held in file[0, size), validated
// against the file (every check listed at the top of this header).
inline Header parse_header(const std::uint8_t* file, std::uint64_t size) {
  LOWBIT_CHECK(size >= 8, "safetensors", "file of ", size, " bytes is shorter than the 8-byte header length");
  const std::uint64_t n = detail::read_u64le(file);
  LOWBIT_CHECK(n <= max_header_bytes, "safetensors", "header length ", n, " exceeds the 100 MB limit");
  LOWBIT_CHECK(n <= size - 8, "safetensors", "header length ", n, " exceeds the file (", size, " bytes)");
  Header h = detail::parse_json(reinterpret_cast<const char*>(file + 8), std::size_t(n));
  h.data_begin = 8 + n;
  h.data_bytes = size - h.data_begin;
  std::uint64_t at = 0;
  for (const TensorInfo& t : h.tensors) {
    LOWBIT_CHECK(t.begin == at && t.end >= t.begin, "safetensors", "tensor \"", t.name, "\" has data_offsets [", t.begin,
                 ", ", t.end, "]: the tensors must tile the data buffer (next free byte ", at, ")");
    std::uint64_t elements = 1;
    for (std::uint64_t d : t.shape) {
      LOWBIT_CHECK(d == 0 || elements <= ~std::uint64_t(0) / d, "safetensors", "tensor \"", t.name, "\": shape overflows");
      elements *= d;
    }
    LOWBIT_CHECK(elements <= ~std::uint64_t(0) / dtype_size(t.dtype) && elements * dtype_size(t.dtype) == t.bytes(),
                 "safetensors", "tensor \"", t.name, "\": ", t.bytes(), " bytes for ", elements, " elements of ",
                 dtype_name(t.dtype));
    at = t.end;
  }
  LOWBIT_CHECK(at == h.data_bytes, "safetensors", "the tensors cover ", at, " bytes of a ", h.data_bytes,
               "-byte data buffer (truncated or trailing bytes)");
  return h;
}

// One tensor to write: name, dtype, shape and its bytes (which must be
// exactly elements x dtype size).
struct TensorData {
  std::string name;
  Dtype dtype = Dtype::U8;
  std::vector<std::uint64_t> shape;
  const void* data = nullptr;
  std::uint64_t bytes = 0;
};

// Lays out `tensors` (in the given order, each at a multiple of `alignment`
// from the file's start) and returns the file's bytes before the data
// buffer, and the tensors' offsets in the data buffer (pads included).
struct Layout {
  std::string head;  // 8-byte length + padded JSON header
  std::vector<std::uint64_t> begin;  // per input tensor
  std::uint64_t data_bytes = 0;
};

inline Layout layout_safetensors(const std::vector<TensorData>& tensors,
                                 const std::map<std::string, std::string>& metadata) {
  Layout l;
  std::string json = "{";
  if (!metadata.empty()) {
    json += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) json += ',';
      first = false;
      detail::json_string(json, k);
      json += ':';
      detail::json_string(json, v);
    }
    json += '}';
  }
  auto entry = [&](const std::string& name, Dtype d, const std::vector<std::uint64_t>& shape, std::uint64_t b,
                   std::uint64_t e) {
    if (json.size() > 1) json += ',';
    detail::json_string(json, name);
    json += ":{\"dtype\":\"";
    json += dtype_name(d);
    json += "\",\"shape\":[";
    for (std::size_t i = 0; i < shape.size(); ++i) json += (i ? "," : "") + std::to_string(shape[i]);
    json += "],\"data_offsets\":[" + std::to_string(b) + "," + std::to_string(e) + "]}";
  };
  std::uint64_t at = 0;
  std::size_t pads = 0;
  for (const TensorData& t : tensors) {
    std::uint64_t elements = 1;
    for (std::uint64_t d : t.shape) elements *= d;
    LOWBIT_CHECK(elements * dtype_size(t.dtype) == t.bytes, "write_safetensors", "tensor \"", t.name, "\": ", t.bytes,
                 " bytes for ", elements, " elements of ", dtype_name(t.dtype));
    if (const std::uint64_t gap = (alignment - at % alignment) % alignment; gap && t.bytes) {
      entry("__pad." + std::to_string(pads++), Dtype::U8, {gap}, at, at + gap);
      at += gap;
    }
    l.begin.push_back(at);
    entry(t.name, t.dtype, t.shape, at, at + t.bytes);
    at += t.bytes;
  }
  json += '}';
  // Pad the header with spaces so that the data buffer starts aligned.
  json.append((alignment - (8 + json.size()) % alignment) % alignment, ' ');
  l.head.resize(8);
  const std::uint64_t n = json.size();
  std::memcpy(&l.head[0], &n, 8);
  l.head += json;
  l.data_bytes = at;
  return l;
}

}  // namespace lowbit::io
