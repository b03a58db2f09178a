// The mixed-precision search under a stated budget (quant/mp_search.h) on synthetic problems
// against brute force over every assignment, the budget syntax, and the latency table's JSON.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "core/error.h"
#include "quant/latency_table.h"
#include "quant/mp_search.h"

namespace vitq {
namespace {

// A random problem: cost falls with the width, resource grows with it (size-like or latency-like:
// latency jumps at the widths of two planes).
struct Problem {
  std::vector<std::vector<double>> cost;
  std::vector<std::vector<int64_t>> resource;
  int modules = 0, cands = 0;
};

Problem random_problem(std::mt19937& rng, bool latency) {
  std::uniform_real_distribution<double> u(0, 1);
  Problem p;
  p.modules = 1 + int(rng() % 6);
  p.cands = 1 + int(rng() % 4);
  for (int m = 0; m < p.modules; ++m) {
    const double sens = u(rng) * 10;
    const int64_t unit = 1000 + int64_t(rng() % 5000);
    std::vector<double> c;
    std::vector<int64_t> r;
    for (int k = 0; k < p.cands; ++k) {
      c.push_back(sens / double(1 << (2 * k)) + 0.01 * u(rng));
      r.push_back(latency ? unit * (k >= 2 ? 4 : 1) + int64_t(rng() % 300) : unit * (4 + k));
    }
    p.cost.push_back(c);
    p.resource.push_back(r);
  }
  return p;
}

// Every assignment: (resource, Ω).
std::vector<std::pair<int64_t, double>> all_assignments(const Problem& p) {
  std::vector<std::pair<int64_t, double>> out;
  int64_t total = 1;
  for (int m = 0; m < p.modules; ++m) total *= p.cands;
  for (int64_t code = 0; code < total; ++code) {
    int64_t c = code, r = 0;
    double om = 0;
    for (int m = 0; m < p.modules; ++m) {
      const int k = int(c % p.cands);
      c /= p.cands;
      r += p.resource[size_t(m)][size_t(k)];
      om += p.cost[size_t(m)][size_t(k)];
    }
    out.emplace_back(r, om);
  }
  return out;
}

std::pair<int64_t, double> totals(const Problem& p, const AllocationPoint& a) {
  int64_t r = 0;
  double om = 0;
  for (int m = 0; m < p.modules; ++m) {
    r += p.resource[size_t(m)][size_t(a.choice[size_t(m)])];
    om += p.cost[size_t(m)][size_t(a.choice[size_t(m)])];
  }
  return {r, om};
}

// When the measured KL is the additive prediction, the budget search finds the least Ω within the
// budget (size-like and latency-like resources), which brute force confirms.
TEST(MpSearch, WithinBudgetEqualsBruteForce) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    const Problem p = random_problem(rng, trial % 2 == 1);
    const auto every = all_assignments(p);
    int64_t lo = std::numeric_limits<int64_t>::max(), hi = 0;
    for (const auto& [r, om] : every) lo = std::min(lo, r), hi = std::max(hi, r);
    const int64_t budget = lo + int64_t(rng() % uint64_t(hi - lo + 1));
    double best = INFINITY;
    for (const auto& [r, om] : every)
      if (r <= budget) best = std::min(best, om);
    int measured = 0;
    const SearchOutcome o = search_within_budget(p.cost, p.resource, budget, 3, [&](const AllocationPoint& a) {
      ++measured;
      return a.omega;
    });
    ASSERT_GE(o.chosen, 0) << "trial " << trial;
    const auto [r, om] = totals(p, o.front[size_t(o.chosen)]);
    EXPECT_LE(r, budget) << "trial " << trial;
    EXPECT_NEAR(om, best, 1e-9) << "trial " << trial;
    EXPECT_LE(measured, 3);
    EXPECT_EQ(size_t(measured), o.measured.size());
  }
}

// Nothing fits below the cheapest assignment.
TEST(MpSearch, WithinBudgetBelowTheCheapestChoosesNothing) {
  const std::vector<std::vector<double>> cost = {{2, 1}, {3, 1}};
  const std::vector<std::vector<int64_t>> res = {{10, 20}, {10, 20}};
  const SearchOutcome o = search_within_budget(cost, res, 19, 4, [](const AllocationPoint& a) { return a.omega; });
  EXPECT_EQ(o.chosen, -1);
  EXPECT_TRUE(o.measured.empty());
}

// With the additive measure, the floor search finds the least resource whose Ω is within the floor
// (brute force), measuring about log2 of the frontier's points; a floor below every Ω gives none.
TEST(MpSearch, KlFloorEqualsBruteForceWithLogarithmicMeasurements) {
  std::mt19937 rng(12);
  std::uniform_real_distribution<double> u(0, 1);
  for (int trial = 0; trial < 300; ++trial) {
    const Problem p = random_problem(rng, trial % 2 == 1);
    const auto every = all_assignments(p);
    double omin = INFINITY, omax = 0;
    for (const auto& [r, om] : every) omin = std::min(omin, om), omax = std::max(omax, om);
    const double floor = trial % 10 == 0 ? omin * 0.99 : omin + u(rng) * (omax - omin);
    int64_t cheapest = std::numeric_limits<int64_t>::max();
    for (const auto& [r, om] : every)
      if (om <= floor) cheapest = std::min(cheapest, r);
    const SearchOutcome o = search_kl_floor(p.cost, p.resource, floor, [](const AllocationPoint& a) { return a.omega; });
    if (cheapest == std::numeric_limits<int64_t>::max()) {
      EXPECT_EQ(o.chosen, -1) << "trial " << trial;
      continue;
    }
    ASSERT_GE(o.chosen, 0) << "trial " << trial;
    const auto [r, om] = totals(p, o.front[size_t(o.chosen)]);
    EXPECT_EQ(r, cheapest) << "trial " << trial;
    EXPECT_LE(om, floor) << "trial " << trial;
    const double bound = std::ceil(std::log2(double(o.front.size()))) + 1;
    EXPECT_LE(double(o.measured.size()), bound) << "trial " << trial << ", frontier " << o.front.size();
  }
}

// A measured KL that does not follow the prediction (noise): what the floor search returns was
// measured within the floor, and the point before it on the frontier (if measured) was not.
TEST(MpSearch, KlFloorChoiceMeetsTheFloorAsMeasured) {
  std::mt19937 rng(13);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  for (int trial = 0; trial < 200; ++trial) {
    const Problem p = random_problem(rng, false);
    std::map<std::vector<int>, double> noise;
    auto measure = [&](const AllocationPoint& a) {
      auto it = noise.find(a.choice);
      if (it == noise.end()) it = noise.emplace(a.choice, u(rng)).first;
      return a.omega * it->second;
    };
    const double floor = 0.5;
    const SearchOutcome o = search_kl_floor(p.cost, p.resource, floor, measure);
    if (o.chosen < 0) {
      ASSERT_FALSE(o.measured.empty());
      EXPECT_GT(o.measured.front().kl, floor);  // the most accurate point, measured first
      continue;
    }
    double at = NAN, before = NAN;
    for (const MeasuredPoint& m : o.measured) {
      if (m.index == size_t(o.chosen)) at = m.kl;
      if (o.chosen > 0 && m.index == size_t(o.chosen - 1)) before = m.kl;
    }
    EXPECT_LE(at, floor) << "trial " << trial;
    if (!std::isnan(before)) {
      EXPECT_GT(before, floor) << "trial " << trial;
    }
  }
}

TEST(MpSearch, BudgetSyntax) {
  EXPECT_EQ(MpBudget::parse("size=4.5").kind, BudgetKind::Size);
  EXPECT_DOUBLE_EQ(MpBudget::parse("size=4.5").value, 4.5);
  EXPECT_EQ(MpBudget::parse("latency=3").kind, BudgetKind::Latency);
  EXPECT_EQ(MpBudget::parse("kl=1e-2").kind, BudgetKind::KlFloor);
  EXPECT_DOUBLE_EQ(MpBudget::parse("kl=1e-2").value, 0.01);
  for (const char* bad : {"", "size", "size=", "size=-1", "size=0", "size=4MB", "speed=3", "kl=nan", "latency=inf"}) {
    try {
      MpBudget::parse(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Usage) << bad;
      EXPECT_NE(std::string(e.what()).find("--mp-budget"), std::string::npos) << e.what();
    }
  }
}

LatencyTable small_table() {
  LatencyTable t;
  t.architecture = "tiny";
  t.depth = 2;
  t.embed_dim = 8;
  t.mlp_dim = 16;
  t.heads = 2;
  t.tokens = 5;
  t.batch = 4;
  t.threads = 1;
  t.add({8, 0.1, 0.2, 0.05, 0.3, 0.15, 0.5});
  t.add({10, 0.4, 0.6, 0.2, 0.9, 0.5, 0.7});
  return t;
}

TEST(LatencyTable, JsonRoundTripAndWidthsByPlaneCount) {
  const LatencyTable t = small_table();
  const LatencyTable back = latency_table_from_json(latency_table_json(t), "t.json");
  ASSERT_EQ(back.entries.size(), 2u);
  EXPECT_EQ(back.depth, 2);
  EXPECT_DOUBLE_EQ(back.entries[1].fc1, 0.9);
  EXPECT_DOUBLE_EQ(back.entries[0].total(2), 0.5 + 2 * (0.1 + 0.2 + 0.05 + 0.3 + 0.15));
  // 4 and 6 bits run one 8-bit plane, as 8 does; 9 bits two, as 10 does.
  EXPECT_EQ(back.entry_for(6)->bits, 8);
  EXPECT_EQ(back.entry_for(4)->bits, 8);
  EXPECT_EQ(back.entry_for(9)->bits, 10);
  LatencyTable only8 = t;
  only8.entries.pop_back();
  EXPECT_EQ(only8.entry_for(9), nullptr);
}

TEST(LatencyTable, MalformedTablesNameTheField) {
  const nlohmann::ordered_json good = latency_table_json(small_table());
  auto error_of = [](const nlohmann::ordered_json& j) -> std::string {
    try {
      latency_table_from_json(j, "t.json");
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Model);
      return e.what();
    }
    return "";
  };
  auto with = [&](const std::function<void(nlohmann::ordered_json&)>& f) {
    nlohmann::ordered_json j = good;
    f(j);
    return error_of(j);
  };
  EXPECT_NE(with([](auto& j) { j["format"] = "x"; }).find("'format'"), std::string::npos);
  EXPECT_NE(with([](auto& j) { j.erase("depth"); }).find("'depth'"), std::string::npos);
  EXPECT_NE(with([](auto& j) { j["widths"][1]["fc1"] = -1; }).find("'widths[1].fc1'"), std::string::npos);
  EXPECT_NE(with([](auto& j) { j["widths"][0]["attention"] = "fast"; }).find("'widths[0].attention'"), std::string::npos);
  EXPECT_NE(with([](auto& j) { j["widths"][1]["bits"] = 8; }).find("appears twice"), std::string::npos);
  EXPECT_NE(with([](auto& j) { j["widths"] = nlohmann::ordered_json::array(); }).find("'widths'"), std::string::npos);
  EXPECT_NE(error_of(nlohmann::ordered_json::array()).find("t.json"), std::string::npos);
}

}  // namespace
}  // namespace vitq
