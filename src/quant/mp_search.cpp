#include "quant/mp_search.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace vitq {

MpBudget MpBudget::parse(const std::string& s) {
  const size_t eq = s.find('=');
  const std::string kind = s.substr(0, eq), num = eq == std::string::npos ? "" : s.substr(eq + 1);
  MpBudget b;
  if (kind == "size") b.kind = BudgetKind::Size;
  else if (kind == "latency") b.kind = BudgetKind::Latency;
  else if (kind == "kl") b.kind = BudgetKind::KlFloor;
  else fail(ErrorKind::Usage, "--mp-budget '", s, "': the kind must be size, latency or kl (e.g. size=4.5, latency=3, kl=0.01)");
  const char* end = num.data() + num.size();
  auto [p, ec] = std::from_chars(num.data(), end, b.value);
  if (num.empty() || ec != std::errc() || p != end || !std::isfinite(b.value) || b.value <= 0)
    fail(ErrorKind::Usage, "--mp-budget '", s, "': '", num, "' is not a positive number");
  return b;
}

std::string MpBudget::describe() const {
  switch (kind) {
    case BudgetKind::Size: return value > 0 ? cat("size <= ", value, " MB of block weights") : "the uniform width's size";
    case BudgetKind::Latency: return cat("latency <= ", value, " ms/image");
    case BudgetKind::KlFloor: return cat("KL <= ", value, " on the check images");
  }
  return "?";
}

namespace {

std::vector<AllocationPoint> complete_front(const std::vector<std::vector<double>>& cost,
                                            const std::vector<std::vector<int64_t>>& resource, int64_t max) {
  std::vector<AllocationPoint> f = pareto_frontier(cost, resource, max);
  std::vector<AllocationPoint> out;
  for (auto& p : f)
    if (p.choice.size() == cost.size()) out.push_back(std::move(p));
  return out;
}

}  // namespace

SearchOutcome search_within_budget(const std::vector<std::vector<double>>& cost,
                                   const std::vector<std::vector<int64_t>>& resource, int64_t budget, int checks,
                                   const MeasurePoint& measure) {
  SearchOutcome o;
  o.front = complete_front(cost, resource, budget);
  const size_t n = size_t(std::max(checks, 1)), first = o.front.size() > n ? o.front.size() - n : 0;
  double best = std::numeric_limits<double>::infinity();
  for (size_t i = first; i < o.front.size(); ++i) {
    const double kl = measure(o.front[i]);
    o.measured.push_back({i, kl});
    if (kl < best || o.chosen < 0) best = kl, o.chosen = int(i);
  }
  return o;
}

SearchOutcome search_kl_floor(const std::vector<std::vector<double>>& cost,
                              const std::vector<std::vector<int64_t>>& resource, double floor,
                              const MeasurePoint& measure) {
  SearchOutcome o;
  o.front = complete_front(cost, resource, std::numeric_limits<int64_t>::max());
  if (o.front.empty()) return o;
  auto kl_at = [&](size_t i) {  // each point measured once (o.measured holds what was)
    for (const MeasuredPoint& m : o.measured)
      if (m.index == i) return m.kl;
    o.measured.push_back({i, measure(o.front[i])});
    return o.measured.back().kl;
  };
  size_t lo = 0, hi = o.front.size() - 1;
  if (!(kl_at(hi) <= floor)) return o;  // the most accurate point misses the floor
  while (lo < hi) {  // invariant: kl_at(hi) <= floor; every index below lo measured above it
    const size_t mid = lo + (hi - lo) / 2;
    if (kl_at(mid) <= floor) hi = mid;
    else lo = mid + 1;
  }
  o.chosen = int(hi);
  return o;
}

}  // namespace vitq
