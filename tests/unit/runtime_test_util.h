// Helpers of the integer-runtime tests: a tiny random-weight ViT saved as a timm checkpoint
// directory, and a plan for it from the MinMax calibrator.
#pragma once
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <unistd.h>

#include "engine/vit_forward.h"
#include "io/safetensors.h"
#include "model/vit_model.h"
#include "quant/calibrate.h"
#include "quant/method.h"
#include "quant/methods/methods.h"
#include "quant/simulate.h"

namespace vitq::test {

// An empty path under the system's temp directory, unique to `name` and this process.
inline std::string tmp_dir(const std::string& name) {
  const auto d = std::filesystem::temp_directory_path() / ("vitq_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  return d.string();
}

struct TinyDims {
  int img = 16, patch = 4, dim = 32, depth = 2, heads = 2, mlp = 64, classes = 7;
  bool distilled = false, qkv_bias = true;
};

// Writes a random timm-layout checkpoint (model.safetensors + config.json) to `dir` and loads it.
inline ViTModel write_tiny_checkpoint(const std::string& dir, const TinyDims& d, uint64_t seed) {
  std::filesystem::create_directories(dir);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0, 1);
  std::vector<TensorBlob> blobs;
  auto add = [&](const std::string& name, Shape s, float scale, float offset = 0) {
    Tensor t(s);
    for (auto& v : t.data) v = offset + scale * nd(rng);
    blobs.push_back(make_f32_blob(name, t));
  };
  const int D = d.dim, T = (d.img / d.patch) * (d.img / d.patch) + (d.distilled ? 2 : 1);
  auto linear = [&](const std::string& p, int out, int in, bool bias = true) {
    add(p + ".weight", {out, in}, 1.0f / std::sqrt(float(in)));
    if (bias) add(p + ".bias", {out}, 0.1f);
  };
  add("patch_embed.proj.weight", {D, 3, d.patch, d.patch}, 1.0f / std::sqrt(float(3 * d.patch * d.patch)));
  add("patch_embed.proj.bias", {D}, 0.1f);
  add("cls_token", {1, 1, D}, 0.5f);
  if (d.distilled) add("dist_token", {1, 1, D}, 0.5f);
  add("pos_embed", {1, T, D}, 0.2f);
  for (int i = 0; i < d.depth; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    add(p + "norm1.weight", {D}, 0.1f, 1.0f);
    add(p + "norm1.bias", {D}, 0.1f);
    linear(p + "attn.qkv", 3 * D, D, d.qkv_bias);
    linear(p + "attn.proj", D, D);
    add(p + "norm2.weight", {D}, 0.1f, 1.0f);
    add(p + "norm2.bias", {D}, 0.1f);
    linear(p + "mlp.fc1", d.mlp, D);
    linear(p + "mlp.fc2", D, d.mlp);
  }
  add("norm.weight", {D}, 0.1f, 1.0f);
  add("norm.bias", {D}, 0.1f);
  add("head.weight", {d.classes, D}, 1.0f);
  add("head.bias", {d.classes}, 0.1f);
  if (d.distilled) {
    add("head_dist.weight", {d.classes, D}, 1.0f);
    add("head_dist.bias", {d.classes}, 0.1f);
  }
  write_safetensors(dir + "/model.safetensors", blobs);
  std::ofstream(dir + "/config.json")
      << "{\"architecture\": \"vit_test_tiny\", \"num_classes\": " << d.classes
      << ", \"model_args\": {\"img_size\": " << d.img << ", \"patch_size\": " << d.patch
      << ", \"embed_dim\": " << D << ", \"depth\": " << d.depth << ", \"num_heads\": " << d.heads
      << ", \"mlp_ratio\": " << double(d.mlp) / D << ", \"distilled\": " << (d.distilled ? "true" : "false")
      << ", \"qkv_bias\": " << (d.qkv_bias ? "true" : "false")
      << "}, \"pretrained_cfg\": {\"input_size\": [3, " << d.img << ", " << d.img
      << "], \"interpolation\": \"bilinear\", \"crop_pct\": 1.0, \"mean\": [0.5, 0.5, 0.5], \"std\": [0.5, 0.5, "
         "0.5]}}\n";
  return load_vit_model(dir);
}

inline std::vector<float> random_images(const ViTConfig& c, int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> x(size_t(n) * size_t(c.in_chans) * size_t(c.img_size) * size_t(c.img_size));
  for (auto& v : x) v = nd(rng);
  return x;
}

// A MinMax plan at `bits` (per block overrides in block_bits), calibrated on random images
// (with LayerNorm smoothing of that alpha if >= 0, and centring if ln_center).
inline QuantPlan minmax_plan(const ViTModel& m, int bits, bool quantize_head, bool unsigned_softmax = false,
                             std::vector<Bits> block_bits = {}, bool per_channel = false,
                             double smooth_ln_alpha = -1.0, bool ln_center = false) {
  const std::vector<float> images = random_images(m.cfg, 8, 99);
  Calibrator cal(m, images.data(), 8);
  MethodConfig cfg;
  cfg.get<MinmaxOptions>("minmax").per_channel_weights = per_channel;
  auto method = make_method("minmax", cfg);
  CalibOptions opt;
  if (unsigned_softmax) opt.grids.softmax = Grid::Unsigned;
  opt.bits = {bits, bits};
  opt.block_bits = std::move(block_bits);
  opt.quantize_head = quantize_head;
  opt.batch = 4;
  opt.transforms.smooth_ln_alpha = smooth_ln_alpha;
  opt.transforms.ln_center = ln_center;
  QuantPlan p = cal.run(*method, opt).plan;
  p.tool_version = "test";
  p.architecture = m.cfg.architecture;
  return p;
}

// A plan from `method` with every driver option of `opt` (bits, grids, transforms), calibrated on
// 8 random images.
inline QuantPlan plan_with(const ViTModel& m, const std::string& method, const MethodConfig& cfg, CalibOptions opt) {
  const std::vector<float> images = random_images(m.cfg, 8, 99);
  Calibrator cal(m, images.data(), 8);
  auto meth = make_method(method, cfg);
  opt.batch = 4;
  QuantPlan p = cal.run(*meth, opt).plan;
  p.tool_version = "test";
  p.architecture = m.cfg.architecture;
  return p;
}

// A MinMax W4A4 plan with per-token inputs, calibrated on the n images `img` (the reconstruction
// loss tests then compute their block outputs on the same images).
inline QuantPlan minmax_w4a4_token_plan(const ViTModel& m, const std::vector<float>& img, int n) {
  MethodConfig mc;
  CalibOptions opt;
  opt.bits = {4, 4};
  opt.grids.per_token = true;
  Calibrator cal(m, img.data(), n);
  auto method = make_method("minmax", mc);
  return cal.run(*method, opt).plan;
}

// Block `blk`'s input and output in the model quantized by `plan` (the simulator's forward), n images.
struct BlockIO {
  std::vector<float> x, out;
};
inline BlockIO quantized_block_io(const ViTModel& m, const QuantPlan& plan, const std::vector<float>& img, int n,
                                  int blk) {
  PlanSimulator sim(m, plan);
  ViTForward f(m);
  BlockIO io;
  io.x.resize(size_t(n) * size_t(m.cfg.tokens()) * size_t(m.cfg.embed_dim));
  f.embed(img.data(), n, io.x.data(), &sim);
  for (int i = 0; i < blk; ++i) f.block(i, io.x.data(), n, &sim);
  io.out = io.x;
  f.block(blk, io.out.data(), n, &sim);
  return io;
}

}  // namespace vitq::test
