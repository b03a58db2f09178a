// The forward pass in stages, the way quantization code walks a model: stage 0 = patch
// embedding (reads the images, writes the residual stream), 1..depth = transformer blocks
// (update the stream in place), depth + 1 = head (reads the stream, writes logits).
//
// Every FP32 product runs through site_gemm_f32 (FpGemm::PerCall) by construction: plans must
// not depend on the inference path (engine/vit_forward.h). A stream holds one residual stream
// per image, n × tokens × embed_dim; work goes batch by batch in image order.
#pragma once
#include <cstddef>
#include <vector>

#include "core/aligned.h"
#include "engine/site.h"
#include "engine/vit_forward.h"
#include "model/vit_model.h"

namespace vitq {

// Thrown by a hook once it has what it came for: ends the current batch of a replay.
struct StopStage {};

// The stage a site runs in (0 = patch embedding, 1..depth = blocks, depth + 1 = head).
int stage_of(const SiteId& id, int depth);

class StagedForward {
 public:
  // images: n × C × H × W preprocessed (kept by reference); batch: images per pass (≥ 1).
  StagedForward(const ViTModel& model, const float* images, int n, int batch);

  const ViTModel& model() const { return fwd_.model(); }
  int stages() const { return model().cfg.depth + 2; }
  int images() const { return n_; }
  int batch() const { return B_; }
  size_t stream_floats() const { return tok_; }           // per image
  size_t logit_floats() const { return size_t(model().cfg.num_classes); }  // per image
  avector<float> new_stream() const { return avector<float>(size_t(n_) * tok_); }

  // Stage s on images [i0, i0 + b): x is that batch's stream (written by stage 0, updated by
  // blocks, read by the head); logits (b × classes) are the head's output, or null for scratch.
  void run(int s, int i0, int b, float* x, SiteHook* hook, float* logits = nullptr);

  // Stage s on every image, the stream updated in place (stage 0 fills it from the images;
  // the head leaves it and writes n × classes logits, or scratch if null).
  void advance(int s, float* stream, SiteHook* hook, float* logits = nullptr);

  // Stages first..last on every image, each batch from a copy of `stream` (left unchanged; not
  // read if first = 0). logits: n × classes, written if the head runs and logits is not null.
  // A hook may throw StopStage to end a batch early.
  void replay(int first, int last, const float* stream, SiteHook* hook, float* logits = nullptr);

 private:
  ViTForward fwd_;
  const float* images_;
  int n_, B_;
  size_t tok_, img_;
  avector<float> scratch_;
  std::vector<float> logits_;
};

}  // namespace vitq
