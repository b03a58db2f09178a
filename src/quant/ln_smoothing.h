// LayerNorm smoothing (--smooth-ln): the fix for "one scale for post-LayerNorm channels of very
// different ranges". The paper quantizes the input of qkv and fc1 (a LayerNorm output) with one
// per-tensor step; a few channels of those outputs are 10-100x wider than the rest (the LN's γ/β
// make them so), and the step that covers them rounds the others to a handful of levels.
//
// The rewrite moves the range from the activation into the weight, per input channel k, without
// changing the FP function (SmoothQuant, Xiao et al. 2023, applied at the LayerNorm):
//     LN γ_k → γ_k / s_k,  β_k → β_k / s_k,   W[:, k] → W[:, k] · s_k     (qkv after norm1, fc1 after norm2)
//     s_k = max|x_k|^α / max_c |W[c][k]|^(1−α)
// with max|x_k| over the calibration images (FP model) and α = 0.5 by default; s_k = 1 where a
// channel or its weight column is all zero. Any method then calibrates the rewritten model; the
// plan records the factors (QuantPlan::ln_smoothing), and everything that applies a plan to a
// checkpoint rewrites it first, through the plan's transform step (plan_transforms.h).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "model/vit_model.h"
#include "quant/plan.h"

namespace vitq {

// Factors for every blocks.i.attn.qkv and blocks.i.mlp.fc1 from an FP pass over `images`
// (n preprocessed images, `batch` per pass). alpha in [0, 1].
std::map<std::string, std::vector<float>> ln_smoothing_factors(const ViTModel& model, const float* images, int n,
                                                               double alpha, int batch);

// The model rewritten by `factors` (site name -> K factors). Throws Error(Model) naming
// `source` if a site is not fed by a LayerNorm or a length does not match.
ViTModel apply_ln_smoothing(const ViTModel& model, const std::map<std::string, std::vector<float>>& factors,
                            const std::string& source);

}  // namespace vitq
