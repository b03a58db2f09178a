#include "quant/staged_forward.h"

#include <algorithm>

namespace vitq {

int stage_of(const SiteId& id, int depth) {
  if (id.block >= 0) return id.block + 1;
  return id.kind == SiteKind::PatchEmbed ? 0 : depth + 1;
}

StagedForward::StagedForward(const ViTModel& model, const float* images, int n, int batch)
    : fwd_(model, FpGemm::PerCall), images_(images), n_(n), B_(std::max(1, batch)) {
  const ViTConfig& c = model.cfg;
  tok_ = size_t(c.tokens()) * c.embed_dim;
  img_ = size_t(c.in_chans) * c.img_size * c.img_size;
  scratch_.resize(size_t(B_) * tok_);
  logits_.resize(size_t(B_) * size_t(c.num_classes));
}

void StagedForward::run(int s, int i0, int b, float* x, SiteHook* hook, float* logits) {
  if (s == 0) fwd_.embed(images_ + size_t(i0) * img_, b, x, hook);
  else if (s == stages() - 1) fwd_.head(x, b, logits ? logits : logits_.data(), hook);
  else fwd_.block(s - 1, x, b, hook);
}

void StagedForward::advance(int s, float* stream, SiteHook* hook, float* logits) {
  for (int i0 = 0; i0 < n_; i0 += B_)
    run(s, i0, std::min(B_, n_ - i0), stream + size_t(i0) * tok_, hook,
        logits ? logits + size_t(i0) * logit_floats() : nullptr);
}

void StagedForward::replay(int first, int last, const float* stream, SiteHook* hook, float* logits) {
  for (int i0 = 0; i0 < n_; i0 += B_) {
    const int b = std::min(B_, n_ - i0);
    float* x = scratch_.data();
    if (first > 0) std::copy_n(stream + size_t(i0) * tok_, size_t(b) * tok_, x);
    try {
      for (int s = first; s <= last; ++s)
        run(s, i0, b, x, hook, logits ? logits + size_t(i0) * logit_floats() : nullptr);
    } catch (const StopStage&) {
    }
  }
}

}  // namespace vitq
