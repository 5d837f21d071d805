// libFuzzer target for the llama2.c loaders (model/llama2c.hpp): the input's
// first byte picks the checkpoint or the tokenizer reader (with a vocabulary
// of 4 + the second byte tokens), the rest is the file. Each must load or
// throw lowbit::error, never read out of bounds or allocate without bound
// (built with -fsanitize=fuzzer,address,undefined; see README "Fuzzing").
#include <cstdint>
#include <sstream>
#include <string>

#include <lowbit/model/llama2c.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::string file(reinterpret_cast<const char*>(data) + 2, size - 2);
  std::istringstream in(file);
  try {
    if (data[0] & 1) {
      const auto m = lowbit::llama2c::read_checkpoint(in, file.size());
      (void)m.classifier();
    } else {
      const lowbit::llama2c::Tokenizer t(in, file.size(), 4 + data[1]);
      (void)t.encode("Once upon a time \xc3\xa9\xff");
    }
  } catch (const lowbit::error&) {
  }
  return 0;
}
