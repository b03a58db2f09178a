// Non-finite numbers (NaN, ±Inf) in weights and activations: found and named, never passed on
// as results.
#pragma once
#include <cmath>
#include <cstddef>
#include <string>

#include "core/error.h"

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

// Error(Model) naming the file and tensor if t[0, n) holds a NaN or Inf: a damaged checkpoint is
// refused at load time, not found in the logits. --allow-non-finite skips the check.
inline void check_finite_tensor(const std::string& file, const std::string& tensor, const float* t, size_t n) {
  const size_t bad = first_non_finite(t, n);
  if (bad == n) return;
  fail(ErrorKind::Model, file, ": tensor '", tensor, "' holds ", count_non_finite(t, n), " non-finite values (first: ",
       t[bad], " at flat index ", bad, "); the checkpoint is damaged. Pass --allow-non-finite to load it anyway");
}

}  // namespace vitq
