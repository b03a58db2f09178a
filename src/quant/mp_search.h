// The search of mixed precision under a budget the user states (issue 16 item 3): a width per
// MSA/MLP module, each choice with a predicted cost (additive module costs, Ω) and a resource
// (weight bits, or nanoseconds per image from a latency table). Both searches walk the exact
// Pareto frontier of (resource, Ω) (mixed_precision.h) and measure points of it on the simulated
// network (`measure`: the network KL of a point, label-free):
//   - within a budget on the resource (size or latency): the `checks` frontier points nearest the
//     budget (the most accurate ones within it) are measured; the least measured KL wins;
//   - an accuracy floor (KL ≤ floor): the cheapest frontier point whose measured KL is within the
//     floor, by bisection over the frontier (the measured KL falls along it as the predicted one
//     does); none if even the most accurate point misses the floor.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "quant/mixed_precision.h"

namespace vitq {

struct MpBudget {
  BudgetKind kind = BudgetKind::Size;
  double value = 0;  // Size: 0 = the uniform target width's size
  // "size=MB", "latency=MS" or "kl=X" (an Error(Usage) naming the option otherwise).
  static MpBudget parse(const std::string& s);
  std::string describe() const;  // e.g. "latency <= 2.5 ms/image"
};

struct MeasuredPoint {
  size_t index = 0;  // into the frontier
  double kl = 0;
};

struct SearchOutcome {
  std::vector<AllocationPoint> front;  // the complete points only, by increasing resource
  std::vector<MeasuredPoint> measured;  // in the order measured
  int chosen = -1;                      // index into front; −1: none qualifies
};

using MeasurePoint = std::function<double(const AllocationPoint&)>;

SearchOutcome search_within_budget(const std::vector<std::vector<double>>& cost,
                                   const std::vector<std::vector<int64_t>>& resource, int64_t budget, int checks,
                                   const MeasurePoint& measure);

SearchOutcome search_kl_floor(const std::vector<std::vector<double>>& cost,
                              const std::vector<std::vector<int64_t>>& resource, double floor,
                              const MeasurePoint& measure);

}  // namespace vitq
