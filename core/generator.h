#pragma once
// An explicit, seedable random generator (xoshiro256**, seeded through splitmix64).
// Every random function takes one, so runs are reproducible and no global state hides.
#include <array>
#include <cstdint>

namespace sg {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0x5eed);
  void manual_seed(uint64_t seed);
  uint64_t seed() const { return seed_; }
  uint64_t next_u64();
  double uniform();  // [0, 1) with 53 random bits
  double normal();   // standard normal (Box-Muller, one value cached)
  // Uniform integer in [0, n) without modulo bias.
  uint64_t below(uint64_t n);

  // The whole state as words (seed, the four xoshiro words, the cached normal's flag and
  // bits), so a checkpoint can restore a generator exactly and a resumed run draws the
  // same numbers as an uninterrupted one.
  using State = std::array<uint64_t, 7>;
  State state() const;
  void set_state(const State& state);

 private:
  uint64_t seed_;
  uint64_t s_[4];
  bool has_spare_ = false;
  double spare_ = 0.0;
};

}  // namespace sg
