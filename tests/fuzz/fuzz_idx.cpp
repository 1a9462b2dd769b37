// libFuzzer target: the IDX reader (data/idx.h), raw and gzip. Any input either loads or
// throws sg::Error (never a crash, a sanitizer report, another exception or a hang); an
// input that loads is written back raw and gzip-compressed and must read back identical.
#include <softgrad.h>

#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace sd = sg::data;
  sd::IdxArray first;
  try {
    first = sd::read_idx(fuzz::write_input("input", data, size));
  } catch (const sg::Error&) {
    return 0;  // refused with a message: fine
  }
  for (const char* name : {"again.idx", "again.idx.gz"}) {
    const auto path = fuzz::scratch(name);
    sd::write_idx(path, first);
    const sd::IdxArray second = sd::read_idx(path, static_cast<int>(first.dims.size()));
    if (second.dims != first.dims || second.data != first.data) fuzz::broken("IDX round trip changed the array");
  }
  return 0;
}
