// safetensors reader and writer (see core/safetensors.h for the format and the rules).
#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string_view>

#include "core/kernels.h"

namespace sg {
namespace {

// NOTE: the format is little-endian and so is every machine softgrad builds for; bytes are
// copied as they are. A big-endian port would byte-swap in read_tensor / save_safetensors.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

// ordered_json keeps keys in insertion order: the writer's header lists the tensors in data
// order, as the reference implementation's does.
using Json = nlohmann::ordered_json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference implementation's cap
constexpr std::string_view kMetadataKey = "__metadata__";
constexpr int kMaxHeaderDepth = 3;  // header object > tensor entry > shape / data_offsets

// ---- dtypes ------------------------------------------------------------------------------
// The file dtypes softgrad reads, their element size and the softgrad dtype they load as.
struct FileDtype {
  std::string_view name;
  size_t itemsize;
  Dtype loads_as;
};
constexpr FileDtype kReadable[] = {
    {"F32", 4, kFloat32}, {"F64", 8, kFloat64}, {"I64", 8, kInt64},   {"BOOL", 1, kBool},
    {"U8", 1, kInt64},    {"I8", 1, kInt64},    {"U16", 2, kInt64},   {"I16", 2, kInt64},
    {"U32", 4, kInt64},   {"I32", 4, kInt64},   {"U64", 8, kInt64},   {"F16", 2, kFloat32},
    {"BF16", 2, kBFloat16},
};
// Named by the format (or by writers in the wild) but not representable in softgrad.
constexpr std::string_view kUnreadable[] = {"F8_E5M2", "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64"};

const FileDtype* find_file_dtype(std::string_view name) {
  for (const FileDtype& d : kReadable)
    if (d.name == name) return &d;
  return nullptr;
}

std::string readable_names() {
  std::string out;
  for (const FileDtype& d : kReadable) out += (out.empty() ? "" : ", ") + std::string(d.name);
  return out;
}

// What softgrad writes for each of its dtypes, and the reference writer's layout rank
// (higher first): its Dtype enum order, I64 > F64 > F32 > BF16 > BOOL.
std::string_view file_dtype_name(Dtype t) {
  switch (t) {
    case Dtype::Float32: return "F32";
    case Dtype::Float64: return "F64";
    case Dtype::Int64: return "I64";
    case Dtype::Bool: return "BOOL";
    case Dtype::BFloat16: return "BF16";
  }
  return "?";
}
// The reference writer's order of file dtypes (its Dtype enum, highest first): tensors are
// laid out by this rank, then by name.
int layout_rank(std::string_view file_dtype) {
  constexpr std::string_view kOrder[] = {"BOOL", "U8", "I8", "I16", "U16", "F16", "BF16",
                                         "I32",  "U32", "F32", "F64", "I64", "U64"};
  for (size_t i = 0; i < std::size(kOrder); ++i)
    if (kOrder[i] == file_dtype) return static_cast<int>(i);
  return -1;
}

// The integer file dtypes an int64 tensor may be narrowed to on write, and their ranges.
struct Narrowing {
  std::string_view name;
  size_t itemsize;
  int64_t lo, hi;
};
constexpr Narrowing kNarrowings[] = {
    {"I8", 1, INT8_MIN, INT8_MAX},    {"U8", 1, 0, UINT8_MAX},          {"I16", 2, INT16_MIN, INT16_MAX},
    {"U16", 2, 0, UINT16_MAX},        {"I32", 4, INT32_MIN, INT32_MAX}, {"U32", 4, 0, UINT32_MAX},
};

// IEEE binary16 -> binary32, exact for every value (subnormals become normal floats). A NaN
// keeps its sign and payload and comes out quiet, as F16C's vcvtph2ps (and so PyTorch on
// x86) converts it; tests compare all 65536 inputs with the compiler's _Float16 conversion.
float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h >> 15) << 31;
  const uint32_t exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1f)  // inf, or NaN (quiet bit set)
    return std::bit_cast<float>(sign | 0x7f800000u | (mantissa ? 0x00400000u : 0u) | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent - 15 + 127) << 23) | (mantissa << 13));
}

template <typename T> T load_le(const unsigned char* p) {  // unaligned little-endian element
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// ---- POSIX file helpers ------------------------------------------------------------------
std::string errno_text(int err) { return std::strerror(err); }

class Fd {  // closes on scope exit
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;

 private:
  int fd_;
};

// ---- reading -----------------------------------------------------------------------------
struct Entry {
  std::string name;
  const FileDtype* dtype = nullptr;
  Shape shape;
  uint64_t begin = 0, end = 0;  // relative to the data section
};

class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path) {}

  template <typename... Args> [[noreturn]] void bad(fmt::format_string<Args...> f, Args&&... args) const {
    fail("load_safetensors: '{}': {}", path_, fmt::format(f, std::forward<Args>(args)...));
  }

  SafetensorsFile read() {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) bad("cannot open: {}", errno_text(errno));
    Fd file(fd);
    struct stat st {};
    if (::fstat(fd, &st) != 0) bad("cannot stat: {}", errno_text(errno));
    if (!S_ISREG(st.st_mode)) bad("not a regular file");
    fd_ = fd;
    file_size_ = static_cast<uint64_t>(st.st_size);

    // header length: an 8-byte little-endian u64
    if (file_size_ < 8)
      bad("header length: the file has {}, fewer than the 8 of the header length", plural(file_size_, "byte"));
    unsigned char len_bytes[8];
    read_exact(len_bytes, 8, 0, "header length");
    const uint64_t n = load_le<uint64_t>(len_bytes);
    if (n > kMaxHeaderBytes) bad("header length: {} bytes is over the limit of {} bytes", n, kMaxHeaderBytes);
    if (n > file_size_ - 8)
      bad("header length: {}, but the file has only {} after the length", plural(n, "byte"),
          plural(file_size_ - 8, "byte"));
    if (n < 2) bad("header length: {} cannot hold a JSON object", plural(n, "byte"));
    data_start_ = 8 + n;
    data_size_ = file_size_ - data_start_;

    std::string header(n, '\0');
    read_exact(header.data(), n, 8, "header");
    SafetensorsFile out;
    std::vector<Entry> entries = parse_header(header, out.metadata);
    check_layout(entries);
    out.tensors.reserve(entries.size());
    for (const Entry& e : entries) {
      out.tensors.emplace_back(e.name, read_tensor(e));
      out.dtypes.emplace(e.name, std::string(e.dtype->name));
    }
    return out;
  }

 private:
  void read_exact(void* dst, uint64_t nbytes, uint64_t offset, std::string_view field) const {
    auto* p = static_cast<char*>(dst);
    while (nbytes > 0) {
      const size_t chunk = static_cast<size_t>(std::min<uint64_t>(nbytes, 1u << 30));
      const ssize_t got = ::pread(fd_, p, chunk, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) bad("{}: read failed: {}", field, errno_text(errno));
      if (got == 0) bad("{}: the file ended early (was it truncated while being read?)", field);
      p += got;
      offset += static_cast<uint64_t>(got);
      nbytes -= static_cast<uint64_t>(got);
    }
  }

  // Parses and checks the JSON header; fills `metadata` and returns the tensor entries.
  std::vector<Entry> parse_header(const std::string& header, std::map<std::string, std::string>& metadata) const {
    if (header[0] != '{')
      bad("header: must start with '{{', starts with byte 0x{:02x}", static_cast<unsigned char>(header[0]));
    // NOTE: nlohmann's lexer takes a NUL byte for the end of the input; JSON allows none.
    if (const size_t nul = header.find('\0'); nul != std::string::npos) bad("header: NUL byte at offset {}", nul);
    // nlohmann keeps the last of repeated keys; the callback records the first repeat so the
    // file is refused instead (a repeated name would make the offsets check meaningless).
    std::vector<std::set<std::string>> keys_in_object;
    std::vector<std::string> last_key{""};
    std::optional<std::string> repeated;
    // NOTE: the format nests three deep at most ({"name": {"shape": [2, 3]}}); deeper input
    // is refused as soon as the parser enters it, before it builds anything (a 100 MB header
    // of nested arrays otherwise took 4 GB of memory and 13 s to refuse).
    auto watch = [&](int depth, nlohmann::json::parse_event_t event, Json& parsed) {
      using E = nlohmann::json::parse_event_t;
      if ((event == E::object_start || event == E::array_start) && depth >= kMaxHeaderDepth)
        bad("header: JSON nested deeper than the format's {} levels (an {} at depth {})", kMaxHeaderDepth,
            event == E::object_start ? "object" : "array", depth + 1);
      if (event == E::object_start) {
        keys_in_object.emplace_back();
        last_key.push_back("");
      } else if (event == E::object_end) {
        keys_in_object.pop_back();
        last_key.pop_back();
      } else if (event == E::key) {
        const std::string& key = parsed.get_ref<const std::string&>();
        if (!keys_in_object.back().insert(key).second && !repeated) {
          const std::string& parent = last_key[last_key.size() - 2];
          repeated = keys_in_object.size() == 1 ? fmt::format("tensor name '{}' appears twice", key)
                                                : fmt::format("key '{}' appears twice in '{}'", key, parent);
        }
        last_key.back() = key;
      }
      return true;
    };
    Json root;
    try {
      root = Json::parse(header, watch);
    } catch (const Json::exception& e) {
      bad("header: invalid JSON: {}", e.what());
    }
    if (repeated) bad("header: {}", *repeated);
    if (!root.is_object()) bad("header: JSON is {}, not an object", root.type_name());

    std::vector<Entry> entries;
    for (const auto& [name, value] : root.items()) {
      if (name == kMetadataKey) {
        read_metadata(value, metadata);
        continue;
      }
      entries.push_back(parse_entry(name, value));
    }
    return entries;
  }

  void read_metadata(const Json& value, std::map<std::string, std::string>& metadata) const {
    if (!value.is_object()) bad("__metadata__: is {}, not an object of strings", value.type_name());
    for (const auto& [key, v] : value.items()) {
      if (!v.is_string()) bad("__metadata__: the value of '{}' is {}, not a string", key, v.type_name());
      metadata.emplace(key, v.get<std::string>());
    }
  }

  // A non-negative JSON integer that fits in int64 (shape dims and offsets).
  uint64_t unsigned_number(const Json& v, std::string_view name, std::string_view field) const {
    if (!v.is_number_unsigned() ||
        v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      bad("tensor '{}': {}: {} is not an integer in [0, 2^63)", name, field, v.dump());
    return v.get<uint64_t>();
  }

  Entry parse_entry(const std::string& name, const Json& value) const {
    if (!value.is_object()) bad("tensor '{}': entry is {}, not an object", name, value.type_name());
    for (const auto& [key, _] : value.items())
      if (key != "dtype" && key != "shape" && key != "data_offsets")
        bad("tensor '{}': unknown key '{}' (expected dtype, shape, data_offsets)", name, key);
    for (const char* key : {"dtype", "shape", "data_offsets"})
      if (!value.contains(key)) bad("tensor '{}': missing key '{}'", name, key);

    Entry e;
    e.name = name;
    const Json& dtype = value["dtype"];
    if (!dtype.is_string()) bad("tensor '{}': dtype: {} is not a string", name, dtype.dump());
    const std::string& dname = dtype.get_ref<const std::string&>();
    e.dtype = find_file_dtype(dname);
    if (!e.dtype) {
      const bool known = std::find(std::begin(kUnreadable), std::end(kUnreadable), dname) != std::end(kUnreadable);
      bad("tensor '{}': dtype: {} '{}' (softgrad reads {})", name, known ? "softgrad cannot represent" : "unknown",
          dname, readable_names());
    }

    const Json& shape = value["shape"];
    if (!shape.is_array()) bad("tensor '{}': shape: {} is not an array", name, shape.dump());
    // NOTE: a zero dim makes the byte count 0, but must not hide the other dims from the
    // overflow check: [0, 2^62, 2^62] has no bytes yet strides that overflow int64. `span`
    // counts zeros as 1, and bounds the tensor in memory too (it may load as a wider type).
    uint64_t nbytes = e.dtype->itemsize, span = std::max(e.dtype->itemsize, dtype_size(e.dtype->loads_as));
    for (const Json& d : shape) {
      const uint64_t size = unsigned_number(d, name, "shape");
      e.shape.push_back(static_cast<int64_t>(size));
      nbytes *= size;  // <= span
      if (__builtin_mul_overflow(span, std::max<uint64_t>(size, 1), &span) ||
          span > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        bad("tensor '{}': shape: {} elements of {} overflow 2^63 bytes", name, shape.dump(), dname);
    }

    const Json& offsets = value["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2)
      bad("tensor '{}': data_offsets: {} is not an array [begin, end]", name, offsets.dump());
    e.begin = unsigned_number(offsets[0], name, "data_offsets");
    e.end = unsigned_number(offsets[1], name, "data_offsets");
    if (e.begin > e.end) bad("tensor '{}': data_offsets: begin {} is after end {}", name, e.begin, e.end);
    if (e.end - e.begin != nbytes)
      bad("tensor '{}': data_offsets: [{}, {}] hold {} bytes, but shape {} of {} needs {}", name, e.begin, e.end,
          e.end - e.begin, shape.dump(), dname, nbytes);
    return e;
  }

  // Sorts the entries by offset and checks that they tile the data section exactly.
  void check_layout(std::vector<Entry>& entries) const {
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
      return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
    });
    uint64_t covered = 0;
    const Entry* prev = nullptr;
    for (const Entry& e : entries) {
      if (e.end > data_size_)
        bad("tensor '{}': data_offsets: [{}, {}] run past the end of the data section ({})", e.name, e.begin,
            e.end, plural(data_size_, "byte"));
      if (e.begin < covered)
        bad("tensor '{}': data_offsets: [{}, {}] overlap tensor '{}' (which ends at {})", e.name, e.begin, e.end,
            prev->name, covered);
      if (e.begin > covered)
        bad("tensor '{}': data_offsets: [{}, {}] leave a gap: bytes [{}, {}) of the data section belong to no tensor",
            e.name, e.begin, e.end, covered, e.begin);
      covered = e.end;
      prev = &e;
    }
    if (covered != data_size_)
      bad("data_offsets: the tensors cover {}, but the data section has {} (trailing bytes)",
          plural(covered, "byte"), data_size_);
  }

  Tensor read_tensor(const Entry& e) const {
    Tensor out = empty(e.shape, e.dtype->loads_as);
    const uint64_t nbytes = e.end - e.begin;
    if (nbytes == 0) return out;
    const uint64_t offset = data_start_ + e.begin;
    const std::string field = fmt::format("tensor '{}': data", e.name);
    const std::string_view d = e.dtype->name;
    if (d == "F32" || d == "F64" || d == "I64" || d == "BF16") {  // native: straight into the tensor, bit for bit
      read_exact(out.raw_data(), nbytes, offset, field);
      return out;
    }
    std::vector<unsigned char> bytes(nbytes);
    read_exact(bytes.data(), nbytes, offset, field);
    const unsigned char* p = bytes.data();
    const int64_t n = out.numel();
    if (d == "BOOL") {
      bool* dst = out.data_ptr<bool>();
      for (int64_t i = 0; i < n; ++i) {
        if (p[i] > 1) bad("{}: BOOL element {} is byte {}, not 0 or 1", field, i, p[i]);
        dst[i] = p[i] == 1;
      }
    } else if (d == "F16") {
      float* dst = out.data_ptr<float>();
      for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(load_le<uint16_t>(p + 2 * i));
    } else {  // integers -> int64
      int64_t* dst = out.data_ptr<int64_t>();
      auto widen = [&]<typename T>() {
        for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<int64_t>(load_le<T>(p + i * sizeof(T)));
      };
      if (d == "U8") widen.template operator()<uint8_t>();
      else if (d == "I8") widen.template operator()<int8_t>();
      else if (d == "U16") widen.template operator()<uint16_t>();
      else if (d == "I16") widen.template operator()<int16_t>();
      else if (d == "U32") widen.template operator()<uint32_t>();
      else if (d == "I32") widen.template operator()<int32_t>();
      else {  // U64: exact only below 2^63
        for (int64_t i = 0; i < n; ++i) {
          const uint64_t v = load_le<uint64_t>(p + 8 * i);
          if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
            bad("{}: U64 element {} is {}, beyond int64 (softgrad loads U64 as int64)", field, i, v);
          dst[i] = static_cast<int64_t>(v);
        }
      }
    }
    return out;
  }

  const std::string& path_;
  int fd_ = -1;
  uint64_t file_size_ = 0, data_start_ = 0, data_size_ = 0;
};

// ---- writing -----------------------------------------------------------------------------
// A temporary file beside the target, ".<name>.tmp.<pid>.<n>", that becomes the target on
// commit() and is removed if destroyed before.
//
// A writer killed mid-save (kill -9, a crash) cannot remove its temporary file, so each new
// save to the same target removes those of dead writers. Liveness is an flock() the writer
// holds on its temporary file while it exists: the kernel drops it when the process dies,
// however it dies. A cleaner removes a file only while holding that lock itself, and a
// writer that finds its fresh file already locked (a cleaner got there between its open()
// and its flock()) or no longer at its name leaves it and takes another name, so a live
// writer's file is never removed. On a file system without flock() nothing is locked and
// nothing is cleaned.
namespace {

bool same_file(int fd, const char* path) {
  struct stat a{}, b{};
  return ::fstat(fd, &a) == 0 && ::lstat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// "<pid>.<n>": the tail of a temporary file's name.
bool is_temporary_tail(std::string_view tail) {
  const size_t dot = tail.find('.');
  auto digits = [](std::string_view d) {
    return !d.empty() && std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  return dot != std::string_view::npos && digits(tail.substr(0, dot)) && digits(tail.substr(dot + 1));
}

void remove_dead_writers_files(const std::filesystem::path& dir, const std::string& filename, const std::string& own) {
  namespace fs = std::filesystem;
  const std::string prefix = "." + filename + ".tmp.";
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.starts_with(prefix) || !is_temporary_tail(std::string_view(name).substr(prefix.size()))) continue;
    const std::string path = it->path().string();
    if (path == own) continue;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) continue;
    struct stat st{};
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0 && ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        same_file(fd, path.c_str()))
      ::unlink(path.c_str());  // its writer is gone: nobody else holds the lock
    ::close(fd);
  }
}

}  // namespace

class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path) : path_(path) {
    namespace fs = std::filesystem;
    const fs::path target(path);
    if (!target.has_filename()) bad("the path names a directory, not a file");
    const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
    static std::atomic<uint64_t> counter{0};
    for (int attempt = 0;; ++attempt) {
      tmp_ = (dir / fmt::format(".{}.tmp.{}.{}", target.filename().string(), ::getpid(), counter++)).string();
      fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);  // umask applies
      if (fd_ < 0) {
        if (errno != EEXIST || attempt == 100)
          bad("cannot create a temporary file in '{}': {}", dir.string(), errno_text(errno));
        continue;
      }
      if (claim()) break;
      ::close(std::exchange(fd_, -1));  // a cleaner holds it and removes it: take another name
      if (attempt == 100) bad("cannot create a temporary file in '{}': every name was taken", dir.string());
    }
    remove_dead_writers_files(dir, target.filename().string(), tmp_);
    buffer_.reserve(kBufferBytes);
  }
  ~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t nbytes) {
    const auto* p = static_cast<const char*>(data);
    if (buffer_.size() + nbytes <= kBufferBytes) {
      buffer_.insert(buffer_.end(), p, p + nbytes);
      return;
    }
    flush();
    if (nbytes < kBufferBytes) buffer_.insert(buffer_.end(), p, p + nbytes);
    else write_through(p, nbytes);
  }

  // flush + fsync + close, then rename over the target (and fsync the directory, so the
  // rename itself survives a crash; best effort: not every file system supports it).
  void commit() {
    flush();
    if (::fsync(fd_) != 0) bad("fsync of '{}' failed: {}", tmp_, errno_text(errno));
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) bad("closing '{}' failed: {}", tmp_, errno_text(errno));
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) bad("cannot rename '{}' to it: {}", tmp_, errno_text(errno));
    committed_ = true;
    const std::filesystem::path parent = std::filesystem::path(path_).parent_path();
    const int dir = ::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
      ::fsync(dir);
      ::close(dir);
    }
  }

  template <typename... Args> [[noreturn]] void bad(fmt::format_string<Args...> f, Args&&... args) const {
    fail("save_safetensors: '{}': {}", path_, fmt::format(f, std::forward<Args>(args)...));
  }

 private:
  static constexpr size_t kBufferBytes = size_t{1} << 20;

  // Locks the fresh temporary file for as long as this writer lives; false when a cleaner
  // holds the lock or already removed the file.
  bool claim() const {
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) return errno != EWOULDBLOCK;  // no flock() here: unlocked
    return same_file(fd_, tmp_.c_str());
  }

  void flush() {
    write_through(buffer_.data(), buffer_.size());
    buffer_.clear();
  }
  void write_through(const char* p, size_t nbytes) {
    while (nbytes > 0) {
      const ssize_t put = ::write(fd_, p, std::min<size_t>(nbytes, size_t{1} << 30));
      if (put < 0 && errno == EINTR) continue;
      if (put < 0) bad("writing '{}' failed: {}", tmp_, errno_text(errno));
      p += put;
      nbytes -= static_cast<size_t>(put);
    }
  }

  const std::string& path_;
  std::string tmp_;
  int fd_ = -1;
  bool committed_ = false;
  std::vector<char> buffer_;
};

}  // namespace

SafetensorsFile load_safetensors(const std::string& path) { return Reader(path).read(); }

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata,
                      const std::map<std::string, std::string>& narrow_to) {
  auto bad = [&]<typename... Args>(fmt::format_string<Args...> f, Args&&... args) {
    fail("save_safetensors: '{}': {}", path, fmt::format(f, std::forward<Args>(args)...));
  };
  // The JSON writer throws on invalid UTF-8; say which string it was.
  auto check_utf8 = [&](const std::string& s, std::string_view what) {
    try {
      (void)Json(s).dump();
    } catch (const Json::exception&) {
      bad("{} is not valid UTF-8", what);
    }
  };

  // Each tensor's file dtype and bytes: its own, or an int64 tensor narrowed as asked.
  struct Planned {
    const std::string* name;
    const Tensor* tensor;
    std::string_view dtype;
    const Narrowing* narrowing = nullptr;
    uint64_t nbytes = 0;
  };
  std::vector<Planned> order;
  std::set<std::string_view> names;
  for (const auto& item : tensors) {
    const auto& [name, t] = item;
    if (!t.defined()) bad("tensor '{}' is undefined", name);
    if (name == kMetadataKey) bad("a tensor may not be named '{}' (the metadata's key)", kMetadataKey);
    if (!names.insert(name).second) bad("tensor name '{}' is given twice", name);
    check_utf8(name, fmt::format("tensor name '{}'", name));
    Planned plan{&name, &t, file_dtype_name(t.dtype()), nullptr, t.nbytes()};
    if (const auto it = narrow_to.find(name); it != narrow_to.end()) {
      for (const Narrowing& n : kNarrowings)
        if (n.name == it->second) plan.narrowing = &n;
      if (!plan.narrowing) bad("tensor '{}': cannot narrow to '{}' (I8, U8, I16, U16, I32, U32)", name, it->second);
      if (t.dtype() != kInt64) bad("tensor '{}': narrowing to {} takes an int64 tensor, got {}", name, it->second, t.dtype());
      plan.dtype = plan.narrowing->name;
      plan.nbytes = static_cast<uint64_t>(t.numel()) * plan.narrowing->itemsize;
    }
    order.push_back(plan);
  }
  for (const auto& [name, dtype] : narrow_to)
    if (!names.count(name)) bad("narrow_to names '{}' ({}), which is not among the tensors", name, dtype);
  std::sort(order.begin(), order.end(), [](const Planned& a, const Planned& b) {
    const int ra = layout_rank(a.dtype), rb = layout_rank(b.dtype);
    return ra != rb ? ra > rb : *a.name < *b.name;  // std::string compares bytewise, as Rust does
  });

  Json header = Json::object();
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [key, value] : metadata) {
      check_utf8(key, fmt::format("metadata key '{}'", key));
      check_utf8(value, fmt::format("the metadata value of '{}'", key));
      meta[key] = value;
    }
    header[std::string(kMetadataKey)] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const Planned& item : order) {
    Json entry = Json::object();
    entry["dtype"] = item.dtype;
    entry["shape"] = item.tensor->shape();
    entry["data_offsets"] = {offset, offset + item.nbytes};
    offset += item.nbytes;
    header[*item.name] = std::move(entry);
  }
  std::string header_bytes = header.dump();
  header_bytes.append((8 - header_bytes.size() % 8) % 8, ' ');  // align the data section to 8

  AtomicFile file(path);
  const uint64_t n = header_bytes.size();
  file.write(&n, 8);  // little-endian host (static_assert above)
  file.write(header_bytes.data(), header_bytes.size());
  for (const Planned& item : order) {
    const Tensor& t = *item.tensor;
    if (t.numel() == 0) continue;
    if (item.narrowing) {  // every value checked, then written little-endian in the narrow type
      const Tensor packed = t.is_contiguous() ? t : make_contiguous_copy(t);
      const int64_t* v = packed.data_ptr<int64_t>();
      const Narrowing& n = *item.narrowing;
      std::vector<unsigned char> bytes(item.nbytes);
      for (int64_t i = 0; i < t.numel(); ++i) {
        if (v[i] < n.lo || v[i] > n.hi)
          bad("tensor '{}': element {} is {}, outside {}'s range [{}, {}]", *item.name, i, v[i], n.name, n.lo, n.hi);
        const uint64_t u = static_cast<uint64_t>(v[i]);
        for (size_t b = 0; b < n.itemsize; ++b) bytes[i * n.itemsize + b] = static_cast<unsigned char>(u >> (8 * b));
      }
      file.write(bytes.data(), bytes.size());
    } else if (t.is_contiguous()) {
      file.write(t.raw_data(), t.nbytes());
    } else {  // one row-major copy at a time
      const Tensor packed = make_contiguous_copy(t);
      file.write(packed.raw_data(), packed.nbytes());
    }
  }
  file.commit();
}

}  // namespace sg
