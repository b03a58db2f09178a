// Deterministic, platform-independent subset selection (see dataset.h).
#include <algorithm>
#include <numeric>
#include <random>

#include "data/dataset.h"

namespace vitq {
namespace {

// Uniform draw in [0, bound) by rejection: values below 2^64 mod bound are redrawn, so the
// accepted range is a whole number of copies of [0, bound). std::uniform_int_distribution is
// not used because its algorithm differs between standard libraries.
uint64_t bounded_draw(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t reject_below = (0 - bound) % bound;  // == 2^64 mod bound
  for (;;) {
    const uint64_t r = rng();
    if (r >= reject_below) return r % bound;
  }
}

}  // namespace

std::vector<size_t> select_subset(size_t n, size_t limit, uint64_t seed) {
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), size_t(0));
  if (limit == 0 || limit >= n) return idx;
  // The first `limit` steps of a forward Fisher-Yates shuffle: position i takes a uniformly
  // chosen element of positions [i, n).
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < limit; ++i) {
    const size_t j = i + size_t(bounded_draw(rng, uint64_t(n - i)));
    std::swap(idx[i], idx[j]);
  }
  idx.resize(limit);
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace vitq
