// lowbit::error and LOWBIT_CHECK: validation at the API boundary.
//
// Public functions check their arguments and throw lowbit::error with a
// message that names the function, the argument and the offending values;
// inner kernels assume valid input (assert only). See DESIGN.md.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace lowbit {

class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

template <class... Parts>
[[noreturn]] inline void fail(const char* where, const Parts&... parts) {
  std::ostringstream os;
  os << "lowbit: " << where << ": ";
  (os << ... << parts);
  throw error(os.str());
}

}  // namespace detail
}  // namespace lowbit

// LOWBIT_CHECK(cond, where, message parts...): throws lowbit::error
// "lowbit: <where>: <parts...>" when cond is false. The parts are streamed, so
// values can be named inline: LOWBIT_CHECK(x.size() == k, "gemv", "x has ",
// x.size(), " elements, expected K = ", k).
#define LOWBIT_CHECK(cond, where, ...)                       \
  do {                                                       \
    if (!(cond)) ::lowbit::detail::fail(where, __VA_ARGS__); \
  } while (0)
