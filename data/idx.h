#pragma once
// IDX files, the format MNIST and Fashion-MNIST ship in (LeCun's MNIST page):
//
//   bytes 0-3   magic 0x00 0x00 <type> <ndim>   type 0x08 = unsigned byte; so images
//               (N, rows, cols) are 0x00000803 and labels (N) are 0x00000801
//   then        ndim dims, each a big-endian uint32
//   then        prod(dims) bytes of data, row-major
//
//   sg::data::IdxArray images = sg::data::read_idx("train-images-idx3-ubyte.gz", 3);
//   // images.dims == {60000, 28, 28}; images.data.size() == 47040000
//
// A file may be raw or gzip-compressed. gzip is recognised by its first two bytes (1f 8b),
// not by the name; a name ending in .gz whose contents are not gzip is an error (it is
// a half-finished download or a mislabelled file, not something to guess about).
// Every field is checked and every error is an sg::Error naming the function, the file
// and the field: the magic, the data type, the number of dims, each dim (1 .. 2^31 - 1),
// and that the data is exactly prod(dims) bytes (a truncated file and trailing bytes are
// both errors), a truncated or corrupt gzip stream. The reader never reads past a buffer
// and, for a raw file, compares the header with the file size before allocating.
// Only unsigned-byte data (type 0x08) is supported: that is all MNIST-style sets use.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <vector>

namespace sg::data {

inline constexpr uint8_t kIdxUnsignedByte = 0x08;
// The largest data size accepted: far above any IDX data set, low enough that a corrupt
// header cannot make the reader multiply past int64 or ask for absurd memory.
inline constexpr int64_t kIdxMaxDataBytes = int64_t{1} << 34;  // 16 GiB

struct IdxArray {
  std::vector<int64_t> dims;  // e.g. {60000, 28, 28}
  std::vector<uint8_t> data;  // prod(dims) bytes, row-major
};

struct IdxHeader {
  std::vector<int64_t> dims;
  bool gzip = false;  // the file is gzip-compressed
};

// Reads a whole IDX file (raw or gzip). With `ndim`, the magic must also say that many
// dims (3 for images, 1 for labels).
IdxArray read_idx(const std::filesystem::path& path, std::optional<int> ndim = std::nullopt);

// Reads and checks only the header (magic, type, dims). For a raw file it also checks that
// the file size is exactly header + prod(dims); a gzip file's data is checked by read_idx.
IdxHeader read_idx_header(const std::filesystem::path& path, std::optional<int> ndim = std::nullopt);

// Writes an unsigned-byte IDX file, gzip-compressed when the name ends in ".gz". Checks
// that dims are valid and data.size() == prod(dims). Not atomic: meant for fixtures and
// tools, not for replacing a data set in place.
void write_idx(const std::filesystem::path& path, const IdxArray& array);

// Writes bytes as they are, gzip-compressed when the name ends in ".gz" (write_idx's
// writer; tests use it for deliberately broken files).
void write_bytes(const std::filesystem::path& path, std::span<const uint8_t> bytes);

}  // namespace sg::data
