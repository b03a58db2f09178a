// Datasets: ImageFolder layout and class maps, IDX parsing and validation, select_subset.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "core/error.h"
#include "data/dataset.h"
#include "data_test_util.h"

namespace vitq {
namespace {

using testutil::make_png;
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

// A 2x2 grey PNG whose pixels all have value v (to recognise the image after loading).
void put_image(const std::string& path, int v) {
  write_file(path, make_png(2, 2, 8, 0, {uint32_t(v), uint32_t(v), uint32_t(v), uint32_t(v)}));
}

Preprocess identity_preprocess(int size, int channels) {
  Preprocess p;
  p.channels = channels;
  p.height = p.width = size;
  p.crop_pct = 1.0;
  p.interp = Interp::Bilinear;
  p.mean = {0, 0, 0};
  p.std = {1, 1, 1};
  return p;
}

// ---- ImageFolder ---------------------------------------------------------------------------

struct Tree {
  TempDir dir;
  std::string root;
  Tree() : root(dir / "data/split") {
    put_image(root + "/cat/b.png", 10);
    put_image(root + "/cat/a.PNG", 11);
    put_image(root + "/ant/x.png", 20);
    put_image(root + "/ant/nested/deeper/y.png", 21);
    put_image(root + "/dog/z.png", 30);
    write_file(root + "/dog/notes.txt", {'h', 'i'});
    put_image(root + "/dog/.hidden.png", 99);
    put_image(root + "/.ipynb_checkpoints/q.png", 98);
  }
};

TEST(DataImageFolder, SortedFoldersAndPaths) {
  Tree t;
  auto ds = open_dataset(t.root);
  ASSERT_EQ(ds->size(), 5u);
  EXPECT_EQ(ds->num_classes(), 3);
  std::vector<std::string> names;
  for (size_t i = 0; i < ds->size(); ++i) names.push_back(ds->name(i));
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_TRUE(contains(names[0], "ant/nested/deeper/y.png")) << names[0];
  EXPECT_TRUE(contains(names[2], "cat/a.PNG")) << names[2];
  const std::vector<int> labels = {0, 0, 1, 1, 2};  // ant, cat, dog
  for (size_t i = 0; i < ds->size(); ++i) EXPECT_EQ(ds->label(i), labels[i]) << names[i];
  EXPECT_TRUE(contains(ds->describe(), "5 images")) << ds->describe();
  EXPECT_TRUE(contains(ds->describe(), "sorted folder names")) << ds->describe();
  // The loaded sample is the right file.
  std::vector<float> out(2 * 2 * 3);
  ds->load(2, identity_preprocess(2, 3), out.data());
  for (float v : out) EXPECT_EQ(v, 11.0f / 255.0f);
}

TEST(DataImageFolder, ExplicitClassMap) {
  Tree t;
  // CRLF, trailing spaces, a blank line in the middle (keeps its index), blank lines at the end.
  const std::string map = t.dir / "map.txt";
  const std::string text = "dog\r\n  \ncat  \nunused\nant\t\n\n\n";
  write_file(map, std::vector<uint8_t>(text.begin(), text.end()));
  DatasetOptions opt;
  opt.class_map = map;
  auto ds = open_dataset(t.root, opt);
  EXPECT_EQ(ds->num_classes(), 5);  // lines 0..4
  const std::vector<int> labels = {4, 4, 2, 2, 0};  // ant, ant, cat, cat, dog
  for (size_t i = 0; i < ds->size(); ++i) EXPECT_EQ(ds->label(i), labels[i]) << ds->name(i);
  EXPECT_TRUE(contains(ds->describe(), "class map " + map)) << ds->describe();
}

TEST(DataImageFolder, FolderMissingFromMapAndBadMapsAreErrors) {
  Tree t;
  DatasetOptions opt;
  opt.class_map = t.dir / "map.txt";
  write_file(opt.class_map, {'c', 'a', 't', '\n', 'a', 'n', 't', '\n'});
  std::string msg = data_error([&] { open_dataset(t.root, opt); });
  EXPECT_TRUE(contains(msg, "'dog'")) << msg;
  EXPECT_TRUE(contains(msg, opt.class_map)) << msg;

  write_file(opt.class_map, {'c', 'a', 't', '\n', 'c', 'a', 't', '\n'});
  msg = data_error([&] { open_dataset(t.root, opt); });
  EXPECT_TRUE(contains(msg, "lines 1 and 2")) << msg;

  write_file(opt.class_map, {' ', '\n', '\n'});
  msg = data_error([&] { open_dataset(t.root, opt); });
  EXPECT_TRUE(contains(msg, "no class")) << msg;

  opt.class_map = t.dir / "missing.txt";
  msg = data_error([&] { open_dataset(t.root, opt); });
  EXPECT_TRUE(contains(msg, "missing.txt")) << msg;
}

TEST(DataImageFolder, AutoDetectedClassMapInRootOrParent) {
  Tree t;
  // In the parent (the shared ImageNet sample's layout).
  const std::string parent_map = t.dir / "data/class_map.txt";
  const std::string text = "zebra\ndog\ncat\nant\n";
  write_file(parent_map, std::vector<uint8_t>(text.begin(), text.end()));
  auto ds = open_dataset(t.root + "/");  // a trailing slash must not change the parent
  EXPECT_EQ(ds->num_classes(), 4);
  EXPECT_EQ(ds->label(0), 3);  // ant
  EXPECT_TRUE(contains(ds->describe(), "class_map.txt")) << ds->describe();
  // One in the root wins over the parent's.
  const std::string root_map = t.root + "/class_map.txt";
  const std::string text2 = "ant\ncat\ndog\n";
  write_file(root_map, std::vector<uint8_t>(text2.begin(), text2.end()));
  ds = open_dataset(t.root);
  EXPECT_EQ(ds->num_classes(), 3);
  EXPECT_EQ(ds->label(4), 2);  // dog
  EXPECT_TRUE(contains(ds->describe(), "split/class_map.txt")) << ds->describe();
  // Disabled: sorted folders.
  DatasetOptions opt;
  opt.auto_class_map = false;
  ds = open_dataset(t.root, opt);
  EXPECT_TRUE(contains(ds->describe(), "sorted folder names")) << ds->describe();
}

TEST(DataImageFolder, EmptyAndMalformedTreesAreErrors) {
  TempDir dir;
  std::filesystem::create_directories(dir / "empty");
  EXPECT_TRUE(contains(data_error([&] { open_dataset(dir / "empty"); }), "no class folders"));
  put_image(dir / "flat/a.png", 1);
  EXPECT_TRUE(contains(data_error([&] { open_dataset(dir / "flat"); }), "one folder per class"));
  put_image(dir / "gap/a/x.png", 1);
  std::filesystem::create_directories(dir / "gap/b");
  EXPECT_TRUE(contains(data_error([&] { open_dataset(dir / "gap"); }), "'b' holds no"));
  std::filesystem::create_directories(dir / "noimg/a");
  write_file(dir / "noimg/a/readme.txt", {'x'});
  write_file(dir / "noimg/class_map.txt", {'a', '\n'});
  EXPECT_TRUE(contains(data_error([&] { open_dataset(dir / "noimg"); }), "no .jpg/.jpeg/.png images"));
  EXPECT_TRUE(contains(data_error([&] { open_dataset(dir / "absent"); }), "not found"));
  write_file(dir / "some.bin", {1, 2, 3});
  EXPECT_TRUE(contains(data_error([&] { open_dataset(dir / "some.bin"); }), "not a dataset"));
}

TEST(DataImageFolder, CorruptImageIsADataErrorNamingThePath) {
  TempDir dir;
  put_image(dir / "d/a/good.png", 5);
  write_file(dir / "d/a/bad.jpg", {0xFF, 0xD8, 0xFF, 0xE0, 0, 16, 'J', 'F'});
  auto ds = open_dataset(dir / "d");
  ASSERT_EQ(ds->size(), 2u);
  std::vector<float> out(12);
  const std::string msg = data_error([&] { ds->load(0, identity_preprocess(2, 3), out.data()); });
  EXPECT_TRUE(contains(msg, dir / "d/a/bad.jpg")) << msg;
  EXPECT_NO_THROW(ds->load(1, identity_preprocess(2, 3), out.data()));
}

// ---- IDX -----------------------------------------------------------------------------------

std::vector<uint8_t> idx_header(uint8_t type, const std::vector<uint32_t>& dims) {
  std::vector<uint8_t> h = {0, 0, type, uint8_t(dims.size())};
  for (uint32_t d : dims) testutil::put_be32(&h, d);
  return h;
}

struct IdxFiles {
  std::vector<uint8_t> images, labels;
};

// n images of 3 rows x 4 columns; pixel (r, c) of image i = 10 * i + 4 * r + c.
IdxFiles make_idx(uint32_t n, const std::vector<uint8_t>& labels) {
  IdxFiles f;
  f.images = idx_header(0x08, {n, 3, 4});
  for (uint32_t i = 0; i < n; ++i)
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 4; ++c) f.images.push_back(uint8_t(10 * i + 4 * uint32_t(r) + uint32_t(c)));
  f.labels = idx_header(0x08, {uint32_t(labels.size())});
  f.labels.insert(f.labels.end(), labels.begin(), labels.end());
  return f;
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  gzFile g = gzopen(path.c_str(), "wb");
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(gzwrite(g, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
  gzclose(g);
}

TEST(DataIdx, ParsesRawAndGzipAndPrefersTheTestSplit) {
  TempDir dir;
  const IdxFiles f = make_idx(4, {3, 0, 6, 1});
  write_file(dir / "raw/t10k-images-idx3-ubyte", f.images);
  write_file(dir / "raw/t10k-labels-idx1-ubyte", f.labels);
  write_gz(dir / "gz/t10k-images-idx3-ubyte.gz", f.images);
  write_gz(dir / "gz/t10k-labels-idx1-ubyte.gz", f.labels);
  const IdxFiles train = make_idx(2, {1, 1});
  write_gz(dir / "gz/train-images-idx3-ubyte.gz", train.images);
  write_gz(dir / "gz/train-labels-idx1-ubyte.gz", train.labels);

  for (const std::string& path : {dir / "raw", dir / "gz", dir / "gz/t10k-images-idx3-ubyte.gz"}) {
    SCOPED_TRACE(path);
    auto ds = open_dataset(path);
    ASSERT_EQ(ds->size(), 4u);
    EXPECT_EQ(ds->num_classes(), 7);  // max label + 1
    EXPECT_EQ(ds->label(0), 3);
    EXPECT_EQ(ds->label(3), 1);
    EXPECT_TRUE(contains(ds->name(2), "t10k-images-idx3-ubyte")) << ds->name(2);
    EXPECT_TRUE(contains(ds->name(2), "#2")) << ds->name(2);
    // Image 2 as a 1-channel 4x3 input (no resize: crop_pct 1, same size) and replicated for 3.
    Preprocess p = identity_preprocess(0, 1);
    p.height = 3;
    p.width = 4;
    std::vector<float> out(3 * 12);
    ds->load(2, p, out.data());
    for (int i = 0; i < 12; ++i) EXPECT_EQ(out[size_t(i)], float(20 + i) / 255.0f);
    p.channels = 3;
    ds->load(2, p, out.data());
    for (int c = 0; c < 3; ++c) EXPECT_EQ(out[size_t(c * 12 + 5)], 25.0f / 255.0f);
  }
  auto tr = open_dataset(dir / "gz/train-images-idx3-ubyte.gz");
  EXPECT_EQ(tr->size(), 2u);
}

TEST(DataIdx, ValidationErrors) {
  TempDir dir;
  const IdxFiles good = make_idx(3, {0, 1, 2});
  auto expect = [&](const std::string& case_name, std::vector<uint8_t> images, std::vector<uint8_t> labels,
                    const std::string& reason, bool gz = false) {
    SCOPED_TRACE(case_name);
    const std::string d = dir / case_name;
    const std::string img = d + "/t10k-images-idx3-ubyte" + (gz ? ".gz" : "");
    if (gz) write_gz(img, images);
    else write_file(img, images);
    if (!labels.empty()) write_file(d + "/t10k-labels-idx1-ubyte", labels);
    const std::string msg = data_error([&] { open_dataset(img); });
    EXPECT_TRUE(contains(msg, reason)) << msg;
  };
  std::vector<uint8_t> bad = good.images;
  bad[0] = 1;
  expect("magic", bad, good.labels, "magic");
  bad = good.images;
  bad[2] = 0x0D;  // float data
  expect("type", bad, good.labels, "unsigned byte");
  bad = good.images;
  bad[3] = 2;
  expect("dims", bad, good.labels, "dimensions");
  bad = good.images;
  bad.resize(bad.size() - 5);
  expect("truncated", bad, good.labels, "truncated");
  expect("truncated_gz", bad, good.labels, "truncated", true);
  bad = good.images;
  bad.push_back(0);
  expect("trailing", bad, good.labels, "unexpected bytes");
  expect("header", std::vector<uint8_t>(good.images.begin(), good.images.begin() + 9), good.labels, "header");
  expect("count", good.images, make_idx(2, {0, 1}).labels, "holds 3 images but");
  expect("nolabels", good.images, {}, "labels file");
  std::vector<uint8_t> labels_bad = good.labels;
  labels_bad[3] = 3;
  expect("labeldims", good.images, labels_bad, "dimensions");

  // A gzip stream cut short (the IDX content would be complete enough to notice otherwise).
  const std::string gzpath = dir / "cut/t10k-images-idx3-ubyte.gz";
  write_gz(gzpath, good.images);
  std::vector<uint8_t> z = testutil::read_file(gzpath);
  z.resize(z.size() - 6);
  write_file(gzpath, z);
  write_file(dir / "cut/t10k-labels-idx1-ubyte", good.labels);
  EXPECT_TRUE(contains(data_error([&] { open_dataset(gzpath); }), "truncated"));
}

// ---- select_subset -------------------------------------------------------------------------

TEST(DataSubset, AllIndicesWhenNoLimitOrLimitTooLarge) {
  const std::vector<size_t> all = {0, 1, 2, 3, 4};
  EXPECT_EQ(select_subset(5, 0, 1), all);
  EXPECT_EQ(select_subset(5, 5, 1), all);
  EXPECT_EQ(select_subset(5, 99, 1), all);
  EXPECT_TRUE(select_subset(0, 3, 1).empty());
}

TEST(DataSubset, SortedDistinctInRangeAndDeterministic) {
  for (uint64_t seed : {0ull, 1ull, 42ull, 0xFFFFFFFFFFFFFFFFull}) {
    const std::vector<size_t> s = select_subset(1000, 37, seed);
    ASSERT_EQ(s.size(), 37u);
    EXPECT_TRUE(std::is_sorted(s.begin(), s.end()));
    EXPECT_EQ(std::set<size_t>(s.begin(), s.end()).size(), 37u);
    EXPECT_LT(s.back(), 1000u);
    EXPECT_EQ(select_subset(1000, 37, seed), s);
  }
  EXPECT_NE(select_subset(1000, 37, 1), select_subset(1000, 37, 2));
}

TEST(DataSubset, EngineIsTheStandardMt19937_64) {
  // The C++ standard fixes the 10000th output of a default-constructed mt19937_64; the subset
  // relies on that engine (and not on any distribution) for portability.
  std::mt19937_64 rng;
  rng.discard(9999);
  EXPECT_EQ(rng(), 9981545732273789042ull);
}

TEST(DataSubset, EveryIndexIsEquallyLikely) {
  // 30000 subsets of 3 out of 10: each index is chosen with probability 0.3. A chi-square test
  // with 9 degrees of freedom; 27.9 is its 0.999 quantile. Also each single draw of 1 of 7.
  std::vector<double> count(10, 0);
  const int trials = 30000;
  for (int s = 0; s < trials; ++s)
    for (size_t i : select_subset(10, 3, uint64_t(s))) count[i] += 1;
  double chi2 = 0;
  for (double c : count) chi2 += (c - trials * 0.3) * (c - trials * 0.3) / (trials * 0.3);
  EXPECT_LT(chi2, 27.9);
  std::vector<double> first(7, 0);
  for (int s = 0; s < trials; ++s) first[select_subset(7, 1, uint64_t(s) + 1000000)[0]] += 1;
  chi2 = 0;
  for (double c : first) chi2 += (c - trials / 7.0) * (c - trials / 7.0) / (trials / 7.0);
  EXPECT_LT(chi2, 22.5);  // 6 degrees of freedom, 0.999 quantile
}

}  // namespace
}  // namespace vitq
