// resize_pil, center_crop, rgb_to_gray and preprocess: small cases whose expected values come
// from Pillow 9.4 / torchvision 0.14 (computed with them, noted per case) or from the
// definitions of the transforms. Bulk bit-exactness against PIL: tests/parity/test_preprocess.py.
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <array>
#include <vector>

#include "core/error.h"
#include "data/image.h"

namespace vitq {
namespace {

Image make(int w, int h, int c, std::vector<uint8_t> px) {
  Image img;
  img.width = w;
  img.height = h;
  img.channels = c;
  img.pixels = std::move(px);
  return img;
}

Image pattern(int w, int h, int c) {
  std::vector<uint8_t> px(size_t(w) * size_t(h) * size_t(c));
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t((i * 37 + i / 7) & 0xFF);
  return make(w, h, c, px);
}

TEST(DataResize, MatchesPillowOnSmallRows) {
  // Values printed by Pillow 9.4: Image.fromarray(row).resize((w, 1), filter).
  const Image two = make(2, 1, 1, {0, 255});
  EXPECT_EQ(resize_pil(two, 1, 1, Interp::Bilinear).pixels, std::vector<uint8_t>{128});
  EXPECT_EQ(resize_pil(two, 1, 1, Interp::Bicubic).pixels, std::vector<uint8_t>{128});
  const Image three = make(3, 1, 1, {10, 20, 30});
  EXPECT_EQ(resize_pil(three, 5, 1, Interp::Nearest).pixels, (std::vector<uint8_t>{10, 10, 20, 30, 30}));
  EXPECT_EQ(resize_pil(three, 5, 1, Interp::Bilinear).pixels, (std::vector<uint8_t>{10, 14, 20, 26, 30}));
  EXPECT_EQ(resize_pil(three, 5, 1, Interp::Bicubic).pixels, (std::vector<uint8_t>{9, 13, 20, 27, 31}));
  const Image four = make(4, 1, 1, {10, 20, 30, 40});
  EXPECT_EQ(resize_pil(four, 2, 1, Interp::Nearest).pixels, (std::vector<uint8_t>{20, 40}));
  // Bicubic overshoot is clipped at both ends.
  const Image step = make(6, 1, 1, {0, 0, 255, 255, 0, 0});
  EXPECT_EQ(resize_pil(step, 4, 1, Interp::Bicubic).pixels, (std::vector<uint8_t>{0, 180, 180, 0}));
  EXPECT_EQ(resize_pil(step, 9, 1, Interp::Bicubic).pixels,
            (std::vector<uint8_t>{0, 0, 31, 224, 255, 224, 31, 0, 0}));
}

TEST(DataResize, ConstantImagesStayConstant) {
  // The normalised fixed-point weights sum to 1 within rounding that cannot move a sample.
  for (Interp interp : {Interp::Nearest, Interp::Bilinear, Interp::Bicubic})
    for (auto [w, h] : {std::pair{7, 3}, {1, 1}, {300, 17}, {5, 200}}) {
      Image img = make(13, 11, 3, std::vector<uint8_t>(13 * 11 * 3, 201));
      Image out = resize_pil(img, w, h, interp);
      ASSERT_EQ(out.pixels.size(), size_t(w * h * 3));
      for (uint8_t v : out.pixels) ASSERT_EQ(v, 201) << interp_name(interp) << " " << w << "x" << h;
    }
}

TEST(DataResize, SameSizeIsACopyAndRowsAreIndependentWhenHeightIsKept) {
  const Image img = pattern(19, 6, 3);
  EXPECT_EQ(resize_pil(img, 19, 6, Interp::Bicubic).pixels, img.pixels);
  // Height unchanged: Pillow skips the vertical pass, so each row is resized on its own.
  const Image out = resize_pil(img, 11, 6, Interp::Bicubic);
  for (int y = 0; y < 6; ++y) {
    Image row = make(19, 1, 3, std::vector<uint8_t>(img.pixels.begin() + y * 19 * 3, img.pixels.begin() + (y + 1) * 19 * 3));
    const Image r = resize_pil(row, 11, 1, Interp::Bicubic);
    EXPECT_TRUE(std::equal(r.pixels.begin(), r.pixels.end(), out.pixels.begin() + y * 11 * 3)) << "row " << y;
  }
}

TEST(DataResize, GreyAndRgbAgreeChannelWise) {
  // Resizing an L image equals resizing its RGB replica (what preprocess relies on).
  const Image grey = pattern(23, 17, 1);
  const Image rgb = gray_to_rgb(grey);
  for (Interp interp : {Interp::Nearest, Interp::Bilinear, Interp::Bicubic}) {
    const Image a = resize_pil(grey, 9, 31, interp), b = resize_pil(rgb, 9, 31, interp);
    ASSERT_EQ(gray_to_rgb(a).pixels, b.pixels) << interp_name(interp);
  }
}

// The crop [x0, x0 + w) x [y0, y0 + h) of an image, plainly.
Image crop_of(const Image& img, int x0, int y0, int w, int h) {
  const size_t C = size_t(img.channels);
  std::vector<uint8_t> px;
  for (int y = y0; y < y0 + h; ++y)
    px.insert(px.end(), img.pixels.begin() + (size_t(y) * size_t(img.width) + size_t(x0)) * C,
              img.pixels.begin() + (size_t(y) * size_t(img.width) + size_t(x0 + w)) * C);
  return make(w, h, img.channels, px);
}

TEST(DataResize, AWindowHasThePixelsOfTheWholeResize) {
  // Reference: the whole resize (bit-exact against Pillow in test_preprocess.py), then cropped.
  for (int c : {1, 3})
    for (Interp interp : {Interp::Nearest, Interp::Bilinear, Interp::Bicubic})
      for (auto [sw, sh, W, H] : {std::array{37, 23, 90, 61}, {37, 23, 11, 7}, {37, 23, 37, 50}, {37, 23, 15, 23},
                                  {37, 23, 37, 23}, {1, 40, 9, 3000}, {300, 2, 20000, 9}}) {
        const Image img = pattern(sw, sh, c);
        const Image full = resize_pil(img, W, H, interp);
        for (auto [x0, y0, w, h] : {std::array{0, 0, W, H}, {0, 0, 1, 1}, {W - 1, H - 1, 1, 1},
                                    {W / 3, H / 4, W / 2, H / 2}, {W / 2, 0, W - W / 2, 1}, {0, H / 2, 1, H - H / 2}}) {
          const Image got = resize_pil_window(img, W, H, interp, x0, y0, w, h);
          ASSERT_EQ(got.width, w);
          ASSERT_EQ(got.height, h);
          ASSERT_EQ(got.pixels, crop_of(full, x0, y0, w, h).pixels)
              << interp_name(interp) << " c" << c << " " << sw << "x" << sh << " -> " << W << "x" << H << " window "
              << w << "x" << h << "+" << x0 << "+" << y0;
        }
      }
  const Image img = pattern(5, 5, 3);
  for (auto [x0, y0, w, h] : {std::array{-1, 0, 2, 2}, {0, 0, 10, 1}, {8, 0, 2, 1}, {0, 0, 0, 1}, {0, 9, 1, 1}})
    EXPECT_THROW(resize_pil_window(img, 9, 9, Interp::Bilinear, x0, y0, w, h), Error);
}

TEST(DataPreprocess, ExtremeAspectRatiosCostTheCropNotTheResize) {
  // A 1 x 4200 image (a ~100-byte PNG) resizes to 248 x 1041600 before the 224 crop: 775 MB if
  // the whole resize were made (what the image fuzzer found). The crop alone is computed now.
  // Reference: a 1-pixel-wide row resizes horizontally to a constant row (one tap of weight 1),
  // so the result is the vertical resize of the single column, cropped, in every column.
  Image column = pattern(1, 4200, 3);
  Preprocess p;
  p.crop_pct = 0.9;  // Resize(248)
  p.mean = {0, 0, 0};
  p.std = {1, 1, 1};
  int rw = 0, rh = 0;
  preprocess_resize_size(1, 4200, p, &rw, &rh);
  ASSERT_EQ(rw, 248);
  ASSERT_EQ(rh, 1041600);
  rusage before{};
  getrusage(RUSAGE_SELF, &before);
  std::vector<float> out(3 * 224 * 224);
  preprocess(column, p, out.data());
  rusage after{};
  getrusage(RUSAGE_SELF, &after);
  EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 64 * 1024) << "peak RSS grew by " << after.ru_maxrss - before.ru_maxrss << " KiB";
  const Image col = resize_pil(column, 1, rh, Interp::Bicubic);
  const int top = center_crop_offset(rh, 224);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 224; ++y)
      for (int x = 0; x < 224; x += 37)
        ASSERT_EQ(out[size_t(c) * 224 * 224 + size_t(y) * 224 + size_t(x)],
                  static_cast<float>(col.pixels[size_t(top + y) * 3 + size_t(c)]) / 255.0f)
            << "channel " << c << " row " << y << " column " << x;
}

TEST(DataColor, LumaUsesPilRounding) {
  // Image.fromarray(...).convert("L") in Pillow 9.4.
  const Image rgb = make(4, 1, 3, {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 200, 30});
  EXPECT_EQ(rgb_to_gray(rgb).pixels, (std::vector<uint8_t>{76, 150, 29, 124}));
  // Grey -> RGB -> L is the identity for every level.
  std::vector<uint8_t> levels(256);
  for (int i = 0; i < 256; ++i) levels[size_t(i)] = uint8_t(i);
  const Image g = make(256, 1, 1, levels);
  EXPECT_EQ(rgb_to_gray(gray_to_rgb(g)).pixels, levels);
}

TEST(DataCrop, OffsetsRoundHalfToEven) {
  // One row of 0..W-1; the first cropped value is the left offset.
  auto left_of = [](int W, int w) {
    std::vector<uint8_t> px(static_cast<size_t>(W));
    for (int i = 0; i < W; ++i) px[size_t(i)] = uint8_t(i);
    return int(center_crop(make(W, 1, 1, px), w, 1).pixels[0]);
  };
  EXPECT_EQ(left_of(4, 2), 1);  // 1.0
  EXPECT_EQ(left_of(5, 2), 2);  // round(1.5) = 2
  EXPECT_EQ(left_of(7, 2), 2);  // round(2.5) = 2
  EXPECT_EQ(left_of(9, 2), 4);  // round(3.5) = 4
  EXPECT_EQ(left_of(11, 2), 4);  // round(4.5) = 4
  EXPECT_EQ(left_of(6, 6), 0);
  // Vertical offsets follow the same rule: 256 -> 224 starts at row 16; 7 -> 4 at row 2 (1.5).
  std::vector<uint8_t> col(7);
  for (int i = 0; i < 7; ++i) col[size_t(i)] = uint8_t(10 * i);
  EXPECT_EQ(center_crop(make(1, 7, 1, col), 1, 4).pixels, (std::vector<uint8_t>{20, 30, 40, 50}));
}

TEST(DataCrop, LargerCropIsZeroPaddedLikeTorchvision) {
  // torchvision pads (6 - 3) // 2 = 1 column on the left and 2 on the right.
  const Image img = make(3, 1, 3, {1, 1, 1, 2, 2, 2, 3, 3, 3});
  const Image out = center_crop(img, 6, 1);
  EXPECT_EQ(out.pixels, (std::vector<uint8_t>{0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 0, 0, 0, 0, 0, 0}));
  // Taller crop, narrower width: pad rows, crop columns.
  const Image img2 = make(4, 1, 1, {5, 6, 7, 8});
  EXPECT_EQ(center_crop(img2, 2, 3).pixels, (std::vector<uint8_t>{0, 0, 6, 7, 0, 0}));
}

TEST(DataPreprocess, ResizeSizeFollowsTimmAndTorchvision) {
  Preprocess p;  // 224, crop_pct 0.875 -> Resize(256)
  int w = 0, h = 0;
  preprocess_resize_size(500, 375, p, &w, &h);
  EXPECT_EQ(w, 341);  // int(256 * 500 / 375) = int(341.33)
  EXPECT_EQ(h, 256);
  preprocess_resize_size(375, 500, p, &w, &h);
  EXPECT_EQ(w, 256);
  EXPECT_EQ(h, 341);
  p.crop_pct = 0.9;  // floor(224 / 0.9) = floor(248.89) = 248
  preprocess_resize_size(500, 375, p, &w, &h);
  EXPECT_EQ(w, 330);  // int(248 * 500 / 375) = int(330.67)
  EXPECT_EQ(h, 248);
  preprocess_resize_size(300, 300, p, &w, &h);
  EXPECT_EQ(w, 248);
  EXPECT_EQ(h, 248);
  p.height = 200, p.width = 160;  // non-square: tuple (int(200 / 0.9), int(160 / 0.9))
  preprocess_resize_size(500, 375, p, &w, &h);
  EXPECT_EQ(h, 222);
  EXPECT_EQ(w, 177);
  p.resize_exact = true;
  preprocess_resize_size(500, 375, p, &w, &h);
  EXPECT_EQ(w, 160);
  EXPECT_EQ(h, 200);
}

TEST(DataPreprocess, NormalisesInTorchvisionOrderAndReplicatesGrey) {
  Preprocess p;
  p.height = p.width = 2;
  p.crop_pct = 1.0;
  p.mean = {0.5f, 0.25f, 0.125f};
  p.std = {0.5f, 0.2f, 0.1f};
  // Already 2x2: torchvision does not resize, the crop is the whole image.
  const Image rgb = make(2, 2, 3, {255, 0, 51, 0, 255, 102, 128, 64, 32, 1, 2, 3});
  std::vector<float> out(12);
  preprocess(rgb, p, out.data());
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 4; ++i) {
      const float x = static_cast<float>(rgb.pixels[size_t(i * 3 + c)]) / 255.0f;
      EXPECT_EQ(out[size_t(c * 4 + i)], (x - p.mean[size_t(c)]) / p.std[size_t(c)]);
    }
  // An L image for a 3-channel model: the same grey in every channel, each normalised.
  const Image grey = make(2, 2, 1, {0, 85, 170, 255});
  preprocess(grey, p, out.data());
  for (int c = 0; c < 3; ++c)
    EXPECT_EQ(out[size_t(c * 4 + 1)], (85.0f / 255.0f - p.mean[size_t(c)]) / p.std[size_t(c)]);
  // A 1-channel model converts RGB with PIL's luma.
  p.channels = 1;
  preprocess(make(2, 2, 3, {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 200, 30}), p, out.data());
  const float luma[4] = {76, 150, 29, 124};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(out[size_t(i)], (luma[i] / 255.0f - 0.5f) / 0.5f);
}

TEST(DataPreprocess, InvalidSettingsAreDataErrors) {
  std::vector<float> out(3 * 4 * 4);
  const Image img = pattern(8, 8, 3);
  auto expect_error = [&](Preprocess p) {
    try {
      preprocess(img, p, out.data());
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Data);
    }
  };
  Preprocess p;
  p.height = p.width = 4;
  Preprocess bad = p;
  bad.channels = 2;
  expect_error(bad);
  bad = p;
  bad.crop_pct = 0;
  expect_error(bad);
  bad = p;
  bad.std[1] = 0;
  expect_error(bad);
  bad = p;
  bad.width = 0;
  expect_error(bad);
  EXPECT_NO_THROW(preprocess(img, p, out.data()));
}

}  // namespace
}  // namespace vitq
