// Calibration images without a calibration set (`vitq synth`; FDDA, Zhong et al. ECCV 2022, and
// DeepInversion, Yin et al. CVPR 2020, for a ViT): the pixels of each image are optimised
// directly, with Adam, so that the FP32 model
//   - gives the image's target class (cross-entropy, weight `ce`),
//   - with class centres (StatTargets, from one or a few real images per class): has LayerNorm
//     input statistics near the global ones, near the target class's centre moved by Gaussian
//     jitter (drawn afresh every step: FDDA's distorted centres) and near the exact centre
//     (stat_loss, weight `stats`; FDDA's 0.2 / 0.9 / 0.01),
// under image priors: total variation (mean squared difference of neighbouring pixels, `tv`) and
// the mean square of the normalised pixels (`l2`). Every step sees the image shifted circularly
// by up to `shift` pixels and, at random, mirrored (DeepInversion's jitter). Images are optimised
// in batches (independent of each other: the loss is a sum over images), the pixels kept in the
// range 0..255 maps to; the result is rounded to 8-bit pixels (what a PNG stores), and
// `stored_image` pads it so that the model's preprocessing gives exactly those pixels back.
// Deterministic for a seed (and thread count).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "data/image.h"
#include "model/vit_model.h"
#include "synth/layer_stats.h"

namespace vitq {

struct SynthOptions {
  int images = 128;
  int iters = 200;     // Adam steps per batch
  int batch = 16;      // images optimised together
  double lr = 0.1;     // Adam's step (normalised pixel units), cosine-decayed to 0
  double ce = 1.0;     // cross-entropy to the target class
  double stats = 1.0;  // LayerNorm statistics alignment (with centres only)
  double tv = 0.5;     // total variation prior (chosen on the CIFAR model: KL of W6A6 and W4A4 plans on its calibration split)
  double l2 = 1e-3;    // pixel magnitude prior
  StatWeights stat_weights;
  int shift = -1;      // max circular shift per step, pixels (-1: img_size / 8)
  bool flip = true;    // mirror at random per step
  uint64_t seed = 0;
};

struct SynthProgress {
  int image0 = 0, images = 0, iter = 0, iters = 0;  // batch [image0, image0 + images)
  double loss = 0, ce = 0, stats = 0, tv = 0;       // means per image of the last step
};

struct SynthResult {
  std::vector<uint8_t> pixels;  // images × C × H × W, 8-bit (the model's preprocessing inverted)
  std::vector<int> classes;     // per image: its target class
  std::vector<int> centre;      // per image: its centre (index into StatTargets), -1 data-free
  // Mean per image over the final step: loss terms and the top-1 agreement with the targets.
  double ce = 0, stats = 0, tv = 0, hit_rate = 0;
};

// centres: null for data-free synthesis (cross-entropy and priors only; classes spread evenly
// over the model's classes), else each image takes centre i mod K.
SynthResult synthesize(const ViTModel& model, const StatTargets* centres, const SynthOptions& opt,
                       const std::function<void(const SynthProgress&)>& progress = {});

// Image i of r as the file to store: 8-bit pixels (grey or RGB as the model reads), padded by
// edge replication to the size the model's preprocessing resizes to before its centre crop, so
// that preprocessing it returns these pixels unchanged.
Image stored_image(const SynthResult& r, const ViTConfig& cfg, int i);

}  // namespace vitq
