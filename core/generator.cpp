#include "core/generator.h"

#include "core/error.h"

#include <bit>
#include <cmath>
#include <numbers>

namespace sg {

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

Generator::Generator(uint64_t seed) { manual_seed(seed); }

void Generator::manual_seed(uint64_t seed) {
  seed_ = seed;
  uint64_t x = seed;
  for (uint64_t& s : s_) s = splitmix64(x);
  has_spare_ = false;
}

Generator::State Generator::state() const {
  return {seed_, s_[0], s_[1], s_[2], s_[3], has_spare_ ? 1u : 0u, std::bit_cast<uint64_t>(spare_)};
}

void Generator::set_state(const State& state) {
  SG_CHECK(state[5] <= 1, "Generator::set_state: the spare flag must be 0 or 1, got {}", state[5]);
  SG_CHECK(state[1] | state[2] | state[3] | state[4], "Generator::set_state: the xoshiro state is all zero");
  seed_ = state[0];
  for (int i = 0; i < 4; ++i) s_[i] = state[1 + i];
  has_spare_ = state[5] == 1;
  spare_ = std::bit_cast<double>(state[6]);
}

uint64_t Generator::next_u64() {  // xoshiro256**
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Generator::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

double Generator::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1 = uniform();
  while (u1 <= 0.0) u1 = uniform();
  const double u2 = uniform();
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double theta = 2.0 * std::numbers::pi * u2;
  spare_ = r * std::sin(theta);
  has_spare_ = true;
  return r * std::cos(theta);
}

uint64_t Generator::below(uint64_t n) {
  // Lemire's rejection: unbiased and cheap.
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    const uint64_t x = next_u64();
    const __uint128_t m = static_cast<__uint128_t>(x) * n;
    if (static_cast<uint64_t>(m) >= threshold) return static_cast<uint64_t>(m >> 64);
  }
}

}  // namespace sg
