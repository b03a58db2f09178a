#include "quant/network_kl.h"

#include <algorithm>
#include <cmath>

#include "quant/plan_transforms.h"
#include "quant/simulate.h"
#include "quant/staged_forward.h"

namespace vitq {

std::vector<double> kl_per_image(const float* fp, const float* q, int n, int classes) {
  std::vector<double> out(size_t(std::max(0, n)));
  for (int i = 0; i < n; ++i) {
    const float* a = fp + size_t(i) * classes;
    const float* b = q + size_t(i) * classes;
    double ma = -INFINITY, mb = -INFINITY;
    for (int j = 0; j < classes; ++j) ma = std::max(ma, double(a[j])), mb = std::max(mb, double(b[j]));
    double za = 0, zb = 0;
    for (int j = 0; j < classes; ++j) za += std::exp(a[j] - ma), zb += std::exp(b[j] - mb);
    const double la = ma + std::log(za), lb = mb + std::log(zb);
    double kl = 0;
    for (int j = 0; j < classes; ++j) {
      const double lpa = a[j] - la, lpb = b[j] - lb;
      kl += std::exp(lpa) * (lpa - lpb);
    }
    out[size_t(i)] = kl;
  }
  return out;
}

double kl_from_logits(const float* fp, const float* q, int n, int classes) {
  double total = 0;
  for (double v : kl_per_image(fp, q, n, classes)) total += v;
  return total / std::max(1, n);
}

NetworkKl::NetworkKl(const ViTModel& model, const float* images, int n, int batch)
    : model_(model), images_(images), n_(n), batch_(batch) {
  StagedForward fwd(model_, images_, n_, batch_);
  fp_.resize(size_t(n_) * fwd.logit_floats());
  q_.resize(fp_.size());
  fwd.replay(0, fwd.stages() - 1, nullptr, nullptr, fp_.data());
}

avector<float> NetworkKl::new_stream() const {
  return avector<float>(size_t(n_) * size_t(model_.cfg.tokens()) * size_t(model_.cfg.embed_dim));
}

double NetworkKl::of(const QuantPlan& plan) { return of_from(plan, 0, nullptr); }

std::vector<double> NetworkKl::per_image(const QuantPlan& plan) {
  of(plan);
  return kl_per_image(fp_.data(), q_.data(), n_, model_.cfg.num_classes);
}

double NetworkKl::of_from(const QuantPlan& plan, int first, const float* stream) {
  std::unique_ptr<ViTModel> rewritten;
  const ViTModel& m = apply_plan_transforms(model_, plan, rewritten, "network KL");
  StagedForward fwd(m, images_, n_, batch_);
  PlanSimulator sim(m, plan);
  fwd.replay(first, fwd.stages() - 1, stream, &sim, q_.data());
  return kl_from_logits(fp_.data(), q_.data(), n_, int(fwd.logit_floats()));
}

void NetworkKl::advance(const QuantPlan& plan, int s, float* stream) {
  std::unique_ptr<ViTModel> rewritten;
  const ViTModel& m = apply_plan_transforms(model_, plan, rewritten, "network KL");
  StagedForward fwd(m, images_, n_, batch_);
  PlanSimulator sim(m, plan);
  fwd.advance(s, stream, &sim);
}

}  // namespace vitq
