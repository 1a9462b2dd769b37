#pragma once
// safetensors files: named tensors plus string metadata, the format PyTorch's ecosystem
// (Hugging Face's `safetensors` package) uses for checkpoints.
//
//   sg::save_safetensors("model.safetensors", {{"w", w}, {"b", b}}, {{"epoch", "3"}});
//   sg::SafetensorsFile f = sg::load_safetensors("model.safetensors");
//   // f.tensors: {"b", ...}, {"w", ...} in file order; f.metadata: {"epoch": "3"}
//
// Layout (the format's spec): an 8-byte little-endian u64 N, N bytes of UTF-8 JSON
//   {"__metadata__": {"key": "value", ...},
//    "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
// then the data section: each tensor's elements in row-major order, little-endian, at
// [begin, end) relative to the start of the section. The ranges tile the section exactly.
//
// Writing follows the reference implementation, so its readers (safetensors.torch.load_file
// and every other) open the files, and the bytes are deterministic:
//   * tensors laid out by descending dtype alignment, then by name (bytewise): int64 and
//     float64 first, then float32, then bool, so every tensor starts aligned to its element;
//   * compact JSON in that order, "__metadata__" first (keys sorted; omitted when empty);
//   * the header padded with spaces to a multiple of 8 bytes.
// softgrad's dtypes are written as I64, F64, F32, BF16 and BOOL (one byte, 0 or 1), and int64
// tensors as I8 ... U32 when asked (narrow_to, below). Strided
// tensors are written as their row-major contents. The write is atomic: the bytes go to a
// fresh temporary file in the target's directory, are flushed and fsync'ed, and the file is
// renamed over the target. After any failure the temporary file is gone and a previous file
// at `path` is untouched. A writer killed mid-save (kill -9) cannot remove its temporary file
// (".<name>.tmp.<pid>.<n>"); the next save to the same path removes those whose writer is
// dead (each writer holds an flock() on its file while it lives), never a live writer's.
//
// Reading validates everything before it trusts it (header length against the file size
// and a 100 MB cap, JSON syntax and UTF-8, nesting no deeper than the format's 3 levels, known keys only and no key twice, dtypes,
// shapes, offsets that match shape x element size and tile the data section without gap,
// overlap or trailing bytes, bool bytes that are 0 or 1, string-only metadata) and throws an
// sg::Error naming the file and the offending field. Tensors come back contiguous, in
// data-offset order, as fresh leaves (requires_grad false). dtypes:
//   F32, F64, I64, BOOL, BF16          -> float32, float64, int64, bool, bfloat16 (bit-exact;
//                                         written back as they came);
//   U8, I8, U16, I16, U32, I32         -> int64 (every value exact);
//   U64                                -> int64 when every value is <= 2^63 - 1, else an error;
//   F16                                -> float32 (every value exact; NaNs come out quiet);
//   anything else (F8_*, ...)          -> an error naming the tensor and its dtype.
// NOTE: so a file read and written back is not byte-identical when it held other dtypes.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace sg {

// Ordered (name, tensor) pairs; nn::NamedTensors is the same type.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Throws sg::Error naming `path` for an undefined tensor, a name given twice or named
// "__metadata__", a name or metadata string that is not valid UTF-8, or an I/O failure.
// narrow_to: int64 tensors to write as a narrower integer dtype, by name ({"w", "I8"}; I8,
// U8, I16, U16, I32 or U32): every value must fit (else sg::Error naming the tensor, the
// element and its value). They load back as int64 with their values, and the file's dtype
// in SafetensorsFile::dtypes. (Quantized models use this: quant/.)
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {},
                      const std::map<std::string, std::string>& narrow_to = {});

struct SafetensorsFile {
  NamedTensors tensors;                         // in data-offset order
  std::map<std::string, std::string> metadata;  // "__metadata__" (empty when absent)
  std::map<std::string, std::string> dtypes;    // each tensor's dtype in the file ("F32", "I8", ...)
};

SafetensorsFile load_safetensors(const std::string& path);

}  // namespace sg
