// Batched FP32 forward pass of a ViT/DeiT, with every matmul routed through a named site
// (see site.h) so that a SiteHook can observe or replace it. Workspace memory is
// proportional to one batch and reused across calls; one ViTForward per thread of use.
#pragma once
#include "core/aligned.h"
#include "engine/site.h"
#include "model/vit_model.h"

namespace vitq {

class ViTForward {
 public:
  explicit ViTForward(const ViTModel& model);

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
  static void run_site(const SiteCall& call, SiteHook* hook);

  const ViTModel& m_;
  int capacity_ = 0;
  avector<float> patches_, pe_out_, x_, ln_, qkv_, q_, k_, vt_, s_, o_, ctx_, proj_, hidden_, fc2_, tok_, logits2_;
};

}  // namespace vitq
