#include "quant/fisher_tokens.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "numerics/hadamard.h"
#include "synth/layer_stats.h"
#include "synth/vit_input_grad.h"

namespace vitq {

namespace {

// A uniform draw in [0, 1) of image `image`'s draw `k` (seeded; independent of batching).
double uniform01(uint64_t seed, int image, int k) {
  uint64_t state = seed ^ (uint64_t(uint32_t(image)) << 20) ^ (uint64_t(uint32_t(k)) << 52) ^ 0x6669736865720000ull;
  splitmix64_next(state);
  return double(splitmix64_next(state) >> 11) * 0x1.0p-53;
}

// A class drawn from softmax(logits) with u ∈ [0, 1): the first whose cumulative probability
// exceeds u (in double; the last class if rounding leaves u above the total).
int draw_class(const float* logits, int classes, double u) {
  const double mx = *std::max_element(logits, logits + classes);
  std::vector<double> e(static_cast<size_t>(classes));
  double sum = 0;
  for (int j = 0; j < classes; ++j) sum += e[size_t(j)] = std::exp(double(logits[j]) - mx);
  double cdf = 0;
  for (int j = 0; j < classes; ++j)
    if (u < (cdf += e[size_t(j)] / sum)) return j;
  return classes - 1;
}

}  // namespace

std::vector<std::vector<float>> fisher_token_weights(const ViTModel& model, const float* images, int n, int batch,
                                                     int samples, uint64_t seed,
                                                     const std::function<void(int, int)>& progress) {
  const ViTConfig& c = model.cfg;
  if (n <= 0 || batch <= 0 || samples <= 0)
    fail(ErrorKind::Internal, "fisher_token_weights: n = ", n, ", batch = ", batch, ", samples = ", samples);
  const int T = c.tokens(), D = c.embed_dim, NC = c.num_classes;
  const size_t img_floats = size_t(c.in_chans) * size_t(c.img_size) * size_t(c.img_size);
  std::vector<std::vector<float>> w(size_t(c.depth), std::vector<float>(size_t(n) * T, 0.0f));
  ViTInputGrad grad(model);
  const std::vector<const float*> no_layers(size_t(grad.layers()), nullptr);
  std::vector<float> logits(size_t(batch) * NC), dlogits(size_t(batch) * NC);
  const double inv_samples = 1.0 / double(samples);
  for (int i0 = 0; i0 < n; i0 += batch) {
    const int b = std::min(batch, n - i0);
    grad.forward(images + size_t(i0) * img_floats, b, logits.data());
    for (int k = 0; k < samples; ++k) {
      for (int r = 0; r < b; ++r) {  // ∂(−log p_y)/∂logits = p − e_y
        const float* lg = logits.data() + size_t(r) * NC;
        cross_entropy(lg, NC, draw_class(lg, NC, uniform01(seed, i0 + r, k)), 1.0, dlogits.data() + size_t(r) * NC);
      }
      grad.backward(dlogits.data(), no_layers, nullptr, [&](int blk, const float* g) {
        float* out = w[size_t(blk)].data() + size_t(i0) * T;
#pragma omp parallel for schedule(static)
        for (int64_t t = 0; t < int64_t(b) * T; ++t) {
          double s = 0;
          for (int d = 0; d < D; ++d) s += double(g[t * D + d]) * double(g[t * D + d]);
          out[t] += float(s * inv_samples);
        }
      });
    }
    if (progress) progress(i0 + b, n);
  }
  for (std::vector<float>& v : w) {
    double mean = 0;
    for (float x : v) mean += x;
    mean /= double(v.size());
    if (!(mean > 0) || !std::isfinite(mean)) {
      std::fill(v.begin(), v.end(), 1.0f);
      continue;
    }
    for (float& x : v) x = float(double(x) / mean);
  }
  return w;
}

}  // namespace vitq
