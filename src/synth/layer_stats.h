// Per-image statistics of a ViT's LayerNorm inputs — the ViT analogue of the BatchNorm statistics
// FDDA (Zhong et al., ECCV 2022) aligns synthetic images to — and the targets `vitq synth` aligns
// them to: for every layer of ViTInputGrad (block i's LayerNorm 1 and 2 inputs) and channel j, the
// mean μ_j and the standard deviation σ_j = √(var_j + ε) over the image's tokens.
#pragma once
#include <vector>

#include "data/dataset.h"
#include "model/vit_model.h"

namespace vitq {

class ViTInputGrad;

constexpr double kStatEps = 1e-6;  // ε of σ = √(var + ε)

// Image i's statistics from `g`'s last forward: mean and sd, each layers × D (layer-major).
void image_layer_stats(const ViTInputGrad& g, const ViTConfig& cfg, int i, float* mean, float* sd);

// What synthetic images are aligned to, from real images (FDDA's "one image per class").
struct StatTargets {
  int layers = 0, dim = 0;
  std::vector<int> classes;                  // per centre: its class (the label, else the prediction)
  std::vector<std::vector<float>> mean, sd;  // per centre: layers × D (the mean of its images' statistics)
  std::vector<float> global_mean, global_sd; // layers × D: the mean over all the images used
  std::vector<float> spread_mean, spread_sd; // layers × D: the standard deviation over the centres (jitter unit)
  std::vector<float> layer_scale;            // per layer: mean over channels of global_sd² (the loss's unit)
  int images = 0;                            // real images used
};

// The class centres of `data`: up to `per_class` images of each class in the dataset's order
// (label from the dataset when it has one in [0, classes), else the model's FP32 prediction); the
// scan stops once every class of the model has its images.
// Throws Error(Data) if fewer than two centres result (no spread to jitter by).
StatTargets centre_targets(const ViTModel& model, const Dataset& data, int per_class, int batch);

// The alignment loss of one image (statistics mean/sd, layers × D) to centre c with jitter
// (noise_mean / noise_sd: layers × D draws of N(0,1), or null for none), and its gradient:
//   L = (1/layers) Σ_l 1/(D·scale_l) Σ_j Σ_k w_k [(μ_lj − m_klj)² + (σ_lj − s_klj)²]
// over the targets k: global (w_global), the centre plus jitter·spread (w_jitter), the exact centre
// (w_exact). dmean / dsd (layers × D) receive ∂L/∂μ and ∂L/∂σ.
struct StatWeights {
  double global = 0.2, jitter = 0.9, exact = 0.01;  // FDDA's
  double jitter_mean = 0.5, jitter_sd = 1.0;        // FDDA's noise σ, here in units of the centres' spread
};
double stat_loss(const StatTargets& t, int centre, const float* mean, const float* sd, const float* noise_mean,
                 const float* noise_sd, const StatWeights& w, float* dmean, float* dsd);

// The cross-entropy −log softmax(logits)[cls] of one image's n logits; dlogits receives its gradient
// softmax − onehot(cls), times `scale`.
double cross_entropy(const float* logits, int n, int cls, double scale, float* dlogits);

// ∂L/∂x of image i's layer inputs (tokens × D per layer) from ∂L/∂μ, ∂L/∂σ (layers × D), using
// the layer inputs x of g's last forward: ∂μ_j/∂x_tj = 1/T, ∂σ_j/∂x_tj = (x_tj − μ_j)/(T·σ_j).
// dx: layers pointers, each to the batch's buffer (batch × tokens × D); image i's rows are set.
void stat_grad_to_inputs(const ViTInputGrad& g, const ViTConfig& cfg, int i, const float* mean, const float* sd,
                         const float* dmean, const float* dsd, const std::vector<float*>& dx);

}  // namespace vitq
