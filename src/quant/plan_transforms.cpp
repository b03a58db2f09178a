#include "quant/plan_transforms.h"

#include <algorithm>

#include "quant/ln_smoothing.h"

namespace vitq {

void fit_plan_transforms(const ViTModel& model, const float* images, int n, int batch, const TransformOptions& opt,
                         QuantPlan& plan) {
  LnRewrite r = fit_ln_rewrite(model, images, n, std::max(1, batch), opt.smooth_ln_alpha, opt.ln_center);
  plan.ln_smoothing = std::move(r.factors);
  plan.ln_shift = std::move(r.shifts);
}

bool has_plan_transforms(const QuantPlan& plan) { return !plan.ln_smoothing.empty() || !plan.ln_shift.empty(); }

const ViTModel& apply_plan_transforms(const ViTModel& checkpoint, const QuantPlan& plan,
                                      std::unique_ptr<ViTModel>& holder, const std::string& source) {
  if (!has_plan_transforms(plan)) return checkpoint;
  holder = std::make_unique<ViTModel>(apply_ln_rewrite(checkpoint, plan.ln_smoothing, plan.ln_shift, source));
  return *holder;
}

void drop_plan_transforms(QuantPlan& plan) {
  plan.ln_smoothing.clear();
  plan.ln_shift.clear();
}

}  // namespace vitq
