// The quantized model directory (docs/FORMAT.md): model.safetensors with the integer weights at
// their bit-width, F32 steps and corrected biases and the unquantized tensors, next to
// config.json (the source config plus a "vitq" section) and plan.json. This header has the
// in-memory form, the writer and the strict loader.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "engine/site.h"
#include "model/vit_model.h"
#include "quant/plan.h"

namespace vitq {

constexpr const char* kQuantizedFormat = "vitq-quantized";
constexpr int kQuantizedFormatVersion = 1;

// How the codes of a quantized linear site are stored: I8 [N, K] when every channel has 8 bits,
// I16 [N, K] when any channel has 9 or 10, else U8 [bytes] packed (numerics/pack_bits.h).
enum class CodeStorage { I8, I16, Packed };
CodeStorage code_storage(const std::vector<int>& channel_bits);
const char* code_storage_name(CodeStorage s);

// One linear site (patch_embed, qkv, proj, fc1, fc2, head, head_dist) as stored.
struct StoredLinear {
  SiteId id;
  int N = 0, K = 0;
  bool quantized = false;
  Tensor w;                          // FP32 site: [N, K]
  std::vector<int16_t> codes;        // quantized: N x K integer weights
  std::vector<int> bits;             // quantized: bit-width per output channel
  std::vector<float> scale;          // quantized: step Δw_c per output channel
  bool per_channel = false;          // the plan gives one step per channel (stored [N]) or one ([1])
  std::vector<float> bias;           // N: the layer's bias + the plan's bias correction; empty = none
  std::vector<float> weight_offset;  // N or empty (plan.h)
};

struct QuantizedViT {
  std::string dir;  // where it was loaded from ("" if built in memory)
  ViTConfig cfg;
  QuantPlan plan;
  Tensor cls_token, dist_token, pos_embed;  // [D], [D] (distilled), [tokens, D]
  std::vector<LayerNormWeights> norm1, norm2;
  LayerNormWeights norm;
  std::map<SiteId, StoredLinear> linears;               // every linear site of the model
  std::map<SiteId, std::vector<float>> attention_bias;  // heads x N, attention sites with a bias correction
  std::vector<float> mlp_rotation_signs;  // F, or empty: fc2's input is h·H_F∘s/√F (quant/rotation.h)

  const StoredLinear& linear(const SiteId& id) const;
  const std::vector<float>* attention_bias_of(const SiteId& id) const;
};

// The integer weights of a quantized linear site under its plan: the plan's weight_codes if it
// has them, else clip(round(W / Δw_c)) on each channel's grid (quant/weight_codes.h);
// with the bit-width and step of every output channel.
void plan_weight_codes(const float* w, int N, int K, const SitePlan& sp, std::vector<int16_t>* codes,
                       std::vector<int>* bits, std::vector<float>* steps);

// The stored form of `model` quantized by `plan` (which must match it: check_plan_matches).
QuantizedViT quantize_model(const ViTModel& model, const QuantPlan& plan);

struct WrittenModel {
  std::string path;        // .../model.safetensors
  uint64_t bytes = 0;      // its size
  std::map<std::string, int> sites_by_storage;  // "I8" / "I16" / "packed" / "F32" -> linear sites
};
// Writes out_dir/model.safetensors, out_dir/config.json (src_dir's config.json plus the "vitq"
// section; preprocessor_config.json copied if present) and out_dir/plan.json.
WrittenModel write_quantized_model(const QuantizedViT& q, const std::string& src_dir, const std::string& out_dir);

// True if dir/config.json has a "vitq" section (a quantized model directory); false if it has
// none or cannot be read (the checkpoint loader then reports why).
bool is_quantized_model_dir(const std::string& dir);

// Loads and validates a quantized model directory: format and version, every expected tensor
// present with its dtype and shape and nothing else, packed byte counts, codes on their grids,
// positive finite steps equal to plan.json's, and (unless opt.allow_non_finite) no NaN/Inf in
// any float tensor. Throws Error(Model) naming file, tensor and reason.
QuantizedViT load_quantized_model(const std::string& dir, const LoadOptions& opt = {});

// For --simulate: the FP model whose linear weights are the dequantized codes (codes · steps)
// and whose biases are the stored (corrected) biases, and the plan with those linear bias
// corrections removed (they are in the biases). PlanSimulator on the two reproduces the plan.
ViTModel dequantized_model(const QuantizedViT& q);
QuantPlan simulation_plan(const QuantizedViT& q);

// Frees the codes and FP32 weights of the linear sites once an IntViTForward has prepared its own
// (packed) copies; the rest (LayerNorms, embeddings, plan) stays.
void drop_linear_weights(QuantizedViT& q);

// Whether the FP layer of a linear site has a bias (qkv may not).
bool linear_has_bias(const ViTConfig& cfg, const SiteId& id);
// Whether a quantized model directory stores a bias for the site: the layer's own, or one the
// plan's transforms (rotation, LayerNorm centring) or bias correction made.
bool stored_has_bias(const ViTConfig& cfg, const QuantPlan& plan, const SiteId& id);

}  // namespace vitq
