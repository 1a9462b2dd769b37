#pragma once
// Shared by the libFuzzer targets in this folder (built with -DSOFTGRAD_FUZZ=ON and clang;
// see tests/fuzz/README.md). The readers under test take a path, so each input is written
// to a file in a scratch directory private to the process.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace fuzz {

// <tmp>/softgrad-fuzz-<pid>: made on first use, removed at exit.
inline std::filesystem::path scratch_dir() {
  return std::filesystem::temp_directory_path() / ("softgrad-fuzz-" + std::to_string(::getpid()));
}

inline std::filesystem::path scratch(const std::string& name) {
  static const bool made = [] {
    std::filesystem::create_directories(scratch_dir());
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return true;
  }();
  (void)made;
  return scratch_dir() / name;
}

inline std::filesystem::path write_input(const std::string& name, const uint8_t* data, size_t size) {
  const std::filesystem::path path = scratch(name);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) std::abort();
  return path;
}

// A broken invariant: say which and stop (libFuzzer saves the input as a crash).
[[noreturn]] inline void broken(const char* what) {
  std::fprintf(stderr, "fuzz invariant broken: %s\n", what);
  std::abort();
}

}  // namespace fuzz
