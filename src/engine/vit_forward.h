// Batched FP32 forward pass of a ViT/DeiT, with every matmul routed through a named site
// (see site.h) so that a SiteHook can observe or replace it. Workspace memory is
// proportional to one batch and reused across calls; one ViTForward per thread of use. A model
// with an MLP rotation (ViTModel::mlp_rotation_signs, quant/rotation.h) has every block's GELU
// output rotated before fc2, so the fc2 site sees (and a hook quantizes) the rotated rows.
#pragma once
#include <map>
#include <memory>
#include <utility>

#include "core/aligned.h"
#include "engine/batched_matmul_f32.h"
#include "engine/packed_linear_f32.h"
#include "engine/site.h"
#include "model/vit_model.h"

namespace vitq {

// How the FP32 products run when no hook computes them. Packed: linear layers on weights packed
// once for oneDNN's matmul, attention as batched matmuls (the fast inference path; eval, bench).
// PerCall: every product through site_gemm_f32 (dnnl_sgemm), the numerics the calibration and
// its plans were built on — the quantization code asks for it, so that plans do not change with
// the inference path (the two differ in float rounding only).
enum class FpGemm { Packed, PerCall };

class ViTForward {
 public:
  explicit ViTForward(const ViTModel& model, FpGemm gemm = FpGemm::Packed);

  const ViTModel& model() const { return m_; }

  // images: batch x C x H x W, preprocessed; logits: batch x num_classes.
  void run(const float* images, int batch, float* logits, SiteHook* hook = nullptr);

  // The same forward in stages, for block-by-block calibration. x is the residual stream,
  // batch x tokens x embed_dim.
  void embed(const float* images, int batch, float* x, SiteHook* hook = nullptr);
  void block(int index, float* x, int batch, SiteHook* hook = nullptr);
  void head(const float* x, int batch, float* logits, SiteHook* hook = nullptr);

  // Bytes of workspace currently held (for reports).
  size_t workspace_bytes() const;

 private:
  void reserve(int batch);
  // A site's product: the hook's if it computes it, else FP32. With FpGemm::Packed and no hook,
  // linear sites run on weights packed once for oneDNN's matmul (packed_linear_f32.h); with a
  // hook (simulation, observers) or FpGemm::PerCall every site runs through site_gemm_f32.
  void run_site(const SiteCall& call, SiteHook* hook);
  // The two halves of block(): x += proj(attention(LN1(x))), leaving LN2(x) in ln_; and the MLP
  // of ln_ (GELU, and the MLP rotation if the model has one) in fc2_.
  void attention(int index, float* x, int batch, SiteHook* hook);
  void mlp(int index, int batch, SiteHook* hook);
  // qkv_ split into per-(image, head) operands (see attention()).
  void split_heads(int batch, bool plain);
  // A block's error compensation: y (rows x D) = x · cᵀ + b, FP32 (not a site: never quantized).
  void compensate(const LinearWeights& c, const float* x, int rows, float* y);

  const ViTModel& m_;
  FpGemm gemm_;
  int capacity_ = 0;
  // Linear sites' packed weights, by (weights, bias) pointers, made on first use (they add the
  // size of the linear weights to the memory of plain inference).
  std::map<std::pair<const float*, const float*>, std::unique_ptr<PackedLinearF32>> packed_;
  // FpGemm::Packed: Q·Kᵀ and P·V of all heads as batched products (batched_matmul_f32.h).
  std::unique_ptr<BatchedMatmulF32> qk_mm_, av_mm_;
  avector<float> patches_, pe_out_, x_, ln_, qkv_, q_, k_, vt_, s_, o_, ctx_, proj_, hidden_, fc2_, comp_, tok_, logits2_;
};

}  // namespace vitq
