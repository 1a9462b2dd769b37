#pragma once
// The process group: every process of a job started by `mpirun -np N` is one rank of a
// world of N, and these calls are the collectives that data parallelism needs (PyTorch's
// torch.distributed with its MPI backend). Open MPI is the engine; this folder is the only
// place that includes mpi.h.
//
//   int main(int argc, char** argv) {
//     sg::distributed::Session session(argc, argv);   // MPI_Init ... MPI_Finalize (RAII)
//     sg::Tensor t = sg::full({3}, double(sg::distributed::rank()), sg::kFloat64);
//     sg::distributed::all_reduce(t, sg::distributed::ReduceOp::Sum);  // in place, on every rank
//     if (sg::distributed::is_main()) fmt::print("{}\n", t);
//   }
//
// Without a launcher (no mpirun environment) the world is one process and nothing of MPI
// is touched: every collective returns at once (Mean divides by 1), so single-process
// programs pay nothing. A build without MPI (SOFTGRAD_HAVE_MPI off: CMake found none) is
// the same world of one, and Session refuses a job of more processes with a message.
//
// Collectives must be called by every rank in the same order with the same shapes and
// dtypes (MPI's rule); a mismatch of shape or dtype is caught and named (the shapes are
// compared across ranks first). A rank that fails should call abort(): it takes the whole
// job down (MPI_Abort) instead of leaving the other ranks waiting in a collective forever;
// Session's destructor does so by itself when it runs during an exception's unwinding (an
// exception that escapes main may not unwind at all: std::terminate then ends this rank,
// and mpirun the job).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace sg::distributed {

enum class ReduceOp { Sum, Mean, Max };

// True when softgrad was built with MPI (otherwise every world has one process).
bool compiled_with_mpi();

// Starts the process group (idempotent). Under a launcher it calls MPI_Init_thread asking
// for MPI_THREAD_MULTIPLE (DistributedDataParallel's communication thread needs at least
// SERIALIZED); without one it does nothing. Throws when the build has no MPI but the
// launcher started more than one process.
void init(int* argc = nullptr, char*** argv = nullptr);
void finalize();  // MPI_Finalize once (idempotent; a no-op in a world of one)
bool initialized();

// RAII: init() in the constructor, finalize() in the destructor; abort(1) instead when
// the destructor runs while an exception unwinds (another rank may be waiting for us).
class Session {
 public:
  Session(int& argc, char**& argv);
  Session() : Session(no_argc_, no_argv_) {}
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

 private:
  int no_argc_ = 0;
  char** no_argv_ = nullptr;
  int uncaught_at_start_ = 0;
};

int rank();        // 0 .. world_size() - 1; 0 in a world of one
int world_size();  // 1 without a launcher
bool is_main();    // rank() == 0: the rank that prints and writes files
// MPI's thread support level ("single", "funneled", "serialized", "multiple"); "none"
// in a world of one.
std::string thread_level();
// The number of ranks on this machine (Open MPI's OMPI_COMM_WORLD_LOCAL_SIZE; 1 without).
int local_size();

void barrier();
// Every rank's t takes root's values (in place). t: contiguous float32, float64 or int64.
void broadcast(const Tensor& t, int root = 0);
// In place on every rank: the elementwise sum, mean or max over ranks.
void all_reduce(const Tensor& t, ReduceOp op = ReduceOp::Sum);
void all_reduce(std::vector<double>& values, ReduceOp op = ReduceOp::Sum);
void all_reduce(std::vector<int64_t>& values, ReduceOp op = ReduceOp::Sum);

// A small record of named numbers reduced in one call, e.g. an epoch's metrics:
//   sg::distributed::Metrics m;
//   m.add("loss_sum", loss_sum); m.add("correct", correct); m.add("seen", seen);
//   m.all_reduce();                              // sums over ranks
//   double acc = m["correct"] / m["seen"];
// Every rank must add the same names in the same order (checked: a mismatch is an error
// naming both lists' fingerprints, not a silent sum of different fields).
class Metrics {
 public:
  Metrics& add(std::string name, double value);
  double operator[](const std::string& name) const;
  void all_reduce(ReduceOp op = ReduceOp::Sum);
  const std::vector<std::pair<std::string, double>>& fields() const { return fields_; }

 private:
  std::vector<std::pair<std::string, double>> fields_;
};

// Takes the whole job down with `code` after flushing stdout and stderr (MPI_Abort); in a
// world of one, std::exit(code).
[[noreturn]] void abort(int code = 1);

namespace detail {
// The MPI handles DistributedDataParallel needs, kept opaque so that mpi.h stays here.
// A request and a communicator are indices into this file's tables of MPI handles.
struct Request {
  int64_t id = -1;
  bool pending() const { return id >= 0; }
};
// A duplicate of the world's communicator (MPI_Comm_dup; collective): each DDP reduces on
// its own, so two of them never pair up each other's collectives. -1 in a world of one.
int64_t new_communicator();
void free_communicator(int64_t comm);
// Starts an in-place sum over ranks of n elements of float32 or float64 at data
// (MPI_Iallreduce); test() drives progress and reports completion; wait() blocks.
Request iall_reduce_sum(int64_t comm, void* data, int64_t n, Dtype dtype);
bool test(Request& r);  // true once done (r becomes not pending)
void wait(Request& r);
// data /= world_size() in float32 or float64 (ReduceOp::Mean, and DDP's averaged buckets;
// a power of two divides exactly).
void divide_by_world(void* data, int64_t n, Dtype dtype);
// A blocking in-place sum (MPI_Allreduce), for the communication thread.
void all_reduce_sum(int64_t comm, void* data, int64_t n, Dtype dtype);
}  // namespace detail

}  // namespace sg::distributed
