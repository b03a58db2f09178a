// The quantized model directory (docs/FORMAT.md): what the writer stores for each kind of site,
// a lossless round trip, file sizes, and a clear error for every kind of corruption.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "numerics/pack_bits.h"
#include "runtime/quantized_model.h"
#include "runtime_test_util.h"

namespace vitq {
namespace {

namespace fs = std::filesystem;

struct Fixture {
  std::string src, out;
  ViTModel m;
  QuantPlan plan;
};

// A model whose plan has every storage kind: 8-bit (I8), 6-bit and per-channel 2..8-bit
// (packed), a 10-bit block (I16), an FP32 site, explicit weight codes and an offset.
Fixture make_fixture(const std::string& name, const test::TinyDims& dims = {}) {
  Fixture f;
  const fs::path base = fs::temp_directory_path() / ("vitq_fmt_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(base);
  f.src = (base / "src").string();
  f.out = (base / "q").string();
  f.m = test::write_tiny_checkpoint(f.src, dims, 3);
  f.plan = test::minmax_plan(f.m, 8, true, true, {{10, 10}, {6, 6}, {8, 8}, {8, 8}});
  f.plan.sites.erase("blocks.1.mlp.fc2");
  SitePlan& fc1 = f.plan.sites.at("blocks.1.mlp.fc1");  // per-channel bits 2..8
  const int N = f.m.cfg.mlp_hidden, K = f.m.cfg.embed_dim;
  fc1.w.channel_scales.assign(size_t(N), fc1.w.scale);
  for (int n = 0; n < N; ++n) fc1.w.channel_bits.push_back(2 + n % 7);
  fc1.weight_offset.assign(size_t(N), 0.01f);
  SitePlan& proj = f.plan.sites.at("blocks.1.attn.proj");  // explicit codes
  proj.w.channel_scales.assign(size_t(K), proj.w.scale);
  for (int i = 0; i < K * K; ++i) proj.weight_codes.push_back(int16_t(i % 255 - 127));
  write_quantized_model(quantize_model(f.m, f.plan), f.src, f.out);
  return f;
}

std::string st_path(const Fixture& f) { return f.out + "/model.safetensors"; }

TEST(QuantizedFormat, StoresEachSiteAtItsBitWidthAndRoundTrips) {
  Fixture f = make_fixture("rt");
  SafeTensorsFile st = SafeTensorsFile::open(st_path(f));
  EXPECT_EQ(st.metadata().at("format"), "vitq-quantized");
  EXPECT_EQ(st.metadata().at("format_version"), "1");
  const int D = f.m.cfg.embed_dim, F = f.m.cfg.mlp_hidden;
  EXPECT_EQ(st.info("blocks.0.attn.qkv.qweight").dtype, DType::I16);  // 10-bit block
  EXPECT_EQ(st.info("blocks.0.attn.qkv.qweight").shape, (Shape{3 * D, D}));
  EXPECT_EQ(st.info("blocks.0.mlp.fc1.qweight").dtype, DType::U8);  // 6-bit: four codes per three bytes
  EXPECT_EQ(st.info("blocks.0.mlp.fc1.qweight").shape, (Shape{int64_t(F) * D * 6 / 8}));
  EXPECT_EQ(st.bytes("blocks.0.mlp.fc1.qweight").size(), size_t(F) * D * 6 / 8);
  EXPECT_EQ(st.info("blocks.1.attn.qkv.qweight").dtype, DType::I8);
  EXPECT_EQ(st.info("head.qweight").dtype, DType::I8);
  uint64_t bits = 0;
  for (int n = 0; n < F; ++n) bits += uint64_t(2 + n % 7) * uint64_t(D);
  EXPECT_EQ(st.info("blocks.1.mlp.fc1.qweight").shape, (Shape{int64_t((bits + 7) / 8)}));
  EXPECT_EQ(st.info("blocks.1.mlp.fc1.weight_scale").shape, (Shape{F}));
  EXPECT_EQ(st.info("blocks.1.mlp.fc1.weight_offset").shape, (Shape{F}));
  EXPECT_EQ(st.info("blocks.0.mlp.fc2.weight_scale").shape, (Shape{1}));
  EXPECT_EQ(st.info("blocks.1.mlp.fc2.weight").dtype, DType::F32);  // left in FP32
  EXPECT_TRUE(st.has("pos_embed") && st.has("cls_token") && st.has("blocks.0.norm1.weight"));

  const QuantizedViT want = quantize_model(f.m, f.plan);
  const QuantizedViT got = load_quantized_model(f.out);
  EXPECT_TRUE(got.plan == f.plan);
  ASSERT_EQ(got.linears.size(), want.linears.size());
  for (const auto& [id, w] : want.linears) {
    const StoredLinear& g = got.linears.at(id);
    EXPECT_EQ(g.quantized, w.quantized) << id.name();
    EXPECT_EQ(g.codes, w.codes) << id.name();
    EXPECT_EQ(g.bits, w.bits) << id.name();
    EXPECT_EQ(g.scale, w.scale) << id.name();
    EXPECT_EQ(g.bias, w.bias) << id.name();
    EXPECT_EQ(g.weight_offset, w.weight_offset) << id.name();
    EXPECT_EQ(g.w.data, w.w.data) << id.name();
  }
  EXPECT_EQ(got.linears.at({SiteKind::Proj, 1}).codes, f.plan.sites.at("blocks.1.attn.proj").weight_codes);
  EXPECT_EQ(got.pos_embed.data, f.m.pos_embed.data);
  EXPECT_TRUE(is_quantized_model_dir(f.out));
  EXPECT_FALSE(is_quantized_model_dir(f.src));
  // config.json: the source's fields plus the vitq section.
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(f.out + "/config.json"));
  EXPECT_EQ(cfg["architecture"], "vit_test_tiny");
  EXPECT_EQ(cfg["vitq"]["format_version"], 1);
  fs::remove_all(fs::path(f.src).parent_path());
}

// Rewrites model.safetensors with `edit` applied to its tensors and metadata.
void rewrite(const std::string& path,
             const std::function<void(std::vector<TensorBlob>&, std::map<std::string, std::string>&)>& edit) {
  std::vector<TensorBlob> blobs;
  std::map<std::string, std::string> meta;
  {
    SafeTensorsFile st = SafeTensorsFile::open(path);
    meta = st.metadata();
    for (const auto& n : st.names()) {
      const TensorInfo& ti = st.info(n);
      auto b = st.bytes(n);
      blobs.push_back({n, ti.dtype, ti.shape, std::vector<uint8_t>(b.begin(), b.end())});
    }
  }
  edit(blobs, meta);
  write_safetensors(path, blobs, meta);
}

TensorBlob& blob(std::vector<TensorBlob>& v, const std::string& name) {
  for (auto& b : v)
    if (b.name == name) return b;
  throw std::runtime_error("test: no tensor " + name);
}

void expect_error(const Fixture& f, const std::vector<std::string>& needles) {
  try {
    load_quantized_model(f.out);
    ADD_FAILURE() << "loaded a corrupt directory; expected an error with " << needles[0];
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Model) << e.what();
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

class Corruption : public ::testing::Test {
 protected:
  void SetUp() override { f_ = make_fixture("bad"); }
  void TearDown() override { fs::remove_all(fs::path(f_.src).parent_path()); }
  Fixture f_;
};

TEST_F(Corruption, MissingTensor) {
  rewrite(st_path(f_), [](auto& v, auto&) {
    v.erase(std::remove_if(v.begin(), v.end(), [](const TensorBlob& b) { return b.name == "blocks.0.attn.proj.bias"; }),
            v.end());
  });
  expect_error(f_, {"model.safetensors", "blocks.0.attn.proj.bias", "missing"});
}

TEST_F(Corruption, ExtraTensor) {
  rewrite(st_path(f_), [](auto& v, auto&) { v.push_back({"blocks.0.attn.extra", DType::F32, {2}, std::vector<uint8_t>(8)}); });
  expect_error(f_, {"model.safetensors", "unexpected tensors", "blocks.0.attn.extra"});
}

TEST_F(Corruption, WrongPackedByteCount) {
  rewrite(st_path(f_), [](auto& v, auto&) {
    TensorBlob& b = blob(v, "blocks.0.mlp.fc1.qweight");
    b.data.pop_back();
    b.shape[0] -= 1;
  });
  expect_error(f_, {"blocks.0.mlp.fc1.qweight", "bytes", "need"});
}

TEST(QuantizedFormatPadding, NonZeroPaddingBitsOfAPackedStream) {
  // Width 30: the per-channel bits of blocks.1.mlp.fc1 (2..8) total 30 · 294 bits, 4 short of a
  // byte; those padding bits must be zero.
  test::TinyDims d;
  d.dim = 30;
  d.mlp = 60;
  Fixture f = make_fixture("pad", d);
  uint64_t bits = 0;
  for (int n = 0; n < f.m.cfg.mlp_hidden; ++n) bits += uint64_t(2 + n % 7) * uint64_t(f.m.cfg.embed_dim);
  ASSERT_NE(bits % 8, 0u);
  ASSERT_NO_THROW(load_quantized_model(f.out));
  rewrite(st_path(f), [](auto& v, auto&) { blob(v, "blocks.1.mlp.fc1.qweight").data.back() |= 0x80; });
  expect_error(f, {"blocks.1.mlp.fc1.qweight", "unused high bits"});
  fs::remove_all(fs::path(f.src).parent_path());
}

TEST_F(Corruption, WrongDtype) {
  rewrite(st_path(f_), [](auto& v, auto&) {
    TensorBlob& b = blob(v, "blocks.1.attn.qkv.qweight");  // I8 -> I16
    b.dtype = DType::I16;
    b.data.resize(b.data.size() * 2);
  });
  expect_error(f_, {"blocks.1.attn.qkv.qweight", "expected I8"});
}

TEST_F(Corruption, CodeOutsideItsGrid) {
  rewrite(st_path(f_), [](auto& v, auto&) {
    TensorBlob& b = blob(v, "blocks.0.attn.qkv.qweight");  // 10-bit codes in I16: 600 is outside
    b.data[0] = uint8_t(600 & 0xff);
    b.data[1] = uint8_t(600 >> 8);
  });
  expect_error(f_, {"blocks.0.attn.qkv.qweight", "code 600", "outside"});
}

TEST_F(Corruption, NonPositiveStep) {
  rewrite(st_path(f_), [](auto& v, auto&) {
    const float neg = -0.5f;
    std::memcpy(blob(v, "blocks.0.mlp.fc2.weight_scale").data.data(), &neg, 4);
  });
  expect_error(f_, {"blocks.0.mlp.fc2.weight_scale", "positive"});
}

TEST_F(Corruption, StepDisagreesWithThePlan) {
  rewrite(st_path(f_), [](auto& v, auto&) {
    float s;
    TensorBlob& b = blob(v, "blocks.0.mlp.fc2.weight_scale");
    std::memcpy(&s, b.data.data(), 4);
    s *= 2;
    std::memcpy(b.data.data(), &s, 4);
  });
  expect_error(f_, {"blocks.0.mlp.fc2.weight_scale", "plan.json"});
}

TEST_F(Corruption, BitsOutOfRangeInThePlan) {
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(std::ifstream(f_.out + "/plan.json"));
  j["sites"]["blocks.1.attn.proj"]["w"]["bits"] = 12;
  std::ofstream(f_.out + "/plan.json") << j.dump(1);
  expect_error(f_, {"plan.json", "blocks.1.attn.proj", "w.bits"});
}

TEST_F(Corruption, PlanBitsDoNotMatchTheStoredCodes) {
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(std::ifstream(f_.out + "/plan.json"));
  j["sites"]["blocks.0.mlp.fc1"]["w"]["bits"] = 5;  // file has 6-bit codes
  j["sites"]["blocks.0.mlp.fc1"]["x"]["bits"] = 5;
  std::ofstream(f_.out + "/plan.json") << j.dump(1);
  expect_error(f_, {"blocks.0.mlp.fc1.qweight", "bytes"});
}

TEST_F(Corruption, FormatVersionMismatch) {
  rewrite(st_path(f_), [](auto&, auto& meta) { meta["format_version"] = "2"; });
  expect_error(f_, {"model.safetensors", "format_version", "reads version 1"});
}

TEST_F(Corruption, ConfigVersionMismatch) {
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(std::ifstream(f_.out + "/config.json"));
  j["vitq"]["format_version"] = 2;
  std::ofstream(f_.out + "/config.json") << j.dump(2);
  expect_error(f_, {"config.json", "vitq.format_version", "reads version 1"});
}

TEST_F(Corruption, NotAQuantizedCheckpoint) {
  rewrite(st_path(f_), [](auto&, auto& meta) { meta.erase("format"); });
  expect_error(f_, {"model.safetensors", "__metadata__.format"});
}

TEST_F(Corruption, TruncatedFile) {
  const std::string p = st_path(f_);
  fs::resize_file(p, fs::file_size(p) - 100);
  expect_error(f_, {"model.safetensors"});
}

}  // namespace
}  // namespace vitq
