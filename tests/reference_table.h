#pragma once
// The PyTorch reference tables under tests/reference/ (written by gen_*.py there; see its
// README): the reader, and the comparison of a softgrad computation with one case.
//
// A case holds named inputs, PyTorch's outputs, a weight w of the first output's shape and
// the gradients of sum(output * w) for the inputs that have a `grad` line. A suite mirrors
// the generator's case list with a map name -> lambda building the same computation from
// the named inputs; check_table_names() fails for a case present on one side only, and
// run_all() compares values and gradients. The check_* helpers below are the parts of the
// suites' "well formed" tests that every table shares.
#include <cmath>
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

namespace sgref {

using sg::Shape;
using sg::Tensor;

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

  bool has_grad(const std::string& input) const {
    for (const RefTensor& g : grads)
      if (g.name == input) return true;
    return false;
  }
};

// tests/reference/<file> (the build passes the directory; the fallback serves an IDE build).
inline std::filesystem::path table_path(const std::string& file) {
#ifdef SOFTGRAD_TEST_REFERENCE_DIR
  return std::filesystem::path(SOFTGRAD_TEST_REFERENCE_DIR) / file;
#else
  return std::filesystem::path(__FILE__).parent_path() / "reference" / file;
#endif
}

inline sg::Dtype parse_dtype(const std::string& s) {
  if (s == "float64") return sg::kFloat64;
  if (s == "float32") return sg::kFloat32;
  if (s == "int64") return sg::kInt64;
  if (s == "bool") return sg::kBool;
  throw std::runtime_error("unknown dtype '" + s + "'");
}

inline Shape parse_shape(const std::string& s) {  // "[2,3,4]" or "[]"
  if (s.size() < 2 || s.front() != '[' || s.back() != ']') throw std::runtime_error("bad shape '" + s + "'");
  Shape shape;
  std::stringstream ss(s.substr(1, s.size() - 2));
  for (std::string d; std::getline(ss, d, ',');) shape.push_back(std::stoll(d));
  return shape;
}

// Parses "[NAME] DTYPE [shape] : v v v" (has_name false for the weight line). strtod reads
// the 'nan', 'inf' and '-inf' that repr() writes for PyTorch's non-finite answers.
inline RefTensor parse_tensor(std::istringstream& in, bool has_name) {
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

inline std::vector<RefCase> parse_table(const std::filesystem::path& path) {
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

inline Tensor make_tensor(const RefTensor& r) {
  return sg::visit_dtype(r.dtype, [&]<typename T>() {
    std::vector<T> v;
    v.reserve(r.values.size());
    for (double x : r.values) v.push_back(static_cast<T>(x));
    return sg::from_vector<T>(v, r.shape);
  });
}

// tests/reference/<file>, parsed on the first call (a parse error throws on every call).
inline const std::vector<RefCase>& table(const std::string& file) {
  static std::map<std::string, std::vector<RefCase>> parsed;
  auto it = parsed.find(file);
  if (it == parsed.end()) it = parsed.emplace(file, parse_table(table_path(file))).first;
  return it->second;
}

// ---- the mirrored cases: name -> the same computation in softgrad ---------------------
struct Args {
  std::map<std::string, Tensor> by_name;
  bool has(const std::string& name) const { return by_name.count(name) == 1; }
  const Tensor& operator[](const std::string& name) const {
    auto it = by_name.find(name);
    if (it == by_name.end()) throw std::runtime_error("the table has no input '" + name + "'");
    return it->second;
  }
};

struct Outs {  // a lambda returns one tensor, (values, indices), or the outputs in table order
  std::vector<Tensor> ts;
  Outs(Tensor t) : ts{std::move(t)} {}
  Outs(sg::ValuesIndices vi) : ts{std::move(vi.values), std::move(vi.indices)} {}
  Outs(std::vector<Tensor> v) : ts(std::move(v)) {}
};

using CaseFn = std::function<Outs(const Args&)>;
using CaseMap = std::map<std::string, CaseFn>;

// Fails for a name listed twice in the table or present on one side only.
inline void check_same_names(const std::vector<RefCase>& table, const CaseMap& mirrored, const std::string& file) {
  std::set<std::string> in_table;
  for (const RefCase& c : table) {
    CHECK_MESSAGE(in_table.insert(c.name).second, "case listed twice in " << file << ": " << c.name);
    CHECK_MESSAGE(mirrored.count(c.name) == 1, "case in " << file << " without a C++ lambda: " << c.name);
  }
  for (const auto& [name, fn] : mirrored)
    CHECK_MESSAGE(in_table.count(name) == 1, "expected case missing from " << file << ": " << name);
  CHECK(table.size() == mirrored.size());
}

// A suite's "same names" test: the table parses, its names are those of `mirrored`, and it
// has at least min_cases cases (the generator's table, not a truncated file).
inline void check_table_names(const std::string& file, const CaseMap& mirrored, size_t min_cases) {
  const std::vector<RefCase>* cases = nullptr;
  REQUIRE_NOTHROW(cases = &table(file));
  check_same_names(*cases, mirrored, file);
  CHECK(cases->size() >= min_cases);
}

// ---- well-formed tables: the checks every suite makes on each case --------------------
// The inputs that have a `grad` line, in file order.
inline std::vector<std::string> grad_names(const RefCase& c) {
  std::vector<std::string> names;
  for (const RefTensor& g : c.grads) names.push_back(g.name);
  return names;
}

// Every gradient belongs to exactly one input and has its shape and dtype.
inline void check_grads_match_inputs(const RefCase& c) {
  for (const RefTensor& g : c.grads) {
    CAPTURE(g.name);
    int inputs = 0;
    for (const RefTensor& r : c.inputs)
      if (r.name == g.name) {
        ++inputs;
        CHECK(g.shape == r.shape);
        CHECK(g.dtype == r.dtype);
      }
    CHECK(inputs == 1);
  }
}

// A weight iff the first output is floating, of that output's shape and dtype.
inline void check_weight(const RefCase& c) {
  REQUIRE(!c.outputs.empty());
  CHECK(c.weight.has_value() == sg::is_floating(c.outputs[0].dtype));
  if (!c.weight) return;
  CHECK(c.weight->shape == c.outputs[0].shape);
  CHECK(c.weight->dtype == c.outputs[0].dtype);
}

// No NaN or infinity among the inputs, the weight, the gradients and (unless
// include_outputs is false, for a table that holds PyTorch's non-finite answers) the outputs.
inline void check_all_finite(const RefCase& c, bool include_outputs = true) {
  auto check = [](const RefTensor& r, const std::string& kind) {
    const std::string tensor = kind + " " + r.name;
    CAPTURE(tensor);
    int64_t nonfinite = 0;
    for (double v : r.values) nonfinite += !std::isfinite(v);
    CHECK(nonfinite == 0);
  };
  for (const RefTensor& r : c.inputs) check(r, "input");
  if (include_outputs)
    for (const RefTensor& r : c.outputs) check(r, "output");
  if (c.weight) check(*c.weight, "weight");
  for (const RefTensor& r : c.grads) check(r, "grad");
}

// ---- comparison ------------------------------------------------------------------------
struct Tol {
  double rtol, atol;
};
using TolFn = std::function<Tol(const RefCase&, sg::Dtype)>;

// Empty when `got` matches PyTorch's `want` (|got - want| <= atol + rtol * |want|, or the
// same non-finite value: NaN where PyTorch has NaN, the same infinity); otherwise the count
// of differing elements, the first and the worst one. Integer and bool must match exactly.
inline std::string mismatch(const Tensor& got, const RefTensor& want, Tol tol) {
  if (got.dtype() != want.dtype || got.shape() != want.shape)
    return fmt::format("got {} {}, PyTorch has {} {}", got.dtype(), got.shape(), want.dtype, want.shape);
  const std::vector<double> v = got.to_vector<double>();
  const bool exact = !sg::is_floating(want.dtype);
  int64_t bad = 0, first = -1, worst = -1;
  double worst_ratio = 0.0;
  for (size_t i = 0; i < v.size(); ++i) {
    const double w = want.values[i];
    if (v[i] == w || (std::isnan(v[i]) && std::isnan(w))) continue;
    const double err = std::abs(v[i] - w);
    const double allowed = exact ? 0.0 : tol.atol + tol.rtol * std::abs(w);
    // NaN or an infinity on one side only fails (an infinite `want` allows any error).
    if (std::isfinite(w) && err <= allowed) continue;
    const double ratio = allowed > 0 && std::isfinite(allowed) ? err / allowed : err;
    ++bad;
    if (first < 0) first = static_cast<int64_t>(i);
    if (worst < 0 || !(ratio <= worst_ratio)) {
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

inline void check_matches(const Tensor& got, const RefTensor& want, Tol tol, const std::string& what) {
  const std::string report = mismatch(got, want, tol);
  CHECK_MESSAGE(report.empty(), what << ": " << report);
}

// Builds the inputs (those with a `grad` line require grad), runs fn, compares its outputs,
// then backpropagates sum(out[0] * w) and compares each listed gradient.
inline void run_case(const RefCase& c, const CaseFn& fn, const TolFn& tolerance) {
  Args args;
  for (const RefTensor& r : c.inputs) {
    Tensor t = make_tensor(r);
    if (c.weight && c.has_grad(r.name)) t.requires_grad_();
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

// Runs every table case that has a lambda (the names are checked by check_same_names);
// an exception fails that case only.
inline void run_all(const std::vector<RefCase>& table, const CaseMap& mirrored, const TolFn& tolerance) {
  for (const RefCase& c : table) {
    CAPTURE(c.name);
    auto it = mirrored.find(c.name);
    if (it == mirrored.end()) continue;
    try {
      run_case(c, it->second, tolerance);
    } catch (const std::exception& e) {
      FAIL_CHECK(fmt::format("case {} threw: {}", c.name, e.what()));
    }
  }
}

}  // namespace sgref
