// add_mirrored_views: the copies are the originals with each row reversed, in every channel,
// after all originals; names and hash follow; a second call is refused.
#include <gtest/gtest.h>

#include "core/error.h"
#include "quant/calib_data.h"

namespace vitq {
namespace {

TEST(CalibMirror, CopiesAreRowReversedOriginals) {
  const int n = 3, C = 2, H = 4, W = 5;
  CalibrationSet cs;
  cs.n = n;
  cs.images.resize(size_t(n * C * H * W));
  for (size_t i = 0; i < cs.images.size(); ++i) cs.images[i] = float(i) * 0.25f - 7.0f;
  for (int i = 0; i < n; ++i) cs.names.push_back("img" + std::to_string(i));
  cs.hash = fnv1a64(cs.images.data(), cs.images.size() * sizeof(float));
  const uint64_t h0 = cs.hash;
  const std::vector<float> before(cs.images.begin(), cs.images.end());

  add_mirrored_views(cs, C, H, W);
  ASSERT_EQ(cs.n, 2 * n);
  ASSERT_EQ(cs.images.size(), 2 * before.size());
  ASSERT_EQ(cs.names.size(), size_t(2 * n));
  EXPECT_TRUE(cs.mirrored);
  EXPECT_NE(cs.hash, h0);
  auto at = [&](int i, int c, int y, int x) { return size_t(((i * C + c) * H + y) * W + x); };
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(cs.names[size_t(n + i)], "img" + std::to_string(i) + " (mirrored)");
    for (int c = 0; c < C; ++c)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
          EXPECT_EQ(cs.images[at(i, c, y, x)], before[at(i, c, y, x)]);             // originals kept
          EXPECT_EQ(cs.images[at(n + i, c, y, x)], before[at(i, c, y, W - 1 - x)]);  // copy mirrored
        }
  }
  const nlohmann::ordered_json id = cs.identity("src", 0);
  EXPECT_EQ(id["images"], 2 * n);
  EXPECT_EQ(id["mirrored"], true);
  EXPECT_THROW(add_mirrored_views(cs, C, H, W), Error);
}

TEST(CalibMirror, RefusesASizeThatDoesNotMatch) {
  CalibrationSet cs;
  cs.n = 2;
  cs.images.resize(10);
  cs.names = {"a", "b"};
  EXPECT_THROW(add_mirrored_views(cs, 1, 2, 3), Error);
}

}  // namespace
}  // namespace vitq
