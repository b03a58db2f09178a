#include "quant/plan_transforms.h"

#include <algorithm>

#include "quant/ln_smoothing.h"

namespace vitq {

void fit_plan_transforms(const ViTModel& model, const float* images, int n, int batch, const TransformOptions& opt,
                         QuantPlan& plan) {
  if (opt.smooth_ln_alpha >= 0.0)
    plan.ln_smoothing = ln_smoothing_factors(model, images, n, opt.smooth_ln_alpha, std::max(1, batch));
}

bool has_plan_transforms(const QuantPlan& plan) { return !plan.ln_smoothing.empty(); }

const ViTModel& apply_plan_transforms(const ViTModel& checkpoint, const QuantPlan& plan,
                                      std::unique_ptr<ViTModel>& holder, const std::string& source) {
  if (!has_plan_transforms(plan)) return checkpoint;
  holder = std::make_unique<ViTModel>(apply_ln_smoothing(checkpoint, plan.ln_smoothing, source));
  return *holder;
}

void drop_plan_transforms(QuantPlan& plan) { plan.ln_smoothing.clear(); }

}  // namespace vitq
