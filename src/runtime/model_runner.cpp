#include "runtime/model_runner.h"

#include "core/error.h"
#include "quant/plan_transforms.h"
#include "quant/simulate.h"
#include "runtime/int_vit_forward.h"
#include "runtime/quantized_model.h"

namespace vitq {

ModelRunner::ModelRunner(const std::string& dir, const RunnerOptions& opt) {
  quantized_ = is_quantized_model_dir(dir);
  if (quantized_ && !opt.plan.empty())
    fail(ErrorKind::Usage, dir, " is a quantized model directory with its own plan; a plan is for FP32 checkpoints");
  if (!quantized_ && opt.simulate)
    fail(ErrorKind::Usage, "simulating needs a quantized model directory (from 'vitq quantize -o DIR'); for an FP32 "
         "checkpoint give a plan");
  if (quantized_) {
    qm_ = std::make_unique<QuantizedViT>(load_quantized_model(dir, {opt.allow_non_finite}));
    cfg_ = qm_->cfg;
    if (opt.simulate) {
      model_ = std::make_unique<ViTModel>(dequantized_model(*qm_));
      plan_ = std::make_unique<QuantPlan>(simulation_plan(*qm_));
      engine_ = "simulated";
    } else {
      plan_ = std::make_unique<QuantPlan>(qm_->plan);
      ifwd_ = std::make_unique<IntViTForward>(*qm_);
      drop_linear_weights(*qm_);  // the integer forward keeps its own packed copies
      engine_ = "integer";
    }
  } else {
    model_ = std::make_unique<ViTModel>(load_vit_model(dir, {opt.allow_non_finite}));
    cfg_ = model_->cfg;
    engine_ = "fp32";
    if (!opt.plan.empty()) {
      plan_ = std::make_unique<QuantPlan>(load_plan(opt.plan));
      check_plan_matches(*plan_, cfg_, opt.plan);
      // A plan with transforms is for the rewritten checkpoint (the same FP function).
      std::unique_ptr<ViTModel> rewritten;
      apply_plan_transforms(*model_, *plan_, rewritten, opt.plan);
      if (rewritten) model_ = std::move(rewritten);
      engine_ = "simulated";
    }
  }
  if (model_) {
    fwd_ = std::make_unique<ViTForward>(*model_);
    if (plan_) sim_ = std::make_unique<PlanSimulator>(*model_, *plan_);
  }
}

ModelRunner::~ModelRunner() = default;

SiteHook* ModelRunner::hook() { return sim_.get(); }

void ModelRunner::run(const float* images, int batch, float* logits) {
  if (ifwd_) ifwd_->run(images, batch, logits);
  else fwd_->run(images, batch, logits, sim_.get());
}

}  // namespace vitq
