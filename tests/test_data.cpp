// data: the IDX reader and writer (round trips raw and gzip; every malformed file is an
// error naming the file and the field).
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
                {longer.string(), "3920 bytes of data, " + has + " 3921 (1 trailing bytes)"});
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
              {p.string(), "magic 0x00000801 says 1 dims, expected 3 (magic 0x00000803)"});
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
