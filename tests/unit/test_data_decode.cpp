// Decoding: format coverage on hand-made files whose expected pixels follow from the PNG spec
// and PIL's documented conversions, and robustness (every corrupt input is an Error(Data)
// naming the file; never a crash). Pixel parity with PIL itself: tests/parity/test_preprocess.py.
#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "data/encode_png.h"
#include "data/image.h"
#include "data_test_util.h"

namespace vitq {
namespace {

using testutil::make_jpeg;
using testutil::make_png;
using testutil::TempDir;
using testutil::write_file;

// Runs f, which must throw Error(Data) whose message contains `name` and `reason`.
template <class F>
void expect_data_error(F f, const std::string& name, const std::string& reason = "") {
  try {
    f();
    ADD_FAILURE() << "no error for " << name;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Data) << e.what();
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    if (!reason.empty()) {
      EXPECT_NE(std::string(e.what()).find(reason), std::string::npos) << e.what();
    }
  }
}

std::vector<uint8_t> rgb_at(const Image& img, int x, int y) {
  return {img.at(x, y, 0), img.at(x, y, 1), img.at(x, y, 2)};
}

TEST(DataDecode, JpegRgbRoundTripIsClose) {
  const int w = 37, h = 21;
  const std::vector<uint8_t> src = testutil::smooth_rgb(w, h);
  const std::vector<uint8_t> jpg = make_jpeg(w, h, 3, src, 95);
  Image img = decode_image_memory(jpg.data(), jpg.size(), "m.jpg");
  ASSERT_EQ(img.width, w);
  ASSERT_EQ(img.height, h);
  ASSERT_EQ(img.channels, 3);
  ASSERT_EQ(img.pixels.size(), src.size());
  double err = 0;
  for (size_t i = 0; i < src.size(); ++i) err += std::abs(int(img.pixels[i]) - int(src[i]));
  EXPECT_LT(err / double(src.size()), 6.0);  // lossy, but the same picture
}

TEST(DataDecode, GreyJpegIsReplicated) {
  const int w = 16, h = 9;
  std::vector<uint8_t> g(size_t(w * h));
  for (size_t i = 0; i < g.size(); ++i) g[i] = uint8_t(i * 7);
  const std::vector<uint8_t> jpg = make_jpeg(w, h, 1, g, 100);
  Image img = decode_image_memory(jpg.data(), jpg.size(), "g.jpg");
  ASSERT_EQ(img.channels, 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      EXPECT_EQ(img.at(x, y, 0), img.at(x, y, 1));
      EXPECT_EQ(img.at(x, y, 0), img.at(x, y, 2));
    }
}

TEST(DataDecode, CmykJpegUsesAdobeInvertedConvention) {
  // Stored (Adobe-inverted) samples: 255 everywhere = no ink = white; stored K = 0 is full
  // black whatever the other inks. Flat colours survive JPEG at quality 100 exactly.
  const int w = 16, h = 16;
  std::vector<uint8_t> cmyk(size_t(w * h) * 4, 255);
  for (int y = 8; y < h; ++y)
    for (int x = 0; x < w; ++x) cmyk[(size_t(y) * w + size_t(x)) * 4 + 3] = 0;
  const std::vector<uint8_t> jpg = make_jpeg(w, h, 4, cmyk, 100);
  Image img = decode_image_memory(jpg.data(), jpg.size(), "cmyk.jpg");
  ASSERT_EQ(img.channels, 3);
  EXPECT_EQ(rgb_at(img, 3, 3), (std::vector<uint8_t>{255, 255, 255}));
  EXPECT_EQ(rgb_at(img, 3, 12), (std::vector<uint8_t>{0, 0, 0}));
}

TEST(DataDecode, PngColourTypesAndBitDepths) {
  TempDir dir;
  // 8-bit RGB, exact.
  {
    const std::string p = dir / "rgb8.png";
    write_file(p, make_png(2, 1, 8, 2, {1, 2, 3, 250, 251, 252}));
    Image img = decode_image_file(p);
    EXPECT_EQ(img.pixels, (std::vector<uint8_t>{1, 2, 3, 250, 251, 252}));
  }
  // RGBA: alpha dropped without compositing (PIL's convert("RGB")).
  {
    const std::string p = dir / "rgba8.png";
    write_file(p, make_png(1, 1, 8, 6, {10, 20, 30, 0}));
    EXPECT_EQ(decode_image_file(p).pixels, (std::vector<uint8_t>{10, 20, 30}));
  }
  // Grey + alpha: grey replicated, alpha dropped.
  {
    const std::string p = dir / "la8.png";
    write_file(p, make_png(1, 1, 8, 4, {77, 5}));
    EXPECT_EQ(decode_image_file(p).pixels, (std::vector<uint8_t>{77, 77, 77}));
  }
  // Low bit depth grey is scaled to the full range: 2-bit 0..3 -> 0, 85, 170, 255.
  {
    const std::string p = dir / "g2.png";
    write_file(p, make_png(4, 1, 2, 0, {0, 1, 2, 3}));
    Image img = decode_image_file(p);
    EXPECT_EQ(img.at(1, 0, 0), 85);
    EXPECT_EQ(img.at(2, 0, 1), 170);
    EXPECT_EQ(img.at(3, 0, 2), 255);
  }
  {
    const std::string p = dir / "g1.png";
    write_file(p, make_png(3, 1, 1, 0, {1, 0, 1}));
    Image img = decode_image_file(p);
    EXPECT_EQ(img.at(0, 0, 0), 255);
    EXPECT_EQ(img.at(1, 0, 0), 0);
  }
  {
    const std::string p = dir / "g4.png";
    write_file(p, make_png(2, 1, 4, 0, {0xA, 0xF}));
    Image img = decode_image_file(p);
    EXPECT_EQ(img.at(0, 0, 0), 0xAA);
    EXPECT_EQ(img.at(1, 0, 0), 0xFF);
  }
  // 16-bit RGB: the high byte (PIL's "RGB;16B").
  {
    const std::string p = dir / "rgb16.png";
    write_file(p, make_png(1, 1, 16, 2, {0x12FF, 0xAB00, 0x00FF}));
    EXPECT_EQ(decode_image_file(p).pixels, (std::vector<uint8_t>{0x12, 0xAB, 0x00}));
  }
  // 16-bit grey: vitq's documented choice, the high byte (PIL would clip 256.. to 255).
  {
    const std::string p = dir / "g16.png";
    write_file(p, make_png(4, 1, 16, 0, {0x0100, 0x7FFF, 0x8000, 0x00FF}));
    Image img = decode_image_file(p);
    EXPECT_EQ(img.at(0, 0, 0), 0x01);
    EXPECT_EQ(img.at(1, 0, 1), 0x7F);
    EXPECT_EQ(img.at(2, 0, 2), 0x80);
    EXPECT_EQ(img.at(3, 0, 0), 0x00);
  }
  // 16-bit grey + alpha: high byte of the grey, replicated.
  {
    const std::string p = dir / "la16.png";
    write_file(p, make_png(1, 1, 16, 4, {0xC3A0, 0x1234}));
    EXPECT_EQ(decode_image_file(p).pixels, (std::vector<uint8_t>{0xC3, 0xC3, 0xC3}));
  }
}

TEST(DataDecode, PaletteExpansionIgnoresTransparencyAndUsesGreyRampPastThePalette) {
  TempDir dir;
  const std::string p = dir / "pal.png";
  // Two palette entries, a tRNS chunk, and indices 0, 1, 5 and 200 (the last two past PLTE:
  // PIL's palette defaults to the grey ramp there).
  write_file(p, make_png(4, 1, 8, 3, {0, 1, 5, 200}, {10, 20, 30, 40, 50, 60}, {0, 128}));
  Image img = decode_image_file(p);
  EXPECT_EQ(rgb_at(img, 0, 0), (std::vector<uint8_t>{10, 20, 30}));
  EXPECT_EQ(rgb_at(img, 1, 0), (std::vector<uint8_t>{40, 50, 60}));
  EXPECT_EQ(rgb_at(img, 2, 0), (std::vector<uint8_t>{5, 5, 5}));
  EXPECT_EQ(rgb_at(img, 3, 0), (std::vector<uint8_t>{200, 200, 200}));
  // 4-bit palette indices are unpacked, not scaled.
  const std::string p4 = dir / "pal4.png";
  write_file(p4, make_png(3, 1, 4, 3, {2, 0, 1}, {1, 2, 3, 4, 5, 6, 7, 8, 9}));
  Image img4 = decode_image_file(p4);
  EXPECT_EQ(rgb_at(img4, 0, 0), (std::vector<uint8_t>{7, 8, 9}));
  EXPECT_EQ(rgb_at(img4, 1, 0), (std::vector<uint8_t>{1, 2, 3}));
}

TEST(DataDecode, FormatComesFromTheSignatureNotTheExtension) {
  TempDir dir;
  const std::string p = dir / "actually_a_png.JPEG";
  write_file(p, make_png(1, 1, 8, 0, {42}));
  EXPECT_EQ(decode_image_file(p).pixels, (std::vector<uint8_t>{42, 42, 42}));
}

TEST(DataDecode, MissingEmptyGarbageAndOtherFormatsAreDataErrors) {
  TempDir dir;
  expect_data_error([&] { decode_image_file(dir / "nope.jpg"); }, "nope.jpg", "cannot open");
  expect_data_error([&] { decode_image_file(dir.path().string()); }, dir.path().string(), "cannot read");
  write_file(dir / "empty.png", {});
  expect_data_error([&] { decode_image_file(dir / "empty.png"); }, "empty.png", "empty");
  std::vector<uint8_t> garbage(3000);
  std::mt19937 rng(7);
  for (auto& b : garbage) b = uint8_t(rng());
  garbage[0] = 0x42;  // not a JPEG/PNG signature
  write_file(dir / "garbage.jpg", garbage);
  expect_data_error([&] { decode_image_file(dir / "garbage.jpg"); }, "garbage.jpg", "not a JPEG or PNG");
  write_file(dir / "anim.jpg", {'G', 'I', 'F', '8', '9', 'a', 0, 0});
  expect_data_error([&] { decode_image_file(dir / "anim.jpg"); }, "anim.jpg", "GIF");
  // JPEG and PNG signatures followed by garbage.
  std::vector<uint8_t> fake_jpeg = {0xFF, 0xD8, 0xFF};
  fake_jpeg.insert(fake_jpeg.end(), garbage.begin(), garbage.end());
  write_file(dir / "fake.jpg", fake_jpeg);
  expect_data_error([&] { decode_image_file(dir / "fake.jpg"); }, "fake.jpg", "invalid JPEG");
  std::vector<uint8_t> fake_png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  fake_png.insert(fake_png.end(), garbage.begin(), garbage.end());
  write_file(dir / "fake.png", fake_png);
  expect_data_error([&] { decode_image_file(dir / "fake.png"); }, "fake.png", "invalid PNG");
}

TEST(DataDecode, EveryTruncationOfAJpegIsAnError) {
  const int w = 24, h = 16;
  for (bool progressive : {false, true}) {
    const std::vector<uint8_t> jpg = make_jpeg(w, h, 3, testutil::smooth_rgb(w, h), 90, progressive);
    ASSERT_NO_THROW(decode_image_memory(jpg.data(), jpg.size(), "full.jpg"));
    for (size_t cut = 1; cut < jpg.size(); ++cut) {
      SCOPED_TRACE(cut);
      expect_data_error([&] { decode_image_memory(jpg.data(), cut, "cut.jpg"); }, "cut.jpg");
    }
  }
}

TEST(DataDecode, EveryTruncationOfAPngIsAnError) {
  std::vector<uint32_t> samples(20 * 13 * 3);
  for (size_t i = 0; i < samples.size(); ++i) samples[i] = uint32_t(i * 31 % 256);
  const std::vector<uint8_t> png = make_png(20, 13, 8, 2, samples);
  ASSERT_NO_THROW(decode_image_memory(png.data(), png.size(), "full.png"));
  // A cut inside the IEND chunk (the last 12 bytes) leaves a complete image, which PIL and
  // vitq accept; every earlier cut must fail (PIL also tolerates a cut in IDAT's CRC, vitq
  // does not: the file is damaged).
  for (size_t cut = 1; cut + 12 < png.size(); ++cut) {
    SCOPED_TRACE(cut);
    expect_data_error([&] { decode_image_memory(png.data(), cut, "cut.png"); }, "cut.png");
  }
}

// Random corruption must end in a decoded image or an Error(Data): no crash, no other exception.
TEST(DataDecode, CorruptedBytesNeverCrash) {
  const int w = 40, h = 24;
  std::vector<uint32_t> samples(size_t(w * h) * 3);
  for (size_t i = 0; i < samples.size(); ++i) samples[i] = uint32_t((i * 13) & 0xFF);
  const std::vector<std::vector<uint8_t>> files = {
      make_jpeg(w, h, 3, testutil::smooth_rgb(w, h), 85), make_jpeg(w, h, 3, testutil::smooth_rgb(w, h), 85, true),
      make_png(w, h, 8, 2, samples)};
  std::mt19937 rng(12345);
  int errors = 0, decoded = 0;
  for (const auto& original : files) {
    for (int iter = 0; iter < 400; ++iter) {
      std::vector<uint8_t> f = original;
      const int flips = 1 + int(rng() % 8);
      for (int k = 0; k < flips; ++k) f[2 + rng() % (f.size() - 2)] = uint8_t(rng());
      try {
        Image img = decode_image_memory(f.data(), f.size(), "fuzz");
        EXPECT_EQ(img.channels, 3);
        EXPECT_EQ(img.pixels.size(), size_t(img.width) * size_t(img.height) * 3);
        ++decoded;
      } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::Data);
        ++errors;
      }
    }
  }
  EXPECT_GT(errors, 0);
  EXPECT_GT(decoded, 0);
}

TEST(DataDecode, OversizedHeaderIsRejectedBeforeAllocating) {
  // A PNG header announcing 60000 x 60000 pixels (3.6e9 > PIL's decompression-bomb limit).
  std::vector<uint8_t> png = make_png(1, 1, 8, 0, {0});
  png[16] = 0x00, png[17] = 0x00, png[18] = 0xEA, png[19] = 0x60;  // width 60000
  png[20] = 0x00, png[21] = 0x00, png[22] = 0xEA, png[23] = 0x60;  // height 60000
  const uint32_t crc = uint32_t(crc32(0, &png[12], 17));
  for (int i = 0; i < 4; ++i) png[29 + size_t(i)] = uint8_t(crc >> (24 - 8 * i));
  expect_data_error([&] { decode_image_memory(png.data(), png.size(), "huge.png"); }, "huge.png", "exceeds");
}

}  // namespace
}  // namespace vitq

namespace vitq {
namespace {

// encode_png (vitq synth's output): every pixel back through the decoder (grey replicated to RGB
// as PIL's convert("RGB") does), the same bytes for the same pixels, and other bytes for others.
TEST(DataEncodePng, RoundTripsGreyAndRgb) {
  std::mt19937 rng(3);
  for (int channels : {1, 3}) {
    Image img = Image::blank(37, 21, channels);
    for (auto& p : img.pixels) p = uint8_t(rng() & 255);
    const std::vector<uint8_t> png = encode_png(img);
    ASSERT_EQ(png, encode_png(img));
    const Image back = decode_image_memory(png.data(), png.size(), "round trip");
    ASSERT_EQ(back.width, 37);
    ASSERT_EQ(back.height, 21);
    ASSERT_EQ(back.channels, 3);
    for (int y = 0; y < 21; ++y)
      for (int x = 0; x < 37; ++x)
        for (int c = 0; c < 3; ++c) ASSERT_EQ(back.at(x, y, c), img.at(x, y, channels == 1 ? 0 : c));
    img.pixels[5] ^= 1;
    EXPECT_NE(png, encode_png(img));
  }
  EXPECT_THROW(encode_png(Image::blank(4, 4, 2)), Error);
}

}  // namespace
}  // namespace vitq
