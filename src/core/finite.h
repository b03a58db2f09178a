// Non-finite numbers (NaN, ±Inf) in weights and activations: found and named, never passed on
// as results.
#pragma once
#include <cmath>
#include <cstddef>

namespace vitq {

// Index of the first non-finite value of p[0, n), or n if all are finite.
inline size_t first_non_finite(const float* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) return i;
  return n;
}

inline size_t count_non_finite(const float* p, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; ++i) c += !std::isfinite(p[i]);
  return c;
}

}  // namespace vitq
