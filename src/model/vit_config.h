// Architecture of a Vision Transformer and how its inputs are preprocessed, read from the
// config.json of a timm or Hugging Face (ViTForImageClassification) checkpoint directory.
#pragma once
#include <string>

#include "data/image.h"

namespace vitq {

enum class CheckpointLayout { Timm, HuggingFace };

struct ViTConfig {
  std::string architecture;  // timm name, or "hf:ViTForImageClassification"
  CheckpointLayout layout = CheckpointLayout::Timm;
  int img_size = 224;   // square input
  int patch_size = 16;
  int in_chans = 3;
  int embed_dim = 768;
  int depth = 12;
  int num_heads = 12;
  int mlp_hidden = 3072;
  int num_classes = 1000;
  bool qkv_bias = true;
  bool distilled = false;  // DeiT distillation token + head_dist
  float ln_eps = 1e-6f;
  Preprocess preprocess;

  int grid() const { return img_size / patch_size; }
  int num_patches() const { return grid() * grid(); }
  int num_prefix_tokens() const { return distilled ? 2 : 1; }
  int tokens() const { return num_patches() + num_prefix_tokens(); }
  int head_dim() const { return embed_dim / num_heads; }
  int patch_dim() const { return in_chans * patch_size * patch_size; }
};

// Reads <dir>/config.json (and, for the HF layout, <dir>/preprocessor_config.json if present).
// The layout is detected from the fields: timm has "architecture", HF has "model_type"/"hidden_size".
// Throws Error(Model) naming the file and field for anything missing, mistyped or unsupported.
ViTConfig load_vit_config(const std::string& dir);

// timm architecture names known to vitq (for --help and errors).
std::string known_architectures();

}  // namespace vitq
