// Golden-section search for the minimum of a unimodal function on a bracket [lo, hi]. The
// bracket shrinks by 1/φ per step, one evaluation each, while keep_going(lo, hi, step) holds;
// returns the final bracket. Evaluations (and so any side effects of f) are in a fixed order.
#pragma once
#include <cmath>
#include <utility>

namespace vitq {

template <class F, class KeepGoing>
std::pair<double, double> golden_section(F&& f, double lo, double hi, KeepGoing&& keep_going) {
  const double g = (std::sqrt(5.0) - 1) / 2;
  double a = hi - g * (hi - lo), b = lo + g * (hi - lo), fa = f(a), fb = f(b);
  for (int step = 0; keep_going(lo, hi, step); ++step) {
    if (fa < fb) {
      hi = b, b = a, fb = fa;
      a = hi - g * (hi - lo), fa = f(a);
    } else {
      lo = a, a = b, fa = fb;
      b = lo + g * (hi - lo), fb = f(b);
    }
  }
  return {lo, hi};
}

}  // namespace vitq
