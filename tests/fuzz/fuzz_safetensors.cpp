// libFuzzer target: the safetensors reader (core/safetensors.h). Any input either loads
// or throws sg::Error (never a crash, a sanitizer report, another exception or a hang); an
// input that loads is saved again and must load back bit-identical: same names in the
// same order, dtypes, shapes, bytes (NaN payloads included) and metadata.
#include <softgrad.h>

#include <cstring>

#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sg::SafetensorsFile first;
  try {
    first = sg::load_safetensors(fuzz::write_input("input.safetensors", data, size).string());
  } catch (const sg::Error&) {
    return 0;  // refused with a message: fine
  }
  const std::string again = fuzz::scratch("again.safetensors").string();
  sg::save_safetensors(again, first.tensors, first.metadata);
  const sg::SafetensorsFile second = sg::load_safetensors(again);
  if (second.metadata != first.metadata) fuzz::broken("safetensors round trip changed the metadata");
  if (second.tensors.size() != first.tensors.size()) fuzz::broken("safetensors round trip changed the tensor count");
  // The writer lays tensors out by alignment then name, the reader returns file order:
  // match them by name.
  for (const auto& [name, a] : first.tensors) {
    const sg::Tensor* b = nullptr;
    for (const auto& [other, t] : second.tensors)
      if (other == name) b = &t;
    if (!b) fuzz::broken("safetensors round trip lost a tensor");
    if (b->dtype() != a.dtype() || b->shape() != a.shape()) fuzz::broken("safetensors round trip changed a dtype or shape");
    if (a.nbytes() > 0 && std::memcmp(a.raw_data(), b->raw_data(), a.nbytes()) != 0)
      fuzz::broken("safetensors round trip changed the bytes of a tensor");
  }
  return 0;
}
