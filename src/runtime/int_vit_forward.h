// The integer forward of a quantized ViT (a QuantizedViT): every quantized site runs as an
// int8 GEMM (u8 x s8 -> s32, oneDNN), both attention matmuls per (image, head); LayerNorm,
// softmax and GELU stay in float. Quantizing a site's input is fused into the op that produces
// it (LayerNorm, GELU, softmax, the qkv and attention epilogues), and dequantizing its output
// into what follows (residual add, GELU, softmax): each GEMM runs on tiles of rows whose int32
// results are still in cache when the epilogue turns each row into the next site's input.
// Sites the plan leaves in FP32 run as float GEMMs in the same structure.
//
// Work is split over OpenMP threads by row tiles (integer linear sites) and by (image, head, row
// block) (attention); the integer results do not depend on the split. FP32 linear sites run as one
// oneDNN GEMM over all rows, as in the FP32 forward. One IntViTForward per thread of use.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/aligned.h"
#include "runtime/int_linear.h"
#include "runtime/quantized_model.h"

namespace vitq {

class IntViTForward {
 public:
  // Prepares (unpacks, reorders) the weights of q here; afterwards q's linear weights are no longer
  // read (drop_linear_weights may free them), its other tensors are.
  explicit IntViTForward(const QuantizedViT& q);
  ~IntViTForward();

  const ViTConfig& config() const { return q_.cfg; }
  // images: batch x C x H x W (preprocessed); logits: batch x num_classes.
  void run(const float* images, int batch, float* logits);
  // Bytes of prepared weights (packed int8 planes, FP32 weights) and of workspace.
  size_t weight_bytes() const;
  size_t workspace_bytes() const;
  // Blocks whose two attention GEMMs run on vitq's AMX kernels (numerics/attention_gemm_amx.h:
  // an AMX CPU, 8-bit one-plane operands, a supported head width); the others use oneDNN.
  int amx_attention_blocks() const;

  // Wall time per stage (embed, qkv, attention, proj, fc1, fc2, head), summed over the runs since
  // profiling was switched on: each linear stage includes its fused epilogue (the following
  // LayerNorm/GELU/quantization), attention includes the softmax.
  void set_profiling(bool on);
  std::vector<std::pair<std::string, double>> profile_seconds() const;

 private:
  struct Impl;
  const QuantizedViT& q_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vitq
