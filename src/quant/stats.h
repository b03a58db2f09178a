// Order statistics of activation magnitudes for calibration (exact, memory-light).
#pragma once
#include <cstddef>

namespace vitq {

// The p-th percentile (0 < p <= 100) of |x| over n values, with numpy's default linear
// interpolation between order statistics. Exact; memory O(histogram + one bin).
double percentile_abs(const float* x, size_t n, double p);

}  // namespace vitq
