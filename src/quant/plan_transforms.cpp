#include "quant/plan_transforms.h"

#include <algorithm>

#include "core/error.h"
#include "quant/ln_smoothing.h"
#include "quant/rotation.h"

namespace vitq {

namespace {

RotationSpec spec_of(const PlanRotation& r) { return {r.seed, r.residual, r.heads, r.mlp}; }

}  // namespace

void fit_plan_transforms(const ViTModel& model, const float* images, int n, int batch, const TransformOptions& opt,
                         QuantPlan& plan) {
  plan.rotation = opt.rotation;
  std::unique_ptr<ViTModel> rotated;
  if (plan.rotation) rotated = std::make_unique<ViTModel>(rotate_model(model, spec_of(*plan.rotation)));
  const ViTModel& m = rotated ? *rotated : model;
  LnRewrite r = fit_ln_rewrite(m, images, n, std::max(1, batch), opt.smooth_ln_alpha, opt.ln_center, opt.ln_reparam);
  plan.ln_smoothing = std::move(r.factors);
  plan.ln_shift = std::move(r.shifts);
}

bool has_plan_transforms(const QuantPlan& plan) {
  return !plan.ln_smoothing.empty() || !plan.ln_shift.empty() || plan.rotation.has_value() ||
         !plan.compensation.empty();
}

void set_model_compensation(ViTModel& m, const QuantPlan& plan) {
  for (auto& b : m.blocks) b.compensation = {};
  for (const auto& [i, c] : plan.compensation) {
    if (i < 0 || i >= m.cfg.depth) fail(ErrorKind::Internal, "compensation of block ", i, " outside the model");
    const int64_t D = int64_t(c.b.size());
    LinearWeights& lw = m.blocks[size_t(i)].compensation;
    lw.w = Tensor({D, D});
    lw.w.data.assign(c.w.begin(), c.w.end());
    lw.b = Tensor({D});
    lw.b.data.assign(c.b.begin(), c.b.end());
  }
}

const ViTModel& apply_plan_transforms(const ViTModel& checkpoint, const QuantPlan& plan,
                                      std::unique_ptr<ViTModel>& holder, const std::string& source) {
  if (!has_plan_transforms(plan)) return checkpoint;
  if (plan.rotation) holder = std::make_unique<ViTModel>(rotate_model(checkpoint, spec_of(*plan.rotation)));
  if (!plan.ln_smoothing.empty() || !plan.ln_shift.empty()) {
    const ViTModel& base = holder ? *holder : checkpoint;
    holder = std::make_unique<ViTModel>(apply_ln_rewrite(base, plan.ln_smoothing, plan.ln_shift, source));
  }
  if (!plan.compensation.empty()) {
    if (!holder) holder = std::make_unique<ViTModel>(checkpoint);
    set_model_compensation(*holder, plan);
  }
  return *holder;
}

void drop_plan_transforms(QuantPlan& plan) {
  plan.ln_smoothing.clear();
  plan.ln_shift.clear();
  plan.rotation.reset();
  plan.compensation.clear();
}

}  // namespace vitq
