#pragma once
// sg::Error is the one exception type softgrad throws for bad input. Messages name the op,
// the shapes and the bad value, e.g. "add: shapes [2, 3] and [4] cannot be broadcast".
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>
#include <string>

namespace sg {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace sg

// SG_CHECK(cond, "op: shapes {} and {} differ", a.shape(), b.shape());
#define SG_CHECK(cond, ...)                     \
  do {                                          \
    if (!(cond)) [[unlikely]] ::sg::fail(__VA_ARGS__); \
  } while (0)
