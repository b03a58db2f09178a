// Seeded random test data shared by the unit tests.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace vitq::test {

// n draws of N(0, scale²) from a Mersenne twister seeded with `seed`.
inline std::vector<float> random_vec(size_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

}  // namespace vitq::test
