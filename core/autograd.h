#pragma once
// The autograd graph. A Node is the backward of one op: it maps the gradient of the op's
// output to gradients of its inputs (a vector-Jacobian product). Edges point from a node
// to its inputs only (to the producing node, or to the leaf tensor that accumulates), and
// saved tensors are detached aliases, so a graph holds no ownership cycle and is freed
// with the last tensor that refers to it.
//
// Ops record themselves with record():
//   Tensor y = ...forward kernel...;
//   if (any_requires_grad({x}))
//     record("exp", {x}, y, [ys = SavedTensor(y)](const Tensor& dy) { return grads(dy * ys.get()); });
//
// Users define ops with forward and analytic backward through sg::Function (PyTorch's
// autograd::Function shape); see examples/custom_op.cpp.
#include <any>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace sg {

// Grad mode is thread-local. Under a NoGradGuard ops record nothing.
struct GradMode {
  static bool is_enabled();
  static void set_enabled(bool enabled);
};

// Sets grad mode for a scope and restores the previous mode on exit.
class AutoGradMode {
 public:
  explicit AutoGradMode(bool enabled) : prev_(GradMode::is_enabled()) { GradMode::set_enabled(enabled); }
  ~AutoGradMode() { GradMode::set_enabled(prev_); }
  AutoGradMode(const AutoGradMode&) = delete;
  AutoGradMode& operator=(const AutoGradMode&) = delete;

 private:
  bool prev_;
};

class NoGradGuard : public AutoGradMode {
 public:
  NoGradGuard() : AutoGradMode(false) {}
};

// A tensor kept for backward: shares the data, not the history, and remembers the
// storage version so that an in-place write after saving is caught instead of used.
class SavedTensor {
 public:
  SavedTensor() = default;
  explicit SavedTensor(const Tensor& t);
  Tensor get() const;  // throws if the data was modified in place since it was saved
  bool defined() const { return data_.defined(); }

 private:
  Tensor data_;
  uint64_t version_ = 0;
};

struct Edge {
  std::shared_ptr<Node> node;        // input produced by an op, or
  std::shared_ptr<TensorImpl> leaf;  // a leaf that requires grad (gradient accumulates here)
  Shape shape;                       // the input's shape and dtype: the gradient must match
  Dtype dtype = kFloat32;
  bool defined() const { return node || leaf; }
};

class Node {
 public:
  virtual ~Node();  // iterative: freeing a 100k-node chain must not overflow the stack
  // grad_output has the shape of the op's output. Returns one gradient per input (an
  // undefined Tensor where an input needs none).
  virtual std::vector<Tensor> backward(const Tensor& grad_output) = 0;
  virtual void release() {}  // frees saved buffers after a backward without retain_graph
  const std::string& name() const { return name_; }
  const std::vector<Edge>& next_edges() const { return next_edges_; }

 protected:
  explicit Node(std::string name) : name_(std::move(name)) {}

 private:
  friend void record_node(std::shared_ptr<Node>, const std::vector<Tensor>&, Tensor&);
  friend void run_backward(const Tensor&, const Tensor&, bool);
  std::string name_;
  std::vector<Edge> next_edges_;
  std::weak_ptr<TensorImpl> output_;  // for retain_grad(); weak, so no cycle
};

using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

bool any_requires_grad(std::initializer_list<Tensor> inputs);
bool any_requires_grad(const std::vector<Tensor>& inputs);

// Connects `output` to a node for `inputs` when grad mode is on and an input requires
// grad; otherwise does nothing. `backward` must capture SavedTensors, never Tensors
// that carry history (that would make a cycle through the output).
void record(std::string name, const std::vector<Tensor>& inputs, Tensor& output, BackwardFn backward);
void record_node(std::shared_ptr<Node> node, const std::vector<Tensor>& inputs, Tensor& output);

// Helper for backward lambdas: std::vector<Tensor>{a, b, ...}.
template <typename... Ts> std::vector<Tensor> grads(Ts&&... ts) {
  return std::vector<Tensor>{Tensor(std::forward<Ts>(ts))...};
}

void run_backward(const Tensor& root, const Tensor& grad, bool retain_graph);

// PyTorch's Variable._execution_engine.queue_callback: from inside a backward (a hook or a
// node), runs `callback` once that backward has finished every node, in queueing order.
// Callbacks of a backward that throws are dropped. Outside a backward it is an error.
void queue_backward_callback(std::function<void()> callback);
// A number that identifies the running backward (each run_backward in the process gets a
// new one; 0 outside a backward), so that a hook can tell a new pass from the one it saw last.
uint64_t current_backward_id();

// ---- user-defined ops (PyTorch's autograd::Function) ----
//
//   struct Cube : sg::Function<Cube> {
//     static sg::Tensor forward(sg::Context& ctx, const sg::Tensor& x) {
//       ctx.save_for_backward({x});
//       return x * x * x;
//     }
//     static std::vector<sg::Tensor> backward(sg::Context& ctx, const sg::Tensor& dy) {
//       sg::Tensor x = ctx.get_saved_variables()[0];
//       return {dy * 3.0 * x * x};
//     }
//   };
//   sg::Tensor y = Cube::apply(x);
//
// forward runs with grad mode off. backward returns one gradient per Tensor argument of
// apply (in order; undefined where none is needed).
class Context {
 public:
  void save_for_backward(const std::vector<Tensor>& tensors);
  std::vector<Tensor> get_saved_variables() const;
  std::map<std::string, std::any> saved_data;  // non-tensor values for backward

 private:
  std::vector<SavedTensor> saved_;
};

namespace detail {
inline void collect_tensors(std::vector<Tensor>&) {}
template <typename A, typename... Rest> void collect_tensors(std::vector<Tensor>& out, A&& a, Rest&&... rest) {
  if constexpr (std::is_same_v<std::decay_t<A>, Tensor>) out.push_back(a);
  collect_tensors(out, std::forward<Rest>(rest)...);
}
std::string demangle(const char* name);
}  // namespace detail

template <typename Derived> struct Function {
  template <typename... Args> static Tensor apply(Args&&... args) {
    auto ctx = std::make_shared<Context>();
    Tensor out;
    {
      NoGradGuard no_grad;
      out = Derived::forward(*ctx, args...);
    }
    std::vector<Tensor> inputs;
    detail::collect_tensors(inputs, args...);
    if (GradMode::is_enabled() && any_requires_grad(inputs)) {
      // forward may return one of its inputs: detach() gives the output a handle of its own.
      out = out.detach();
      record(detail::demangle(typeid(Derived).name()), inputs, out,
             [ctx](const Tensor& dy) { return Derived::backward(*ctx, dy); });
    }
    return out;
  }
};

}  // namespace sg
