#include "quant/stats.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "numerics/quantizer.h"

namespace vitq {
namespace {

// k-th smallest (0-based) of |x|: histogram over [0, max], then an exact selection inside
// the bin that holds it.
float kth_abs(const float* x, size_t n, size_t k, float mx) {
  if (mx <= 0) return 0.0f;
  const size_t bins = 1 << 16;
  const double scale = double(bins) / double(mx);
  auto bin_of = [&](float v) { return std::min(bins - 1, size_t(double(std::fabs(v)) * scale)); };
  std::vector<size_t> hist(bins, 0);
  for (size_t i = 0; i < n; ++i) ++hist[bin_of(x[i])];
  size_t b = 0, below = 0;
  while (below + hist[b] <= k) below += hist[b++];
  std::vector<float> in_bin;
  in_bin.reserve(hist[b]);
  for (size_t i = 0; i < n; ++i)
    if (bin_of(x[i]) == b) in_bin.push_back(std::fabs(x[i]));
  auto nth = in_bin.begin() + long(k - below);
  std::nth_element(in_bin.begin(), nth, in_bin.end());
  return *nth;
}

}  // namespace

double percentile_abs(const float* x, size_t n, double p) {
  if (n == 0) fail(ErrorKind::Internal, "percentile of an empty tensor");
  if (!(p > 0 && p <= 100)) fail(ErrorKind::Usage, "percentile must be in (0, 100], got ", p);
  const float mx = max_abs(x, n);
  const double pos = p / 100.0 * double(n - 1);
  const size_t lo = size_t(std::floor(pos));
  const double frac = pos - double(lo);
  const double a = kth_abs(x, n, lo, mx);
  if (frac == 0 || lo + 1 >= n) return a;
  const double b = kth_abs(x, n, lo + 1, mx);
  return a + (b - a) * frac;
}

}  // namespace vitq
