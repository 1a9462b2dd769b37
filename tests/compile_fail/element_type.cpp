// Must NOT compile: Tensor's typed accessors take float, double, int64_t, int, bool or sg::bfloat16, and
// any other element type is a static_assert naming those (it used to compile and then fail
// to link with a mangled name). CMakeLists.txt compiles this file once per case below with
// -fsyntax-only and passes when the compiler prints softgrad's message.
#include "core/tensor.h"

#include <cstdint>
#include <vector>

void unsupported(const sg::Tensor& t) {
#if defined(CASE_ITEM)
  (void)t.item<short>();
#elif defined(CASE_TO_VECTOR)
  (void)t.to_vector<uint8_t>();
#elif defined(CASE_FROM_VECTOR)
  (void)t;
  (void)sg::from_vector(std::vector<unsigned>{1, 2}, {2});
#elif defined(CASE_DATA_PTR)
  (void)t.data_ptr<int>();  // int converts in item/at/to_vector; data_ptr has no conversion
#endif
}
