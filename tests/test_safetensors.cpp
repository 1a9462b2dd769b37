// safetensors: bit-exact round trips, the exact bytes the spec and the reference writer
// prescribe, the reference implementation's fixtures and a file PyTorch's tensors were
// written to (tests/reference/gen_safetensors.py), every validation error, atomic saves,
// and module state save/load (nn/serialize.h).
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "tests/reference_table.h"

namespace fs = std::filesystem;
using sg::Tensor;
using sgtest::check_error;

namespace {

using Bytes = std::string;  // file contents

// A fresh, empty directory for one test case under the tests' working directory.
fs::path scratch_dir(const std::string& name) {
  const fs::path dir = fs::path("safetensors_scratch") / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

Bytes read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot open " << path);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const fs::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

Bytes u64_le(uint64_t n) {
  Bytes b(8, '\0');
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return b;
}

// A safetensors file from its parts: the length prefix is the header's unless given.
Bytes make_file(const std::string& header, const Bytes& data, std::optional<uint64_t> length = std::nullopt) {
  return u64_le(length.value_or(header.size())) + header + data;
}

template <typename T> Bytes le_bytes(const std::vector<T>& values) {
  Bytes b(values.size() * sizeof(T), '\0');
  std::memcpy(b.data(), values.data(), b.size());
  return b;
}

std::vector<std::string> dir_entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// Same dtype, shape and row-major bytes (NaN payloads and -0.0 included).
void check_bits_equal(const Tensor& got, const Tensor& want) {
  REQUIRE(got.dtype() == want.dtype());
  REQUIRE(got.shape() == want.shape());
  const Tensor a = got.contiguous(), b = want.contiguous();
  CHECK(std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0);
}

const Tensor& find(const sg::NamedTensors& list, const std::string& name) {
  for (const auto& [n, t] : list)
    if (n == name) return t;
  FAIL("no tensor named " << name);
  throw;  // unreachable
}

std::vector<std::string> names_of(const sg::NamedTensors& list) {
  std::vector<std::string> out;
  for (const auto& [n, _] : list) out.push_back(n);
  return out;
}

std::string fixture(const std::string& file) {
  return (fs::path(SOFTGRAD_TEST_REFERENCE_DIR) / "safetensors" / file).string();
}

// 1-D tensors from IEEE bit patterns.
template <typename T, typename Bits> Tensor from_bits(const std::vector<Bits>& bits) {
  static_assert(sizeof(T) == sizeof(Bits));
  std::vector<T> v;
  for (Bits b : bits) v.push_back(std::bit_cast<T>(b));
  return sg::from_vector(v, {static_cast<int64_t>(v.size())});
}

}  // namespace

TEST_CASE("round trip is bit-exact: four dtypes, 0-d, empty, strided, NaN payloads, metadata") {
  const fs::path dir = scratch_dir("roundtrip");
  sg::Generator gen(7);
  const Tensor matrix64 = sg::randn({4, 3}, gen, sg::kFloat64);
  const Tensor wide32 = sg::randn({3, 5}, gen);
  const sg::NamedTensors tensors = {
      {"f32", sg::randn({3, 4}, gen)},
      {"f64", sg::randn({2, 3, 2}, gen, sg::kFloat64)},
      {"i64",
       sg::tensor({std::numeric_limits<int64_t>::min(), int64_t{-1}, int64_t{0}, std::numeric_limits<int64_t>::max()})},
      {"bool", sg::tensor({true, false, false, true, true})},
      {"scalar_f32", sg::scalar_tensor(2.5)},
      {"scalar_f64", sg::scalar_tensor(-1e300, sg::kFloat64)},
      {"scalar_i64", sg::scalar_tensor(-42, sg::kInt64)},
      {"scalar_bool", sg::scalar_tensor(1, sg::kBool)},
      {"empty_f32", sg::zeros({0, 3})},
      {"empty_i64", sg::zeros({2, 0, 4}, sg::kInt64)},
      {"transposed_f64", matrix64.t()},                                      // strides (1, 3)
      {"narrowed_f32", sg::narrow(wide32, 1, 1, 3)},                         // offset 1, row stride 5
      {"expanded_f32", sg::tensor({1.0, 2.0}).unsqueeze(0).expand({3, 2})},  // stride 0
      {"param", sg::randn({2, 2}, gen).requires_grad_()},                    // requires grad: saved as values
      // quiet and signaling NaNs with payloads, both signs; -0.0, infinities, subnormals
      {"nan_f32", from_bits<float, uint32_t>({0x7fc00001u, 0xffc12345u, 0x7f800001u, 0x80000000u, 0x7f800000u,
                                              0xff800000u, 0x00000001u, 0x807fffffu})},
      {"nan_f64", from_bits<double, uint64_t>({0x7ff8000000000001ull, 0xfff0000000000abcull, 0x8000000000000000ull,
                                               0x0000000000000001ull, 0x7ff0000000000000ull})},
  };
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"note", "line 1\nline \"2\"\t\\ \x01 ünïcödé ✓"}, {"", "empty key"}, {"empty value", ""}};
  const std::string path = (dir / "all.safetensors").string();
  sg::save_safetensors(path, tensors, metadata);

  const sg::SafetensorsFile f = sg::load_safetensors(path);
  CHECK(f.metadata == metadata);
  REQUIRE(f.tensors.size() == tensors.size());
  for (const auto& [name, want] : tensors) {
    CAPTURE(name);
    const Tensor& got = find(f.tensors, name);
    check_bits_equal(got, want);
    CHECK(got.is_contiguous());
    CHECK(!got.requires_grad());
    CHECK(got.impl()->storage != want.impl()->storage);
  }
  // Loaded in data order: I64, F64, F32, BOOL, names sorted within a dtype.
  CHECK(names_of(f.tensors) == std::vector<std::string>{"empty_i64", "i64", "scalar_i64", "f64", "nan_f64",
                                                        "scalar_f64", "transposed_f64", "empty_f32", "expanded_f32",
                                                        "f32", "nan_f32", "narrowed_f32", "param", "scalar_f32", "bool",
                                                        "scalar_bool"});

  // No tensors, no metadata: the smallest file, as the reference writer makes it.
  sg::save_safetensors((dir / "none.safetensors").string(), {});
  CHECK(read_bytes(dir / "none.safetensors") == make_file("{}      ", ""));
  const sg::SafetensorsFile none = sg::load_safetensors((dir / "none.safetensors").string());
  CHECK(none.tensors.empty());
  CHECK(none.metadata.empty());
}

TEST_CASE("the bytes follow the spec: length, header JSON, padding, layout order, data") {
  const fs::path dir = scratch_dir("bytes");
  const std::string path = (dir / "small.safetensors").string();
  // Given out of order: the writer lays out I64, then F32, then BOOL, names bytewise.
  sg::save_safetensors(
      path, {{"m", sg::tensor({true, false})}, {"b", sg::tensor({1.0, 2.0})}, {"a", sg::scalar_tensor(5, sg::kInt64)}},
      {{"k", "v"}});
  const std::string header =
      R"({"__metadata__":{"k":"v"},"a":{"dtype":"I64","shape":[],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},)"
      R"("m":{"dtype":"BOOL","shape":[2],"data_offsets":[16,18]}})"
      "    ";  // 188 bytes of JSON, padded with spaces to 192
  REQUIRE(header.size() == 192);
  const Bytes data = le_bytes<int64_t>({5}) + le_bytes<float>({1.0f, 2.0f}) + Bytes("\x01\x00", 2);
  const Bytes file = read_bytes(path);
  CHECK(file.substr(0, 8) == Bytes("\xc0\0\0\0\0\0\0\0", 8));
  CHECK(file.substr(8, 192) == header);
  CHECK(file == make_file(header, data));

  // The reference implementation's own test vector (test_serialization_forced_alignement):
  // header length 72 = 65 bytes of JSON + 7 spaces, then 0..5 as F32.
  sg::save_safetensors(path, {{"attn0", sg::arange(0, 6, 1, sg::kFloat32).reshape({1, 1, 2, 3})}});
  const std::vector<unsigned char> reference = {
      72,  0,   0,   0,  0,  0,  0,  0,  123, 34,  97, 116, 116, 110, 48,  34,  58,  123, 34,  100, 116,
      121, 112, 101, 34, 58, 34, 70, 51, 50,  34,  44, 34,  115, 104, 97,  112, 101, 34,  58,  91,  49,
      44,  49,  44,  50, 44, 51, 93, 44, 34,  100, 97, 116, 97,  95,  111, 102, 102, 115, 101, 116, 115,
      34,  58,  91,  48, 44, 50, 52, 93, 125, 125, 32, 32,  32,  32,  32,  32,  32,  0,   0,   0,   0,
      0,   0,   128, 63, 0,  0,  0,  64, 0,   0,   64, 64,  0,   0,   128, 64,  0,   0,   160, 64};
  CHECK(read_bytes(path) == Bytes(reference.begin(), reference.end()));
}

TEST_CASE("int64 tensors narrowed on write: I8, U8, I16, U16, I32, U32 bytes, layout, values and dtypes back") {
  const fs::path dir = scratch_dir("narrow");
  const std::string path = (dir / "narrow.safetensors").string();
  auto ints = [](std::vector<int64_t> v) { return sg::from_vector<int64_t>(v, {static_cast<int64_t>(v.size())}); };
  const sg::NamedTensors tensors = {{"w", ints({-128, 0, 127})},          {"p", ints({0, 255})},
                                    {"s", ints({-32768, 32767})},         {"us", ints({65535})},
                                    {"acc", ints({INT32_MIN, INT32_MAX})}, {"u", ints({0, 4294967295})},
                                    {"f", sg::tensor({1.5})}};
  const std::map<std::string, std::string> narrow = {{"w", "I8"},   {"p", "U8"},   {"s", "I16"},
                                                     {"us", "U16"}, {"acc", "I32"}, {"u", "U32"}};
  sg::save_safetensors(path, tensors, {}, narrow);
  // The reference writer's order: F32 > U32 > I32 > U16 > I16 > I8 > U8, then names.
  const Bytes data = le_bytes<float>({1.5f}) + le_bytes<uint32_t>({0, 4294967295u}) +
                     le_bytes<int32_t>({INT32_MIN, INT32_MAX}) + le_bytes<uint16_t>({65535}) +
                     le_bytes<int16_t>({-32768, 32767}) + le_bytes<int8_t>({-128, 0, 127}) +
                     le_bytes<uint8_t>({0, 255});
  const Bytes file = read_bytes(path);
  CHECK(file.substr(file.size() - data.size()) == data);
  const sg::SafetensorsFile back = sg::load_safetensors(path);
  for (const auto& [name, t] : tensors) {
    CAPTURE(name);
    const auto it = std::find_if(back.tensors.begin(), back.tensors.end(), [&](const auto& e) { return e.first == name; });
    REQUIRE(it != back.tensors.end());
    CHECK(it->second.dtype() == t.dtype());
    if (t.dtype() == sg::kInt64)
      CHECK(it->second.to_vector<int64_t>() == t.to_vector<int64_t>());
    else
      CHECK(it->second.to_vector<float>() == t.to_vector<float>());
    CHECK(back.dtypes.at(name) == (narrow.count(name) ? narrow.at(name) : std::string("F32")));
  }
  // Values that do not fit, a float tensor, an unknown dtype, a name that is not there: named errors, no file.
  const std::string bad_path = (dir / "bad.safetensors").string();
  CHECK_THROWS_WITH_AS(sg::save_safetensors(bad_path, {{"w", ints({1, 128})}}, {}, {{"w", "I8"}}),
                       doctest::Contains("tensor 'w': element 1 is 128, outside I8's range [-128, 127]"), sg::Error);
  CHECK_THROWS_WITH_AS(sg::save_safetensors(bad_path, {{"f", sg::tensor({1.0})}}, {}, {{"f", "I8"}}),
                       doctest::Contains("takes an int64 tensor"), sg::Error);
  CHECK_THROWS_WITH_AS(sg::save_safetensors(bad_path, {{"w", ints({1})}}, {}, {{"w", "I4"}}),
                       doctest::Contains("cannot narrow to 'I4'"), sg::Error);
  CHECK_THROWS_WITH_AS(sg::save_safetensors(bad_path, {{"w", ints({1})}}, {}, {{"v", "I8"}}),
                       doctest::Contains("narrow_to names 'v'"), sg::Error);
  CHECK(!fs::exists(bad_path));
}

TEST_CASE("fixtures of the reference implementation load with their values") {
  struct Fixture {
    std::string name, dtype;  // tensor name, file dtype
    sg::Dtype loads_as;
    std::vector<double> values;
  };
  const std::vector<double> signed_values = {-3, -2, -1, 0, 1, 2};
  const std::vector<Fixture> fixtures = {
      {"B", "U8", sg::kInt64, {253, 254, 255, 0, 1, 2}},
      {"H", "U16", sg::kInt64, {65533, 65534, 65535, 0, 1, 2}},
      {"I", "U32", sg::kInt64, {4294967293.0, 4294967294.0, 4294967295.0, 0, 1, 2}},
      {"b", "I8", sg::kInt64, signed_values},
      {"h", "I16", sg::kInt64, signed_values},
      {"i", "I32", sg::kInt64, signed_values},
      {"e", "F16", sg::kFloat32, signed_values},
      {"f", "F32", sg::kFloat32, signed_values},
      {"d", "F64", sg::kFloat64, signed_values},
  };
  const std::map<std::string, std::string> metadata = {{"test", "a"}};
  for (const Fixture& fx : fixtures) {
    CAPTURE(fx.dtype);
    const sg::SafetensorsFile f = sg::load_safetensors(fixture(fx.name + ".safetensors"));
    CHECK(f.metadata == metadata);
    REQUIRE(f.tensors.size() == 1);
    CHECK(f.tensors[0].first == fx.name);
    const Tensor& t = f.tensors[0].second;
    CHECK(t.dtype() == fx.loads_as);
    CHECK(t.shape() == sg::Shape{6});
    CHECK(t.to_vector<double>() == fx.values);  // exact
  }
  // All nine in one file (unpadded header, unaligned data: an older writer's layout).
  const sg::SafetensorsFile all = sg::load_safetensors(fixture("overall.safetensors"));
  CHECK(all.metadata == metadata);
  CHECK(names_of(all.tensors) == std::vector<std::string>{"B", "H", "I", "b", "d", "e", "f", "h", "i"});
  for (const Fixture& fx : fixtures) {
    CAPTURE(fx.dtype);
    const Tensor& t = find(all.tensors, fx.name);
    CHECK(t.dtype() == fx.loads_as);
    CHECK(t.to_vector<double>() == fx.values);
  }
}

TEST_CASE("a file written from PyTorch tensors loads with PyTorch's values") {
  // torch_written.safetensors and its table come from tests/reference/gen_safetensors.py.
  const std::vector<sgref::RefCase>* cases = nullptr;
  REQUIRE_NOTHROW(cases = &sgref::table("safetensors/torch_written.txt"));
  const sg::SafetensorsFile f = sg::load_safetensors(fixture("torch_written.safetensors"));
  CHECK(f.metadata == std::map<std::string, std::string>{{"format", "pt"}, {"written_by", "gen_safetensors.py"}});
  REQUIRE(f.tensors.size() == cases->size());
  CHECK(cases->size() == 14);
  for (size_t i = 0; i < cases->size(); ++i) {
    const sgref::RefCase& c = (*cases)[i];
    CAPTURE(c.name);
    CHECK(f.tensors[i].first == c.name);  // same data order
    REQUIRE(c.outputs.size() == 1);
    // BF16 loads as bfloat16; the table holds its float32 widening (exact).
    const Tensor& t = f.tensors[i].second;
    CHECK(sgref::mismatch(t.dtype() == sg::kBFloat16 ? t.to(sg::kFloat32) : t, c.outputs[0], {0.0, 0.0}) ==
          "");  // exact; NaN where NaN
  }
  // The F16 and BF16 subnormals and the signed zeros survive (the table compares -0.0 == 0.0).
  const std::vector<float> f16 = find(f.tensors, "f16_values").to_vector<float>();
  CHECK(f16[7] == std::ldexp(1.0f, -24));
  CHECK(std::signbit(f16[13]));
  CHECK(find(f.tensors, "bf16_values").dtype() == sg::kBFloat16);
  CHECK(find(f.tensors, "bf16_values").to_vector<float>()[6] == std::ldexp(1.0f, -133));
  CHECK(std::signbit(find(f.tensors, "f32_specials").to_vector<float>()[3]));
}

TEST_CASE("F16 loads as float32 exactly and BF16 as bfloat16 bit for bit: all 65536 bit patterns") {
  const fs::path dir = scratch_dir("half");
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  const Bytes data = le_bytes(all);
  for (const std::string dtype : {"F16", "BF16"}) {
    CAPTURE(dtype);
    const std::string path = (dir / (dtype + ".safetensors")).string();
    write_bytes(path,
                make_file(R"({"x":{"dtype":")" + dtype + R"(","shape":[65536],"data_offsets":[0,131072]}})", data));
    const Tensor t = find(sg::load_safetensors(path).tensors, "x");
    int64_t wrong = 0;
    if (dtype == "BF16") {  // the bits as they are, and back out unchanged
      REQUIRE(t.dtype() == sg::kBFloat16);
      const sg::bfloat16* p = t.data_ptr<sg::bfloat16>();
      for (uint32_t i = 0; i < 65536; ++i) wrong += p[i].bits != all[i];
      CHECK(wrong == 0);
      const std::string again = (dir / "BF16_again.safetensors").string();
      sg::save_safetensors(again, {{"x", t}});
      const Bytes out = read_bytes(again);
      REQUIRE(out.size() > data.size());
      CHECK(out.find(R"("dtype":"BF16")") != Bytes::npos);
      CHECK(out.substr(out.size() - data.size()) == data);
      continue;
    }
    REQUIRE(t.dtype() == sg::kFloat32);
    const float* p = t.data_ptr<float>();
    for (uint32_t i = 0; i < 65536; ++i) {
      // The compiler's binary16 conversion (F16C or libgcc).
      const float want = static_cast<float>(std::bit_cast<_Float16>(all[i]));
      if (std::bit_cast<uint32_t>(p[i]) != std::bit_cast<uint32_t>(want)) {
        if (wrong++ == 0)
          FAIL_CHECK(fmt::format("0x{:04x} -> 0x{:08x}, want 0x{:08x}", all[i], std::bit_cast<uint32_t>(p[i]),
                                 std::bit_cast<uint32_t>(want)));
      }
    }
    CHECK(wrong == 0);
  }
}

TEST_CASE("U64 loads as int64 when it fits and is refused by value when not") {
  const fs::path dir = scratch_dir("u64");
  const std::string path = (dir / "u64.safetensors").string();
  const std::string header = R"({"n":{"dtype":"U64","shape":[2],"data_offsets":[0,16]}})";
  write_bytes(path, make_file(header, le_bytes<uint64_t>({0, (uint64_t{1} << 63) - 1})));
  CHECK(find(sg::load_safetensors(path).tensors, "n").to_vector<int64_t>() ==
        std::vector<int64_t>{0, std::numeric_limits<int64_t>::max()});
  write_bytes(path, make_file(header, le_bytes<uint64_t>({1, uint64_t{1} << 63})));
  check_error([&] { sg::load_safetensors(path); },
              {path, "tensor 'n'", "U64 element 1 is 9223372036854775808", "beyond int64"});
}

TEST_CASE("dtypes softgrad cannot hold are refused by tensor and dtype") {
  const fs::path dir = scratch_dir("dtypes");
  const std::string path = (dir / "f8.safetensors").string();
  write_bytes(path, make_file(R"({"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", "\x01\x02"));
  check_error([&] { sg::load_safetensors(path); },
              {"load_safetensors: '" + path + "'", "tensor 'w': dtype", "softgrad cannot represent 'F8_E4M3'",
               "softgrad reads F32, F64, I64, BOOL, U8, I8, U16, I16, U32, I32, U64, F16, BF16"});
  write_bytes(path, make_file(R"({"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", Bytes(4, '\0')));
  check_error([&] { sg::load_safetensors(path); }, {path, "tensor 'w': dtype", "unknown 'f32'"});
}

TEST_CASE("corrupted files: every check names the file and the field") {
  const fs::path dir = scratch_dir("corrupt");
  const Bytes f32x2 = le_bytes<float>({1.0f, 2.0f});
  auto entry = [](const std::string& name, const std::string& body) { return "\"" + name + "\":{" + body + "}"; };
  // one tensor (NOTE: built with append: GCC 12 warns a false -Wrestrict on "{" + string here)
  auto x = [&](const std::string& body) { return make_file(std::string("{").append(entry("x", body)).append("}"), f32x2); };
  const std::string ok2 = R"("dtype":"F32","shape":[2],"data_offsets":[0,8])";
  struct Corrupt {
    std::string label;
    Bytes bytes;
    std::vector<std::string> fragments;
  };
  const std::vector<Corrupt> cases = {
      {"empty file", "", {"header length", "the file has 0 bytes"}},
      {"5 bytes", Bytes("\x08\0\0\0\0", 5), {"header length", "the file has 5 bytes"}},
      {"length past the end", make_file("{}", "", 100), {"header length: 100 bytes", "only 2 bytes after"}},
      {"absurd length", make_file("{}", "", uint64_t{1} << 62), {"header length: 4611686018427387904 bytes is over"}},
      {"length too small", make_file("{}", "", 1), {"header length: 1 byte cannot hold"}},
      {"not an object", make_file("[1, 2]  ", ""), {"header: must start with '{'", "0x5b"}},
      {"leading space", make_file(" {}", ""), {"header: must start with '{'", "0x20"}},
      {"truncated JSON", make_file("{\"x\":{\"dtype\":", ""), {"header: invalid JSON"}},
      {"trailing garbage", make_file("{} x", ""), {"header: invalid JSON"}},
      {"NUL padding", make_file(std::string("{}\0\0", 4), ""), {"header: NUL byte at offset 2"}},
      {"invalid UTF-8", make_file("{\"\xff\":{}}", ""), {"header: invalid JSON", "UTF-8"}},
      {"entry not an object", make_file(R"({"x":5})", ""), {"tensor 'x': entry is number, not an object"}},
      {"missing dtype", x(R"("shape":[2],"data_offsets":[0,8])"), {"tensor 'x': missing key 'dtype'"}},
      {"missing shape", x(R"("dtype":"F32","data_offsets":[0,8])"), {"tensor 'x': missing key 'shape'"}},
      {"missing data_offsets", x(R"("dtype":"F32","shape":[2])"), {"tensor 'x': missing key 'data_offsets'"}},
      {"unknown key", x(ok2 + R"(,"stride":[1])"), {"tensor 'x': unknown key 'stride'"}},
      {"dtype not a string",
       x(R"("dtype":4,"shape":[2],"data_offsets":[0,8])"),
       {"tensor 'x': dtype: 4 is not a string"}},
      {"shape not an array",
       x(R"("dtype":"F32","shape":2,"data_offsets":[0,8])"),
       {"tensor 'x': shape: 2 is not an array"}},
      {"negative dim",
       x(R"("dtype":"F32","shape":[-2],"data_offsets":[0,8])"),
       {"tensor 'x': shape: -2 is not an integer in [0, 2^63)"}},
      {"fractional dim",
       x(R"("dtype":"F32","shape":[2.0],"data_offsets":[0,8])"),
       {"tensor 'x': shape: 2.0 is not an integer"}},
      {"dim over int64",
       x(R"("dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,8])"),
       {"tensor 'x': shape: 9223372036854775808 is not an integer in [0, 2^63)"}},
      {"overflowing shape",
       x(R"("dtype":"F32","shape":[4611686018427387904,2],"data_offsets":[0,8])"),
       {"tensor 'x': shape: [4611686018427387904,2] elements of F32 overflow"}},
      {"zero dim hiding an overflow",
       x(R"("dtype":"F32","shape":[0,4611686018427387904,4611686018427387904],"data_offsets":[0,0])"),
       {"tensor 'x': shape: [0,4611686018427387904,4611686018427387904] elements of F32 overflow"}},
      {"zero dim hiding an overflow, 4-d",
       x(R"("dtype":"F32","shape":[0,4294967296,4294967296,4294967296],"data_offsets":[0,0])"),
       {"tensor 'x': shape: [0,4294967296,4294967296,4294967296] elements of F32 overflow"}},
      {"fits the file, not memory (I8 loads as int64)",
       x(R"("dtype":"I8","shape":[0,2305843009213693952],"data_offsets":[0,0])"),
       {"tensor 'x': shape: [0,2305843009213693952] elements of I8 overflow"}},
      {"shape nested in an array",
       x(R"("dtype":"F32","shape":[[2]],"data_offsets":[0,8])"),
       {"header: JSON nested deeper than the format's 3 levels (an array at depth 4)"}},
      {"metadata nested in an object",
       make_file(R"({"__metadata__":{"a":{"b":{}}}})", ""),
       {"header: JSON nested deeper than the format's 3 levels (an object at depth 4)"}},
      {"deep nesting", make_file("[" + std::string(1000, '['), ""), {"header: must start with '{'"}},
      {"deep nesting in an object", make_file(std::string("{\"x\":").append(100000, '['), ""),
       {"header: JSON nested deeper than the format's 3 levels"}},
      {"offsets not a pair",
       x(R"("dtype":"F32","shape":[2],"data_offsets":[0,4,8])"),
       {"tensor 'x': data_offsets: [0,4,8] is not an array [begin, end]"}},
      {"negative offset",
       x(R"("dtype":"F32","shape":[2],"data_offsets":[-8,0])"),
       {"tensor 'x': data_offsets: -8 is not an integer"}},
      {"begin after end",
       x(R"("dtype":"F32","shape":[0],"data_offsets":[8,0])"),
       {"tensor 'x': data_offsets: begin 8 is after end 0"}},
      {"size does not match shape",
       x(R"("dtype":"F32","shape":[3],"data_offsets":[0,8])"),
       {"tensor 'x': data_offsets: [0, 8] hold 8 bytes, but shape [3] of F32 needs 12"}},
      {"past the end",
       x(R"("dtype":"F32","shape":[4],"data_offsets":[0,16])"),
       {"tensor 'x': data_offsets: [0, 16] run past the end of the data section (8 bytes)"}},
      {"trailing bytes",
       make_file("{" + entry("x", ok2) + "}", f32x2 + "????"),
       {"data_offsets: the tensors cover 8 bytes, but the data section has 12"}},
      {"gap",
       make_file("{" + entry("x", R"("dtype":"F32","shape":[1],"data_offsets":[0,4])") + "," +
                     entry("y", R"("dtype":"F32","shape":[1],"data_offsets":[8,12])") + "}",
                 f32x2 + "????"),
       {"tensor 'y': data_offsets: [8, 12] leave a gap: bytes [4, 8)"}},
      {"overlap",
       make_file("{" + entry("x", ok2) + "," + entry("y", R"("dtype":"F32","shape":[1],"data_offsets":[4,8])") + "}",
                 f32x2),
       {"tensor 'y': data_offsets: [4, 8] overlap tensor 'x' (which ends at 8)"}},
      {"does not start at 0",
       x(R"("dtype":"F32","shape":[1],"data_offsets":[4,8])"),
       {"tensor 'x': data_offsets: [4, 8] leave a gap: bytes [0, 4)"}},
      {"duplicate name",
       make_file("{" + entry("x", ok2) + "," + entry("x", ok2) + "}", f32x2),
       {"header: tensor name 'x' appears twice"}},
      {"duplicate field", x(ok2 + R"(,"dtype":"I32")"), {"header: key 'dtype' appears twice in 'x'"}},
      {"metadata not an object",
       make_file(R"({"__metadata__":["a"]})", ""),
       {"__metadata__: is array, not an object of strings"}},
      {"metadata number",
       make_file(R"({"__metadata__":{"epoch":3}})", ""),
       {"__metadata__: the value of 'epoch' is number, not a string"}},
      {"metadata nested",
       make_file(R"({"__metadata__":{"a":{"b":"c"}}})", ""),
       {"__metadata__: the value of 'a' is object, not a string"}},
      {"bool byte 2",
       make_file(R"({"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})", Bytes("\x01\x00\x02", 3)),
       {"tensor 'm': data: BOOL element 2 is byte 2, not 0 or 1"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Corrupt& c = cases[i];
    CAPTURE(c.label);
    const std::string path = (dir / fmt::format("case{}.safetensors", i)).string();
    write_bytes(path, c.bytes);
    try {
      sg::load_safetensors(path);
      FAIL_CHECK("no error for " << c.label);
    } catch (const sg::Error& e) {
      const std::string msg = e.what();
      CHECK_MESSAGE(msg.rfind("load_safetensors: '" + path + "': ", 0) == 0, msg);
      for (const std::string& f : c.fragments)
        CHECK_MESSAGE(msg.find(f) != std::string::npos, "'" << f << "' not in: " << msg);
    }
  }
  // Not a file at all.
  const std::string missing = (dir / "missing.safetensors").string();
  check_error([&] { sg::load_safetensors(missing); },
              {"load_safetensors: '" + missing + "': cannot open", "No such file"});
  check_error([&] { sg::load_safetensors(dir.string()); },
              {"load_safetensors: '" + dir.string() + "': not a regular file"});
}

TEST_CASE("a header of 100 MB of nested arrays is refused at the fourth level, without building it") {
  // It used to take 4 GB of memory and 13 s before its error.
  const fs::path dir = scratch_dir("deep");
  const std::string path = (dir / "deep.safetensors").string();
  std::string header = "{\"x\":";
  header.append(100'000'000 - header.size(), '[');
  write_bytes(path, make_file(header, ""));
  check_error([&] { sg::load_safetensors(path); }, {"nested deeper than the format's 3 levels"});
  fs::remove_all(dir);
}

TEST_CASE("save refuses bad input and names the path") {
  const fs::path dir = scratch_dir("save_errors");
  const std::string path = (dir / "x.safetensors").string();
  const Tensor t = sg::ones({2});
  check_error(
      [&] {
        sg::save_safetensors(path, {{"a", t}, {"b", Tensor()}});
      },
      {"save_safetensors: '" + path + "'", "tensor 'b' is undefined"});
  check_error([&] { sg::save_safetensors(path, {{"a", t}, {"a", t}}); }, {path, "tensor name 'a' is given twice"});
  check_error([&] { sg::save_safetensors(path, {{"__metadata__", t}}); }, {path, "may not be named '__metadata__'"});
  check_error([&] { sg::save_safetensors(path, {{"bad\xff", t}}); }, {path, "tensor name 'bad", "is not valid UTF-8"});
  check_error(
      [&] {
        sg::save_safetensors(path, {{"a", t}}, {{"k", "\xc3"}});
      },
      {path, "the metadata value of 'k' is not valid UTF-8"});
  CHECK(dir_entries(dir).empty());  // nothing was created

  const std::string in_missing_dir = (dir / "no" / "such" / "x.safetensors").string();
  check_error(
      [&] {
        sg::save_safetensors(in_missing_dir, {{"a", t}});
      },
      {"save_safetensors: '" + in_missing_dir + "'", "cannot create a temporary file in", "No such file or directory"});
  check_error([&] { sg::save_safetensors(dir.string() + "/", {{"a", t}}); }, {"names a directory"});
}

TEST_CASE("a failed save leaves the previous file byte-identical and no temporary file") {
  const fs::path dir = scratch_dir("atomic");
  const std::string path = (dir / "ckpt.safetensors").string();
  sg::save_safetensors(path, {{"w", sg::full({3}, 1.5)}}, {{"step", "1"}});
  const Bytes before = read_bytes(path);
  const std::vector<std::string> only_ckpt = {"ckpt.safetensors"};

  SUBCASE("bad input: an undefined tensor") {
    check_error([&] { sg::save_safetensors(path, {{"w", sg::full({3}, 2.5)}, {"v", Tensor()}}); }, {"undefined"});
  }
  SUBCASE("the write fails midway: the file size limit (RLIMIT_FSIZE) is reached") {
    // NOTE: a deterministic mid-write failure without root-proof permissions or a full disk:
    // the kernel refuses writes past the process's file size limit with EFBIG (and SIGXFSZ,
    // ignored here). The header and the first 64 KiB land in the temporary file, then the
    // 4 MiB tensor's write fails. The limit is restored before checking.
    rlimit old{};
    REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
    auto old_handler = signal(SIGXFSZ, SIG_IGN);
    rlimit small = old;
    small.rlim_cur = 64 * 1024;
    REQUIRE(setrlimit(RLIMIT_FSIZE, &small) == 0);
    std::string message;
    try {
      sg::save_safetensors(path, {{"w", sg::zeros({1 << 20})}});
    } catch (const sg::Error& e) {
      message = e.what();
    }
    REQUIRE(setrlimit(RLIMIT_FSIZE, &old) == 0);
    signal(SIGXFSZ, old_handler);
    CHECK(message.find("save_safetensors: '" + path + "': writing '") == 0);
    CHECK(message.find("File too large") != std::string::npos);
  }
  SUBCASE("the rename fails: the target became a directory") {
    const fs::path target = dir / "sub";
    fs::create_directories(target / "inner");
    check_error(
        [&] {
          sg::save_safetensors(target.string(), {{"w", sg::ones({2})}});
        },
        {"save_safetensors: '" + target.string() + "': cannot rename '", "Is a directory"});
    CHECK(dir_entries(target) == std::vector<std::string>{"inner"});
    fs::remove_all(target);
  }
  CHECK(read_bytes(path) == before);
  CHECK(dir_entries(dir) == only_ckpt);  // no temporary file left behind

  // A successful save replaces the file.
  sg::save_safetensors(path, {{"w", sg::full({3}, 2.5)}});
  CHECK(find(sg::load_safetensors(path).tensors, "w").to_vector<float>() == std::vector<float>{2.5f, 2.5f, 2.5f});
  CHECK(dir_entries(dir) == only_ckpt);
}

TEST_CASE("temporary files of writers killed mid-save are removed by the next save; a live writer's stay") {
  const fs::path dir = scratch_dir("killed");
  const std::string path = (dir / "ck.safetensors").string();
  sg::save_safetensors(path, {{"w", sg::full({3}, 1.5)}});
  const Bytes good = read_bytes(path);
  const Tensor big = sg::zeros({1 << 20});  // 4 MiB: the child dies while writing it
  auto is_temporary = [](const std::string& name) { return name.starts_with(".ck.safetensors.tmp."); };
  auto temporaries = [&] {
    std::vector<std::string> out;
    for (const std::string& name : dir_entries(dir))
      if (is_temporary(name)) out.push_back(name);
    return out;
  };
  // Two writers die mid-save, as under kill -9: past the file size limit the kernel sends
  // SIGXFSZ, whose default action ends the process on the spot (no destructor runs). Each
  // leaves its temporary file; the second, starting its save, removes the first's.
  std::vector<std::string> left;
  for (int i = 0; i < 2; ++i) {
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      signal(SIGXFSZ, SIG_DFL);
      rlimit small{64 * 1024, 64 * 1024};
      setrlimit(RLIMIT_FSIZE, &small);
      sg::save_safetensors(path, {{"w", big}});
      _exit(0);  // not reached
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGXFSZ);
    const std::vector<std::string> now = temporaries();
    REQUIRE(now.size() == 1);
    CHECK(std::find(left.begin(), left.end(), now[0]) == left.end());
    left.push_back(now[0]);
  }
  CHECK(read_bytes(path) == good);

  // A live writer: a process holding the lock on its temporary file (the writer's protocol).
  int ready[2], release[2];
  REQUIRE(pipe(ready) == 0);
  REQUIRE(pipe(release) == 0);
  const pid_t live = fork();
  REQUIRE(live >= 0);
  if (live == 0) {
    const std::string mine = (dir / fmt::format(".ck.safetensors.tmp.{}.0", getpid())).string();
    const int fd = open(mine.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0666);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) _exit(1);
    char c = 1;
    if (write(ready[1], &c, 1) != 1) _exit(1);
    if (read(release[0], &c, 1) < 0) _exit(1);  // until the parent closes its end
    _exit(0);
  }
  char c = 0;
  REQUIRE(read(ready[0], &c, 1) == 1);
  const std::string live_name = fmt::format(".ck.safetensors.tmp.{}.0", live);
  // Unrelated names that only look similar are never touched.
  for (const char* other : {".ck.safetensors.tmp.12x.0", ".other.safetensors.tmp.1.0", "ck.safetensors.tmp.1.0"})
    write_bytes(dir / other, "x");

  sg::save_safetensors(path, {{"w", sg::full({3}, 2.5)}});
  std::vector<std::string> want = {".ck.safetensors.tmp.12x.0", live_name};
  std::sort(want.begin(), want.end());
  CHECK(temporaries() == want);
  CHECK(sg::load_safetensors(path).tensors[0].second.to_vector<float>() == std::vector<float>{2.5f, 2.5f, 2.5f});

  // Once the live writer is gone (killed), its file goes too.
  REQUIRE(kill(live, SIGKILL) == 0);
  int status = 0;
  REQUIRE(waitpid(live, &status, 0) == live);
  for (int fd : {ready[0], ready[1], release[0], release[1]}) close(fd);
  sg::save_safetensors(path, {{"w", sg::full({3}, 3.5)}});
  CHECK(temporaries() == std::vector<std::string>{".ck.safetensors.tmp.12x.0"});
  CHECK(dir_entries(dir) == std::vector<std::string>{".ck.safetensors.tmp.12x.0", ".other.safetensors.tmp.1.0",
                                                      "ck.safetensors", "ck.safetensors.tmp.1.0"});
}

TEST_CASE("save: a file for the PyTorch-side check") {
  // Mirrors softgrad_written_expected() in tests/reference/gen_safetensors.py; check with
  //   /usr/bin/python3 tests/reference/gen_safetensors.py --verify <build>/tests/softgrad_written.safetensors
  const sg::NamedTensors tensors = {
      {"weight", sg::arange(0, 12, 1, sg::kFloat32).reshape({3, 4}) * 0.25 - 1.0},
      {"transposed", sg::arange(0, 6, 1, sg::kFloat32).reshape({2, 3}).t()},
      {"bias", sg::tensor({0.1, -2.5, 1e300}, sg::kFloat64)},
      {"steps", sg::scalar_tensor(7, sg::kInt64)},
      {"labels", sg::tensor({int64_t{-5}, int64_t{0}, int64_t{1} << 62})},
      {"mask", sg::tensor({true, false, true})},
      {"empty", sg::zeros({0, 2})},
  };
  sg::save_safetensors("softgrad_written.safetensors", tensors, {{"format", "pt"}, {"epoch", "3"}});
  const sg::SafetensorsFile f = sg::load_safetensors("softgrad_written.safetensors");
  CHECK(names_of(f.tensors) ==
        std::vector<std::string>{"labels", "steps", "bias", "empty", "transposed", "weight", "mask"});
  for (const auto& [name, want] : tensors) {
    CAPTURE(name);
    check_bits_equal(find(f.tensors, name), want);
  }
}

// ---- module state ------------------------------------------------------------------------
namespace {

struct Net : sg::nn::Module {
  std::shared_ptr<sg::nn::Linear> fc1, fc2;
  Tensor scale, steps;
  explicit Net(sg::Generator& gen, int64_t hidden = 3) : Module("Net") {
    fc1 = register_module("fc1", std::make_shared<sg::nn::Linear>(4, hidden, gen));
    fc2 =
        register_module("fc2", std::make_shared<sg::nn::Linear>(hidden, 2, gen, sg::nn::LinearOptions{.bias = false}));
    scale = register_parameter("scale", sg::randn({2}, gen, sg::kFloat64));
    steps = register_buffer("steps", sg::scalar_tensor(0, sg::kInt64));
  }
  Tensor forward(const Tensor& x) const { return fc2->forward(sg::relu(fc1->forward(x))).to(sg::kFloat64) * scale; }
};

std::vector<Tensor> snapshot(const sg::nn::Module& m) {
  std::vector<Tensor> out;
  for (const auto& [_, t] : sg::nn::state_dict(m)) out.push_back(t.clone());
  return out;
}

void check_unchanged(const sg::nn::Module& m, const std::vector<Tensor>& before) {
  const sg::NamedTensors now = sg::nn::state_dict(m);
  REQUIRE(now.size() == before.size());
  for (size_t i = 0; i < now.size(); ++i) {
    CAPTURE(now[i].first);
    check_bits_equal(now[i].second, before[i]);
  }
}

}  // namespace

TEST_CASE("state_dict: parameters then buffers, dotted names, detached handles on the same storage") {
  sg::Generator gen(1);
  Net net(gen);
  const sg::NamedTensors state = sg::nn::state_dict(net);
  CHECK(names_of(state) == std::vector<std::string>{"scale", "fc1.weight", "fc1.bias", "fc2.weight", "steps"});
  for (const auto& [name, t] : state) {
    CAPTURE(name);
    CHECK(!t.requires_grad());
    CHECK(t.is_leaf());
  }
  CHECK(state[1].second.impl()->storage == net.fc1->weight.impl()->storage);
  {
    sg::NoGradGuard no_grad;
    Tensor w = net.fc1->weight;
    sg::fill_(w, 0.5);
  }
  CHECK(state[1].second.to_vector<float>() == std::vector<float>(12, 0.5f));
}

TEST_CASE("nn::save and nn::load round trip a module; the file is PyTorch's state_dict") {
  const fs::path dir = scratch_dir("module");
  const std::string path = (dir / "net.safetensors").string();
  sg::Generator gen_a(1), gen_b(2), gen_x(3);
  Net a(gen_a), b(gen_b);
  {
    sg::NoGradGuard no_grad;
    a.steps.set<int64_t>({}, 123);
  }
  sg::nn::save(a, path, {{"format", "pt"}});
  const sg::SafetensorsFile f = sg::load_safetensors(path);
  CHECK(f.metadata == std::map<std::string, std::string>{{"format", "pt"}});
  CHECK(names_of(f.tensors) == std::vector<std::string>{"steps", "scale", "fc1.bias", "fc1.weight", "fc2.weight"});

  const Tensor x = sg::randn({5, 4}, gen_x);
  CHECK(a.forward(x).to_vector<double>() != b.forward(x).to_vector<double>());
  sg::nn::load(b, path);
  check_unchanged(b, snapshot(a));
  check_bits_equal(b.forward(x), a.forward(x));
  for (const Tensor& p : b.parameters()) CHECK(p.requires_grad());
  CHECK(b.steps.item<int64_t>() == 123);
}

TEST_CASE("load_state_dict lists every mismatch in one error and changes nothing") {
  sg::Generator gen(1), other(2);
  Net net(gen);
  const std::vector<Tensor> before = snapshot(net);
  Net wide(other, 5);  // fc1.weight [5, 4], fc1.bias [5], fc2.weight [2, 5]
  const sg::NamedTensors good = sg::nn::state_dict(Net(other));

  sg::NamedTensors bad;
  for (const auto& [name, t] : good) {
    if (name == "fc2.weight") continue;  // missing
    if (name == "fc1.weight")
      bad.emplace_back(name, find(sg::nn::state_dict(wide), name));  // shape
    else if (name == "fc1.bias")
      bad.emplace_back(name, t.to(sg::kFloat64));  // dtype
    else
      bad.emplace_back(name, t);
  }
  bad.emplace_back("fc3.weight", sg::zeros({2, 2}));  // unexpected
  check_error([&] { sg::nn::load_state_dict(net, bad); },
              {"load_state_dict(Net): the state does not match the module, nothing was loaded (4 problems):",
               "\n  missing key: fc2.weight", "\n  unexpected key: fc3.weight",
               "\n  shape mismatch: fc1.weight: checkpoint [5, 4], module [3, 4]",
               "\n  dtype mismatch: fc1.bias: checkpoint float64, module float32"});
  check_unchanged(net, before);

  // Not strict: missing and unexpected keys are fine, a shape or dtype mismatch is not.
  check_error([&] { sg::nn::load_state_dict(net, bad, false); },
              {"(2 problems)", "shape mismatch: fc1.weight", "dtype mismatch: fc1.bias"});
  check_unchanged(net, before);

  // A key given twice and an undefined tensor are problems too.
  sg::NamedTensors twice = good;
  twice.emplace_back("scale", find(good, "scale"));
  twice.emplace_back("fc9", Tensor());
  check_error([&] { sg::nn::load_state_dict(net, twice); },
              {"(3 problems)", "unexpected key: fc9", "key given twice: scale", "undefined tensor: fc9"});
  check_unchanged(net, before);

  // nn::load names the file; the module is still unchanged.
  const fs::path dir = scratch_dir("mismatch");
  const std::string path = (dir / "wide.safetensors").string();
  sg::nn::save(wide, path);
  check_error([&] { sg::nn::load(net, path); },
              {"nn::load: '" + path + "': load_state_dict(Net)", "(3 problems)",
               "shape mismatch: fc1.weight: checkpoint [5, 4], module [3, 4]", "shape mismatch: fc1.bias",
               "shape mismatch: fc2.weight: checkpoint [2, 5], module [2, 3]"});
  check_unchanged(net, before);

  // strict = false loads what matches and leaves the rest.
  sg::NamedTensors partial = {{"scale", find(good, "scale")}, {"extra", sg::ones({1})}};
  sg::nn::load_state_dict(net, partial, false);
  check_bits_equal(net.scale, find(good, "scale"));
  check_bits_equal(net.fc1->weight, before[1]);
}

TEST_CASE("load_state_dict copies in place: handles held elsewhere see the loaded values") {
  sg::Generator gen(1), other(2);
  Net net(gen), src(other);
  // What an optimizer holds: the parameter handles, and a view of one.
  const std::vector<Tensor> held = net.parameters();
  const Tensor row = net.fc1->weight.narrow(0, 1, 1);
  const auto* weight_impl = net.fc1->weight.impl().get();
  const uint64_t version = net.fc1->weight.impl()->storage->version;

  sg::nn::load_state_dict(net, sg::nn::state_dict(src));  // grad mode on: parameters require grad
  CHECK(net.fc1->weight.impl().get() == weight_impl);
  CHECK(net.fc1->weight.impl()->storage->version > version);
  const sg::NamedTensors loaded = sg::nn::state_dict(src);
  for (size_t i = 0; i < held.size(); ++i) {
    CAPTURE(loaded[i].first);
    check_bits_equal(held[i], loaded[i].second);
    CHECK(held[i].requires_grad());
  }
  check_bits_equal(row, src.fc1->weight.narrow(0, 1, 1));

  // Sources that alias the module's own storage are read before anything is overwritten:
  // swapping two parameters in place would otherwise copy b into a, then the new a into b.
  struct Pair : sg::nn::Module {
    Tensor a = register_parameter("a", sg::tensor({1.0, 2.0}));
    Tensor b = register_parameter("b", sg::tensor({3.0, 4.0}));
  } pair;
  sg::nn::load_state_dict(pair, {{"a", pair.b.detach()}, {"b", pair.a.detach()}});
  CHECK(pair.a.to_vector<float>() == std::vector<float>{3.0f, 4.0f});
  CHECK(pair.b.to_vector<float>() == std::vector<float>{1.0f, 2.0f});
}
