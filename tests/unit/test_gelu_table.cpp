// GELU tables (plan.h: GeluTable; quant/gelu_table.h; numerics/table_lookup.h): every lookup
// variant against the scalar reference, the table's entries against a double-precision GELU, the
// grid fit against a brute-force search, and the plan field's JSON round trip and errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/kernels.h"
#include "numerics/int8_kernels.h"
#include "numerics/table_lookup.h"
#include "quant/gelu_table.h"
#include "quant/plan.h"

namespace vitq {
namespace {

TEST(TableLookup, EveryVariantMatchesTheScalarReference) {
  std::mt19937_64 rng(5);
  std::normal_distribution<float> nd(0, 3);
  for (int bits : {4, 8, 10})
    for (int32_t lo : {-(1 << (bits - 1)), -7, 0, 3}) {
      const QRange r{lo, lo + (1 << bits) - 1};
      const float delta = 0.037f;
      std::vector<int32_t> ti(size_t(1) << bits);
      std::vector<float> tf(ti.size());
      for (size_t k = 0; k < ti.size(); ++k) ti[k] = int32_t(rng() % 256), tf[k] = nd(rng);
      for (size_t n : {size_t(0), size_t(1), size_t(15), size_t(16), size_t(17), size_t(768), size_t(1001)}) {
        std::vector<float> x(n);
        for (size_t i = 0; i < n; ++i) {
          const float v = nd(rng);
          // exact ties (k + 1/2)·Δ, values far outside the grid on both sides, zeros
          x[i] = i % 5 == 0 ? (float(int(v * 8)) + 0.5f) * delta : i % 7 == 0 ? 100.0f * v : i % 11 == 0 ? 0.0f : v;
        }
        std::vector<uint8_t> u_ref(n), u(n);
        std::vector<float> f_ref(n), f(n);
        table_lookup_u8_ref(x.data(), n, delta, r, ti.data(), u_ref.data());
        table_lookup_f32_ref(x.data(), n, delta, r, tf.data(), f_ref.data());
        for (size_t i = 0; i < n; ++i) {  // the reference is the quantizer's code, as an index
          const int32_t c = quantize_one(x[i], delta, r);
          ASSERT_EQ(u_ref[i], uint8_t(ti[size_t(c - lo)]));
          ASSERT_EQ(f_ref[i], tf[size_t(c - lo)]);
        }
        table_lookup_u8(x.data(), n, delta, r, ti.data(), u.data());
        table_lookup_f32(x.data(), n, delta, r, tf.data(), f.data());
        ASSERT_EQ(u, u_ref) << bits << " " << lo << " " << n;
        ASSERT_EQ(f, f_ref) << bits << " " << lo << " " << n;
        for (const TableLookupVariant& v : table_lookup_variants()) {
          if (!v.available) continue;
          SCOPED_TRACE(v.name);
          std::fill(u.begin(), u.end(), uint8_t(0));
          std::fill(f.begin(), f.end(), 0.0f);
          v.u8(x.data(), n, delta, r, ti.data(), u.data());
          v.f32(x.data(), n, delta, r, tf.data(), f.data());
          ASSERT_EQ(u, u_ref) << bits << " " << lo << " " << n;
          ASSERT_EQ(f, f_ref) << bits << " " << lo << " " << n;
        }
      }
    }
}

// Per-token codes of looked-up values (the runtime's GELU when fc2's input is per token): every
// variant against the reference composition table_lookup_f32_ref → token_quant → quantize_a_u8_ref,
// codes and the row's step and zero point, for GELU tables, random valleys (with plateaus, all
// positive, all negative), tables that are not valleys, and tables too large for byte indices.
TEST(TableLookup, PerTokenCodesOfLookedUpValuesMatchTheReferenceComposition) {
  std::mt19937_64 rng(11);
  std::normal_distribution<float> nd(0, 3);
  std::vector<std::pair<std::string, std::vector<float>>> tables;
  tables.push_back({"gelu 8", gelu_table_values(GeluTable{8, 0.05f, -100})});
  tables.push_back({"gelu 8 right", gelu_table_values(GeluTable{8, 0.02f, -20})});
  tables.push_back({"gelu 6", gelu_table_values(GeluTable{6, 0.2f, -20})});
  tables.push_back({"gelu 10", gelu_table_values(GeluTable{10, 0.01f, -300})});
  for (int kind = 0; kind < 6; ++kind) {
    std::vector<float> v(256);
    for (float& e : v) e = std::round(nd(rng) * 2.0f) / 2.0f;  // coarse values: plateaus
    // the bottom anywhere, or near either end (the greatest value at the least index, or the greatest)
    const size_t bottom = kind == 4 ? 250 : kind == 5 ? 5 : size_t(rng() % 256);
    std::sort(v.begin(), v.begin() + long(bottom) + 1, std::greater<float>());
    std::sort(v.begin() + long(bottom) + 1, v.end());
    const float least = *std::min_element(v.begin(), v.end()), most = *std::max_element(v.begin(), v.end());
    if (kind == 1)
      for (float& e : v) e += 0.5f - least;  // all positive
    if (kind == 2)
      for (float& e : v) e -= most + 0.5f;  // all negative
    if (kind == 3) std::shuffle(v.begin(), v.end(), rng);  // not a valley
    tables.push_back({"random " + std::to_string(kind), v});
  }
  for (const auto& [name, table] : tables) {
    const int valley = table_valley(table.data(), table.size());
    if (name.rfind("gelu", 0) == 0) {
      ASSERT_GE(valley, 0) << name << ": a GELU table is a valley";
    }
    if (name == "random 3") {
      ASSERT_EQ(valley, -1) << "a shuffled table is not a valley";
    } else {
      ASSERT_GE(valley, 0) << name;
    }
    const int tb = int(std::lround(std::log2(double(table.size()))));
    for (int32_t lo : {-(1 << (tb - 1)), 0}) {
      const QRange r{lo, lo + int32_t(table.size()) - 1};
      const float delta = 0.037f;
      for (int bits : {4, 8})
        for (float clip : {1.0f, 0.9f})
          for (size_t n : {size_t(0), size_t(1), size_t(63), size_t(64), size_t(65), size_t(768), size_t(1001)}) {
            std::vector<float> x(n);
            for (size_t i = 0; i < n; ++i) {
              const float e = nd(rng);
              x[i] = i % 5 == 0 ? (float(int(e * 8)) + 0.5f) * delta : i % 7 == 0 ? 100.0f * e : e;
            }
            std::vector<float> y(n);
            table_lookup_f32_ref(x.data(), n, delta, r, table.data(), y.data());
            const TokenQuant want = token_quant(y.data(), n, bits, clip);
            std::vector<uint8_t> u_ref(n), u(n);
            quantize_a_u8_ref(y.data(), u_ref.data(), n, want.delta, want.range(bits), -want.lo);
            for (const TableLookupVariant& v : table_lookup_variants()) {
              if (!v.available) continue;
              std::fill(u.begin(), u.end(), uint8_t(7));
              const TokenQuant got = v.token_u8(x.data(), n, delta, r, table.data(), valley, bits, clip, u.data());
              ASSERT_EQ(u, u_ref) << v.name << " " << name << " lo " << lo << " bits " << bits << " n " << n;
              ASSERT_EQ(got.delta, want.delta) << v.name << " " << name << " n " << n;
              ASSERT_EQ(got.lo, want.lo) << v.name << " " << name << " n " << n;
            }
            std::fill(u.begin(), u.end(), uint8_t(7));
            const TokenQuant got = table_lookup_token_u8(x.data(), n, delta, r, table.data(), valley, bits, clip, u.data());
            ASSERT_EQ(u, u_ref) << "dispatched " << name << " n " << n;
            ASSERT_EQ(got.delta, want.delta) << "dispatched " << name;
          }
    }
  }
}

double gelu_double(double v) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); }

TEST(GeluTable, EntriesAreGeluOfTheGridPointsWithinFloatError) {
  const GeluTable t{8, 0.05f, -100};
  const std::vector<float> v = gelu_table_values(t);
  ASSERT_EQ(v.size(), 256u);
  for (size_t k = 0; k < v.size(); ++k) {
    const double x = double(float(t.lo + int32_t(k)) * t.scale);
    // the bound the float GELU kernel is held to (test_kernels.cpp): 1e-6 · (1 + |GELU|)
    EXPECT_NEAR(v[k], gelu_double(x), 1e-6 * (1.0 + std::fabs(gelu_double(x)))) << k << " x=" << x;
  }
}

// Mean squared GELU-output error of a grid on samples x, in double.
double grid_mse(const std::vector<float>& x, float delta, QRange r) {
  static std::vector<double> g;  // GELU of the samples (the same x in every call of the test)
  if (g.size() != x.size()) {
    g.clear();
    for (float v : x) g.push_back(gelu_double(v));
  }
  double e = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double d = gelu_double(double(float(quantize_one(x[i], delta, r)) * delta)) - g[i];
    e += d * d;
  }
  return e / double(x.size());
}

TEST(GeluTable, FitIsNearTheBruteForceOptimumAndBeatsTheMinMaxGrid) {
  // fc1-like outputs: mostly negative around −1, a long positive tail, a few large outliers.
  std::mt19937_64 rng(11);
  std::normal_distribution<float> nd(-1.0f, 1.2f);
  std::exponential_distribution<float> ed(0.8f);
  std::vector<float> x(12000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = i % 10 == 0 ? ed(rng) : nd(rng);
  x[7] = 14.0f;
  x[8] = -9.0f;
  for (int bits : {6, 8}) {
    const GeluTable t = fit_gelu_table(x.data(), x.size(), bits);
    EXPECT_EQ(t.bits, bits);
    const int32_t span = (1 << bits) - 1;
    const double fit = grid_mse(x, t.scale, t.range());
    const float minmax_delta = (14.0f + 9.0f) / float(span);
    const double minmax = grid_mse(x, minmax_delta, {int32_t(std::nearbyint(-9.0f / minmax_delta)),
                                                     int32_t(std::nearbyint(-9.0f / minmax_delta)) + span});
    EXPECT_LT(fit, 0.8 * minmax) << bits;
    // brute force over a dense grid of intervals [a, b]
    double best = INFINITY;
    for (float a = -9.0f; a <= -0.5f; a += 0.25f)
      for (float b = 2.0f; b <= 14.0f; b += 0.5f) {
        const float d = (b - a) / float(span);
        const int32_t lo = int32_t(std::nearbyint(a / d));
        best = std::min(best, grid_mse(x, d, {lo, lo + span}));
      }
    EXPECT_LT(fit, 1.15 * best) << bits << ": fit " << fit << " brute force " << best;
  }
}

TEST(GeluTable, PlanRoundTripAndErrors) {
  QuantPlan p;
  p.method = "minmax";
  p.tool_version = "test";
  p.architecture = "vit_test";
  SitePlan fc1;
  fc1.x.bits = fc1.w.bits = 8;
  fc1.x.scale = fc1.w.scale = 0.01f;
  p.sites["blocks.0.mlp.fc1"] = fc1;
  p.gelu_tables["blocks.0.mlp.fc1"] = GeluTable{8, 0.0371f, -77};
  const nlohmann::ordered_json j = plan_to_json(p);
  EXPECT_EQ(j["format_version"], 5);
  EXPECT_EQ(plan_from_json(j, "plan.json"), p);
  auto error = [&](auto edit) {
    nlohmann::ordered_json k = j;
    edit(k);
    try {
      plan_from_json(k, "plan.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error([](auto& k) { k["gelu_tables"]["blocks.0.mlp.fc1"]["bits"] = 11; })
                .find("gelu_tables.blocks.0.mlp.fc1.bits: must be an integer in [4, 10]"),
            std::string::npos);
  EXPECT_NE(error([](auto& k) { k["gelu_tables"]["blocks.0.mlp.fc1"]["scale"] = -1.0; }).find("scale: must be positive"),
            std::string::npos);
  EXPECT_NE(error([](auto& k) { k["gelu_tables"]["blocks.0.mlp.fc2"] = k["gelu_tables"]["blocks.0.mlp.fc1"]; })
                .find("is not an fc1 site"),
            std::string::npos);
  EXPECT_NE(error([](auto& k) { k["gelu_tables"]["blocks.1.mlp.fc1"] = k["gelu_tables"]["blocks.0.mlp.fc1"]; })
                .find("needs its fc1 site quantized"),
            std::string::npos);
  EXPECT_NE(error([](auto& k) { k["gelu_tables"]["blocks.0.mlp.fc1"]["zero"] = 1; }).find("is not a GELU table field"),
            std::string::npos);
  EXPECT_NE(error([](auto& k) { k["format_version"] = 9; }).find("format_version"), std::string::npos);
}

}  // namespace
}  // namespace vitq
