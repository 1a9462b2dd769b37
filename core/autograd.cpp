// The backward engine (micrograd's engine.py, in C++): one topological order, seed the
// output gradient, walk it in reverse, run each node's VJP once and accumulate (+=) into
// the gradients of its inputs.
#include "core/autograd.h"

#include <cxxabi.h>

#include <atomic>

#include <unordered_map>
#include <unordered_set>

#include "core/kernels.h"

namespace sg {

namespace {
thread_local bool grad_enabled = true;

// A node backed by a lambda. release() destroys the lambda and with it the saved tensors.
class FunctionNode final : public Node {
 public:
  FunctionNode(std::string name, BackwardFn fn) : Node(std::move(name)), fn_(std::move(fn)) {}
  std::vector<Tensor> backward(const Tensor& grad_output) override {
    SG_CHECK(fn_ != nullptr,
             "backward through '{}' a second time: its saved buffers were freed by the first backward "
             "(pass retain_graph=true to the first backward() to keep them)",
             name());
    return fn_(grad_output);
  }
  void release() override { fn_ = nullptr; }

 private:
  BackwardFn fn_;
};

// Adds g into the gradient slot `acc`, copying on first use so that later in-place
// accumulation never writes into a tensor someone else holds.
// True when g is a dense buffer that nothing else refers to: a gradient a node just made.
bool sole_owner(const Tensor& g) {
  const std::shared_ptr<TensorImpl>& impl = g.impl();
  return impl.use_count() == 1 && impl->storage.use_count() == 1 && !impl->grad_fn && impl->offset == 0 &&
         g.is_contiguous() && impl->storage->nbytes == static_cast<size_t>(g.numel()) * dtype_size(g.dtype());
}

void accumulate(std::shared_ptr<TensorImpl>& acc, const Tensor& g) {
  if (!acc) {
    if (sole_owner(g)) {  // take the buffer over: a copy would cost a pass and a second buffer
      auto impl = std::make_shared<TensorImpl>();
      impl->storage = g.impl()->storage;
      impl->shape = g.shape();
      impl->strides = g.strides();
      impl->dtype = g.dtype();
      acc = std::move(impl);
      return;
    }
    acc = make_contiguous_copy(g).impl();
  } else {
    add_into_kernel(Tensor(acc), g);
  }
}

// A gradient waiting for its node. The first contribution is kept as is (no copy); a
// second one is summed into a buffer of our own, which later ones then reuse.
struct PendingGrad {
  Tensor sum;
  bool owned = false;
  void add(const Tensor& g) {
    if (!sum.defined()) {
      sum = g;
    } else {
      if (!owned) {
        sum = make_contiguous_copy(sum);
        owned = true;
      }
      add_into_kernel(sum, g);
    }
  }
};
}  // namespace

bool GradMode::is_enabled() { return grad_enabled; }
void GradMode::set_enabled(bool enabled) { grad_enabled = enabled; }

// ---- nodes ----
Node::~Node() {
  // NOTE: destroying a chain recursively (node -> edge -> node ...) overflows the stack
  // on deep graphs. Steal every child we solely own and destroy them here, one at a time.
  std::vector<std::shared_ptr<Node>> orphans;
  auto steal = [&orphans](std::vector<Edge>& edges) {
    for (Edge& e : edges)
      if (e.node && e.node.use_count() == 1) orphans.push_back(std::move(e.node));
  };
  steal(next_edges_);
  while (!orphans.empty()) {
    std::shared_ptr<Node> n = std::move(orphans.back());
    orphans.pop_back();
    steal(n->next_edges_);
  }  // n dies here with no sole-owned children left, so recursion stays one level deep
}

// ---- saved tensors ----
SavedTensor::SavedTensor(const Tensor& t) {
  if (!t.defined()) return;
  data_ = t.detach();
  version_ = t.impl()->storage->version;
}

Tensor SavedTensor::get() const {
  if (!data_.defined()) return data_;
  const uint64_t now = data_.impl()->storage->version;
  SG_CHECK(now == version_,
           "a tensor of shape {} saved for backward was modified in place afterwards (version {} -> {})",
           data_.shape(), version_, now);
  return data_;
}

// ---- recording ----
namespace {
// Called by every op on its inputs: a plain loop, no copies of the handles.
bool any_requires_grad(const Tensor* begin, const Tensor* end) {
  if (!GradMode::is_enabled()) return false;
  for (const Tensor* t = begin; t != end; ++t)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}
}  // namespace

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  return any_requires_grad(inputs.data(), inputs.data() + inputs.size());
}
bool any_requires_grad(std::initializer_list<Tensor> inputs) { return any_requires_grad(inputs.begin(), inputs.end()); }

void record_node(std::shared_ptr<Node> node, const std::vector<Tensor>& inputs, Tensor& output) {
  if (!any_requires_grad(inputs)) return;
  SG_CHECK(is_floating(output.dtype()), "{}: a {} output cannot carry a gradient", node->name(), output.dtype());
  for (const Tensor& in : inputs) {
    Edge e;
    if (in.defined() && in.requires_grad()) {
      if (in.grad_fn())
        e.node = in.grad_fn();
      else
        e.leaf = in.impl();
      e.shape = in.shape();
      e.dtype = in.dtype();
    }
    node->next_edges_.push_back(std::move(e));
  }
  // NOTE: the output must be a handle of its own. Ops always create a fresh impl (views
  // included), so setting its history never rewrites an input's.
  TensorImpl& out = *output.impl();
  SG_CHECK(out.grad_fn == nullptr && !out.requires_grad, "{}: output already has history", node->name());
  out.requires_grad = true;
  out.grad_fn = node;
  node->output_ = output.impl();
}

void record(std::string name, const std::vector<Tensor>& inputs, Tensor& output, BackwardFn backward) {
  if (!any_requires_grad(inputs)) return;
  record_node(std::make_shared<FunctionNode>(std::move(name), std::move(backward)), inputs, output);
}

// ---- the engine ----
namespace {
thread_local std::vector<std::function<void()>>* current_callbacks = nullptr;
thread_local uint64_t current_backward = 0;
std::atomic<uint64_t> backwards_started{0};  // process-wide: ids never repeat across threads

// Makes `list` the current backward's callback queue, restoring the outer one on exit.
class CallbackScope {
 public:
  explicit CallbackScope(std::vector<std::function<void()>>* list)
      : saved_(current_callbacks), saved_id_(current_backward) {
    current_callbacks = list;
    current_backward = backwards_started.fetch_add(1) + 1;
  }
  ~CallbackScope() {
    current_callbacks = saved_;
    current_backward = saved_id_;
  }
  CallbackScope(const CallbackScope&) = delete;
  CallbackScope& operator=(const CallbackScope&) = delete;
  // Runs the queue in order (a callback may queue more: they run too), then closes it.
  void run_queued() {
    std::vector<std::function<void()>>& list = *current_callbacks;
    for (size_t i = 0; i < list.size(); ++i) {
      std::function<void()> callback = std::move(list[i]);
      callback();
    }
    list.clear();
  }

 private:
  std::vector<std::function<void()>>* saved_;
  uint64_t saved_id_;
};

// The leaf's gradient is final for this backward: run its hooks in registration order.
void run_post_accumulate_hooks(const std::shared_ptr<TensorImpl>& leaf) {
  if (leaf->post_accumulate_grad_hooks.empty()) return;
  const Tensor t(leaf);
  // NOTE: a copy, so a hook that removes itself does not invalidate the loop.
  const auto hooks = leaf->post_accumulate_grad_hooks;
  for (const auto& [handle, hook] : hooks) hook(t);
}
}  // namespace

void run_backward(const Tensor& root, const Tensor& grad, bool retain_graph) {
  check_defined("backward", root, "output");
  SG_CHECK(root.requires_grad(), "backward: tensor of shape {} does not require grad and has no grad_fn",
           root.shape());
  Tensor seed = grad;
  if (!seed.defined()) {
    SG_CHECK(root.numel() == 1,
             "backward: grad can be implicitly created only for one-element outputs, got shape {} "
             "(pass a gradient of that shape)",
             root.shape());
    seed = ones(root.shape(), root.dtype());
  }
  SG_CHECK(seed.shape() == root.shape() && seed.dtype() == root.dtype(),
           "backward: gradient {} {} does not match output {} {}", seed.shape(), seed.dtype(), root.shape(),
           root.dtype());

  // Callbacks queued during this backward (queue_backward_callback); a backward run from
  // inside a callback gets its own list.
  std::vector<std::function<void()>> callbacks;
  CallbackScope scope(&callbacks);
  if (root.is_leaf()) {
    accumulate(root.impl()->grad, seed);
    run_post_accumulate_hooks(root.impl());
    scope.run_queued();
    return;
  }

  // Topological order: iterative post-order DFS (deep graphs must not overflow the stack).
  std::vector<Node*> order;
  std::unordered_set<Node*> visited;
  std::vector<std::pair<Node*, size_t>> stack{{root.grad_fn().get(), 0}};
  visited.insert(root.grad_fn().get());
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->next_edges().size()) {
      Node* child = node->next_edges()[next++].node.get();
      if (child && visited.insert(child).second) stack.emplace_back(child, 0);
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }

  // A leaf with post-accumulate hooks is final once every node with an edge to it has run
  // (or been skipped for want of a gradient): count those edges, fire the hooks at zero.
  std::unordered_map<TensorImpl*, int64_t> hooked_leaf_edges;
  for (Node* node : order)
    for (const Edge& e : node->next_edges())
      if (e.leaf && !e.leaf->post_accumulate_grad_hooks.empty()) ++hooked_leaf_edges[e.leaf.get()];
  auto node_done = [&hooked_leaf_edges](Node* node) {
    if (hooked_leaf_edges.empty()) return;
    for (const Edge& e : node->next_edges()) {
      if (!e.leaf) continue;
      auto it = hooked_leaf_edges.find(e.leaf.get());
      if (it != hooked_leaf_edges.end() && --it->second == 0) run_post_accumulate_hooks(e.leaf);
    }
  };

  NoGradGuard no_grad;  // backward formulas build no graph
  std::unordered_map<Node*, PendingGrad> pending;
  pending[root.grad_fn().get()].add(seed);
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = *it;
    auto found = pending.find(node);
    if (found == pending.end()) {  // no gradient reached this node
      node_done(node);
      continue;
    }
    Tensor g = std::move(found->second.sum);
    pending.erase(found);
    if (auto out = node->output_.lock(); out && out->retains_grad) accumulate(out->grad, g);

    std::vector<Tensor> input_grads;
    try {
      input_grads = node->backward(g);
    } catch (const Error& e) {
      throw Error(fmt::format("in backward of '{}' (output shape {}): {}", node->name(), g.shape(), e.what()));
    }
    // NOTE: drop g now: a view node returns a view of it (transpose, reshape), and a leaf
    // takes a gradient's buffer over without a copy only when nothing else holds it.
    g = Tensor();
    const auto& edges = node->next_edges();
    SG_CHECK(input_grads.size() == edges.size(), "backward of '{}' returned {} for {}", node->name(),
             plural(input_grads.size(), "gradient"), plural(edges.size(), "input"));
    for (size_t i = 0; i < edges.size(); ++i) {
      const Edge& e = edges[i];
      const Tensor& gi = input_grads[i];
      if (!e.defined() || !gi.defined()) continue;
      SG_CHECK(gi.shape() == e.shape && gi.dtype() == e.dtype,
               "backward of '{}' returned a gradient {} {} for input {} of shape {} {}", node->name(), gi.shape(),
               gi.dtype(), i, e.shape, e.dtype);
      if (e.node)
        pending[e.node.get()].add(gi);
      else
        accumulate(e.leaf->grad, gi);
    }
    if (!retain_graph) node->release();
    node_done(node);
  }
  scope.run_queued();
}

uint64_t current_backward_id() { return current_backward; }

void queue_backward_callback(std::function<void()> callback) {
  SG_CHECK(current_callbacks != nullptr, "queue_backward_callback: called outside a backward");
  SG_CHECK(callback != nullptr, "queue_backward_callback: the callback is empty");
  current_callbacks->push_back(std::move(callback));
}

// ---- custom functions ----
void Context::save_for_backward(const std::vector<Tensor>& tensors) {
  saved_.clear();
  for (const Tensor& t : tensors) saved_.emplace_back(t);
}

std::vector<Tensor> Context::get_saved_variables() const {
  std::vector<Tensor> out;
  for (const SavedTensor& s : saved_) out.push_back(s.get());
  return out;
}

std::string detail::demangle(const char* name) {
  int status = 0;
  char* s = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string out = status == 0 && s ? s : name;
  std::free(s);
  return out;
}

}  // namespace sg
