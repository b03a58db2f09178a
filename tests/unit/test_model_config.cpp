// config.json parsing (timm and Hugging Face) and checkpoint/config consistency errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/limits.h"
#include "io/safetensors.h"
#include "model/vit_model.h"

namespace vitq {
namespace {

namespace fs = std::filesystem;

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("vitq_cfg_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write_config(const std::string& text) { std::ofstream(dir_ / "config.json") << text; }
  std::string load_error() {
    try {
      load_vit_config(dir_.string());
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Model) << e.what();
      return e.what();
    }
    ADD_FAILURE() << "no error";
    return "";
  }
  fs::path dir_;
};

TEST_F(ConfigTest, TimmNamesGiveTimmArchitectures) {
  struct Case {
    const char* arch;
    int dim, depth, heads, patch, img;
    bool distilled;
  } cases[] = {
      {"vit_tiny_patch16_224", 192, 12, 3, 16, 224, false},
      {"vit_small_patch32_384", 384, 12, 6, 32, 384, false},
      {"vit_base_patch16_224.augreg_in21k_ft_in1k", 768, 12, 12, 16, 224, false},
      {"vit_large_patch16_384", 1024, 24, 16, 16, 384, false},
      {"deit_small_patch16_224", 384, 12, 6, 16, 224, false},
      {"deit_base_distilled_patch16_384", 768, 12, 12, 16, 384, true},
  };
  for (const auto& c : cases) {
    write_config(std::string(R"({"architecture": ")") + c.arch + R"(", "num_classes": 1000})");
    ViTConfig v = load_vit_config(dir_.string());
    EXPECT_EQ(v.embed_dim, c.dim) << c.arch;
    EXPECT_EQ(v.depth, c.depth) << c.arch;
    EXPECT_EQ(v.num_heads, c.heads) << c.arch;
    EXPECT_EQ(v.patch_size, c.patch) << c.arch;
    EXPECT_EQ(v.img_size, c.img) << c.arch;
    EXPECT_EQ(v.distilled, c.distilled) << c.arch;
    EXPECT_EQ(v.mlp_hidden, 4 * c.dim) << c.arch;
    EXPECT_FLOAT_EQ(v.ln_eps, 1e-6f);
    EXPECT_EQ(v.tokens(), (c.img / c.patch) * (c.img / c.patch) + (c.distilled ? 2 : 1));
  }
}

TEST_F(ConfigTest, ModelArgsOverrideAndPretrainedCfg) {
  write_config(R"({"architecture": "vit_cifar10_patch4_32", "num_classes": 10,
    "model_args": {"img_size": 32, "patch_size": 4, "embed_dim": 128, "depth": 4, "num_heads": 4, "mlp_ratio": 2.0},
    "pretrained_cfg": {"input_size": [3, 32, 32], "interpolation": "bilinear", "crop_pct": 1.0,
                       "mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616]}})");
  ViTConfig v = load_vit_config(dir_.string());
  EXPECT_EQ(v.embed_dim, 128);
  EXPECT_EQ(v.mlp_hidden, 256);
  EXPECT_EQ(v.tokens(), 65);
  EXPECT_EQ(v.preprocess.interp, Interp::Bilinear);
  EXPECT_FLOAT_EQ(v.preprocess.std[2], 0.2616f);
  EXPECT_EQ(v.preprocess.height, 32);
}

TEST_F(ConfigTest, HuggingFaceConfig) {
  write_config(R"({"model_type": "vit", "architectures": ["ViTForImageClassification"], "hidden_size": 384,
    "num_hidden_layers": 6, "num_attention_heads": 6, "intermediate_size": 1536, "image_size": 224,
    "patch_size": 16, "id2label": {"0": "a", "1": "b", "2": "c"}})");
  ViTConfig v = load_vit_config(dir_.string());
  EXPECT_EQ(v.layout, CheckpointLayout::HuggingFace);
  EXPECT_EQ(v.num_classes, 3);
  EXPECT_FLOAT_EQ(v.ln_eps, 1e-12f);  // transformers' default when the field is absent
  EXPECT_TRUE(v.preprocess.resize_exact);
  write_config(R"({"model_type": "vit", "hidden_size": 384, "num_attention_heads": 6, "layer_norm_eps": 1e-6})");
  EXPECT_FLOAT_EQ(load_vit_config(dir_.string()).ln_eps, 1e-6f);
}

TEST_F(ConfigTest, ErrorsNameTheField) {
  write_config("{not json");
  EXPECT_NE(load_error().find("not valid JSON"), std::string::npos);
  write_config(R"({"architecture": "resnet50"})");
  EXPECT_NE(load_error().find("resnet50"), std::string::npos);
  write_config(R"({"architecture": "my_vit", "model_args": {"embed_dim": 64, "depth": 2, "num_heads": 4}})");
  EXPECT_NE(load_error().find("'patch_size'"), std::string::npos);
  write_config(R"({"architecture": "vit_tiny_patch16_224", "model_args": {"num_heads": "three"}})");
  EXPECT_NE(load_error().find("model_args.num_heads"), std::string::npos);
  write_config(R"({"architecture": "vit_tiny_patch16_224", "model_args": {"num_heads": 5}})");
  EXPECT_NE(load_error().find("not divisible"), std::string::npos);
  write_config(R"({"architecture": "vit_tiny_patch16_224", "model_args": {"init_values": 1e-5}})");
  EXPECT_NE(load_error().find("model_args.init_values"), std::string::npos);
  write_config(R"({"architecture": "vit_tiny_patch16_224", "global_pool": "avg"})");
  EXPECT_NE(load_error().find("global_pool"), std::string::npos);
  write_config(R"({"architecture": "vit_tiny_patch16_224", "pretrained_cfg": {"crop_pct": 0}})");
  EXPECT_NE(load_error().find("pretrained_cfg.crop_pct"), std::string::npos);
  write_config(R"({"architecture": "vit_tiny_patch16_224", "pretrained_cfg": {"interpolation": "lanczos"}})");
  EXPECT_NE(load_error().find("pretrained_cfg.interpolation"), std::string::npos);
  write_config(R"({"hidden_size": 64, "hidden_act": "relu"})");
  EXPECT_NE(load_error().find("hidden_act"), std::string::npos);
  write_config(R"({"foo": 1})");
  EXPECT_NE(load_error().find("neither a timm config"), std::string::npos);
}

// Every architecture limit of core/limits.h: one past it is a model error naming the field (or
// the derived size) and the limit; exactly at it the config is accepted.
TEST_F(ConfigTest, ArchitectureLimitsAreRefusedBeforeAnythingIsShaped) {
  // A small timm config with some model_args replaced, and a Hugging Face one likewise.
  auto timm = [](nlohmann::json args) {
    nlohmann::json a = {{"patch_size", 16}, {"img_size", 224}, {"embed_dim", 64}, {"depth", 2}, {"num_heads", 4}};
    a.update(args);
    return nlohmann::json{{"architecture", "my_vit"}, {"model_args", a}}.dump();
  };
  auto hf = [](nlohmann::json fields) {
    nlohmann::json j = {{"hidden_size", 64}, {"num_attention_heads", 4}};
    j.update(fields);
    return j.dump();
  };
  struct Case { std::string config, field; long long limit; };
  const std::vector<Case> cases = {
      {timm({{"embed_dim", limits::kMaxEmbedDim + 1}}), "model_args.embed_dim", limits::kMaxEmbedDim},
      {timm({{"depth", limits::kMaxDepth + 1}}), "model_args.depth", limits::kMaxDepth},
      {timm({{"num_heads", limits::kMaxHeads + 1}}), "model_args.num_heads", limits::kMaxHeads},
      {timm({{"num_classes", limits::kMaxClasses + 1}}), "model_args.num_classes", limits::kMaxClasses},
      {timm({{"patch_size", limits::kMaxPatchSize + 1}}), "model_args.patch_size", limits::kMaxPatchSize},
      {timm({{"img_size", limits::kMaxImageSize + 1}}), "model_args.img_size", limits::kMaxImageSize},
      {hf({{"hidden_size", limits::kMaxEmbedDim + 1}}), "hidden_size", limits::kMaxEmbedDim},
      {hf({{"num_hidden_layers", limits::kMaxDepth + 1}}), "num_hidden_layers", limits::kMaxDepth},
      {hf({{"num_attention_heads", limits::kMaxHeads + 1}}), "num_attention_heads", limits::kMaxHeads},
      {hf({{"intermediate_size", limits::kMaxMlpHidden + 1}}), "intermediate_size", limits::kMaxMlpHidden},
      {hf({{"num_labels", limits::kMaxClasses + 1}}), "num_labels", limits::kMaxClasses},
      {hf({{"image_size", limits::kMaxImageSize + 1}}), "image_size", limits::kMaxImageSize},
      // Derived sizes: width x mlp_ratio, and (img_size / patch_size)^2 patches.
      {timm({{"embed_dim", limits::kMaxEmbedDim}, {"num_heads", 1}, {"mlp_ratio", 64}}), "mlp hidden size",
       limits::kMaxMlpHidden},
      {timm({{"img_size", 8192}, {"patch_size", 1}}), "patches", limits::kMaxPatches},
      {timm({{"img_size", 2064}, {"patch_size", 16}}), "patches", limits::kMaxPatches},  // 129 x 129
      {hf({{"image_size", 2064}, {"patch_size", 16}}), "patches", limits::kMaxPatches},
  };
  for (const Case& c : cases) {
    write_config(c.config);
    const std::string msg = load_error();
    EXPECT_NE(msg.find(c.field), std::string::npos) << c.config << "\n" << msg;
    EXPECT_NE(msg.find(std::to_string(c.limit)), std::string::npos) << c.config << "\n" << msg;
  }
  // At the limits: 128 x 128 patches, the widest, deepest, most-headed config are accepted.
  write_config(timm({{"img_size", 2048}, {"patch_size", 16}}));
  EXPECT_EQ(load_vit_config(dir_.string()).img_size, 2048);
  write_config(timm({{"embed_dim", limits::kMaxEmbedDim}, {"depth", limits::kMaxDepth}, {"num_heads", limits::kMaxHeads}}));
  EXPECT_EQ(load_vit_config(dir_.string()).embed_dim, limits::kMaxEmbedDim);
}

// A config.json (or any JSON file) above kMaxJsonFileBytes is refused from its size, unread:
// an I/O error (exit 5) naming the file and the limit. The file is sparse, so this costs nothing.
TEST_F(ConfigTest, JsonFilesAboveTheSizeLimitAreRefusedUnread) {
  write_config("{}");
  fs::resize_file(dir_ / "config.json", limits::kMaxJsonFileBytes + 1);
  try {
    load_vit_config(dir_.string());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Io) << e.what();
    EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(std::to_string(limits::kMaxJsonFileBytes >> 20)), std::string::npos) << e.what();
  }
  fs::resize_file(dir_ / "config.json", limits::kMaxJsonFileBytes);  // at the limit: read, and not JSON
  EXPECT_NE(load_error().find("JSON"), std::string::npos);
}

// A checkpoint whose tensors disagree with config.json is rejected with the tensor named.
TEST_F(ConfigTest, CheckpointShapeMismatch) {
  write_config(R"({"architecture": "tiny", "num_classes": 5,
    "model_args": {"img_size": 8, "patch_size": 4, "embed_dim": 8, "depth": 1, "num_heads": 2, "mlp_ratio": 2}})");
  auto blob = [](const std::string& n, Shape s) { return make_f32_blob(n, Tensor(std::move(s))); };
  std::vector<TensorBlob> t = {
      blob("patch_embed.proj.weight", {8, 3, 4, 4}), blob("patch_embed.proj.bias", {8}), blob("cls_token", {1, 1, 8}),
      blob("pos_embed", {1, 5, 8}), blob("blocks.0.norm1.weight", {8}), blob("blocks.0.norm1.bias", {8}),
      blob("blocks.0.attn.qkv.weight", {24, 8}), blob("blocks.0.attn.qkv.bias", {24}),
      blob("blocks.0.attn.proj.weight", {8, 8}), blob("blocks.0.attn.proj.bias", {8}),
      blob("blocks.0.norm2.weight", {8}), blob("blocks.0.norm2.bias", {8}), blob("blocks.0.mlp.fc1.weight", {16, 8}),
      blob("blocks.0.mlp.fc1.bias", {16}), blob("blocks.0.mlp.fc2.weight", {8, 16}), blob("blocks.0.mlp.fc2.bias", {8}),
      blob("norm.weight", {8}), blob("norm.bias", {8}), blob("head.weight", {5, 8}), blob("head.bias", {5})};
  const std::string st = (dir_ / "model.safetensors").string();
  write_safetensors(st, t);
  EXPECT_EQ(load_vit_model(dir_.string()).parameter_count(), 8 * 48 + 8 + 8 + 40 + 4 * 8 + 24 * 8 + 24 + 72 + 128 +
                                                                  16 + 128 + 8 + 16 + 40 + 5);

  auto expect_error = [&](const char* needle) {
    try {
      load_vit_model(dir_.string());
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto with = [&](const std::string& name, Shape s) {
    auto u = t;
    for (auto& b : u)
      if (b.name == name) b = blob(name, std::move(s));
    write_safetensors(st, u);
  };
  with("blocks.0.mlp.fc1.weight", {32, 8});
  expect_error("blocks.0.mlp.fc1.weight");
  with("pos_embed", {1, 17, 8});
  expect_error("pos_embed");
  auto missing = t;
  missing.pop_back();
  write_safetensors(st, missing);
  expect_error("'head.bias' is missing");
  auto extra = t;
  extra.push_back(blob("blocks.1.norm1.weight", {8}));
  write_safetensors(st, extra);
  expect_error("blocks.1.norm1.weight");
}

}  // namespace
}  // namespace vitq
