// Exact scoring of weight-step candidates of a linear site from per-image moments.
//
// With the input codes X̂ fixed, the quantized output of image i is Ô = s·X̂·Ŵᵀ + b′ (s = ΔxΔw,
// b′ = bias + correction), and every statistic the similarities need is a small inner product:
//   Σ Ô     = s·u·(Σ_n Ŵ_n) + M·Σ b′            u = Σ_r X̂_r (column sums)
//   Σ O·Ô   = s·⟨Ŵ, Oᵀ X̂⟩ + Σ_n b′_n Σ_r O_rn
//   Σ Ô²    = s²·⟨ŴᵀŴ, X̂ᵀX̂⟩ + 2s·Σ_n b′_n (Ŵu)_n + M·Σ b′²
// so with H = X̂ᵀX̂ (K×K) and G = OᵀX̂ (N×K) stored per image, a candidate costs one K×K and one
// N×K inner product per image — batched over candidates as two GEMMs — instead of the site's
// M×N×K product. All calibration tokens are used; nothing is sampled.
#pragma once
#include <vector>

#include "core/aligned.h"
#include "quant/method.h"
#include "numerics/quantizer.h"
#include "quant/similarity.h"

namespace vitq {

class WeightMoments {
 public:
  // ratios: per-channel step ratios (scale_search.h: channel_step_ratios), or empty for one step.
  WeightMoments(const SiteObservation& obs, QRange xr, QRange wr, bool int8_codes, std::vector<float> ratios = {});

  // Bytes the moments of `obs` need (to decide whether to use them).
  static size_t bytes_needed(const SiteObservation& obs);

  // Quantizes all inputs at step dx and builds H, G and the column sums.
  void set_x(float dx);
  // Mean over images of the similarity at each candidate weight step.
  std::vector<double> objectives(const std::vector<float>& dws, const std::vector<float>& corr, Similarity sim);
  // Per output channel, the mean of (Ô − O) over all tokens and images at step dw.
  std::vector<double> channel_error(float dw, const std::vector<float>& corr);

 private:
  void weight_codes(float dw, float* out_codes_f, int8_t* out_codes_i8);
  // For C candidate steps: per candidate the codes Ŵ (Wf_), ŴᵀŴ (Af_), Σ_n Ŵ[n] (ws_) and
  // Σ_n b′[n]·Ŵ[n] (wb_).
  void candidate_products(const float* dws, size_t C, const std::vector<double>& b);

  const SiteObservation& obs_;
  QRange xr_, wr_;
  bool int8_;
  std::vector<float> ratios_;
  int images_, M_, N_, K_;
  float dx_ = 1.0f;
  avector<float> H_, G_, U_, colO_;  // images×K², images×N×K, images×K, images×N
  std::vector<double> so_, so2_;       // Σ O, Σ O² per image
  // per-thread scratch, kept across calls
  std::vector<avector<int8_t>> qi_, wi_;
  std::vector<avector<float>> qf_;
  std::vector<avector<int32_t>> h32_, a32_;
  avector<float> Af_, Wf_, ws_, wb_, Q_, R_, Uw_, Ub_;  // objectives(): per-candidate products
};

}  // namespace vitq
