// Data inputs of issue 20: resource limits checked from headers (class 4), every image skipped
// (class 6), IDX splits and labels for calibration, class-count facts, calibration with
// skipped images (class 7).
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>

#include "core/error.h"
#include "core/limits.h"
#include "data/dataset.h"
#include "data/image.h"
#include "data_test_util.h"
#include "eval/evaluate.h"
#include "model/vit_config.h"
#include "quant/calib_data.h"

namespace vitq {
namespace {

using testutil::make_png;
using testutil::put_be32;
using testutil::TempDir;
using testutil::write_file;

template <class F>
std::string data_error(F f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Data) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no Error thrown";
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::vector<uint8_t> png_signature() { return {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'}; }

std::vector<uint8_t> ihdr_png(uint32_t w, uint32_t h) {
  std::vector<uint8_t> out = png_signature(), ihdr;
  put_be32(&ihdr, w);
  put_be32(&ihdr, h);
  ihdr.insert(ihdr.end(), {8, 0, 0, 0, 0});
  testutil::png_chunk(&out, "IHDR", ihdr);
  return out;
}

Preprocess small_preprocess() {
  Preprocess p;
  p.channels = 1;
  p.height = p.width = 2;
  p.crop_pct = 1.0;
  p.interp = Interp::Bilinear;
  p.mean = {0, 0, 0};
  p.std = {1, 1, 1};
  return p;
}

// ---- images --------------------------------------------------------------------------------

TEST(DataLimits, PngChunkDeclaringMoreThanTheLimitIsRefusedFromItsHeader) {
  for (const char* kind : {"tEXt", "zTXt", "iTXt", "sPLT", "iCCP"}) {
    SCOPED_TRACE(kind);
    std::vector<uint8_t> png = ihdr_png(4, 4);
    put_be32(&png, 0x7FFFFFFF);
    png.insert(png.end(), kind, kind + 4);
    const std::string msg = data_error([&] { decode_image_memory(png.data(), png.size(), "x.png"); });
    EXPECT_TRUE(contains(msg, "x.png")) << msg;
    EXPECT_TRUE(contains(msg, kind)) << msg;
    EXPECT_TRUE(contains(msg, std::to_string(limits::kMaxPngChunkBytes))) << msg;
  }
  // Within the limit but beyond the end of the file: truncated.
  std::vector<uint8_t> png = ihdr_png(4, 4);
  put_be32(&png, 1000);
  png.insert(png.end(), {'t', 'E', 'X', 't', 'a', 'b'});
  EXPECT_TRUE(contains(data_error([&] { decode_image_memory(png.data(), png.size(), "y.png"); }), "truncated"));
}

TEST(DataLimits, PngTextChunksWithinTheLimitAreSkipped) {
  std::vector<uint8_t> img = make_png(3, 2, 8, 0, {1, 2, 3, 4, 5, 6});
  // Insert a 1 MiB tEXt chunk right after IHDR (8 + 25 bytes).
  std::vector<uint8_t> text(std::string("Comment").size() + 1 + (1 << 20), 'x');
  std::copy_n("Comment\0", 8, text.begin());
  std::vector<uint8_t> chunk;
  testutil::png_chunk(&chunk, "tEXt", text);
  img.insert(img.begin() + 33, chunk.begin(), chunk.end());
  const Image im = decode_image_memory(img.data(), img.size(), "t.png");
  EXPECT_EQ(im.width, 3);
  EXPECT_EQ(im.height, 2);
  EXPECT_EQ(im.at(2, 1, 0), 6);
}

TEST(DataLimits, HugeDeclaredImageSizesAreRefusedBeforeDecoding) {
  for (auto [w, h] : {std::pair<uint32_t, uint32_t>{60000, 60000}, {1000000, 1000}, {20000, 10000}}) {
    std::vector<uint8_t> png = ihdr_png(w, h);  // no IDAT at all: only the header is there to check
    const std::string msg = data_error([&] { decode_image_memory(png.data(), png.size(), "big.png"); });
    EXPECT_TRUE(contains(msg, std::to_string(w) + "x" + std::to_string(h))) << msg;
    EXPECT_TRUE(contains(msg, "limit")) << msg;
  }
  // JPEG: SOI, DQT, SOF0 65000 x 65000, SOS.
  std::vector<uint8_t> jpg = {0xFF, 0xD8, 0xFF, 0xDB, 0, 67, 0};
  jpg.insert(jpg.end(), 64, 1);
  jpg.insert(jpg.end(), {0xFF, 0xC0, 0, 17, 8, 0xFD, 0xE8, 0xFD, 0xE8, 3, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0});
  jpg.insert(jpg.end(), {0xFF, 0xDA, 0, 12, 3, 1, 0, 2, 0, 3, 0, 0, 63, 0});
  jpg.insert(jpg.end(), 64, 0);
  jpg.insert(jpg.end(), {0xFF, 0xD9});
  const std::string msg = data_error([&] { decode_image_memory(jpg.data(), jpg.size(), "big.jpg"); });
  EXPECT_TRUE(contains(msg, "65000x65000")) << msg;
}

TEST(DataLimits, ImageFilesAreSizeAndSignatureCheckedBeforeBeingRead) {
  TempDir dir;
  // Sparse files above the limit: refused from their size (reading 5 GiB would take seconds).
  for (const std::vector<uint8_t>& head : {std::vector<uint8_t>{'n', 'o', 't'}, std::vector<uint8_t>{0xFF, 0xD8, 0xFF}}) {
    const std::string p = dir / "huge.jpg";
    write_file(p, head);
    std::filesystem::resize_file(p, uint64_t(5) << 30);
    const std::string msg = data_error([&] { decode_image_file(p); });
    EXPECT_TRUE(contains(msg, p)) << msg;
    EXPECT_TRUE(contains(msg, std::to_string(limits::kMaxImageFileBytes))) << msg;
    std::filesystem::remove(p);
  }
  // Within the limit but not an image: the signature decides, from the first bytes.
  const std::string p = dir / "big_text.jpg";
  write_file(p, {'h', 'e', 'l', 'l', 'o'});
  std::filesystem::resize_file(p, uint64_t(100) << 20);
  EXPECT_TRUE(contains(data_error([&] { decode_image_file(p); }), "signature"));
  // A good file is read.
  write_file(dir / "ok.png", make_png(2, 2, 8, 0, {9, 9, 9, 9}));
  EXPECT_EQ(decode_image_file(dir / "ok.png").at(1, 1, 2), 9);
  EXPECT_TRUE(contains(data_error([&] { decode_image_file(dir.path().string()); }), "directory"));
}

// ---- IDX -----------------------------------------------------------------------------------

std::vector<uint8_t> idx_header(const std::vector<uint32_t>& dims) {
  std::vector<uint8_t> h = {0, 0, 0x08, uint8_t(dims.size())};
  for (uint32_t d : dims) put_be32(&h, d);
  return h;
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  gzFile g = gzopen(path.c_str(), "wb");
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(gzwrite(g, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
  gzclose(g);
}

// n images 2x2 (pixel value = image index) and labels i % 3.
void write_idx(const std::string& dir, const std::string& split, uint32_t n, bool labels = true) {
  std::vector<uint8_t> img = idx_header({n, 2, 2}), lab = idx_header({n});
  for (uint32_t i = 0; i < n; ++i) {
    img.insert(img.end(), 4, uint8_t(i));
    lab.push_back(uint8_t(i % 3));
  }
  write_gz(dir + "/" + split + "-images-idx3-ubyte.gz", img);
  if (labels) write_gz(dir + "/" + split + "-labels-idx1-ubyte.gz", lab);
}

TEST(DataLimits, IdxHeadersAreCheckedBeforeTheDataIsRead) {
  TempDir dir;
  std::vector<uint8_t> labels = idx_header({60000});
  labels.resize(labels.size() + 60000);
  write_file(dir / "a/t10k-labels-idx1-ubyte", labels);
  write_file(dir / "b/t10k-labels-idx1-ubyte", labels);
  write_file(dir / "c/t10k-labels-idx1-ubyte", labels);
  // 60 GB declared: above the limit, whatever follows.
  std::vector<uint8_t> huge = idx_header({60000, 1000, 1000});
  huge.resize(huge.size() + (1 << 20));
  write_gz(dir / "a/t10k-images-idx3-ubyte.gz", huge);
  std::string msg = data_error([&] { open_dataset(dir / "a"); });
  EXPECT_TRUE(contains(msg, "60000 x 1000 x 1000")) << msg;
  EXPECT_TRUE(contains(msg, std::to_string(limits::kMaxIdxBytes))) << msg;
  // 600 MB declared (within the limit) in a gzip file of a few KB: more than it can hold.
  std::vector<uint8_t> mid = idx_header({60000, 100, 100});
  mid.resize(mid.size() + 4096);
  write_gz(dir / "b/t10k-images-idx3-ubyte.gz", mid);
  msg = data_error([&] { open_dataset(dir / "b"); });
  EXPECT_TRUE(contains(msg, "gzip file of")) << msg;
  // The same raw: the file size must be the header's.
  write_file(dir / "c/t10k-images-idx3-ubyte", mid);
  msg = data_error([&] { open_dataset(dir / "c"); });
  EXPECT_TRUE(contains(msg, "announces 600000000 bytes")) << msg;
}

// An IDX image side above kMaxIdxImageSide is refused from the header (1 x 16385 x 1 is only
// 16 KB of data, so the byte limit alone would let it through); at the limit it is read.
TEST(DataLimits, IdxImageSidesAboveTheLimitAreRefused) {
  TempDir dir;
  for (auto [rows, cols, ok] : {std::tuple<uint32_t, uint32_t, bool>{limits::kMaxIdxImageSide + 1, 1, false},
                                {1, limits::kMaxIdxImageSide + 1, false},
                                {limits::kMaxIdxImageSide, 1, true}}) {
    const std::string sub = cat(rows, "x", cols);
    std::vector<uint8_t> img = idx_header({1, rows, cols}), lab = idx_header({1});
    img.resize(img.size() + size_t(rows) * cols, 7);
    lab.push_back(0);
    write_file(dir / sub + "/t10k-images-idx3-ubyte", img);
    write_file(dir / sub + "/t10k-labels-idx1-ubyte", lab);
    if (ok) {
      EXPECT_EQ(open_dataset(dir / sub)->size(), 1u);
      continue;
    }
    const std::string msg = data_error([&] { open_dataset(dir / sub); });
    EXPECT_TRUE(contains(msg, sub)) << msg;
    EXPECT_TRUE(contains(msg, std::to_string(limits::kMaxIdxImageSide) + " per side")) << msg;
  }
}

// libpng keeps at most kMaxPngChunkCount ancillary chunks (png_set_chunk_cache_max): a file with
// five times as many sPLT palettes is still a valid image and decodes to its pixels; the extra
// chunks are dropped, not stored and not an error.
TEST(DataLimits, PngWithMoreAncillaryChunksThanTheCacheDecodes) {
  std::vector<uint8_t> img = make_png(3, 2, 8, 0, {1, 2, 3, 4, 5, 6});
  std::vector<uint8_t> chunks;
  for (uint32_t i = 0; i < 5 * limits::kMaxPngChunkCount; ++i)  // name "p", depth 8, one entry
    testutil::png_chunk(&chunks, "sPLT", {'p', 0, 8, 1, 2, 3, 4, 0, 1});
  img.insert(img.begin() + 33, chunks.begin(), chunks.end());
  const Image im = decode_image_memory(img.data(), img.size(), "many.png");
  EXPECT_EQ(im.width, 3);
  EXPECT_EQ(im.height, 2);
  EXPECT_EQ(im.at(0, 0, 0), 1);
  EXPECT_EQ(im.at(2, 1, 0), 6);
}

TEST(DataIdxSplits, CalibrationUsesTheTrainingSplitAndNeedsNoLabels) {
  TempDir dir;
  write_idx(dir / "both", "train", 5);
  write_idx(dir / "both", "t10k", 3);
  auto eval = open_dataset(dir / "both");
  EXPECT_EQ(eval->size(), 3u);
  EXPECT_TRUE(contains(eval->describe(), "t10k-images")) << eval->describe();
  EXPECT_TRUE(contains(eval->describe(), "test split")) << eval->describe();
  EXPECT_EQ(eval->label(2), 2);

  DatasetOptions calib;
  calib.use = DatasetUse::Calibration;
  auto cal = open_dataset(dir / "both", calib);
  EXPECT_EQ(cal->size(), 5u);
  EXPECT_TRUE(contains(cal->describe(), "train-images")) << cal->describe();
  EXPECT_TRUE(contains(cal->describe(), "training split")) << cal->describe();
  EXPECT_TRUE(contains(cal->name(4), "train-images-idx3-ubyte.gz#4"));
  std::vector<float> out(4);
  cal->load(4, small_preprocess(), out.data());
  EXPECT_EQ(out[0], 4.0f / 255.0f);

  // Only the test split: calibration uses it and says so.
  write_idx(dir / "t10k_only", "t10k", 3);
  auto t = open_dataset(dir / "t10k_only", calib);
  EXPECT_TRUE(contains(t->describe(), "no train-*")) << t->describe();

  // No labels file: calibration works (labels -1), evaluation refuses.
  write_idx(dir / "nolabels", "train", 4, /*labels=*/false);
  auto nl = open_dataset(dir / "nolabels", calib);
  EXPECT_EQ(nl->size(), 4u);
  EXPECT_EQ(nl->label(0), -1);
  EXPECT_EQ(nl->num_classes(), 0);
  auto nl_file = open_dataset(dir / "nolabels/train-images-idx3-ubyte.gz", calib);
  EXPECT_EQ(nl_file->size(), 4u);
  EXPECT_TRUE(contains(data_error([&] { open_dataset(dir / "nolabels"); }), "labels file"));
}

TEST(DataImageFolderClasses, ClassesFromFolderNamesOnlyWithoutAMap) {
  TempDir dir;
  write_file(dir / "d/cat/a.png", make_png(2, 2, 8, 0, {1, 1, 1, 1}));
  write_file(dir / "d/dog/a.png", make_png(2, 2, 8, 0, {1, 1, 1, 1}));
  DatasetOptions opt;
  opt.auto_class_map = false;
  EXPECT_TRUE(open_dataset(dir / "d", opt)->classes_from_folder_names());
  write_file(dir / "map.txt", {'x', '\n', 'c', 'a', 't', '\n', 'd', 'o', 'g', '\n'});
  opt.class_map = dir / "map.txt";
  auto mapped = open_dataset(dir / "d", opt);
  EXPECT_FALSE(mapped->classes_from_folder_names());
  EXPECT_EQ(mapped->num_classes(), 3);
  write_idx(dir / "idx", "t10k", 2);
  EXPECT_FALSE(open_dataset(dir / "idx")->classes_from_folder_names());
}

// ---- every image skipped / calibration with skipped images ---------------------------------

struct MixedFolder {
  TempDir dir;
  std::string root = dir / "d";
  MixedFolder(int good, int bad) {
    for (int i = 0; i < good; ++i)
      write_file(root + "/a/good" + std::to_string(i) + ".png", make_png(2, 2, 8, 0, {uint32_t(i), 0, 0, 0}));
    for (int i = 0; i < bad; ++i) write_file(root + "/b/bad" + std::to_string(i) + ".jpg", {0xFF, 0xD8, 0xFF, 0xE0});
  }
};

TEST(DataSkipBadImages, EvaluateFailsWhenEveryImageIsSkipped) {
  ViTConfig cfg;
  cfg.num_classes = 2;
  cfg.preprocess = small_preprocess();
  ForwardFn forward = [](const float*, int b, float* logits) { std::fill_n(logits, size_t(b) * 2, 0.0f); };
  EvalOptions opt;
  opt.on_bad_image = BadImagePolicy::Skip;

  MixedFolder all_bad(0, 3);
  auto ds = open_dataset(all_bad.root);
  const std::vector<size_t> idx = select_subset(ds->size(), 0, 0);
  const std::string msg = data_error([&] { evaluate(cfg, forward, *ds, idx, opt); });
  EXPECT_TRUE(contains(msg, "no image could be read")) << msg;
  EXPECT_TRUE(contains(msg, "bad0.jpg")) << msg;

  MixedFolder mixed(1, 2);
  auto ds2 = open_dataset(mixed.root);
  const EvalResult r = evaluate(cfg, forward, *ds2, select_subset(ds2->size(), 0, 0), opt);
  EXPECT_EQ(r.images, 1u);
  EXPECT_EQ(r.skipped.size(), 2u);
}

TEST(DataSkipBadImages, CalibrationSetSkipsAndCompacts) {
  MixedFolder m(3, 2);
  auto ds = open_dataset(m.root);
  const Preprocess p = small_preprocess();
  const std::string msg = data_error([&] { load_calibration_set(*ds, 0, 0, p); });
  EXPECT_TRUE(contains(msg, "bad0.jpg")) << msg;
  EXPECT_TRUE(contains(msg, "--skip-bad-images")) << msg;

  const CalibrationSet cs = load_calibration_set(*ds, 0, 0, p, /*skip_bad=*/true);
  ASSERT_EQ(cs.n, 3);
  ASSERT_EQ(cs.images.size(), 3u * 4u);
  ASSERT_EQ(cs.names.size(), 3u);
  ASSERT_EQ(cs.skipped.size(), 2u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(contains(cs.names[size_t(i)], "good" + std::to_string(i))) << cs.names[size_t(i)];
    EXPECT_EQ(cs.images[size_t(i) * 4], float(i) / 255.0f);  // compacted in order
  }
  EXPECT_TRUE(cs.identity("d", 0).contains("skipped"));
  // The same images without the bad ones give the same pixels hash.
  MixedFolder good_only(3, 0);
  EXPECT_EQ(load_calibration_set(*open_dataset(good_only.root), 0, 0, p).hash, cs.hash);

  MixedFolder none(0, 2);
  const std::string msg2 = data_error([&] { load_calibration_set(*open_dataset(none.root), 0, 0, p, true); });
  EXPECT_TRUE(contains(msg2, "no calibration image could be read")) << msg2;
}

}  // namespace
}  // namespace vitq
