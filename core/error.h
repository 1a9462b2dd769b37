#pragma once
// sg::Error is the one exception type softgrad throws for bad input. Messages name the op,
// the shapes and the bad value, e.g. "add: shapes [2, 3] and [4] cannot be broadcast".
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <concepts>
#include <stdexcept>
#include <string>
#include <string_view>

namespace sg {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

// A count and its noun, for messages: plural(1, "thread") is "1 thread", plural(3, "thread")
// "3 threads", plural(0, "index", "indices") "0 indices". The regular plural adds "s"
// ("es" after s, x, z, sh); pass the plural form for the others ("batch", "batches").
template <std::integral I>
std::string plural(I n, std::string_view singular, std::string_view plural_form = {}) {
  if (n == 1) return fmt::format("1 {}", singular);
  if (!plural_form.empty()) return fmt::format("{} {}", n, plural_form);
  const bool es = singular.ends_with('s') || singular.ends_with('x') || singular.ends_with('z') ||
                  singular.ends_with("sh");
  return fmt::format("{} {}{}", n, singular, es ? "es" : "s");
}

}  // namespace sg

// SG_CHECK(cond, "op: shapes {} and {} differ", a.shape(), b.shape());
#define SG_CHECK(cond, ...)                     \
  do {                                          \
    if (!(cond)) [[unlikely]] ::sg::fail(__VA_ARGS__); \
  } while (0)
