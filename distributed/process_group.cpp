// The process group on MPI (Open MPI), and the world of one without it. The only file
// that includes mpi.h; everything MPI-specific is under SOFTGRAD_HAVE_MPI.
#include "distributed/process_group.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>

#ifdef SOFTGRAD_HAVE_MPI
#include <mpi.h>
#endif

namespace sg::distributed {

namespace {

// The world size the launcher announces in the environment (Open MPI, MPICH/Hydra, PMIx),
// or 0 when no launcher started this process.
int launched_world_size() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    if (const char* v = std::getenv(var)) {
      const int n = std::atoi(v);
      if (n > 0) return n;
    }
  }
  return 0;
}

bool g_initialized = false;  // init() ran
bool g_finalized = false;
bool g_mpi = false;          // MPI_Init ran (a launcher started us and MPI is built in)
int g_rank = 0, g_world = 1;
int g_thread_level = -1;

[[maybe_unused]] void check_tensor(const char* op, const Tensor& t, bool allow_int) {
  check_defined(op, t, "tensor");
  SG_CHECK(t.is_contiguous(), "{}: the tensor {} must be contiguous (it is written in place)", op, t.shape());
  const Dtype d = t.dtype();
  SG_CHECK(d == kFloat32 || d == kFloat64 || (allow_int && d == kInt64),
           "{}: dtype {} is not supported (float32, float64{})", op, d, allow_int ? " or int64" : "");
}

#ifdef SOFTGRAD_HAVE_MPI
MPI_Datatype mpi_type(Dtype d) {
  switch (d) {
    case kFloat32: return MPI_FLOAT;
    case kFloat64: return MPI_DOUBLE;
    case kInt64: return MPI_INT64_T;
    default: fail("distributed: dtype {} has no MPI type here", d);
  }
}

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::Max ? MPI_MAX : MPI_SUM; }

// MPI counts are int: longer buffers go in chunks of 2^30 elements.
constexpr int64_t kChunk = int64_t{1} << 30;

// Every rank's (numel, dtype) must agree before a collective moves data: one small
// all-reduce of {n, -n, dtype, -dtype} with MAX gives the largest and the smallest.
void check_same_everywhere(const char* op, int64_t n, Dtype dtype) {
  int64_t v[4] = {n, -n, static_cast<int64_t>(dtype), -static_cast<int64_t>(dtype)};
  MPI_Allreduce(MPI_IN_PLACE, v, 4, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  SG_CHECK(v[0] == -v[1] && v[2] == -v[3],
           "{}: the ranks disagree: rank {} has {} elements of {}, others have between {} and {} elements (dtype "
           "codes {} to {})",
           op, g_rank, n, dtype, -v[1], v[0], -v[3], v[2]);
}

void all_reduce_raw(void* data, int64_t n, Dtype dtype, ReduceOp op, MPI_Comm comm = MPI_COMM_WORLD) {
  char* p = static_cast<char*>(data);
  for (int64_t done = 0; done < n; done += kChunk) {
    const int count = static_cast<int>(std::min(kChunk, n - done));
    MPI_Allreduce(MPI_IN_PLACE, p + done * dtype_size(dtype), count, mpi_type(dtype), mpi_op(op), comm);
  }
}

// The in-flight non-blocking reductions: MPI_Requests by id (ids are reused); DDP's
// communicators by id. NOTE: only the main thread touches these tables (the communication
// thread calls all_reduce_sum with a communicator looked up before it starts).
std::vector<MPI_Request> g_requests;
std::vector<int64_t> g_free_ids;
std::vector<MPI_Comm> g_comms;

std::mutex g_comms_mutex;  // the communication threads read g_comms while a new DDP may add to it

MPI_Comm comm_of(int64_t id) {
  std::lock_guard lock(g_comms_mutex);
  return g_comms.at(static_cast<size_t>(id));
}
#endif

}  // namespace

bool compiled_with_mpi() {
#ifdef SOFTGRAD_HAVE_MPI
  return true;
#else
  return false;
#endif
}

void init(int* argc, char*** argv) {
  if (g_initialized) return;
  const int launched = launched_world_size();
#ifdef SOFTGRAD_HAVE_MPI
  if (launched > 0) {
    int already = 0;
    MPI_Initialized(&already);
    if (!already) MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &g_thread_level);
    else MPI_Query_thread(&g_thread_level);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_world);
    g_mpi = true;
  }
#else
  (void)argc;
  (void)argv;
  SG_CHECK(launched <= 1,
           "distributed::init: started as one of {} processes, but this softgrad was built without MPI (CMake "
           "found no MPI: install libopenmpi-dev, e.g. with tools/install-deps.sh, and rebuild); run one process",
           launched);
#endif
  g_initialized = true;
}

void finalize() {
  if (!g_initialized || g_finalized) return;
  g_finalized = true;
#ifdef SOFTGRAD_HAVE_MPI
  if (g_mpi) {
    std::fflush(stdout);
    MPI_Finalize();
  }
#endif
}

bool initialized() { return g_initialized && !g_finalized; }

Session::Session(int& argc, char**& argv) : uncaught_at_start_(std::uncaught_exceptions()) { init(&argc, &argv); }

Session::~Session() {
  // NOTE: unwinding past the session means this rank failed; the others may be blocked in
  // a collective waiting for it, so finalizing (a collective itself) would hang the job.
  if (std::uncaught_exceptions() > uncaught_at_start_ && world_size() > 1) abort(1);
  finalize();
}

int rank() { return g_rank; }
int world_size() { return g_world; }
bool is_main() { return g_rank == 0; }

std::string thread_level() {
#ifdef SOFTGRAD_HAVE_MPI
  if (g_mpi) {
    switch (g_thread_level) {
      case MPI_THREAD_SINGLE: return "single";
      case MPI_THREAD_FUNNELED: return "funneled";
      case MPI_THREAD_SERIALIZED: return "serialized";
      case MPI_THREAD_MULTIPLE: return "multiple";
      default: return "unknown";
    }
  }
#endif
  return "none";
}

int local_size() {
  if (const char* v = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE")) {
    const int n = std::atoi(v);
    if (n > 0) return n;
  }
  return 1;
}

void barrier() {
#ifdef SOFTGRAD_HAVE_MPI
  if (g_mpi && g_world > 1) MPI_Barrier(MPI_COMM_WORLD);
#endif
}

void broadcast(const Tensor& t, int root) {
  check_tensor("broadcast", t, /*allow_int=*/true);
  SG_CHECK(root >= 0 && root < g_world, "broadcast: root {} is not a rank of this world of {}", root, g_world);
#ifdef SOFTGRAD_HAVE_MPI
  if (!g_mpi || g_world == 1) return;
  check_same_everywhere("broadcast", t.numel(), t.dtype());
  char* p = static_cast<char*>(t.raw_data());
  const int64_t n = t.numel();
  for (int64_t done = 0; done < n; done += kChunk) {
    const int count = static_cast<int>(std::min(kChunk, n - done));
    MPI_Bcast(p + done * dtype_size(t.dtype()), count, mpi_type(t.dtype()), root, MPI_COMM_WORLD);
  }
  t.impl()->storage->version++;  // written in place, as any in-place op
#endif
}

void all_reduce(const Tensor& t, ReduceOp op) {
  check_tensor("all_reduce", t, /*allow_int=*/op != ReduceOp::Mean);
  if (g_world == 1) return;
#ifdef SOFTGRAD_HAVE_MPI
  check_same_everywhere("all_reduce", t.numel(), t.dtype());
  all_reduce_raw(t.raw_data(), t.numel(), t.dtype(), op);
  if (op == ReduceOp::Mean) detail::divide_by_world(t.raw_data(), t.numel(), t.dtype());
  t.impl()->storage->version++;
#endif
}

void all_reduce(std::vector<double>& values, ReduceOp op) {
  if (g_world == 1) return;
#ifdef SOFTGRAD_HAVE_MPI
  const int64_t n = static_cast<int64_t>(values.size());
  check_same_everywhere("all_reduce", n, kFloat64);
  all_reduce_raw(values.data(), n, kFloat64, op);
  if (op == ReduceOp::Mean) detail::divide_by_world(values.data(), n, kFloat64);
#endif
}

void all_reduce(std::vector<int64_t>& values, ReduceOp op) {
  SG_CHECK(op != ReduceOp::Mean, "all_reduce: ReduceOp::Mean of int64 values is not an integer (use Sum and divide)");
  if (g_world == 1) return;
#ifdef SOFTGRAD_HAVE_MPI
  const int64_t n = static_cast<int64_t>(values.size());
  check_same_everywhere("all_reduce", n, kInt64);
  all_reduce_raw(values.data(), n, kInt64, op);
#endif
}

// ---- Metrics ----
Metrics& Metrics::add(std::string name, double value) {
  for (const auto& [existing, v] : fields_)
    SG_CHECK(existing != name, "Metrics::add: '{}' was already added", name);
  fields_.emplace_back(std::move(name), value);
  return *this;
}

double Metrics::operator[](const std::string& name) const {
  for (const auto& [n, v] : fields_)
    if (n == name) return v;
  fail("Metrics: no field '{}'", name);
}

void Metrics::all_reduce(ReduceOp op) {
  if (world_size() == 1) return;
  // The names' fingerprint (FNV-1a over "name\0name\0..."), reduced by max and by min: the
  // ranks agree on the fields only if both come back unchanged.
  uint64_t h = 1469598103934665603ULL;
  for (const auto& [n, v] : fields_) {
    for (const char c : n) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
    h = (h ^ 0) * 1099511628211ULL;
  }
  const int64_t fp = static_cast<int64_t>(h >> 1);
  std::vector<int64_t> check = {fp, -fp};
  distributed::all_reduce(check, ReduceOp::Max);
  SG_CHECK(check[0] == fp && check[1] == -fp,
           "Metrics::all_reduce: the ranks added different fields (rank {} has {} fields; the fingerprints range "
           "from {} to {})",
           rank(), fields_.size(), -check[1], check[0]);
  std::vector<double> values;
  for (const auto& [n, v] : fields_) values.push_back(v);
  distributed::all_reduce(values, op);
  for (size_t i = 0; i < values.size(); ++i) fields_[i].second = values[i];
}

void abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
#ifdef SOFTGRAD_HAVE_MPI
  if (g_mpi && !g_finalized) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

// ---- for DistributedDataParallel ----
namespace detail {

void divide_by_world(void* data, int64_t n, Dtype dtype) {
  visit_floating(dtype, [&]<typename T>() {
    T* p = static_cast<T*>(data);
    const T w = static_cast<T>(g_world);
    for (int64_t i = 0; i < n; ++i) p[i] /= w;
  });
}

#ifdef SOFTGRAD_HAVE_MPI
int64_t new_communicator() {
  if (!g_mpi || g_world == 1) return -1;
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  std::lock_guard lock(g_comms_mutex);
  g_comms.push_back(comm);
  return static_cast<int64_t>(g_comms.size()) - 1;
}

void free_communicator(int64_t id) {
  if (id < 0 || g_finalized) return;
  std::lock_guard lock(g_comms_mutex);
  MPI_Comm_free(&g_comms.at(static_cast<size_t>(id)));
}

Request iall_reduce_sum(int64_t comm, void* data, int64_t n, Dtype dtype) {
  SG_CHECK(n <= INT_MAX, "DistributedDataParallel: a bucket of {} elements is more than MPI's int count "
           "(use smaller bucket_bytes)", n);
  MPI_Request req = MPI_REQUEST_NULL;
  MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(n), mpi_type(dtype), MPI_SUM, comm_of(comm), &req);
  Request r;
  if (!g_free_ids.empty()) {
    r.id = g_free_ids.back();
    g_free_ids.pop_back();
    g_requests[static_cast<size_t>(r.id)] = req;
  } else {
    r.id = static_cast<int64_t>(g_requests.size());
    g_requests.push_back(req);
  }
  return r;
}

bool test(Request& r) {
  if (!r.pending()) return true;
  int done = 0;
  MPI_Test(&g_requests[static_cast<size_t>(r.id)], &done, MPI_STATUS_IGNORE);
  if (done) {
    g_free_ids.push_back(r.id);
    r.id = -1;
  }
  return done != 0;
}

void wait(Request& r) {
  if (!r.pending()) return;
  MPI_Wait(&g_requests[static_cast<size_t>(r.id)], MPI_STATUS_IGNORE);
  g_free_ids.push_back(r.id);
  r.id = -1;
}

void all_reduce_sum(int64_t comm, void* data, int64_t n, Dtype dtype) {
  all_reduce_raw(data, n, dtype, ReduceOp::Sum, comm_of(comm));
}
#else
// A world of one: the sum over one rank is the data itself.
int64_t new_communicator() { return -1; }
void free_communicator(int64_t) {}
Request iall_reduce_sum(int64_t, void*, int64_t, Dtype) { return {}; }
bool test(Request&) { return true; }
void wait(Request&) {}
void all_reduce_sum(int64_t, void*, int64_t, Dtype) {}
#endif

}  // namespace detail

}  // namespace sg::distributed
