// The checkpoint rewrites a plan records, as one pipeline step: a rotation (rotation.h) first,
// then LayerNorm centring and smoothing (ln_smoothing.h), fitted on the rotated model; and the
// blocks' error compensation (compensation.h), which the calibration fits after each block. Each keeps the FP function
// and moves range between activations and weights, so every site is calibrated, simulated,
// exported and run on the rewritten model.
//
//   fit_plan_transforms     the calibration driver, once, before any site is observed: computes
//                           the rewrites from the calibration images and records them in the plan
//   apply_plan_transforms   everything that applies a plan to a checkpoint, once: the model the
//                           plan's sites belong to
//   drop_plan_transforms    the plan of a stored quantized model, whose weights are already the
//                           rewritten ones
#pragma once
#include <memory>
#include <optional>
#include <string>

#include "model/vit_model.h"
#include "quant/plan.h"

namespace vitq {

struct TransformOptions {
  double smooth_ln_alpha = -1.0;  // LayerNorm smoothing with this α (--smooth-ln); < 0 = off
  bool ln_center = false;         // LayerNorm centring (--ln-center)
  bool ln_reparam = false;        // RepQ-ViT reparameterisation (--ln-reparam): centring and range factors
  std::optional<PlanRotation> rotation;  // rotation (--rotate), applied first
};

// Fits the enabled transforms on the FP model (n calibration images, `batch` per pass) and
// records them in the plan.
void fit_plan_transforms(const ViTModel& model, const float* images, int n, int batch, const TransformOptions& opt,
                         QuantPlan& plan);

bool has_plan_transforms(const QuantPlan& plan);

// The plan's error compensation (QuantPlan::compensation) as the model's blocks' (any other
// block's removed).
void set_model_compensation(ViTModel& m, const QuantPlan& plan);

// The checkpoint rewritten by the plan's transforms: `checkpoint` itself if it has none, else the
// rewrite, kept alive in `holder`. Throws Error(Model) naming `source` if the plan does not fit.
const ViTModel& apply_plan_transforms(const ViTModel& checkpoint, const QuantPlan& plan,
                                      std::unique_ptr<ViTModel>& holder, const std::string& source);

void drop_plan_transforms(QuantPlan& plan);

}  // namespace vitq
