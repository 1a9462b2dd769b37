// Core ops against PyTorch: values and gradients from the committed table
// tests/reference/core_ops.txt (written by tests/reference/gen_core_ops.py; see
// tests/reference/README.md). For each case the table holds the inputs, PyTorch's outputs,
// a weight w and the gradients of sum(output * w); kCases below mirrors the generator's
// CASES table name for name, and a case present on one side only fails the suite.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/test_util.h"

using sg::Shape;
using sg::Tensor;

namespace {

// ---- the table -------------------------------------------------------------------------
struct RefTensor {
  std::string name;  // input name, output name, or the input a gradient belongs to
  sg::Dtype dtype = sg::kFloat64;
  Shape shape;
  std::vector<double> values;  // exact for float64, float32 (stored widened), int64 and bool
};

struct RefCase {
  std::string name;
  std::vector<RefTensor> inputs, outputs, grads;
  std::optional<RefTensor> weight;  // present iff the first output is floating
};

std::filesystem::path table_path() {
#ifdef SOFTGRAD_TEST_REFERENCE_DIR
  return std::filesystem::path(SOFTGRAD_TEST_REFERENCE_DIR) / "core_ops.txt";
#else
  return std::filesystem::path(__FILE__).parent_path() / "reference" / "core_ops.txt";
#endif
}

sg::Dtype parse_dtype(const std::string& s) {
  if (s == "float64") return sg::kFloat64;
  if (s == "float32") return sg::kFloat32;
  if (s == "int64") return sg::kInt64;
  if (s == "bool") return sg::kBool;
  throw std::runtime_error("unknown dtype '" + s + "'");
}

Shape parse_shape(const std::string& s) {  // "[2,3,4]" or "[]"
  if (s.size() < 2 || s.front() != '[' || s.back() != ']') throw std::runtime_error("bad shape '" + s + "'");
  Shape shape;
  std::stringstream ss(s.substr(1, s.size() - 2));
  for (std::string d; std::getline(ss, d, ',');) shape.push_back(std::stoll(d));
  return shape;
}

// Parses "[NAME] DTYPE [shape] : v v v" (has_name false for the weight line).
RefTensor parse_tensor(std::istringstream& in, bool has_name) {
  RefTensor t;
  std::string dtype, shape, colon;
  if (has_name) in >> t.name;
  in >> dtype >> shape >> colon;
  if (colon != ":") throw std::runtime_error("expected ':' after the shape");
  t.dtype = parse_dtype(dtype);
  t.shape = parse_shape(shape);
  for (std::string v; in >> v;) {
    char* end = nullptr;
    t.values.push_back(std::strtod(v.c_str(), &end));  // glibc rounds correctly: repr is exact
    if (*end != '\0') throw std::runtime_error("bad number '" + v + "'");
  }
  if (static_cast<int64_t>(t.values.size()) != sg::shape_numel(t.shape))
    throw std::runtime_error(fmt::format("{} values for shape {}", t.values.size(), t.shape));
  return t;
}

std::vector<RefCase> parse_table(const std::filesystem::path& path) {
  std::ifstream file(path);
  if (!file) throw std::runtime_error("cannot open " + path.string());
  std::vector<RefCase> cases;
  std::optional<RefCase> cur;
  int lineno = 0;
  for (std::string line; std::getline(file, line);) {
    ++lineno;
    if (line.empty() || line[0] == '#') continue;
    try {
      std::istringstream in(line);
      std::string kind;
      in >> kind;
      if (kind == "case") {
        if (cur) throw std::runtime_error("'case' before 'end'");
        cur.emplace();
        in >> cur->name;
        continue;
      }
      if (!cur) throw std::runtime_error("'" + kind + "' outside a case");
      if (kind == "input") cur->inputs.push_back(parse_tensor(in, true));
      else if (kind == "output") cur->outputs.push_back(parse_tensor(in, true));
      else if (kind == "grad") cur->grads.push_back(parse_tensor(in, true));
      else if (kind == "weight") cur->weight = parse_tensor(in, false);
      else if (kind == "end") {
        cases.push_back(std::move(*cur));
        cur.reset();
      } else throw std::runtime_error("unknown record '" + kind + "'");
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("{}:{}: {}", path.string(), lineno, e.what()));
    }
  }
  if (cur) throw std::runtime_error(path.string() + ": case " + cur->name + " has no 'end'");
  return cases;
}

const std::vector<RefCase>& table() {
  static const std::vector<RefCase> cases = parse_table(table_path());
  return cases;
}

Tensor make_tensor(const RefTensor& r) {
  return sg::visit_dtype(r.dtype, [&]<typename T>() {
    std::vector<T> v;
    v.reserve(r.values.size());
    for (double x : r.values) v.push_back(static_cast<T>(x));
    return sg::from_vector<T>(v, r.shape);
  });
}

// ---- the mirrored cases: name -> the same computation in softgrad ---------------------
struct Args {
  std::map<std::string, Tensor> by_name;
  const Tensor& operator[](const std::string& name) const {
    auto it = by_name.find(name);
    if (it == by_name.end()) throw std::runtime_error("the table has no input '" + name + "'");
    return it->second;
  }
};

struct Outs {  // a lambda returns one tensor, or (values, indices)
  std::vector<Tensor> ts;
  Outs(Tensor t) : ts{std::move(t)} {}
  Outs(sg::ValuesIndices vi) : ts{std::move(vi.values), std::move(vi.indices)} {}
};

using CaseFn = std::function<Outs(const Args&)>;

const std::map<std::string, CaseFn>& mirrored_cases() {
  using sg::GeluApprox;
  static const std::map<std::string, CaseFn> cases = {
      // Binary arithmetic with broadcasting.
      {"add_same", [](const Args& x) { return sg::add(x["a"], x["b"]); }},
      {"add_bcast_234_31", [](const Args& x) { return sg::add(x["a"], x["b"]); }},
      {"add_bcast_both", [](const Args& x) { return sg::add(x["a"], x["b"]); }},
      {"add_0d", [](const Args& x) { return sg::add(x["a"], x["b"]); }},
      {"sub_bcast_234_4", [](const Args& x) { return sg::sub(x["a"], x["b"]); }},
      {"sub_bcast_31_234", [](const Args& x) { return sg::sub(x["a"], x["b"]); }},
      {"mul_bcast_234_31", [](const Args& x) { return sg::mul(x["a"], x["b"]); }},
      {"mul_bcast_41_15", [](const Args& x) { return sg::mul(x["a"], x["b"]); }},
      {"div_bcast_234_31", [](const Args& x) { return sg::div(x["a"], x["b"]); }},
      {"div_bcast_31_234", [](const Args& x) { return sg::div(x["a"], x["b"]); }},
      // Powers.
      {"pow_scalar_2.5", [](const Args& x) { return sg::pow(x["x"], 2.5); }},
      {"pow_scalar_-1.5", [](const Args& x) { return sg::pow(x["x"], -1.5); }},
      {"pow_scalar_3_mixed_sign", [](const Args& x) { return sg::pow(x["x"], 3.0); }},
      {"pow_scalar_0.5", [](const Args& x) { return sg::pow(x["x"], 0.5); }},
      {"pow_tensor", [](const Args& x) { return sg::pow(x["a"], x["b"]); }},
      {"pow_tensor_bcast", [](const Args& x) { return sg::pow(x["a"], x["b"]); }},
      // Unary.
      {"neg", [](const Args& x) { return sg::neg(x["x"]); }},
      {"exp", [](const Args& x) { return sg::exp(x["x"]); }},
      {"log", [](const Args& x) { return sg::log(x["x"]); }},
      {"sqrt", [](const Args& x) { return sg::sqrt(x["x"]); }},
      {"abs", [](const Args& x) { return sg::abs(x["x"]); }},
      {"relu", [](const Args& x) { return sg::relu(x["x"]); }},
      {"tanh", [](const Args& x) { return sg::tanh(x["x"]); }},
      {"sigmoid", [](const Args& x) { return sg::sigmoid(x["x"]); }},
      {"gelu_none", [](const Args& x) { return sg::gelu(x["x"], GeluApprox::None); }},
      {"gelu_tanh", [](const Args& x) { return sg::gelu(x["x"], GeluApprox::Tanh); }},
      {"clamp_min", [](const Args& x) { return sg::clamp(x["x"], -0.3, std::nullopt); }},
      {"clamp_max", [](const Args& x) { return sg::clamp(x["x"], std::nullopt, 0.4); }},
      {"clamp_both", [](const Args& x) { return sg::clamp(x["x"], -0.5, 0.5); }},
      // Reductions.
      {"sum_all", [](const Args& x) { return sg::sum(x["x"]); }},
      {"sum_dim1", [](const Args& x) { return sg::sum(x["x"], {1}); }},
      {"sum_dims02_keepdim", [](const Args& x) { return sg::sum(x["x"], {0, 2}, true); }},
      {"sum_dim_neg1", [](const Args& x) { return sg::sum(x["x"], {-1}); }},
      {"mean_all", [](const Args& x) { return sg::mean(x["x"]); }},
      {"mean_dim1", [](const Args& x) { return sg::mean(x["x"], {1}); }},
      {"mean_dims02_keepdim", [](const Args& x) { return sg::mean(x["x"], {0, 2}, true); }},
      {"var_all", [](const Args& x) { return sg::var(x["x"]); }},
      {"var_all_correction0", [](const Args& x) { return sg::var(x["x"], sgtest::all_dims(x["x"]), false, 0); }},
      // NOTE: sg::var(x, {1}) would pick var(x, correction = 1) (braced int64 beats the
      // vector's initializer_list), so the dims are spelled out.
      {"var_dim1", [](const Args& x) { return sg::var(x["x"], std::vector<int64_t>{1}); }},
      {"var_dim1_correction0", [](const Args& x) { return sg::var(x["x"], std::vector<int64_t>{1}, false, 0); }},
      {"var_dims02_keepdim", [](const Args& x) { return sg::var(x["x"], std::vector<int64_t>{0, 2}, true); }},
      {"max_all", [](const Args& x) { return sg::max(x["x"]); }},
      {"min_all", [](const Args& x) { return sg::min(x["x"]); }},
      {"max_dim1_keepdim", [](const Args& x) { return sg::max(x["x"], 1, true); }},
      {"min_dim1_keepdim", [](const Args& x) { return sg::min(x["x"], 1, true); }},
      {"max_dim_neg1", [](const Args& x) { return sg::max(x["x"], -1); }},
      {"min_dim0", [](const Args& x) { return sg::min(x["x"], 0); }},
      {"argmax_all", [](const Args& x) { return sg::argmax(x["x"]); }},
      {"argmax_dim1", [](const Args& x) { return sg::argmax(x["x"], 1); }},
      {"argmax_dim0_keepdim", [](const Args& x) { return sg::argmax(x["x"], 0, true); }},
      {"argmin_dim1", [](const Args& x) { return sg::argmin(x["x"], 1); }},
      // matmul.
      {"matmul_2d", [](const Args& x) { return sg::matmul(x["a"], x["b"]); }},
      {"matmul_1d_2d", [](const Args& x) { return sg::matmul(x["a"], x["b"]); }},
      {"matmul_2d_1d", [](const Args& x) { return sg::matmul(x["a"], x["b"]); }},
      {"matmul_1d_1d", [](const Args& x) { return sg::matmul(x["a"], x["b"]); }},
      {"matmul_batched_3d", [](const Args& x) { return sg::matmul(x["a"], x["b"]); }},
      {"matmul_bcast_3d_2d", [](const Args& x) { return sg::matmul(x["a"], x["b"]); }},
      {"matmul_bcast_4d_3d", [](const Args& x) { return sg::matmul(x["a"], x["b"]); }},
      // Shape ops.
      {"reshape", [](const Args& x) { return sg::reshape(x["x"], {4, 6}); }},
      {"reshape_neg1", [](const Args& x) { return sg::reshape(x["x"], {6, -1}); }},
      {"transpose_0_2", [](const Args& x) { return sg::transpose(x["x"], 0, 2); }},
      {"permute_201", [](const Args& x) { return sg::permute(x["x"], {2, 0, 1}); }},
      {"narrow_dim1", [](const Args& x) { return sg::narrow(x["x"], 1, 1, 2); }},
      {"slice_step2", [](const Args& x) { return sg::slice(x["x"], 1, 1, 6, 2); }},    // x[:, 1::2]
      {"slice_dim0_step3", [](const Args& x) { return sg::slice(x["x"], 0, 1, 7, 3); }},  // x[1:7:3]
      {"squeeze_all", [](const Args& x) { return sg::squeeze(x["x"]); }},
      {"squeeze_dim1", [](const Args& x) { return sg::squeeze(x["x"], 1); }},
      {"unsqueeze_dim1", [](const Args& x) { return sg::unsqueeze(x["x"], 1); }},
      {"expand_31_234", [](const Args& x) { return sg::expand(x["x"], {2, 3, 4}); }},
      {"cat_dim1", [](const Args& x) { return sg::cat({x["a"], x["b"], x["c"]}, 1); }},
      {"stack_dim0", [](const Args& x) { return sg::stack({x["a"], x["b"], x["c"]}, 0); }},
      {"stack_dim1", [](const Args& x) { return sg::stack({x["a"], x["b"]}, 1); }},
      {"index_select_dim0", [](const Args& x) { return sg::index_select(x["x"], 0, x["index"]); }},
      {"index_select_dim1", [](const Args& x) { return sg::index_select(x["x"], 1, x["index"]); }},
      {"gather_dim1", [](const Args& x) { return sg::gather(x["x"], 1, x["index"]); }},
      {"gather_dim1_3d", [](const Args& x) { return sg::gather(x["x"], 1, x["index"]); }},
      // Selection by masks.
      {"where", [](const Args& x) { return sg::where(x["cond"], x["a"], x["b"]); }},
      {"where_bcast", [](const Args& x) { return sg::where(x["cond"], x["a"], x["b"]); }},
      {"masked_fill", [](const Args& x) { return sg::masked_fill(x["x"], x["mask"], -2.5); }},
      {"masked_fill_bcast", [](const Args& x) { return sg::masked_fill(x["x"], x["mask"], 0.75); }},
      // Comparisons.
      {"lt", [](const Args& x) { return sg::lt(x["a"], x["b"]); }},
      {"ge", [](const Args& x) { return sg::ge(x["a"], x["b"]); }},
      {"eq", [](const Args& x) { return sg::eq(x["a"], x["b"]); }},
      {"lt_bcast", [](const Args& x) { return sg::lt(x["a"], x["b"]); }},
      // float32 kernels.
      {"exp_f32", [](const Args& x) { return sg::exp(x["x"]); }},
      {"tanh_f32", [](const Args& x) { return sg::tanh(x["x"]); }},
      {"sigmoid_f32", [](const Args& x) { return sg::sigmoid(x["x"]); }},
      {"gelu_none_f32", [](const Args& x) { return sg::gelu(x["x"], GeluApprox::None); }},
      {"gelu_tanh_f32", [](const Args& x) { return sg::gelu(x["x"], GeluApprox::Tanh); }},
      {"matmul_f32", [](const Args& x) { return sg::matmul(x["a"], x["b"]); }},
      {"sum_all_f32", [](const Args& x) { return sg::sum(x["x"]); }},
      {"sum_dim1_f32", [](const Args& x) { return sg::sum(x["x"], {1}); }},
  };
  return cases;
}

// ---- comparison ------------------------------------------------------------------------
struct Tol {
  double rtol, atol;
};

// |got - want| <= atol + rtol * |want|. float64 is held to a few ulp; float32 to a few
// float32 ulp (softgrad's SIMD exp/tanh/erf approximations vs PyTorch's Sleef ones).
// Integer and bool outputs must match exactly.
Tol tolerance(const RefCase& c, sg::Dtype dtype) {
  if (dtype == sg::kFloat32) return {1e-6, 1e-6};
  (void)c;
  return {1e-10, 1e-12};
}

// Empty when `got` matches PyTorch's `want`; otherwise the count of differing elements,
// the first and the worst one.
std::string mismatch(const Tensor& got, const RefTensor& want, Tol tol) {
  if (got.dtype() != want.dtype || got.shape() != want.shape)
    return fmt::format("got {} {}, PyTorch has {} {}", got.dtype(), got.shape(), want.dtype, want.shape);
  const std::vector<double> v = got.to_vector<double>();
  const bool exact = !sg::is_floating(want.dtype);
  int64_t bad = 0, first = -1, worst = -1;
  double worst_ratio = 0.0;
  for (size_t i = 0; i < v.size(); ++i) {
    const double err = std::abs(v[i] - want.values[i]);
    const double allowed = exact ? 0.0 : tol.atol + tol.rtol * std::abs(want.values[i]);
    if (err <= allowed) continue;  // NaN fails too
    const double ratio = allowed > 0 ? err / allowed : err;
    ++bad;
    if (first < 0) first = static_cast<int64_t>(i);
    if (worst < 0 || ratio > worst_ratio) {
      worst = static_cast<int64_t>(i);
      worst_ratio = ratio;
    }
  }
  if (bad == 0) return "";
  return fmt::format(
      "{} of {} elements differ (rtol {}, atol {}); first [{}]: got {:.17g}, PyTorch {:.17g}; "
      "worst [{}]: got {:.17g}, PyTorch {:.17g}",
      bad, v.size(), tol.rtol, tol.atol, first, v[first], want.values[first], worst, v[worst], want.values[worst]);
}

void check_matches(const Tensor& got, const RefTensor& want, Tol tol, const std::string& what) {
  const std::string report = mismatch(got, want, tol);
  CHECK_MESSAGE(report.empty(), what << ": " << report);
}

void run_case(const RefCase& c, const CaseFn& fn) {
  Args args;
  for (const RefTensor& r : c.inputs) {
    Tensor t = make_tensor(r);
    if (c.weight && sg::is_floating(r.dtype)) t.requires_grad_();
    args.by_name[r.name] = t;
  }
  const std::vector<Tensor> outs = fn(args).ts;
  if (outs.size() != c.outputs.size()) {
    FAIL_CHECK(fmt::format("{} outputs, PyTorch has {}", outs.size(), c.outputs.size()));
    return;
  }
  for (size_t i = 0; i < outs.size(); ++i)
    check_matches(outs[i], c.outputs[i], tolerance(c, c.outputs[i].dtype), "output " + c.outputs[i].name);
  if (!c.weight) return;

  sg::sum(sg::mul(outs[0], make_tensor(*c.weight))).backward();
  for (const RefTensor& g : c.grads) {
    const Tensor got = args[g.name].grad();
    if (!got.defined()) {
      FAIL_CHECK(fmt::format("no gradient reached input {}", g.name));
      continue;
    }
    check_matches(got, g, tolerance(c, g.dtype), "grad " + g.name);
  }
}

}  // namespace

TEST_CASE("reference table and the mirrored cases list the same names") {
  const std::vector<RefCase>* cases = nullptr;
  REQUIRE_NOTHROW(cases = &table());
  std::set<std::string> in_table;
  for (const RefCase& c : *cases) {
    CHECK_MESSAGE(in_table.insert(c.name).second, "case listed twice in the table: " << c.name);
    CHECK_MESSAGE(mirrored_cases().count(c.name) == 1, "table case without a C++ lambda: " << c.name);
  }
  for (const auto& [name, fn] : mirrored_cases())
    CHECK_MESSAGE(in_table.count(name) == 1, "expected case missing from core_ops.txt: " << name);
  CHECK(cases->size() == mirrored_cases().size());
}

TEST_CASE("reference table is well formed") {
  // Guards the comparison itself: a case whose output is floating must carry a gradient
  // for each floating input, so a grad silently missing from the file cannot pass.
  for (const RefCase& c : table()) {
    CAPTURE(c.name);
    REQUIRE(!c.outputs.empty());
    CHECK(c.weight.has_value() == sg::is_floating(c.outputs[0].dtype));
    std::set<std::string> floating_inputs, grads;
    for (const RefTensor& r : c.inputs)
      if (c.weight && sg::is_floating(r.dtype)) floating_inputs.insert(r.name);
    for (const RefTensor& g : c.grads) grads.insert(g.name);
    CHECK(floating_inputs == grads);
  }
}

TEST_CASE("core ops match PyTorch: values and gradients") {
  for (const RefCase& c : table()) {
    CAPTURE(c.name);
    auto it = mirrored_cases().find(c.name);
    if (it == mirrored_cases().end()) continue;  // reported by the name test above
    try {
      run_case(c, it->second);
    } catch (const std::exception& e) {
      FAIL_CHECK(fmt::format("case {} threw: {}", c.name, e.what()));
    }
  }
}

TEST_CASE("reference comparison rejects a wrong value, shape or dtype") {
  // The comparison itself must be able to fail: perturb PyTorch's numbers and expect a
  // report (one float64 ulp-scale slip passes, a 1e-9 relative error does not).
  const RefTensor want{"out", sg::kFloat64, {2, 2}, {1.0, -2.0, 3.0, 0.5}};
  const Tol tol = tolerance(RefCase{}, sg::kFloat64);
  CHECK(mismatch(make_tensor(want), want, tol).empty());
  RefTensor near = want, off = want, nan = want;
  near.values[1] = std::nextafter(-2.0, 0.0);
  CHECK(mismatch(make_tensor(near), want, tol).empty());
  off.values[2] = 3.0 * (1 + 1e-9);
  CHECK(mismatch(make_tensor(off), want, tol).find("1 of 4 elements differ") != std::string::npos);
  nan.values[0] = std::nan("");
  CHECK_FALSE(mismatch(make_tensor(nan), want, tol).empty());
  CHECK_FALSE(mismatch(make_tensor(want).reshape({4}), want, tol).empty());
  CHECK_FALSE(mismatch(make_tensor(want).to(sg::kFloat32), want, tol).empty());
  const RefTensor idx{"indices", sg::kInt64, {2}, {1, 0}};
  CHECK(mismatch(sg::from_vector<int64_t>({1, 0}, {2}), idx, tol).empty());
  CHECK_FALSE(mismatch(sg::from_vector<int64_t>({0, 0}, {2}), idx, tol).empty());
}
