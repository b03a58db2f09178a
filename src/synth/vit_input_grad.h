// The gradient of a loss on a ViT's FP32 forward with respect to its input images (for
// `vitq synth`: calibration images optimised pixel by pixel, DeepInversion-style).
//
// The loss may read the logits and the residual stream at every LayerNorm input:
//     layer 2i   = block i's LayerNorm 1 input (the block's input x_i),
//     layer 2i+1 = block i's LayerNorm 2 input (x_i + proj(attention(LN1(x_i)))),
// each batch × tokens × embed_dim. backward() takes ∂L/∂logits and ∂L/∂(layer l) for any layers
// and returns ∂L/∂images: the reverse of the head (final LayerNorm of the prefix tokens, head,
// DeiT's averaged head_dist), of every block (MLP with exact-erf GELU and the online MLP rotation if
// the model has one, LayerNorm 2, proj, the heads' softmax attention, qkv, LayerNorm 1, the
// residual adds), of the position embedding and of the patch embedding (a stride-p convolution:
// the im2col rows' gradients scattered back into the pixels). The forward is ViTForward's
// (per-call GEMMs), so the logits are the engine's. Tested against torch.autograd
// (tests/parity/test_synth_grad.py); the block-output gradients and the MLP rotation against
// finite differences of the forward (tests/unit/test_fisher_tokens.cpp).
// Also used by the reconstruction's Fisher token weights (quant/fisher_tokens.h).
#pragma once
#include <functional>
#include <vector>

#include "core/aligned.h"
#include "engine/vit_forward.h"
#include "model/vit_model.h"

namespace vitq {

class ViTInputGrad {
 public:
  // The model must have no error compensation (QwT maps).
  explicit ViTInputGrad(const ViTModel& model);
  ~ViTInputGrad();
  ViTInputGrad(const ViTInputGrad&) = delete;
  ViTInputGrad& operator=(const ViTInputGrad&) = delete;

  int layers() const { return 2 * m_.cfg.depth; }
  // images: batch × C × H × W (preprocessed); logits: batch × classes. Records what backward needs.
  void forward(const float* images, int batch, float* logits);
  // The residual stream at LayerNorm input `layer` of the last forward (batch × tokens × D).
  const float* layer_input(int layer) const { return xs_[size_t(layer)].data(); }
  // dlogits: batch × classes (or null: 0); dlayer: layers() entries, each batch × tokens × D or
  // null (0). dimages: batch × C × H × W, or null: the backward stops at block 0's output.
  // at_block_output(i, g), if given, sees ∂L/∂(block i's output) (batch × tokens × D), i from
  // depth − 1 down to 0. May be called again after one forward (e.g. for other dlogits).
  void backward(const float* dlogits, const std::vector<const float*>& dlayer, float* dimages,
                const std::function<void(int, const float*)>& at_block_output = {});

  struct Records;  // per block: what its backward reads (vit_input_grad.cpp)

 private:
  void block_backward(int i, float* g, const float* dln1_in, const float* dln2_in);
  void attention_backward(int i, const float* dctx, float* dqkv);

  const ViTModel& m_;
  ViTForward fwd_;
  int batch_ = 0;
  std::vector<avector<float>> xs_;  // the layer inputs (2·depth)
  avector<float> x_last_;           // the last block's output (the final LayerNorm's input)
  std::vector<Records> rec_;        // per block
  struct {
    avector<float> dh, dln, dx1, dctx, dqkv;
  } ws_;                            // block_backward's work buffers
};

// LayerNorm's input gradient, one row of n: x the input, dy the output gradient; dx += result.
void layernorm_backward_row(const float* x, const float* dy, const float* gamma, int n, float eps, float* dx_accum);

}  // namespace vitq
