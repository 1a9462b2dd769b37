// bfloat16 (core/bfloat16.h, the rules in core/dtype.h): rounding of every 16-bit pattern
// against a naive reference, float64 rounding once (not twice), conversions, views and
// copies, printing, typed access, creation, safetensors BF16 bit for bit (including a file
// PyTorch wrote: tests/reference/gen_bf16_safetensors.py), and a table of ops that either
// work on bfloat16 (checked against float32) or refuse it by name.
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "test_util.h"

namespace fs = std::filesystem;
using sg::bfloat16;
using sg::kBFloat16;
using sg::kFloat32;
using sg::kFloat64;
using sg::Tensor;
using sgtest::check_error;

namespace {

float bf16_value(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }
bool bf16_is_nan(uint16_t b) { return (b & 0x7f80) == 0x7f80 && (b & 0x007f) != 0; }

// The naive reference: the nearest bfloat16 to x (any finite double), ties to the even
// mantissa, found by binary search over the non-negative bit patterns (ordered like their
// values) and one exact comparison with the midpoint (two bfloat16 values, one more bit:
// exact in double). Past the largest finite value the "next" value is 2^128 (infinity).
uint16_t reference_round(double x) {
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(x);
  if (std::isinf(a)) return sign | 0x7f80;
  uint16_t lo = 0, hi = 0x7f7f;  // the largest pattern whose value is <= a
  if (bf16_value(hi) <= a) {
    lo = hi;
  } else {
    while (hi - lo > 1) {
      const uint16_t mid = static_cast<uint16_t>((lo + hi) / 2);
      (bf16_value(mid) <= a ? lo : hi) = mid;
    }
  }
  const double below = bf16_value(lo);
  if (below == a) return sign | lo;
  const double above = lo == 0x7f7f ? std::ldexp(1.0, 128) : bf16_value(static_cast<uint16_t>(lo + 1));
  const double mid = (below + above) / 2;
  uint16_t r;
  if (a < mid) r = lo;
  else if (a > mid) r = static_cast<uint16_t>(lo + 1);
  else r = (lo & 1) ? static_cast<uint16_t>(lo + 1) : lo;
  return sign | r;  // lo + 1 == 0x7f80 is infinity
}

std::string reference_file(const std::string& name) {
  return (fs::path(SOFTGRAD_TEST_REFERENCE_DIR) / "safetensors" / name).string();
}

std::vector<uint16_t> bits_of(const Tensor& t) {
  std::vector<uint16_t> out;
  for (bfloat16 v : t.to_vector<bfloat16>()) out.push_back(v.bits);
  return out;
}

Tensor bf16_from_bits(const std::vector<uint16_t>& bits, const sg::Shape& shape) {
  std::vector<bfloat16> v;
  for (uint16_t b : bits) v.push_back(bfloat16::from_bits(b));
  return sg::from_vector(v, shape);
}

}  // namespace

TEST_CASE("every bfloat16 pattern survives bfloat16 -> float32 -> bfloat16; NaNs stay NaN and come out quiet") {
  int nans = 0;
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    const auto h = bfloat16::from_bits(static_cast<uint16_t>(b));
    const float f = static_cast<float>(h);
    CHECK(std::bit_cast<uint32_t>(f) == b << 16);  // exact: the top half of a float
    if (!std::isnan(f)) CHECK(static_cast<double>(h) == static_cast<double>(f));
    const uint16_t back = bfloat16(f).bits, back64 = bfloat16(static_cast<double>(f)).bits;
    if (bf16_is_nan(static_cast<uint16_t>(b))) {
      ++nans;
      CHECK(back == (b | 0x0040));  // sign and payload kept, quiet bit set
      CHECK(bf16_is_nan(back64));
      CHECK((back64 & 0x8000) == (b & 0x8000));
      CHECK((back64 & 0x0040) != 0);
    } else {
      CHECK(back == b);
      CHECK(back64 == b);
    }
  }
  CHECK(nans == 2 * 127);
}

TEST_CASE("float32 -> bfloat16 rounds to nearest even: every pattern, midpoint and midpoint +- 1 ulp") {
  int64_t checked = 0, failures = 0;
  auto check = [&](uint32_t fbits) {
    const float x = std::bit_cast<float>(fbits);
    if (std::isnan(x)) return;
    const uint16_t got = sg::float_to_bfloat16_bits(x), want = reference_round(x);
    ++checked;
    if (got != want) {
      ++failures;
      if (failures < 10) FAIL_CHECK("float bits 0x" << std::hex << fbits << ": got 0x" << got << ", want 0x" << want);
    }
  };
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    const uint32_t base = b << 16, mid = base | 0x8000;
    for (uint32_t f : {base, base + 1, mid - 1, mid, mid + 1, base | 0xffff}) check(f);
  }
  CHECK(failures == 0);
  CHECK(checked > 6 * 65000);
  // Ties, spelled out: 1 + 2^-8 is halfway between 1 (even) and 1 + 2^-7 (odd).
  CHECK(bfloat16(1.0f + 0x1p-8f).bits == 0x3f80);
  CHECK(bfloat16(1.0f + 3 * 0x1p-8f).bits == 0x3f82);  // between 0x3f81 (odd) and 0x3f82 (even)
  CHECK(bfloat16(std::numeric_limits<float>::max()).bits == 0x7f80);  // past max + half ulp: inf
  CHECK(bfloat16(-std::numeric_limits<float>::infinity()).bits == 0xff80);
  CHECK(bfloat16(-0.0f).bits == 0x8000);
  CHECK(bfloat16(0.1f).bits == 0x3dcd);
  // NaNs of either sign and any payload come out NaN, quiet, sign kept.
  for (uint32_t f : {0x7f800001u, 0x7fc00000u, 0xff800001u, 0xffffffffu, 0x7fbfffffu}) {
    const uint16_t h = bfloat16(std::bit_cast<float>(f)).bits;
    CHECK(bf16_is_nan(h));
    CHECK((h & 0x0040) != 0);
    CHECK((h & 0x8000) == ((f >> 16) & 0x8000));
  }
}

TEST_CASE("float64 -> bfloat16 rounds once: not through float32") {
  // 1 + 2^-8 + 2^-40: float32 rounds it to 1 + 2^-8, a tie that goes to 1; the nearest
  // bfloat16 is 1 + 2^-7.
  const double d = 1.0 + 0x1p-8 + 0x1p-40;
  CHECK(bfloat16(static_cast<float>(d)).bits == 0x3f80);  // what rounding twice gives
  CHECK(bfloat16(d).bits == 0x3f81);
  CHECK(bfloat16(1.0 + 0x1p-8 - 0x1p-40).bits == 0x3f80);
  CHECK(sg::tensor({d}, kFloat64).to(kBFloat16).item<bfloat16>().bits == 0x3f81);
  CHECK(sg::tensor({d}, kFloat64).to(kFloat32).to(kBFloat16).item<bfloat16>().bits == 0x3f80);
  int64_t failures = 0, checked = 0;
  auto check = [&](double x) {
    const uint16_t got = bfloat16(x).bits, want = reference_round(x);
    ++checked;
    if (got != want && ++failures < 10) FAIL_CHECK("double " << x << ": got " << got << ", want " << want);
  };
  for (uint32_t b = 0; b < 0x7f80; ++b) {
    for (double sign : {1.0, -1.0}) {
      const double v = bf16_value(static_cast<uint16_t>(b));
      const double next = b == 0x7f7f ? std::ldexp(1.0, 128) : bf16_value(static_cast<uint16_t>(b + 1));
      const double mid = (v + next) / 2;
      for (double x : {v, mid, std::nextafter(mid, 0.0), std::nextafter(mid, 1e300), mid + (next - v) * 0x1p-30,
                       mid - (next - v) * 0x1p-30, v + (next - v) * 0x1p-40})
        check(sign * x);
    }
  }
  CHECK(failures == 0);
  CHECK(checked > 7 * 65000);
  // Far out of range, tiny and special values.
  CHECK(bfloat16(1e300).bits == 0x7f80);
  CHECK(bfloat16(-1e300).bits == 0xff80);
  CHECK(bfloat16(1e-300).bits == 0x0000);
  CHECK(bfloat16(-1e-300).bits == 0x8000);
  CHECK(bf16_is_nan(bfloat16(std::numeric_limits<double>::quiet_NaN()).bits));
  CHECK((bfloat16(-std::numeric_limits<double>::quiet_NaN()).bits >> 15) == 1);
}

TEST_CASE("int64 and bool -> bfloat16 round once too") {
  // 2^60 + 2^52 + 1: through double it becomes 2^60 + 2^52, a tie that goes to 2^60; the
  // nearest bfloat16 (ulp 2^53 there) is 2^60 + 2^53.
  const int64_t big = (int64_t{1} << 60) + (int64_t{1} << 52) + 1;
  const Tensor t = sg::from_vector(std::vector<int64_t>{big, -big, 255, 257, 259, -3, 0,
                                                        std::numeric_limits<int64_t>::min(),
                                                        std::numeric_limits<int64_t>::max()},
                                   {9});
  const std::vector<float> v = t.to(kBFloat16).to_vector<float>();
  CHECK(v[0] == 0x1p60f + 0x1p53f);
  CHECK(v[1] == -(0x1p60f + 0x1p53f));
  CHECK(v[2] == 255.0f);  // 255 has 8 significant bits: exact
  CHECK(v[3] == 256.0f);  // 257: a tie, to even
  CHECK(v[4] == 260.0f);  // 259: a tie, to even (260 = 0x82 << 1)
  CHECK(v[5] == -3.0f);
  CHECK(v[6] == 0.0f);
  CHECK(v[7] == -0x1p63f);
  CHECK(v[8] == 0x1p63f);
  for (int64_t i = -70000; i <= 70000; i += 7)
    CHECK(sg::to_bfloat16(i).bits == reference_round(static_cast<double>(i)));
  CHECK(sg::tensor({true, false}).to(kBFloat16).to_vector<float>() == std::vector<float>{1.0f, 0.0f});
}

TEST_CASE("to(): both ways, exact widening, NaN and infinities; bfloat16 -> int64 and bool") {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const Tensor x = sg::from_vector(std::vector<float>{1.0f, 0.1f, -2.5f, 3.0e38f, 3.4e38f, inf, -inf, nan, 1e-40f},
                                   {9});
  const Tensor h = x.to(kBFloat16);
  CHECK(h.dtype() == kBFloat16);
  CHECK(h.nbytes() == 18);
  const std::vector<uint16_t> b = bits_of(h);
  for (size_t i = 0; i < b.size(); ++i) {
    CAPTURE(i);
    CHECK(b[i] == sg::float_to_bfloat16_bits(x.to_vector<float>()[i]));
  }
  CHECK(b[4] == 0x7f80);  // 3.4e38 is past the largest bfloat16 by more than half a unit
  CHECK(bf16_is_nan(b[7]));
  const std::vector<float> back = h.to(kFloat32).to_vector<float>();
  for (size_t i = 0; i < b.size(); ++i)
    CHECK(std::bit_cast<uint32_t>(back[i]) == static_cast<uint32_t>(b[i]) << 16);  // exact
  const std::vector<double> back64 = h.to(kFloat64).to_vector<double>();
  CHECK(back64[1] == static_cast<double>(bf16_value(b[1])));
  CHECK(std::isnan(back64[7]));
  // From float64, to int64 (checked like float -> int64) and bool.
  CHECK(bits_of(sg::tensor({0.1, -1e300}, kFloat64).to(kBFloat16)) == std::vector<uint16_t>{0x3dcd, 0xff80});
  CHECK(sg::tensor({2.75, -3.5, 0.0}).to(kBFloat16).to(sg::kInt64).to_vector<int64_t>() ==
        std::vector<int64_t>{2, -3, 0});
  check_error([&] { (void)h.to(sg::kInt64); }, {"converting bfloat16", "to int64"});
  CHECK(sg::tensor({2.0, 0.0, -0.0}).to(kBFloat16).to(sg::kBool).to_vector<bool>() ==
        std::vector<bool>{true, false, false});
  // Same dtype: the same tensor; bfloat16 -> bfloat16 copies keep every bit (a signalling NaN too).
  CHECK(h.to(kBFloat16).impl() == h.impl());
  const Tensor odd = bf16_from_bits({0x7f81, 0xffa0, 0x0001, 0x8000}, {4});
  CHECK(bits_of(odd.clone()) == std::vector<uint16_t>{0x7f81, 0xffa0, 0x0001, 0x8000});
}

TEST_CASE("views and copies: contiguous of a transposed bfloat16 tensor, clone, cat, index_select, ...") {
  sg::Generator gen(3);
  const Tensor f = sg::randn({3, 4}, gen).to(kBFloat16).to(kFloat32);  // values exact in bfloat16
  const Tensor h = f.to(kBFloat16);
  const Tensor ht = h.t();
  CHECK(!ht.is_contiguous());
  const Tensor c = ht.contiguous();
  CHECK(c.is_contiguous());
  CHECK(c.dtype() == kBFloat16);
  CHECK(c.to(kFloat32).to_vector<float>() == f.t().contiguous().to_vector<float>());
  CHECK(ht.to(kFloat32).to_vector<float>() == f.t().to_vector<float>());  // strided conversion
  CHECK(ht.to_vector<float>() == f.t().to_vector<float>());
  // Every op that only moves elements gives float32's answer, bit for bit.
  const Tensor idx = sg::tensor({2, 0, 2});
  const std::vector<std::pair<std::string, std::function<Tensor(const Tensor&)>>> moves = {
      {"reshape", [](const Tensor& x) { return x.reshape({4, 3}); }},
      {"view", [](const Tensor& x) { return x.view({12}); }},
      {"flatten", [](const Tensor& x) { return sg::flatten(x); }},
      {"permute", [](const Tensor& x) { return x.permute({1, 0}); }},
      {"narrow", [](const Tensor& x) { return sg::narrow(x, 1, 1, 2); }},
      {"slice", [](const Tensor& x) { return sg::slice(x, 1, 0, 4, 2); }},
      {"select", [](const Tensor& x) { return sg::select(x, 0, 1); }},
      {"squeeze/unsqueeze", [](const Tensor& x) { return sg::squeeze(sg::unsqueeze(x, 0)); }},
      {"expand", [](const Tensor& x) { return sg::expand(sg::unsqueeze(x, 0), {2, 3, 4}); }},
      {"clone", [](const Tensor& x) { return x.t().clone(); }},
      {"cat", [](const Tensor& x) { return sg::cat({x, x.t().t()}, 1); }},
      {"stack", [](const Tensor& x) { return sg::stack({x, x}, 0); }},
      {"index_select", [&](const Tensor& x) { return sg::index_select(x, 0, idx); }},
      {"gather", [](const Tensor& x) { return sg::gather(x, 1, sg::tensor({1, 0, 3, 3}).reshape({1, 4})); }},
      {"where", [](const Tensor& x) { return sg::where(sg::gt(x, sg::zeros_like(x)), x, x.t().t() * 0.0); }},
      {"masked_fill", [](const Tensor& x) { return sg::masked_fill(x, sg::lt(x, sg::zeros_like(x)), 0.5); }},
  };
  for (const auto& [name, fn] : moves) {
    CAPTURE(name);
    if (name == "where") {  // the other operand computes (x * 0.0): build it from float32 instead
      const Tensor got = sg::where(sg::gt(h, sg::zeros_like(h)), h, sg::zeros_like(h));
      CHECK(got.dtype() == kBFloat16);
      CHECK(got.to_vector<float>() == sg::where(sg::gt(f, sg::zeros_like(f)), f, sg::zeros_like(f)).to_vector<float>());
      continue;
    }
    const Tensor got = fn(h), want = fn(f);
    CHECK(got.dtype() == kBFloat16);
    CHECK(got.shape() == want.shape());
    CHECK(got.to_vector<float>() == want.to_vector<float>());
  }
  // copy_ converts; fill_ and zero_ write bfloat16.
  Tensor dst = sg::zeros({3, 4}, kBFloat16);
  sg::copy_(dst, f);
  CHECK(dst.to_vector<float>() == f.to_vector<float>());
  Tensor dst32 = sg::zeros({4, 3});
  sg::copy_(dst32, ht);
  CHECK(dst32.to_vector<float>() == f.t().to_vector<float>());
  sg::fill_(dst, 0.1);
  CHECK(bits_of(dst) == std::vector<uint16_t>(12, 0x3dcd));
  sg::zero_(dst);
  CHECK(bits_of(dst) == std::vector<uint16_t>(12, 0x0000));
}

TEST_CASE("comparisons and isnan/isinf/isfinite work on bfloat16 (compared as float32, exact)") {
  const Tensor a = sg::tensor({1.0, 2.0, -3.0, 0.0}).to(kBFloat16);
  const Tensor b = sg::tensor({1.0, 3.0, -4.0, -0.0}).to(kBFloat16);
  CHECK(sg::eq(a, b).to_vector<bool>() == std::vector<bool>{true, false, false, true});
  CHECK(sg::ne(a, b).to_vector<bool>() == std::vector<bool>{false, true, true, false});
  CHECK(sg::lt(a, b).to_vector<bool>() == std::vector<bool>{false, true, false, false});
  CHECK(sg::le(a, b).to_vector<bool>() == std::vector<bool>{true, true, false, true});
  CHECK(sg::gt(a, b).to_vector<bool>() == std::vector<bool>{false, false, true, false});
  CHECK(sg::ge(a, b).to_vector<bool>() == std::vector<bool>{true, false, true, true});
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  const Tensor s = sg::tensor({1.0, inf, -inf, nan}).to(kBFloat16);
  CHECK(sg::isnan(s).to_vector<bool>() == std::vector<bool>{false, false, false, true});
  CHECK(sg::isinf(s).to_vector<bool>() == std::vector<bool>{false, true, true, false});
  CHECK(sg::isfinite(s).to_vector<bool>() == std::vector<bool>{true, false, false, false});
  CHECK(sg::eq(s, s).to_vector<bool>() == std::vector<bool>{true, true, true, false});  // NaN != NaN
}

TEST_CASE("printing: values as PyTorch prints a bfloat16 tensor, dtype=bfloat16 suffix") {
  // PyTorch 1.13 prints the same with "dtype=torch.bfloat16" (softgrad drops "torch.", as for
  // float64); torch.tensor([[1.0, -2.5], [0.1, 3.0]]).bfloat16() prints
  // tensor([[ 1.0000, -2.5000],
  //         [ 0.1001,  3.0000]], dtype=torch.bfloat16)
  const Tensor h = sg::tensor({{1.0, -2.5}, {0.1, 3.0}}).to(kBFloat16);
  CHECK(sg::to_string(h) == "tensor([[ 1.0000, -2.5000],\n        [ 0.1001,  3.0000]], dtype=bfloat16)");
  CHECK(sg::to_string(sg::tensor({1.0, 2.0}).to(kBFloat16)) == "tensor([1., 2.], dtype=bfloat16)");
  CHECK(sg::to_string(sg::zeros({0}, kBFloat16)) == "tensor([], dtype=bfloat16)");
  CHECK(sg::to_string(sg::full({}, 3.0e38, kBFloat16)) == "tensor(3.0041e+38, dtype=bfloat16)");
  CHECK(sg::to_string(sg::tensor({1.0, std::nan(""), -std::numeric_limits<double>::infinity()}).to(kBFloat16)) ==
        "tensor([1., nan, -inf], dtype=bfloat16)");
  CHECK(fmt::format("{}", kBFloat16) == "bfloat16");
  // A transposed (strided) tensor prints in logical order.
  CHECK(sg::to_string(h.t()) == "tensor([[ 1.0000,  0.1001],\n        [-2.5000,  3.0000]], dtype=bfloat16)");
}

TEST_CASE("from_vector / to_vector / item / at / set and creation") {
  const std::vector<bfloat16> v = {bfloat16(1.5f), bfloat16(-0.1f), bfloat16::from_bits(0x7f80)};
  const Tensor t = sg::from_vector(v, {3});
  CHECK(t.dtype() == kBFloat16);
  CHECK(bits_of(t) == std::vector<uint16_t>{0x3fc0, 0xbdcd, 0x7f80});
  CHECK(t.to_vector<float>() == std::vector<float>{1.5f, bf16_value(0xbdcd), std::numeric_limits<float>::infinity()});
  CHECK(t.at<bfloat16>({1}).bits == 0xbdcd);
  CHECK(t.at<bfloat16>({-1}).bits == 0x7f80);
  check_error([&] { (void)t.at<float>({0}); }, {"data_ptr", "bfloat16", "float32"});
  CHECK(sg::select(t, 0, 0).item<float>() == 1.5f);
  CHECK(sg::select(t, 0, 0).item<double>() == 1.5);
  CHECK(sg::select(t, 0, 0).item<int>() == 1);
  CHECK(sg::select(t, 0, 0).item<bfloat16>().bits == 0x3fc0);
  check_error([&] { (void)sg::select(t, 0, 2).item<int64_t>(); }, {"item", "inf", "int64"});
  Tensor s = t.clone();
  s.set<double>({0}, 0.1);
  s.set<bfloat16>({1}, bfloat16::from_bits(0x1234));
  s.set<int64_t>({2}, 257);
  CHECK(bits_of(s) == std::vector<uint16_t>{0x3dcd, 0x1234, 0x4380});  // 257 -> 256
  // Into other dtypes.
  Tensor f = sg::zeros({1});
  f.set<bfloat16>({0}, bfloat16(0.1f));
  CHECK(f.item<float>() == bf16_value(0x3dcd));
  CHECK(sg::from_vector(std::vector<float>{0.1f}, {1}).to_vector<bfloat16>()[0].bits == 0x3dcd);
  // Creation.
  CHECK(bits_of(sg::zeros({2}, kBFloat16)) == std::vector<uint16_t>{0, 0});
  CHECK(bits_of(sg::ones({2}, kBFloat16)) == std::vector<uint16_t>{0x3f80, 0x3f80});
  CHECK(bits_of(sg::full({2}, -0.1, kBFloat16)) == std::vector<uint16_t>{0xbdcd, 0xbdcd});
  CHECK(bits_of(sg::full({1}, 1.0 + 0x1p-8 + 0x1p-40, kBFloat16)) == std::vector<uint16_t>{0x3f81});  // once
  CHECK(bits_of(sg::ones_like(t)) == std::vector<uint16_t>{0x3f80, 0x3f80, 0x3f80});
  CHECK(bits_of(sg::tensor({0.1, 2.0}, kBFloat16)) == std::vector<uint16_t>{0x3dcd, 0x4000});
  CHECK(sg::arange(0.0, 1.0, 0.25, kBFloat16).to_vector<float>() == std::vector<float>{0.0f, 0.25f, 0.5f, 0.75f});
  CHECK(sg::linspace(0.0, 1.0, 3, kBFloat16).to_vector<float>() == std::vector<float>{0.0f, 0.5f, 1.0f});
  sg::Generator gen(1);
  check_error([&] { (void)sg::randn({2}, gen, kBFloat16); }, {"randn: cannot draw bfloat16", "to(kBFloat16)"});
  check_error([&] { (void)sg::rand({2}, gen, kBFloat16); }, {"rand: cannot draw bfloat16", "to(kBFloat16)"});
}

TEST_CASE("autograd: a bfloat16 tensor cannot require grad; to(kBFloat16) of one that does is refused") {
  Tensor h = sg::ones({2}, kBFloat16);
  check_error([&] { h.requires_grad_(); }, {"requires_grad_", "bfloat16 tensor cannot require grad", "to(kFloat32)"});
  CHECK(!h.requires_grad());
  // The documented path: convert first, the float32 copy is the leaf.
  Tensor w = h.to(kFloat32).requires_grad_();
  sg::sum(w * 3.0).backward();
  CHECK(w.grad().to_vector<float>() == std::vector<float>{3.0f, 3.0f});
  // Going down to bfloat16 from a tensor that requires grad would cut the graph silently.
  check_error([&] { (void)w.to(kBFloat16); }, {"to:", "requires grad", "bfloat16", "detach()"});
  CHECK(bits_of(w.detach().to(kBFloat16)) == std::vector<uint16_t>{0x3f80, 0x3f80});
  {
    sg::NoGradGuard no_grad;
    CHECK(w.to(kBFloat16).dtype() == kBFloat16);
  }
  // gradcheck needs float64 inputs and says so.
  check_error([&] { (void)sg::gradcheck_report([](const std::vector<Tensor>& in) { return in[0]; }, {h}); },
              {"gradcheck", "bfloat16", "float64"});
}

TEST_CASE("every op that computes refuses bfloat16 by name") {
  sg::Generator gen(7);
  const Tensor x = sg::randn({2, 3}, gen).to(kBFloat16);
  const Tensor sq = sg::randn({3, 3}, gen).to(kBFloat16);
  const Tensor labels = sg::tensor({0, 2});
  const Tensor q = sg::randn({1, 2, 4}, gen).to(kBFloat16);
  struct Case {
    const char* op;
    std::function<void()> call;
  };
  Tensor inplace = x.clone();
  const std::vector<Case> cases = {
      {"add", [&] { (void)sg::add(x, x); }},
      {"sub", [&] { (void)sg::sub(x, x); }},
      {"mul", [&] { (void)sg::mul(x, x); }},
      {"div", [&] { (void)sg::div(x, x); }},
      {"add", [&] { (void)(x + 1.0); }},
      {"mul", [&] { (void)(2.0 * x); }},
      {"div", [&] { (void)(x / 2.0); }},
      {"pow", [&] { (void)sg::pow(x, x); }},
      {"pow", [&] { (void)sg::pow(x, 2.0); }},
      {"neg", [&] { (void)sg::neg(x); }},
      {"neg", [&] { (void)(-x); }},
      {"exp", [&] { (void)sg::exp(x); }},
      {"log", [&] { (void)sg::log(x); }},
      {"sqrt", [&] { (void)sg::sqrt(x); }},
      {"abs", [&] { (void)sg::abs(x); }},
      {"relu", [&] { (void)sg::relu(x); }},
      {"relu", [&] { (void)x.relu(); }},
      {"tanh", [&] { (void)sg::tanh(x); }},
      {"sigmoid", [&] { (void)sg::sigmoid(x); }},
      {"gelu", [&] { (void)sg::gelu(x); }},
      {"gelu", [&] { (void)sg::gelu(x, sg::GeluApprox::Tanh); }},
      {"clamp", [&] { (void)sg::clamp(x, 0.0, 1.0); }},
      {"add_", [&] { sg::add_(inplace, x); }},
      {"mul_", [&] { sg::mul_(inplace, 2.0); }},
      {"sum", [&] { (void)sg::sum(x); }},
      {"sum", [&] { (void)sg::sum(x, {0}); }},
      {"sum", [&] { (void)x.sum(); }},
      {"mean", [&] { (void)sg::mean(x); }},
      {"mean", [&] { (void)sg::mean(x, {1}, true); }},
      {"var", [&] { (void)sg::var(x); }},
      {"max", [&] { (void)sg::max(x); }},
      {"min", [&] { (void)sg::min(x); }},
      {"max", [&] { (void)sg::max(x, 1); }},
      {"min", [&] { (void)sg::min(x, 0); }},
      {"argmax", [&] { (void)sg::argmax(x); }},
      {"argmax", [&] { (void)sg::argmax(x, 1); }},
      {"argmin", [&] { (void)sg::argmin(x, 1); }},
      {"sum_to", [&] { (void)sg::sum_to(x, {1, 3}); }},
      {"matmul", [&] { (void)sg::matmul(x, sq); }},
      {"matmul", [&] { (void)x.matmul(sq); }},
      {"matmul", [&] { (void)sg::matmul_naive(x, sq); }},
      {"linear", [&] { (void)sg::linear(x, sq); }},
      {"linear", [&] { (void)sg::linear(x.to(kFloat32), sq); }},
      {"softmax", [&] { (void)sg::softmax(x, 1); }},
      {"log_softmax", [&] { (void)sg::log_softmax(x, 1); }},
      {"cross_entropy", [&] { (void)sg::cross_entropy(x, labels); }},
      {"cross_entropy", [&] { (void)sg::cross_entropy(x.to(kFloat32), x); }},
      {"nll_loss", [&] { (void)sg::nll_loss(x, labels); }},
      {"layer_norm", [&] { (void)sg::layer_norm(x, {3}); }},
      {"dropout", [&] { (void)sg::dropout(x, 0.5, true, gen); }},
      {"dropout", [&] { (void)sg::dropout(x, 0.5, false, gen); }},
      {"embedding", [&] { (void)sg::embedding(sq, labels); }},
      {"scaled_dot_product_attention", [&] { (void)sg::scaled_dot_product_attention(q, q, q); }},
      {"scaled_dot_product_attention", [&] { (void)sg::scaled_dot_product_attention_naive(q, q, q); }},
      {"sort", [&] { (void)sg::sort(x); }},
      {"argsort", [&] { (void)sg::argsort(x); }},
      {"topk", [&] { (void)sg::topk(x, 1); }},
      {"cumsum", [&] { (void)sg::cumsum(x, 1); }},
      {"multinomial", [&] { (void)sg::multinomial(sg::abs(x.to(kFloat32)).to(kBFloat16), 1, true, gen); }},
  };
  CHECK(cases.size() >= 40);
  for (const Case& c : cases) {
    CAPTURE(c.op);
    check_error(c.call, {std::string(c.op) + ": bfloat16 tensors are not supported; convert with to(kFloat32)"});
  }
  CHECK(bits_of(inplace) == bits_of(x));  // the refused in-place ops wrote nothing
  // nn layers: bfloat16 parameters are refused where the module is built.
  check_error([&] { sg::nn::Module m("M"); m.register_parameter("w", sg::zeros({2}, kBFloat16)); },
              {"parameter 'w'", "bfloat16"});
}

TEST_CASE("the kernel dispatchers refuse bfloat16 (a bug guard, not the user-facing message)") {
  check_error([] { sg::visit_numeric(kBFloat16, []<typename T>() { return 0; }); }, {"visit_numeric", "bfloat16"});
  check_error([] { sg::visit_floating(kBFloat16, []<typename T>() { return 0; }); }, {"visit_floating", "bfloat16"});
  check_error([] { sg::visit_floating(sg::kInt64, []<typename T>() { return 0; }); }, {"visit_floating", "int64"});
  CHECK(!sg::is_floating(kBFloat16));
  CHECK(sg::is_floating_point(kBFloat16));
  CHECK(sg::dtype_size(kBFloat16) == 2);
  check_error([] { sg::refuse_bfloat16("relu", kBFloat16); },
              {"relu: bfloat16 tensors are not supported; convert with to(kFloat32)"});
}

TEST_CASE("safetensors: BF16 saved and loaded bit for bit") {
  const Tensor h = bf16_from_bits({0x3f80, 0x7f81, 0xffc0, 0x0001, 0x8000, 0x7f80, 0xc2c8, 0x1234}, {2, 4});
  const std::string path = "bf16_roundtrip.safetensors";
  sg::save_safetensors(path, {{"h", h}, {"ht", h.t()}, {"f", sg::ones({2})}, {"b", sg::tensor({true})}});
  const sg::SafetensorsFile file = sg::load_safetensors(path);
  REQUIRE(file.tensors.size() == 4);
  // The reference writer's order: F32 before BF16 before BOOL, then by name.
  CHECK(file.tensors[0].first == "f");
  CHECK(file.tensors[1].first == "h");
  CHECK(file.tensors[2].first == "ht");
  CHECK(file.tensors[3].first == "b");
  const Tensor& back = file.tensors[1].second;
  CHECK(back.dtype() == kBFloat16);
  CHECK(back.shape() == sg::Shape{2, 4});
  CHECK(bits_of(back) == bits_of(h));  // signalling NaN payload too
  CHECK(bits_of(file.tensors[2].second) == bits_of(h.t()));
  // The header says BF16 and the bytes are the bits, little-endian.
  std::FILE* fp = std::fopen(path.c_str(), "rb");
  REQUIRE(fp != nullptr);
  std::vector<char> bytes(4096);
  bytes.resize(std::fread(bytes.data(), 1, bytes.size(), fp));
  std::fclose(fp);
  const std::string text(bytes.begin(), bytes.end());
  CHECK(text.find(R"("h":{"dtype":"BF16","shape":[2,4])") != std::string::npos);
  fs::remove(path);
}

TEST_CASE("safetensors: a BF16 file PyTorch wrote (tests/reference/gen_bf16_safetensors.py)") {
  const sg::SafetensorsFile file = sg::load_safetensors(reference_file("torch_bf16.safetensors"));
  CHECK(file.metadata.at("written_by") == "gen_bf16_safetensors.py");
  REQUIRE(file.tensors.size() == 3);
  const Tensor src = file.tensors[0].second, matrix = file.tensors[1].second, rounded = file.tensors[2].second;
  CHECK(file.tensors[0].first == "src");
  CHECK(file.tensors[1].first == "matrix");
  CHECK(file.tensors[2].first == "rounded");
  CHECK(src.dtype() == kFloat32);
  CHECK(rounded.dtype() == kBFloat16);
  CHECK(matrix.dtype() == kBFloat16);
  CHECK(matrix.shape() == sg::Shape{2, 3});
  // softgrad's rounding equals PyTorch's on every value; NaNs: both NaN (PyTorch 1.13's
  // vectorized conversion gives 0xffff for any NaN; softgrad keeps the sign, quiet).
  const std::vector<uint16_t> mine = bits_of(src.to(kBFloat16)), torch = bits_of(rounded);
  REQUIRE(mine.size() == 64);
  int nans = 0;
  for (size_t i = 0; i < mine.size(); ++i) {
    CAPTURE(i);
    if (bf16_is_nan(torch[i])) {
      ++nans;
      CHECK(bf16_is_nan(mine[i]));
    } else {
      CHECK(mine[i] == torch[i]);
    }
  }
  CHECK(nans == 5);
  CHECK(matrix.to_vector<float>() ==
        std::vector<float>{1.0f, -2.5f, bf16_value(0x4049), bf16_value(0x3a83), 65536.0f, -0.0f});
  CHECK(std::signbit(matrix.to_vector<float>()[5]));
  // Written back, the tensor's bytes are the ones PyTorch wrote.
  sg::save_safetensors("bf16_torch_again.safetensors", {{"matrix", matrix}});
  CHECK(bits_of(sg::load_safetensors("bf16_torch_again.safetensors").tensors[0].second) == bits_of(matrix));
  fs::remove("bf16_torch_again.safetensors");
}

TEST_CASE("load_state_dict: a bfloat16 state loads into a float32 module (exact widening); float64 still does not") {
  sg::Generator gen(5);
  sg::nn::Linear a(3, 2, gen), b(3, 2, gen);
  sg::NamedTensors half;
  for (const auto& [name, t] : sg::nn::state_dict(a)) half.emplace_back(name, t.to(kBFloat16));
  sg::save_safetensors("bf16_state.safetensors", half);
  sg::nn::load(b, "bf16_state.safetensors");
  fs::remove("bf16_state.safetensors");
  const sg::NamedTensors got = sg::nn::state_dict(b);
  REQUIRE(got.size() == half.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(got[i].first);
    CHECK(got[i].second.dtype() == kFloat32);
    CHECK(got[i].second.to_vector<float>() == half[i].second.to_vector<float>());
  }
  sg::NamedTensors wide;
  for (const auto& [name, t] : sg::nn::state_dict(a)) wide.emplace_back(name, t.to(kFloat64));
  check_error([&] { sg::nn::load_state_dict(b, wide); }, {"dtype mismatch", "checkpoint float64, module float32"});
}
