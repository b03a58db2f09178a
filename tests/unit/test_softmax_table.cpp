// Softmax with a table exponent (numerics/softmax_table.h; plan.h: SoftmaxTable): every variant
// gives the same bits, the result stays within one table step of the exact softmax of the gridded
// arguments and within the grid's error of the true softmax, and the plan field's JSON round trip.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/kernels.h"
#include "numerics/int8_kernels.h"
#include "numerics/softmax_table.h"
#include "quant/plan.h"

namespace vitq {
namespace {

std::vector<float> scores(size_t rows, size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0, 4);
  std::vector<float> s(rows * n);
  for (size_t i = 0; i < s.size(); ++i) s[i] = i % 13 == 0 ? 60.0f * nd(rng) : nd(rng);  // some far outliers
  return s;
}

TEST(SoftmaxTable, VariantsGiveTheSameBits) {
  for (int bits : {6, 8, 10})
    for (size_t n : {size_t(1), size_t(5), size_t(16), size_t(17), size_t(65), size_t(197)}) {
      const SoftmaxExpTable t(bits, 16.0f);
      std::vector<float> s0 = scores(7, n, 9 + n);
      if (n >= 5) {  // −∞ and far-below scores (index past the table: last), and exponent arguments on a tie
        s0[1] = -INFINITY;
        s0[n + 2] = -1e30f;
        const float k = 0.125f * t.inv_step;
        for (size_t j = 2 * n; j < 3 * n; ++j) s0[j] = s0[2 * n] - (float(j % 9) + 0.5f) / k;
      }
      std::vector<float> want = s0;
      softmax_table_rows(want.data(), 7, n, 0.125f, t);  // the dispatched one
      for (const SoftmaxTableVariant& v : softmax_table_variants()) {
        if (!v.available) continue;
        std::vector<float> got = s0;
        v.rows(got.data(), 7, n, 0.125f, t);
        ASSERT_EQ(got, want) << v.name << " bits " << bits << " n " << n;
      }
    }
}

// Probabilities straight to codes: every variant gives the codes of the portable softmax followed
// by the scalar quantizer, on unsigned and signed grids (zero point 0 and 2^(b−1)), 4 and 8 bits,
// with steps from a max-based 1/255 to ones that clip most of the row.
TEST(SoftmaxTable, CodesRowEqualsSoftmaxThenQuantizer) {
  for (int bits : {8, 10})
    for (size_t n : {size_t(1), size_t(5), size_t(16), size_t(17), size_t(65), size_t(197)})
      for (int qbits : {4, 8})
        for (Grid g : {Grid::Unsigned, Grid::Signed})
          for (float delta : {1.0f / 255.0f, 1.0f / 127.0f, 0.0013f, 3e-5f}) {
            const SoftmaxExpTable t(bits, 16.0f);
            const QRange r = qrange(qbits, g);
            const int32_t zp = g == Grid::Signed ? (int32_t(1) << (qbits - 1)) : 0;
            const std::vector<float> s0 = scores(3, n, 17 + n);
            for (size_t row = 0; row < 3; ++row) {
              std::vector<float> p(s0.begin() + long(row * n), s0.begin() + long((row + 1) * n));
              softmax_table_rows_portable(p.data(), 1, n, 0.125f, t);
              std::vector<uint8_t> want(n), got(n);
              quantize_a_u8_ref(p.data(), want.data(), n, delta, r, zp);
              for (const SoftmaxTableVariant& v : softmax_table_variants()) {
                if (!v.available) continue;
                std::vector<float> sr(s0.begin() + long(row * n), s0.begin() + long((row + 1) * n));
                std::fill(got.begin(), got.end(), uint8_t(1));
                v.codes_row(sr.data(), n, 0.125f, t, delta, r, zp, got.data());
                ASSERT_EQ(got, want) << v.name << " bits " << bits << " n " << n << " q" << qbits << " delta " << delta;
              }
              std::vector<float> sr(s0.begin() + long(row * n), s0.begin() + long((row + 1) * n));
              softmax_table_codes_row(sr.data(), n, 0.125f, t, delta, r, zp, got.data());
              ASSERT_EQ(got, want) << "dispatched";
            }
          }
}

TEST(SoftmaxTable, WithinOneStepOfTheReferenceAndNearTheTrueSoftmax) {
  for (int bits : {8, 10}) {
    const SoftmaxExpTable t(bits, 16.0f);
    const double step = 16.0 / double((1 << bits) - 1);
    const size_t n = 197, rows = 20;
    const std::vector<float> s0 = scores(rows, n, 3);
    std::vector<float> got = s0, ref = s0, exact = s0;
    softmax_table_rows(got.data(), rows, n, 0.125f, t);
    softmax_table_rows_ref(ref.data(), rows, n, 0.125f, t);
    softmax_rows_ref(exact.data(), rows, n, 0.125f);
    for (size_t r = 0; r < rows; ++r) {
      double sum = 0;
      for (size_t j = 0; j < n; ++j) sum += got[r * n + j];
      EXPECT_NEAR(sum, 1.0, 1e-5) << r;
    }
    for (size_t i = 0; i < got.size(); ++i) {
      // The float index may round the other way at a tie of the double one: one table step, e^Δ.
      EXPECT_NEAR(got[i], ref[i], (std::exp(step) - 1.0) * ref[i] + 2e-6) << bits << " " << i;
      // Against the true softmax: each e within e^(Δ/2) of exact (round to nearest grid point), the
      // normalisation at most doubling that; arguments beyond the range read the last entry.
      EXPECT_NEAR(got[i], exact[i], (std::exp(step) - 1.0) * exact[i] + 2e-6) << bits << " " << i;
    }
  }
}

TEST(SoftmaxTable, TablesHoldTheExponentials) {
  const SoftmaxExpTable t(10, 16.0f);
  const double step = 16.0 / 1023.0;
  EXPECT_EQ(t.hi[0], 1.0f);
  EXPECT_EQ(t.lo[0], 1.0f);
  for (int i : {1, 31, 32, 100, 512, 1023}) {
    const double e = double(t.hi[i >> 5]) * double(t.lo[i & 31]);
    EXPECT_NEAR(e, std::exp(-i * step), 3e-7 * std::exp(-i * step)) << i;
  }
  EXPECT_THROW(SoftmaxExpTable(11, 16.0f), Error);
}

TEST(SoftmaxTable, PlanRoundTripAndErrors) {
  QuantPlan p;
  p.method = "minmax";
  p.tool_version = "test";
  p.architecture = "vit_test";
  p.softmax_table = SoftmaxTable{8, 12.0f};
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
  EXPECT_NE(error([](auto& k) { k["softmax_table"]["bits"] = 5; }).find("softmax_table.bits: must be an integer in [6, 10]"),
            std::string::npos);
  EXPECT_NE(error([](auto& k) { k["softmax_table"]["range"] = 0.5; }).find("softmax_table.range: must be in [1, 88]"),
            std::string::npos);
  EXPECT_NE(error([](auto& k) { k["softmax_table"]["step"] = 1; }).find("is not a softmax table field"),
            std::string::npos);
}

}  // namespace
}  // namespace vitq
