// eval --reference: agreement and KL(p_ref || p) against values worked out by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "eval/evaluate.h"

namespace vitq {
namespace {

TEST(ReferenceAgreement, AgreementAndKlAgainstHandValues) {
  ReferenceAgreement a;
  // Image 0: p = (1/2, 1/2) (ties: class 0), p_ref = (3/4, 1/4): same top-1,
  // KL = 3/4 ln(3/2) + 1/4 ln(1/2). Image 1: p = (1/4, 3/4) vs p_ref = (3/4, 1/4): differ,
  // KL = 3/4 ln 3 + 1/4 ln(1/3) = 1/2 ln 3. Logits shifted by constants (softmax ignores them).
  const float model[] = {0.0f, 0.0f, 5.0f, 5.0f + std::log(3.0f)};
  const float ref[] = {std::log(3.0f) - 2.0f, -2.0f, 1.0f + std::log(3.0f), 1.0f};
  a.add(model, ref, 2, 2);
  EXPECT_EQ(a.images(), 2u);
  EXPECT_EQ(a.agree(), 1u);
  EXPECT_DOUBLE_EQ(a.agreement_pct(), 50.0);
  const double kl0 = 0.75 * std::log(1.5) + 0.25 * std::log(0.5), kl1 = 0.5 * std::log(3.0);
  EXPECT_NEAR(a.kl_mean(), (kl0 + kl1) / 2, 1e-6);
  // A model against itself: full agreement, zero divergence, also for wide logits.
  ReferenceAgreement s;
  const float wide[] = {-80.0f, 3.0f, 90.0f, 12.0f};
  s.add(wide, wide, 1, 4);
  EXPECT_EQ(s.agree(), 1u);
  EXPECT_EQ(s.kl_mean(), 0.0);
}

}  // namespace
}  // namespace vitq
