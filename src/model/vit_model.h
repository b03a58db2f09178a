// In-memory FP32 Vision Transformer: the weights of the standard pre-norm ViT/DeiT in one
// layout whatever checkpoint format they came from.
#pragma once
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/vit_config.h"

namespace vitq {

struct LinearWeights {
  Tensor w;  // [out, in] row-major (PyTorch nn.Linear layout)
  Tensor b;  // [out]; empty when the layer has no bias
  int out() const { return static_cast<int>(w.dim(0)); }
  int in() const { return static_cast<int>(w.dim(1)); }
};

struct LayerNormWeights {
  Tensor gamma, beta;  // [dim]
};

struct BlockWeights {
  LayerNormWeights norm1, norm2;
  LinearWeights qkv;   // [3*dim, dim]; rows: q (heads x head_dim), then k, then v
  LinearWeights proj;  // [dim, dim]
  LinearWeights fc1;   // [mlp_hidden, dim]
  LinearWeights fc2;   // [dim, mlp_hidden]
  // Error compensation (QwT, quant/compensation.h): a linear map of the block's input added to
  // its output, x_out = block(x) + x·Wᵀ + b, W [dim, dim], b [dim]. Empty (every loaded
  // checkpoint): none.
  LinearWeights compensation;
  bool has_compensation() const { return !compensation.w.empty(); }
};

struct ViTModel {
  ViTConfig cfg;
  LinearWeights patch_embed;  // conv [dim, C, p, p] flattened to [dim, C*p*p] (c, ky, kx order)
  Tensor cls_token;           // [dim]
  Tensor dist_token;          // [dim]; distilled only
  Tensor pos_embed;           // [tokens, dim]
  std::vector<BlockWeights> blocks;
  LayerNormWeights norm;
  LinearWeights head;       // [classes, dim]
  LinearWeights head_dist;  // distilled only
  // Online rotation of every block's fc2 input (quant/rotation.h): mlp_hidden signs s; when not
  // empty, the forward multiplies the GELU output h by M = H_F·diag(s)/√F (numerics/hadamard.h)
  // before fc2, whose weight then holds W·M. Empty (every loaded checkpoint): none.
  std::vector<float> mlp_rotation_signs;

  int64_t parameter_count() const;
};

// Loads <dir>/config.json and <dir>/model.safetensors (timm or Hugging Face layout).
// Every expected tensor must be present with the shape the config implies; tensors the
// model does not use are reported as an error (a different architecture is likely).
// Throws Error(Model) naming the file, the tensor and the problem.
// allow_non_finite: load tensors holding NaN/Inf (otherwise an Error(Model) naming the tensor).
struct LoadOptions {
  bool allow_non_finite = false;
};
ViTModel load_vit_model(const std::string& dir, const LoadOptions& opt = {});

}  // namespace vitq
