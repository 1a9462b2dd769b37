#include "data/idx.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>

#include "core/error.h"

namespace sg::data {

namespace fs = std::filesystem;

namespace {

constexpr int64_t kIdxMaxDim = (int64_t{1} << 31) - 1;
constexpr size_t kInputChunk = size_t{1} << 16;  // compressed bytes read from disk at a time

uint32_t load_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

void store_be32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

bool named_gz(const fs::path& path) { return path.extension() == ".gz"; }

// "60000 x 28 x 28"
std::string dims_string(const std::vector<int64_t>& dims) { return fmt::format("{}", fmt::join(dims, " x ")); }

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// Sequential reader over a raw or gzip-compressed file; gzip is detected by its magic.
// `who` (the public function) and the path start every error message.
class ByteSource {
 public:
  ByteSource(const fs::path& path, const char* who) : path_(path.string()), who_(who) {
    std::error_code ec;
    const fs::file_status status = fs::status(path, ec);
    SG_CHECK(fs::exists(status), "{}: {}: cannot open: no such file", who_, path_);
    SG_CHECK(fs::is_regular_file(status), "{}: {}: cannot open: not a regular file", who_, path_);
    file_.reset(std::fopen(path_.c_str(), "rb"));
    SG_CHECK(file_ != nullptr, "{}: {}: cannot open: {}", who_, path_, std::strerror(errno));
    file_size_ = fs::file_size(path, ec);
    SG_CHECK(!ec, "{}: {}: cannot read its size: {}", who_, path_, ec.message());

    uint8_t head[2] = {0, 0};
    const size_t got = std::fread(head, 1, 2, file_.get());
    gzip_ = got == 2 && head[0] == 0x1f && head[1] == 0x8b;
    SG_CHECK(gzip_ || !named_gz(path),
             "{}: {}: the name ends in .gz but the file is not gzip (it starts with {}, gzip starts with 1f 8b)", who_,
             path_,
             got == 0 ? std::string("nothing, it is empty") : fmt::format("{:02x}", fmt::join(head, head + got, " ")));
    std::rewind(file_.get());
    if (gzip_) {
      // 15 + 16: a gzip wrapper only (not zlib, not raw deflate), 32 KiB window.
      SG_CHECK(inflateInit2(&z_, 15 + 16) == Z_OK, "{}: {}: zlib could not start: {}", who_, path_,
               z_.msg ? z_.msg : "out of memory");
      z_open_ = true;
      input_.resize(kInputChunk);
    }
  }
  ~ByteSource() {
    if (z_open_) inflateEnd(&z_);
  }
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;

  bool gzip() const { return gzip_; }
  // Names what a short count counts, for messages: "file has 1000", "decompressed data has 1000".
  const char* has() const { return gzip_ ? "decompressed data has" : "file has"; }

  // Reads up to n bytes into dst; fewer only at the end of the data. A truncated or
  // corrupt gzip stream throws.
  size_t read(uint8_t* dst, size_t n) { return gzip_ ? read_gzip(dst, n) : read_raw(dst, n); }

  // How many bytes are left after what was read. Raw: from the file size. gzip: by
  // decompressing the rest, which also checks the stream's end and its CRC.
  uint64_t count_rest() {
    if (!gzip_) return file_size_ - consumed_;
    std::vector<uint8_t> scratch(kInputChunk);
    uint64_t rest = 0;
    for (size_t got; (got = read_gzip(scratch.data(), scratch.size())) > 0;) rest += got;
    return rest;
  }

 private:
  size_t read_raw(uint8_t* dst, size_t n) {
    const size_t got = std::fread(dst, 1, n, file_.get());
    SG_CHECK(got == n || !std::ferror(file_.get()), "{}: {}: read error: {}", who_, path_, std::strerror(errno));
    consumed_ += got;
    return got;
  }

  // Inflates into dst. Concatenated gzip members are one stream (as gzip -d reads them).
  size_t read_gzip(uint8_t* dst, size_t n) {
    size_t out = 0;
    while (out < n && !z_done_) {
      if (z_.avail_in == 0) refill();
      if (z_.avail_in == 0) {  // the file has ended
        SG_CHECK(member_ended_, "{}: {}: the gzip stream is truncated: the file ends after {}, inside it", who_,
                 path_, plural(file_size_, "byte"));
        z_done_ = true;
        break;
      }
      if (member_ended_) {  // more bytes after a complete member: another member, or junk
        SG_CHECK(z_.next_in[0] == 0x1f, "{}: {}: {} after the end of the gzip stream {} not gzip", who_, path_,
                 plural(z_.avail_in + (file_size_ - consumed_), "byte"),
                 z_.avail_in + (file_size_ - consumed_) == 1 ? "is" : "are");
        member_ended_ = false;
      }
      z_.next_out = dst + out;
      z_.avail_out = static_cast<uInt>(std::min<size_t>(n - out, UINT_MAX));
      const uInt before = z_.avail_out;
      const int rc = inflate(&z_, Z_NO_FLUSH);
      out += before - z_.avail_out;
      if (rc == Z_STREAM_END) {  // the member's CRC and length matched
        member_ended_ = true;
        SG_CHECK(inflateReset(&z_) == Z_OK, "{}: {}: zlib could not reset", who_, path_);
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {  // Z_BUF_ERROR: needs more input, refilled above
        fail("{}: {}: the gzip data is corrupt ({})", who_, path_, z_.msg ? z_.msg : zError(rc));
      }
    }
    return out;
  }

  void refill() {
    const size_t got = std::fread(input_.data(), 1, input_.size(), file_.get());
    SG_CHECK(got == input_.size() || !std::ferror(file_.get()), "{}: {}: read error: {}", who_, path_,
             std::strerror(errno));
    consumed_ += got;
    z_.next_in = input_.data();
    z_.avail_in = static_cast<uInt>(got);
  }

  std::string path_;
  const char* who_;
  std::unique_ptr<std::FILE, FileCloser> file_;  // closed even when the constructor throws
  uint64_t file_size_ = 0;
  uint64_t consumed_ = 0;  // bytes of the file read so far (compressed bytes for gzip)
  bool gzip_ = false;
  z_stream z_{};
  bool z_open_ = false;
  bool z_done_ = false;        // the file ended right after a complete member
  bool member_ended_ = false;  // the last inflate finished a member
  std::vector<uint8_t> input_;
};

// Reads and checks the magic and the dims; returns them and prod(dims).
IdxHeader read_header(ByteSource& src, const std::string& path, std::optional<int> ndim, const char* who,
                      int64_t& data_bytes) {
  uint8_t magic[4];
  size_t got = src.read(magic, 4);
  SG_CHECK(got == 4, "{}: {}: header is truncated: the magic number needs 4 bytes, {} {}", who, path, src.has(), got);
  const uint32_t m = load_be32(magic);
  SG_CHECK(magic[0] == 0 && magic[1] == 0,
           "{}: {}: magic 0x{:08x} is not IDX: its first two bytes must be zero (0x0000TTDD)", who, path, m);
  SG_CHECK(magic[2] == kIdxUnsignedByte,
           "{}: {}: magic 0x{:08x}: data type 0x{:02x} is not unsigned byte (0x08), the only type supported", who, path,
           m, magic[2]);
  const int nd = magic[3];
  if (ndim)
    SG_CHECK(nd == *ndim, "{}: {}: magic 0x{:08x} says {}, expected {} (magic 0x{:08x})", who, path, m, plural(nd, "dim"), *ndim,
             0x800u | static_cast<unsigned>(*ndim));
  SG_CHECK(nd >= 1, "{}: {}: magic 0x{:08x} says 0 dims", who, path, m);

  std::vector<uint8_t> raw(4 * static_cast<size_t>(nd));
  got = src.read(raw.data(), raw.size());
  SG_CHECK(got == raw.size(), "{}: {}: header is truncated: {} {} {} after the magic, {} {}", who, path,
           plural(nd, "dim"), nd == 1 ? "needs" : "need", plural(raw.size(), "byte"), src.has(), got);
  IdxHeader header;
  header.gzip = src.gzip();
  data_bytes = 1;
  for (int d = 0; d < nd; ++d) {
    const int64_t size = load_be32(&raw[4 * d]);
    SG_CHECK(size >= 1 && size <= kIdxMaxDim, "{}: {}: dim {} (of {}) is {}, must be in [1, {}]", who, path, d, nd,
             size, kIdxMaxDim);
    header.dims.push_back(size);
    SG_CHECK(data_bytes <= kIdxMaxDataBytes / size, "{}: {}: header says {} bytes of data, more than the {} allowed",
             who, path, dims_string(header.dims), kIdxMaxDataBytes);
    data_bytes *= size;
  }
  return header;
}

// Writes the pieces one after another into path, through gzip when the name ends in .gz.
void write_pieces(const fs::path& path, std::initializer_list<std::span<const uint8_t>> pieces, const char* who) {
  const std::string p = path.string();
  if (named_gz(path)) {
    gzFile f = gzopen(p.c_str(), "wb");
    SG_CHECK(f != nullptr, "{}: {}: cannot open for writing: {}", who, p, std::strerror(errno));
    bool ok = true;
    for (std::span<const uint8_t> piece : pieces)
      for (size_t at = 0; ok && at < piece.size();) {
        const unsigned len = static_cast<unsigned>(std::min<size_t>(piece.size() - at, size_t{1} << 30));
        ok = gzwrite(f, piece.data() + at, len) == static_cast<int>(len);
        at += len;
      }
    const int close_rc = gzclose(f);
    SG_CHECK(ok && close_rc == Z_OK, "{}: {}: writing the gzip stream failed: {}", who, p, std::strerror(errno));
    return;
  }
  std::FILE* f = std::fopen(p.c_str(), "wb");
  SG_CHECK(f != nullptr, "{}: {}: cannot open for writing: {}", who, p, std::strerror(errno));
  bool ok = true;
  for (std::span<const uint8_t> piece : pieces)
    ok = ok && std::fwrite(piece.data(), 1, piece.size(), f) == piece.size();
  const bool closed = std::fclose(f) == 0;
  SG_CHECK(ok && closed, "{}: {}: writing failed: {}", who, p, std::strerror(errno));
}

[[noreturn]] void fail_size(const char* who, const std::string& path, const IdxHeader& header, int64_t expected,
                            uint64_t actual, const char* has) {
  const std::string trailing = actual > static_cast<uint64_t>(expected)
                                   ? fmt::format(" ({})", plural(actual - static_cast<uint64_t>(expected), "trailing byte"))
                                   : std::string();
  fail("{}: {}: header says {} = {} of data, {} {}{}", who, path, dims_string(header.dims), plural(expected, "byte"), has,
       actual, trailing);
}

}  // namespace

IdxHeader read_idx_header(const fs::path& path, std::optional<int> ndim) {
  const char* who = "read_idx_header";
  ByteSource src(path, who);
  int64_t bytes = 0;
  IdxHeader header = read_header(src, path.string(), ndim, who, bytes);
  if (!src.gzip()) {
    const uint64_t rest = src.count_rest();
    if (rest != static_cast<uint64_t>(bytes)) fail_size(who, path.string(), header, bytes, rest, src.has());
  }
  return header;
}

IdxArray read_idx(const fs::path& path, std::optional<int> ndim) {
  const char* who = "read_idx";
  ByteSource src(path, who);
  int64_t bytes = 0;
  IdxHeader header = read_header(src, path.string(), ndim, who, bytes);
  IdxArray out;
  out.dims = header.dims;
  const size_t n = static_cast<size_t>(bytes);
  if (!src.gzip()) {
    // The size is known: compare before allocating, so a lying header costs nothing.
    const uint64_t rest = src.count_rest();
    if (rest != n) fail_size(who, path.string(), header, bytes, rest, src.has());
    out.data.resize(n);
    const size_t got = src.read(out.data.data(), n);
    if (got != n) fail_size(who, path.string(), header, bytes, got, "but reading it gave");  // changed under us
    return out;
  }
  // gzip: the decompressed size is unknown until the end, so grow the buffer as data
  // arrives (a header claiming gigabytes over a small stream allocates little).
  size_t filled = 0;
  while (filled < n) {
    const size_t target = std::min(n, std::max<size_t>(2 * filled, size_t{1} << 20));
    out.data.resize(target);
    const size_t got = src.read(out.data.data() + filled, target - filled);
    filled += got;
    if (filled < target) break;  // the stream ended
  }
  const uint64_t rest = src.count_rest();  // also reaches the stream's end and checks its CRC
  if (filled != n || rest != 0) fail_size(who, path.string(), header, bytes, filled + rest, src.has());
  return out;
}

void write_idx(const fs::path& path, const IdxArray& array) {
  const std::string p = path.string();
  SG_CHECK(!array.dims.empty() && array.dims.size() <= 255, "write_idx: {}: {}, IDX holds 1 to 255", p,
           plural(array.dims.size(), "dim"));
  int64_t bytes = 1;
  for (size_t d = 0; d < array.dims.size(); ++d) {
    const int64_t size = array.dims[d];
    SG_CHECK(size >= 1 && size <= kIdxMaxDim, "write_idx: {}: dim {} is {}, must be in [1, {}]", p, d, size,
             kIdxMaxDim);
    SG_CHECK(bytes <= kIdxMaxDataBytes / size, "write_idx: {}: dims {} hold more than {} bytes", p,
             dims_string(array.dims), kIdxMaxDataBytes);
    bytes *= size;
  }
  SG_CHECK(static_cast<size_t>(bytes) == array.data.size(), "write_idx: {}: dims {} hold {}, data has {}", p,
           dims_string(array.dims), plural(bytes, "byte"), array.data.size());

  std::vector<uint8_t> header(4 + 4 * array.dims.size());
  header[2] = kIdxUnsignedByte;
  header[3] = static_cast<uint8_t>(array.dims.size());
  for (size_t d = 0; d < array.dims.size(); ++d) store_be32(&header[4 + 4 * d], static_cast<uint32_t>(array.dims[d]));

  write_pieces(path, {std::span<const uint8_t>(header), std::span<const uint8_t>(array.data)}, "write_idx");
}

void write_bytes(const fs::path& path, std::span<const uint8_t> bytes) { write_pieces(path, {bytes}, "write_bytes"); }

}  // namespace sg::data
