// Fisher token weights for block reconstruction (--recon-fisher): BRECQ's Fisher-weighted block
// loss (Li et al. 2021), reduced to one weight per token.
//
// To second order in a perturbation Δz of one block's output z, the KL of the network's output
// distribution from the FP model's p is ½·Δzᵀ·F·Δz, F = E_{y~p}[g_y·g_yᵀ] with g_y = ∂(−log p_y)/∂z
// (the Fisher information of the model's own output distribution; the expectation is over labels
// drawn from p, so no labels are needed). Its diagonal summed over a token's channels,
//     f_t = Σ_d E_{y~p}[g_{y,t,d}²],
// says how much that token's error moves the prediction: in the last block every token the head
// does not read gets 0; images the model is sure of get little. Estimated with `samples` labels per
// image drawn from p (a seeded stream per image and draw, so the weights do not depend on the
// batch), on the FP model exactly as the reconstruction sees it (transforms applied, before any
// compensation), and normalized per block to mean 1 over all images and tokens, so that a plain
// mean and the weighted one have the same scale (the reconstruction mixes them: reconstruct.h).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "model/vit_model.h"

namespace vitq {

// Labels drawn per image by the reconstruction's estimate (a fixed choice, not tuned: the weight is
// a sum over the token's channels, so a few draws already average well).
constexpr int kFisherSamples = 8;

// images: n × C × H × W (preprocessed). Returns depth vectors of n × tokens weights (image-major),
// each of mean 1 (all 1 if a block's estimate is 0 everywhere). progress(done, n) after each batch.
std::vector<std::vector<float>> fisher_token_weights(const ViTModel& model, const float* images, int n, int batch,
                                                     int samples, uint64_t seed,
                                                     const std::function<void(int, int)>& progress = {});

}  // namespace vitq
