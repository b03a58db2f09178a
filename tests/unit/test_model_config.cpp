// config.json parsing (timm and Hugging Face) and checkpoint/config consistency errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "core/error.h"
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
