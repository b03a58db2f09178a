// The network's output under a plan against the FP32 model's: mean KL divergence of the softmax
// outputs over a fixed set of calibration images. A label-free end-to-end measure, used where a
// choice must see how quantization errors compound (LAPQ's loss, mixed precision's sensitivity).
#pragma once
#include <memory>
#include <vector>

#include "core/aligned.h"
#include "model/vit_model.h"
#include "quant/plan.h"

namespace vitq {

// KL(softmax(fp) ‖ softmax(q)) of each image, logits n × classes; and their mean.
std::vector<double> kl_per_image(const float* fp, const float* q, int n, int classes);
double kl_from_logits(const float* fp, const float* q, int n, int classes);

// KL of the simulated network under plans, on images (n × C × H × W preprocessed, kept by
// reference). A plan's transforms and error compensation apply to its own copy of the model
// (apply_plan_transforms), so plans that differ in them are compared fairly.
class NetworkKl {
 public:
  NetworkKl(const ViTModel& model, const float* images, int n, int batch);

  const ViTModel& model() const { return model_; }
  int images() const { return n_; }
  const std::vector<float>& fp_logits() const { return fp_; }

  // KL of `plan` over the images: the mean, or each image's.
  double of(const QuantPlan& plan);
  std::vector<double> per_image(const QuantPlan& plan);
  // The same, with stages 0..first−1 taken as given: `stream` (n × tokens × embed_dim) is the
  // input of stage `first` under a plan equal to `plan` on the sites and compensation of those
  // stages (computed by advance()); first = 0 is of(plan), stream unread.
  double of_from(const QuantPlan& plan, int first, const float* stream);
  // Runs stage s of the simulated network under `plan` on `stream` in place (stage 0 fills it).
  void advance(const QuantPlan& plan, int s, float* stream);
  avector<float> new_stream() const;

 private:
  const ViTModel& model_;
  const float* images_;
  int n_, batch_;
  std::vector<float> fp_, q_;
};

}  // namespace vitq
