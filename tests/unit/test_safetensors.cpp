// safetensors reader/writer: round trips, half-precision decoding against known bit patterns,
// interop with an independent Python reader/writer, and one test per malformed-file rule,
// each checking that the message names the problem (and the tensor).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>

#include "core/error.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;
using vitq::DType;
using vitq::ErrorKind;
using vitq::SafeTensorsFile;
using vitq::Shape;

namespace {

::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << text << "' does not contain '" << part << "'";
}
#define EXPECT_HAS(text, part) EXPECT_TRUE(Contains(text, part))

std::string u64le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

std::string f32le(std::initializer_list<float> vals) {
  std::string s;
  for (float f : vals) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    for (int i = 0; i < 4; ++i) s += static_cast<char>((u >> (8 * i)) & 0xff);
  }
  return s;
}

std::string u16le(std::initializer_list<uint16_t> vals) {
  std::string s;
  for (uint16_t v : vals) {
    s += static_cast<char>(v & 0xff);
    s += static_cast<char>(v >> 8);
  }
  return s;
}

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

class SafeTensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "vitq_st_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  std::string write_raw(const std::string& bytes, const std::string& name = "t.safetensors") {
    std::ofstream f(path(name), std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return path(name);
  }

  // A file from its parts: header length (default: the header's size), header text, data.
  std::string write_file(const std::string& header, const std::string& data = "",
                         std::optional<uint64_t> length = std::nullopt) {
    return write_raw(u64le(length.value_or(header.size())) + header + data);
  }

  // Opening must fail with a Model error that names the file; returns the message.
  static std::string open_error(const std::string& p) {
    try {
      SafeTensorsFile::open(p);
    } catch (const vitq::Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Model) << e.what();
      EXPECT_HAS(e.what(), p + ": ");
      return e.what();
    }
    ADD_FAILURE() << p << " opened without error";
    return "";
  }
  std::string header_error(const std::string& header, const std::string& data = "") {
    return open_error(write_file(header, data));
  }

  std::string dir_;
};

// ---------------------------------------------------------------------------------------
// Writer and round trips

TEST_F(SafeTensorsTest, RoundTripAllDtypes) {
  std::vector<vitq::TensorBlob> blobs;
  const struct {
    const char* name;
    DType dtype;
    Shape shape;
  } specs[] = {
      {"f64", DType::F64, {2, 2}}, {"f32", DType::F32, {3}},   {"f16", DType::F16, {1, 5}},
      {"bf16", DType::BF16, {7}},  {"i64", DType::I64, {1}},   {"i32", DType::I32, {2, 1, 2}},
      {"i16", DType::I16, {3}},    {"i8", DType::I8, {5}},     {"u8", DType::U8, {}},
      {"bool", DType::BOOL, {2}},  {"empty", DType::F32, {0, 3}},
  };
  uint8_t seed = 1;
  for (const auto& s : specs) {
    vitq::TensorBlob b{s.name, s.dtype, s.shape, {}};
    b.data.resize(static_cast<size_t>(vitq::shape_numel(s.shape)) * vitq::dtype_size(s.dtype));
    for (uint8_t& x : b.data) x = seed++;
    blobs.push_back(b);
  }
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "caf\xc3\xa9 \"q\""}};
  vitq::write_safetensors(path("rt.safetensors"), blobs, meta);

  auto f = SafeTensorsFile::open(path("rt.safetensors"));
  EXPECT_EQ(f.metadata(), meta);
  std::vector<std::string> want;
  for (const auto& b : blobs) want.push_back(b.name);
  std::sort(want.begin(), want.end());
  EXPECT_EQ(f.names(), want);
  for (const auto& b : blobs) {
    SCOPED_TRACE(b.name);
    ASSERT_TRUE(f.has(b.name));
    EXPECT_EQ(f.info(b.name).dtype, b.dtype);
    EXPECT_EQ(f.info(b.name).shape, b.shape);
    auto got = f.bytes(b.name);
    EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.end()), b.data);
  }
  EXPECT_FALSE(f.has("missing"));
}

TEST_F(SafeTensorsTest, F32BlobRoundTrip) {
  vitq::Tensor t({2, 3});
  for (int i = 0; i < 6; ++i) t.data[i] = 0.1f * static_cast<float>(i) - 0.25f;
  vitq::write_safetensors(path("w.safetensors"), {vitq::make_f32_blob("w", t)});
  auto f = SafeTensorsFile::open(path("w.safetensors"));
  vitq::Tensor back = f.to_f32("w", {2, 3});
  EXPECT_EQ(back.shape, t.shape);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(back.data[i], t.data[i]);
}

// Byte-exact against the layout of the reference serializer's own tests (compact JSON,
// fields dtype/shape/data_offsets, space padding to 8 bytes).
TEST_F(SafeTensorsTest, WriterBytesMatchReferenceLayout) {
  vitq::TensorBlob b{"attn.0", DType::F32, {1, 2, 3}, bytes_of(f32le({0, 1, 2, 3, 4, 5}))};
  vitq::write_safetensors(path("a.safetensors"), {b});
  const std::string header = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  ASSERT_EQ(header.size(), 64u);  // already a multiple of 8: no padding
  EXPECT_EQ(read_all(path("a.safetensors")), u64le(64) + header + f32le({0, 1, 2, 3, 4, 5}));

  b.name = "attn0";
  b.shape = {1, 1, 2, 3};
  vitq::write_safetensors(path("b.safetensors"), {b});
  const std::string header2 = R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})";
  ASSERT_EQ(header2.size(), 65u);  // padded with 7 spaces to 72
  EXPECT_EQ(read_all(path("b.safetensors")), u64le(72) + header2 + "       " + f32le({0, 1, 2, 3, 4, 5}));

  vitq::write_safetensors(path("m.safetensors"), {}, {{"framework", "pt"}});
  EXPECT_EQ(read_all(path("m.safetensors")), u64le(40) + R"({"__metadata__":{"framework":"pt"}})" + "     ");

  vitq::write_safetensors(path("e.safetensors"), {});
  EXPECT_EQ(read_all(path("e.safetensors")), u64le(8) + "{}      ");
}

TEST_F(SafeTensorsTest, WriterIsDeterministic) {
  vitq::TensorBlob a{"b.weight", DType::F16, {2}, {1, 2, 3, 4}};
  vitq::TensorBlob b{"a.bias", DType::U8, {3}, {9, 8, 7}};
  vitq::TensorBlob c{"z", DType::I32, {1}, {5, 6, 7, 8}};
  const std::map<std::string, std::string> meta = {{"y", "1"}, {"x", "2"}};
  vitq::write_safetensors(path("1.safetensors"), {a, b, c}, meta);
  vitq::write_safetensors(path("2.safetensors"), {c, a, b}, meta);
  const std::string one = read_all(path("1.safetensors"));
  EXPECT_EQ(one, read_all(path("2.safetensors")));
  uint64_t n;
  std::memcpy(&n, one.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  // Data in name order: a.bias, b.weight, z.
  EXPECT_EQ(one.substr(8 + n), std::string("\x09\x08\x07\x01\x02\x03\x04\x05\x06\x07\x08", 11));
}

TEST_F(SafeTensorsTest, WriterRejectsInconsistentBlobs) {
  auto expect_internal = [&](const std::vector<vitq::TensorBlob>& blobs, const std::string& part) {
    try {
      vitq::write_safetensors(path("bad.safetensors"), blobs);
      ADD_FAILURE() << "no error for " << part;
    } catch (const vitq::Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Internal);
      EXPECT_HAS(e.what(), part);
    }
    EXPECT_FALSE(fs::exists(path("bad.safetensors")));
  };
  expect_internal({{"w", DType::F32, {2}, std::vector<uint8_t>(6)}}, "'w': 6 bytes but shape [2] of F32 needs 8");
  expect_internal({{"w", DType::F32, {-1}, {}}}, "'w': invalid shape [-1]");
  expect_internal({{"w", DType::U8, {1}, {0}}, {"w", DType::U8, {1}, {0}}}, "'w' given twice");
  expect_internal({{"__metadata__", DType::U8, {1}, {0}}}, "reserved");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 0);
}

TEST_F(SafeTensorsTest, WriterReplacesAtomicallyAndCleansUp) {
  const std::string p = path("m.safetensors");
  vitq::write_safetensors(p, {{"old", DType::U8, {1}, {1}}});
  vitq::write_safetensors(p, {{"new", DType::U8, {2}, {2, 3}}});
  EXPECT_EQ(SafeTensorsFile::open(p).names(), std::vector<std::string>{"new"});
  // Only the target remains: the temporary file was renamed, not left behind.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_F(SafeTensorsTest, WriterIoErrorOnMissingDirectory) {
  try {
    vitq::write_safetensors(path("no/such/dir/x.safetensors"), {});
    FAIL() << "no error";
  } catch (const vitq::Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Io);
    EXPECT_HAS(e.what(), "no/such/dir/x.safetensors");
    EXPECT_HAS(e.what(), "No such file or directory");
  }
}

// ---------------------------------------------------------------------------------------
// Accepted files and float32 conversion

TEST_F(SafeTensorsTest, HandWrittenForeignFile) {
  // As other writers produce it: pretty JSON, metadata last, fields in another order, an
  // unknown field (ignored, as by the reference), data not in name order, an unpadded
  // header, a scalar and a zero-size tensor.
  const std::string header = R"({
  "b": {"data_offsets": [0, 8], "shape": [2], "dtype": "F32", "extra": [1, {"x": null}]},
  "a": {"shape": [], "dtype": "U8", "data_offsets": [8, 9]},
  "z": {"dtype": "F16", "shape": [0, 4], "data_offsets": [9, 9]},
  "__metadata__": {"format": "pt", "esc": "\u00e9\n"}
})";
  auto f = SafeTensorsFile::open(write_file(header, f32le({1.5f, -2}) + "\x07"));
  EXPECT_EQ(f.names(), (std::vector<std::string>{"a", "b", "z"}));
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("esc"), "\xc3\xa9\n");
  EXPECT_EQ(f.info("a").shape, Shape{});
  EXPECT_EQ(f.bytes("a")[0], 7);
  EXPECT_EQ(f.to_f32("b").data[1], -2.0f);
  EXPECT_EQ(f.to_f32("z").shape, (Shape{0, 4}));
  EXPECT_EQ(f.to_f32("z").numel(), 0);
}

TEST_F(SafeTensorsTest, ZeroTensorFileAccepted) {
  auto f = SafeTensorsFile::open(write_file("{}      "));
  EXPECT_TRUE(f.names().empty());
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_TRUE(SafeTensorsFile::open(write_file("{}")).names().empty());
  auto m = SafeTensorsFile::open(write_file(R"({"__metadata__":{"k":"v"}})"));
  EXPECT_EQ(m.metadata().at("k"), "v");
  EXPECT_TRUE(m.names().empty());
}

TEST_F(SafeTensorsTest, F16Conversion) {
  const std::string header = R"({"h":{"dtype":"F16","shape":[12],"data_offsets":[0,24]}})";
  const std::string data = u16le({0x3C00, 0xC000, 0x0001, 0x03FF, 0x0400, 0x7BFF, 0x7C00, 0xFC00, 0x0000,
                                  0x8000, 0x3555, 0x7E00});
  auto t = SafeTensorsFile::open(write_file(header, data)).to_f32("h");
  ASSERT_EQ(t.numel(), 12);
  EXPECT_EQ(t.data[0], 1.0f);
  EXPECT_EQ(t.data[1], -2.0f);
  EXPECT_EQ(t.data[2], std::ldexp(1.0f, -24));           // smallest subnormal
  EXPECT_EQ(t.data[3], std::ldexp(1023.0f, -24));        // largest subnormal
  EXPECT_EQ(t.data[4], std::ldexp(1.0f, -14));           // smallest normal
  EXPECT_EQ(t.data[5], 65504.0f);                        // largest finite
  EXPECT_EQ(t.data[6], std::numeric_limits<float>::infinity());
  EXPECT_EQ(t.data[7], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(t.data[8], 0.0f);
  EXPECT_FALSE(std::signbit(t.data[8]));
  EXPECT_EQ(t.data[9], 0.0f);
  EXPECT_TRUE(std::signbit(t.data[9]));                  // -0
  EXPECT_EQ(t.data[10], std::ldexp(1.0f + 341.0f / 1024, -2));  // 0x3555 = 0.333251953125
  EXPECT_TRUE(std::isnan(t.data[11]));
}

TEST_F(SafeTensorsTest, BF16Conversion) {
  const std::string header = R"({"b":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]}})";
  const std::string data = u16le({0x3F80, 0xC000, 0x4049, 0x7F80, 0x0001, 0xFF7F});
  auto t = SafeTensorsFile::open(write_file(header, data)).to_f32("b", {2, 3});
  EXPECT_EQ(t.data[0], 1.0f);
  EXPECT_EQ(t.data[1], -2.0f);
  EXPECT_EQ(t.data[2], 3.140625f);  // 0x4049: 2 * (1 + 73/128)
  EXPECT_EQ(t.data[3], std::numeric_limits<float>::infinity());
  EXPECT_EQ(t.data[4], std::ldexp(1.0f, -133));  // smallest subnormal: 2^-126 * 2^-7
  EXPECT_EQ(t.data[5], -std::ldexp(255.0f, 120));  // lowest finite: -(2 - 2^-7) * 2^127
}

// F32 data at an odd offset of the map: the conversion must not assume alignment (UBSan
// flags a misaligned float load if it does).
TEST_F(SafeTensorsTest, UnalignedF32) {
  const std::string header =
      R"({"p":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"w":{"dtype":"F32","shape":[3],"data_offsets":[3,15]}})";
  auto f = SafeTensorsFile::open(write_file(header, "abc" + f32le({0.5f, -1e30f, 3})));
  auto t = f.to_f32("w", {3});
  EXPECT_EQ(t.data[0], 0.5f);
  EXPECT_EQ(t.data[1], -1e30f);
  EXPECT_EQ(t.data[2], 3.0f);
}

TEST_F(SafeTensorsTest, MoveKeepsMappingValid) {
  vitq::write_safetensors(path("m.safetensors"), {{"w", DType::F32, {1}, bytes_of(f32le({4.0f}))}});
  auto a = SafeTensorsFile::open(path("m.safetensors"));
  SafeTensorsFile b(std::move(a));
  auto c = SafeTensorsFile::open(path("m.safetensors"));
  c = std::move(b);  // unmaps c's own mapping, takes b's
  EXPECT_EQ(c.to_f32("w").data[0], 4.0f);
  EXPECT_EQ(c.path(), path("m.safetensors"));
}

// ---------------------------------------------------------------------------------------
// Lookup and conversion errors

TEST_F(SafeTensorsTest, ShapeCheckMismatch) {
  auto f = SafeTensorsFile::open(
      write_file(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})", std::string(24, '\0')));
  try {
    f.to_f32("w", {3, 2});
    FAIL() << "no error";
  } catch (const vitq::Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Model);
    EXPECT_HAS(e.what(), f.path() + ": tensor 'w': shape [2, 3] but expected [3, 2]");
  }
}

TEST_F(SafeTensorsTest, UnsupportedConversionAndMissingTensor) {
  auto f = SafeTensorsFile::open(
      write_file(R"({"idx":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')));
  try {
    f.to_f32("idx");
    FAIL() << "no error";
  } catch (const vitq::Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Model);
    EXPECT_HAS(e.what(), "tensor 'idx': dtype I32 cannot be converted to float32");
  }
  try {
    f.info("nope");
    FAIL() << "no error";
  } catch (const vitq::Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Model);
    EXPECT_HAS(e.what(), f.path() + ": tensor 'nope': not found");
  }
}

TEST_F(SafeTensorsTest, OpenErrorsAreIo) {
  for (const std::string& p : {path("absent.safetensors"), dir_}) {
    try {
      SafeTensorsFile::open(p);
      ADD_FAILURE() << p << " opened";
    } catch (const vitq::Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Io);
      EXPECT_HAS(e.what(), p + ": ");
    }
  }
  try {
    SafeTensorsFile::open(path("absent.safetensors"));
  } catch (const vitq::Error& e) {
    EXPECT_HAS(e.what(), "No such file or directory");
  }
}

// ---------------------------------------------------------------------------------------
// Malformed files: one rule per test

TEST_F(SafeTensorsTest, EmptyFile) {
  EXPECT_HAS(open_error(write_raw("")), "header: file is 0 bytes, too short for the 8-byte header length");
}

TEST_F(SafeTensorsTest, ShorterThanLengthField) {
  EXPECT_HAS(open_error(write_raw(std::string("\x02\0\0\0\0", 5))), "file is 5 bytes, too short");
}

TEST_F(SafeTensorsTest, HeaderLengthLargerThanFile) {
  EXPECT_HAS(open_error(write_file("{}", "", 100)), "header: header length 100 runs past the end of the file (10 bytes)");
}

TEST_F(SafeTensorsTest, HugeHeaderLength) {
  EXPECT_HAS(open_error(write_file("{}", "", 100'000'001)), "header length 100000001 exceeds the limit");
  // Near 2^64: must not wrap around when added to 8.
  EXPECT_HAS(open_error(write_file("{}", "", ~uint64_t{0})), "header length 18446744073709551615 exceeds the limit");
}

TEST_F(SafeTensorsTest, TruncatedFile) {
  vitq::write_safetensors(path("full.safetensors"),
                          {{"a", DType::F32, {2}, bytes_of(f32le({1, 2}))}, {"b", DType::F32, {4}, std::vector<uint8_t>(16)}});
  std::string bytes = read_all(path("full.safetensors"));
  bytes.resize(bytes.size() - 3);
  const std::string msg = open_error(write_raw(bytes));
  EXPECT_HAS(msg, "tensor 'b': data_offsets [8, 24] run past the end of the data buffer (21 bytes; file truncated?)");
}

TEST_F(SafeTensorsTest, BadJson) {
  EXPECT_HAS(header_error(R"({"a": {"dtype": "F32",)"), "header: invalid JSON");
  EXPECT_HAS(header_error(R"({"a": 1} x)"), "header: invalid JSON");
  EXPECT_HAS(header_error("{'a': 1}"), "header: invalid JSON");
}

TEST_F(SafeTensorsTest, HeaderNotAnObject) {
  EXPECT_HAS(header_error("[1, 2, 3]"), "header: does not start with '{'");
  EXPECT_HAS(header_error("\"{}\""), "header: does not start with '{'");
  EXPECT_HAS(header_error(" {}"), "header: does not start with '{'");  // the reference checks the first byte
  EXPECT_HAS(open_error(write_file("", "")), "header: does not start with '{'");
}

TEST_F(SafeTensorsTest, InvalidUtf8) {
  EXPECT_HAS(header_error("{\"a\xff\": 1}"), "header: not valid UTF-8 (byte 3 of the header)");
  EXPECT_HAS(header_error("{\"\xc0\xaf\": 1}"), "not valid UTF-8 (byte 2");      // overlong '/'
  EXPECT_HAS(header_error("{\"\xed\xa0\x80\": 1}"), "not valid UTF-8 (byte 2");  // surrogate
  EXPECT_HAS(header_error("{\"\xe2\x82"), "not valid UTF-8 (byte 2");            // cut short
}

TEST_F(SafeTensorsTest, UnknownDtype) {
  EXPECT_HAS(header_error(R"({"q":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", "x"),
             "tensor 'q': unknown dtype \"F8_E4M3\"");
  EXPECT_HAS(header_error(R"({"q":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", "xxxx"),
             "tensor 'q': unknown dtype \"f32\"");
  EXPECT_HAS(header_error(R"({"q":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", "xxxx"),
             "tensor 'q': unknown dtype 4");
}

TEST_F(SafeTensorsTest, BadShapeEntries) {
  auto err = [&](const std::string& shape) {
    return header_error(R"({"s":{"dtype":"U8","shape":)" + shape + R"(,"data_offsets":[0,2]}})", "xx");
  };
  EXPECT_HAS(err("[1, -2]"), "tensor 's': shape entry 1 is not a non-negative integer (-2 in [1,-2])");
  EXPECT_HAS(err("[2.0]"), "tensor 's': shape entry 0 is not a non-negative integer (2.0");
  EXPECT_HAS(err("[1e0, 2]"), "tensor 's': shape entry 0 is not a non-negative integer");
  EXPECT_HAS(err("[\"2\"]"), "tensor 's': shape entry 0 is not a non-negative integer");
  EXPECT_HAS(err("[18446744073709551616]"), "tensor 's': shape entry 0 is not a non-negative integer");
  EXPECT_HAS(err("[9223372036854775808]"), "tensor 's': shape entry 0 is too large (9223372036854775808)");
  EXPECT_HAS(err("2"), "tensor 's': shape is not an array (2)");
}

TEST_F(SafeTensorsTest, BadEntryStructure) {
  EXPECT_HAS(header_error(R"({"e":[0,4]})"), "tensor 'e': entry is not a JSON object ([0,4])");
  EXPECT_HAS(header_error(R"({"e":{"dtype":"U8","shape":[1]}})", "x"), "tensor 'e': missing field 'data_offsets'");
  EXPECT_HAS(header_error(R"({"e":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", "x"),
             "tensor 'e': data_offsets is not a pair of non-negative integers ([0])");
  EXPECT_HAS(header_error(R"({"e":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})", "x"),
             "tensor 'e': data_offsets is not a pair of non-negative integers ([-1,0])");
}

TEST_F(SafeTensorsTest, ByteCountNotNumelTimesDtypeSize) {
  EXPECT_HAS(header_error(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,6]}})", "xxxxxx"),
             "tensor 'w': data_offsets [0, 6] span 6 bytes but shape [2] of F32 needs 8");
}

TEST_F(SafeTensorsTest, BeginAfterEnd) {
  EXPECT_HAS(header_error(R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[8,4]}})", "xxxxxxxx"),
             "tensor 'w': data_offsets begin > end ([8, 4])");
}

TEST_F(SafeTensorsTest, OverlappingOffsets) {
  EXPECT_HAS(header_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                          std::string(12, 'x')),
             "tensor 'b': data_offsets [4, 12] overlap tensor 'a' [0, 8]");
  // Two names for the same bytes (tied weights) are refused too, as by the reference.
  EXPECT_HAS(header_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                          R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                          std::string(4, 'x')),
             "tensor 'b': data_offsets [0, 4] overlap tensor 'a' [0, 4]");
}

TEST_F(SafeTensorsTest, HoleBetweenTensors) {
  EXPECT_HAS(header_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                          R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                          std::string(12, 'x')),
             "tensor 'b': data_offsets [8, 12] leave a hole after tensor 'a' which ends at 4");
  EXPECT_HAS(header_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, 'x')),
             "tensor 'a': data_offsets [4, 8] leave a hole: the first tensor must begin at 0");
}

TEST_F(SafeTensorsTest, TrailingBytes) {
  EXPECT_HAS(header_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "xxxxyy"),
             "header: tensors cover 4 bytes but the data buffer has 6 (2 trailing bytes)");
  EXPECT_HAS(header_error("{}", "z"), "header: tensors cover 0 bytes but the data buffer has 1");
}

// A shape whose element or byte count wraps to 0 in 64 bits would match offsets [0, 0] if
// the arithmetic were unchecked.
TEST_F(SafeTensorsTest, OverflowingShape) {
  EXPECT_HAS(header_error(R"({"o":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,0]}})"),
             "tensor 'o': shape [1099511627776, 1099511627776] of F32 overflows a 64-bit byte count");
  EXPECT_HAS(header_error(R"({"o":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})"),
             "tensor 'o': shape [4294967296, 4294967296] of U8 overflows");
  // Element count 2^62 fits, bytes 2^62 * 4 = 2^64 does not.
  EXPECT_HAS(header_error(R"({"o":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})"),
             "tensor 'o': shape [4611686018427387904] of F32 overflows");
  // Zero anywhere makes the product 0 regardless of the other (large) dimensions.
  EXPECT_NO_THROW(SafeTensorsFile::open(
      write_file(R"({"o":{"dtype":"F32","shape":[4294967296,0,4294967296],"data_offsets":[0,0]}})")));
}

TEST_F(SafeTensorsTest, DuplicateNames) {
  // nlohmann alone would keep the last "a" and accept this file.
  EXPECT_HAS(header_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                          R"("a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
                          "x"),
             "tensor 'a': duplicate name in header");
  EXPECT_HAS(header_error(R"({"a":{"dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "xxxx"),
             "header: entry 'a': duplicate key 'dtype'");
  EXPECT_HAS(header_error(R"({"__metadata__":{"k":"1","k":"2"}})"), "entry '__metadata__': duplicate key 'k'");
}

TEST_F(SafeTensorsTest, BadMetadata) {
  EXPECT_HAS(header_error(R"({"__metadata__":{"epoch":3}})"),
             "header: __metadata__ value for key 'epoch' is not a string (3)");
  EXPECT_HAS(header_error(R"({"__metadata__":{"a":"b","n":null}})"),
             "header: __metadata__ value for key 'n' is not a string (null)");
  EXPECT_HAS(header_error(R"({"__metadata__":["a"]})"), "header: __metadata__ is not an object of strings");
}

TEST_F(SafeTensorsTest, DeepNesting) {
  const std::string deep = R"({"__metadata__":)" + std::string(100000, '[') + std::string(100000, ']') + "}";
  EXPECT_HAS(header_error(deep), "header: JSON nested deeper than 64 levels");
}

// ---------------------------------------------------------------------------------------
// Interop: a file vitq writes is read by an independent Python reader, and a file written
// with numpy's float16 and torch's bfloat16 encoders decodes in vitq exactly as those
// libraries decode it (all 65536 bit patterns).

TEST_F(SafeTensorsTest, PythonInterop) {
#ifndef VITQ_SOURCE_DIR
  GTEST_SKIP() << "VITQ_SOURCE_DIR not defined";
#else
  const char* python = "/usr/bin/python3";
  if (::access(python, X_OK) != 0) GTEST_SKIP() << python << " not available";
  vitq::write_safetensors(path("vitq.safetensors"),
                          {{"w", DType::F32, {2, 3}, bytes_of(f32le({-1, -0.5f, 0, 0.5f, 1, 1.5f}))},
                           {"h", DType::F16, {4}, bytes_of(u16le({0x3C00, 0xC000, 0x0001, 0x7BFF}))},
                           {"i", DType::I64, {2}, bytes_of(u64le(uint64_t(-3)) + u64le(uint64_t{1} << 40))}},
                          {{"source", "vitq-test"}});
  const std::string cmd = std::string(python) + " " VITQ_SOURCE_DIR "/tests/unit/safetensors_interop.py '" +
                          path("vitq.safetensors") + "' '" + path("py.safetensors") + "'";
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status)) << cmd;
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << "numpy not available";
  ASSERT_EQ(WEXITSTATUS(status), 0) << cmd;

  auto f = SafeTensorsFile::open(path("py.safetensors"));
  EXPECT_EQ(f.metadata().at("note"), "caf\xc3\xa9");
  auto same = [](const vitq::Tensor& got, const vitq::Tensor& want) {
    ASSERT_EQ(got.numel(), want.numel());
    size_t bad = 0;
    for (int64_t i = 0; i < got.numel(); ++i) {
      const float g = got.data[i], w = want.data[i];
      const bool ok = std::isnan(w) ? std::isnan(g) : std::memcmp(&g, &w, 4) == 0;
      if (!ok && bad++ < 5) ADD_FAILURE() << "element " << i << ": " << g << " != " << w;
    }
    EXPECT_EQ(bad, 0u);
  };
  same(f.to_f32("f16_all", {256, 256}), f.to_f32("f16_all_expected"));
  same(f.to_f32("f16_vals"), f.to_f32("f16_vals_expected"));
  if (f.has("bf16_all")) {
    same(f.to_f32("bf16_all"), f.to_f32("bf16_all_expected"));
  } else {
    std::printf("torch not available: BF16 interop not checked\n");
  }
#endif
}

}  // namespace
