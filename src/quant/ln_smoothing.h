// LayerNorm rewrites (--smooth-ln, --ln-center): the fix for "one step for post-LayerNorm
// channels of very different ranges and centres". The paper quantizes the input of qkv and fc1
// (a LayerNorm output) with one per-tensor step on a symmetric grid; a few channels of those
// outputs are 10-100x wider than the rest and many are far from zero-centred (the LN's γ/β make
// them so), and the step that covers them rounds the others to a handful of levels.
//
// The rewrite moves the centre into the next layer's bias and the range into its weights, per
// input channel k, without changing the FP function (centring as in Outlier Suppression+,
// scaling as in SmoothQuant, both at the LayerNorm as RepQ-ViT reparameterises it):
//     LN β_k → (β_k − μ_k) / s_k,  γ_k → γ_k / s_k,  W[:, k] → W[:, k] · s_k,  b → b + W · μ
// (qkv after norm1, fc1 after norm2; W and b the original ones on the right-hand side), with
//     μ_k = (min x_k + max x_k) / 2 with --ln-center, else 0;
//     s_k = h_k^α / max_c |W[c][k]|^(1−α) with --smooth-ln,
//     s_k = h_k / median_j h_j with --ln-reparam (RepQ-ViT's per-channel steps reparameterised
//           into LN and the next layer, every channel then spanning the same range; the median
//           as the shared target, robust to outlier channels as DopQ-ViT argues), else 1;
// h_k = max |x_k − μ_k| over the calibration images (FP model), α = 0.5 by default; s_k = 1 where a channel or its
// weight column is all zero. Any method then calibrates the rewritten model; the plan records
// μ (QuantPlan::ln_shift) and s (QuantPlan::ln_smoothing), and everything that applies a plan to
// a checkpoint rewrites it first, through the plan's transform step (plan_transforms.h).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "model/vit_model.h"
#include "quant/plan.h"

namespace vitq {

using SiteVectors = std::map<std::string, std::vector<float>>;  // site name -> one value per input channel

struct LnRewrite {
  SiteVectors factors;  // s, empty without smoothing
  SiteVectors shifts;   // μ, empty without centring
};

// The rewrite of every blocks.i.attn.qkv and blocks.i.mlp.fc1 from an FP pass over `images`
// (n preprocessed images, `batch` per pass): smoothing factors if alpha >= 0 (alpha in [0, 1]),
// shifts if center, RepQ-ViT factors (and shifts) if reparam (not with alpha >= 0).
LnRewrite fit_ln_rewrite(const ViTModel& model, const float* images, int n, int batch, double alpha, bool center,
                         bool reparam = false);

// The model rewritten by factors and shifts (either may be empty, or lack a site: s = 1, μ = 0).
// Throws Error(Model) naming `source` if a site is not fed by a LayerNorm, a length does not
// match, or a value is not usable.
ViTModel apply_ln_rewrite(const ViTModel& model, const SiteVectors& factors, const SiteVectors& shifts,
                          const std::string& source);

// Smoothing alone (no centring).
inline SiteVectors ln_smoothing_factors(const ViTModel& model, const float* images, int n, double alpha, int batch) {
  return fit_ln_rewrite(model, images, n, batch, alpha, false).factors;
}
inline ViTModel apply_ln_smoothing(const ViTModel& model, const SiteVectors& factors, const std::string& source) {
  return apply_ln_rewrite(model, factors, {}, source);
}

}  // namespace vitq
