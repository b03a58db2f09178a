// Classification accuracy of a model over a dataset: batched loading (parallel decode and
// preprocessing), forward, top-1/top-5, timing, and per-image failures.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "engine/vit_forward.h"

namespace vitq {

enum class BadImagePolicy { Fail, Skip };

struct EvalOptions {
  int batch = 16;
  BadImagePolicy on_bad_image = BadImagePolicy::Fail;
  SiteHook* hook = nullptr;  // e.g. a quantization plan's simulator
  // Non-finite logits are an Error(Model) naming the image (and, through locate_non_finite if
  // given, where in the network they arose), unless allowed: then the image counts as wrong.
  bool allow_non_finite = false;
  std::function<std::string(const float* image)> locate_non_finite;
  // Called after each forward with the batch's n preprocessed images and their logits (n × classes).
  std::function<void(const float* images, int n, const float* logits)> on_batch;
};

// How a model's predictions agree with a reference model's on the same images: top-1 agreement
// and the mean KL divergence KL(p_ref || p) of the softmax distributions (in nats, double).
class ReferenceAgreement {
 public:
  // Adds n images: logits of the model and of the reference, n × classes each.
  void add(const float* logits, const float* ref_logits, int n, int classes);
  size_t images() const { return n_; }
  size_t agree() const { return agree_; }
  double agreement_pct() const { return n_ ? 100.0 * double(agree_) / double(n_) : 0.0; }
  double kl_mean() const { return n_ ? kl_ / double(n_) : 0.0; }
  double kl_sum() const { return kl_; }

 private:
  size_t n_ = 0, agree_ = 0;
  double kl_ = 0;
};

struct EvalProgress {
  size_t done = 0, total = 0;
  size_t top1 = 0;  // correct so far
  double seconds = 0;
};

struct EvalResult {
  size_t images = 0;                // evaluated
  size_t top1 = 0, top5 = 0;        // correct counts
  std::vector<std::string> skipped;  // "path: reason" of images that could not be read
  size_t non_finite = 0;            // evaluated images with a NaN/Inf logit (counted wrong)
  double seconds = 0;               // wall time, loading included
  double forward_seconds = 0;       // time in the model's forward only
  std::vector<size_t> evaluated;    // dataset index of each evaluated image, in order
  std::vector<int> predictions;     // its top-1 class (-1: non-finite logits)
  double top1_pct() const { return images ? 100.0 * double(top1) / double(images) : 0.0; }
  double top5_pct() const { return images ? 100.0 * double(top5) / double(images) : 0.0; }
};

// Evaluates samples `indices` of `data`. Labels outside [0, num_classes) are an Error(Data).
// An unreadable image is an Error(Data) (BadImagePolicy::Fail) or listed in `skipped` (Skip);
// when every image was skipped, that is an Error(Data) naming the first failure.
EvalResult evaluate(ViTForward& fwd, const Dataset& data, const std::vector<size_t>& indices,
                    const EvalOptions& opt, const std::function<void(const EvalProgress&)>& progress = {});

// The same with any forward of a model with config `cfg` (e.g. the integer runtime):
// forward(images, batch, logits). opt.hook is not used.
using ForwardFn = std::function<void(const float* images, int batch, float* logits)>;
EvalResult evaluate(const ViTConfig& cfg, const ForwardFn& forward, const Dataset& data,
                    const std::vector<size_t>& indices, const EvalOptions& opt,
                    const std::function<void(const EvalProgress&)>& progress = {});

// Top-k membership of `label` among logits (ties broken toward the lower class index, as
// torch.topk on CPU does for equal values in practice). A NaN logit is never a hit: false if
// logits[label] is NaN, and a NaN of another class ranks before every number.
bool in_top_k(const float* logits, int classes, int label, int k);

}  // namespace vitq
