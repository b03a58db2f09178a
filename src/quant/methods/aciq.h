// ACIQ — Banner, Nahshan, Soudry, "Post training 4-bit quantization of convolutional networks
// for rapid-deployment" (NeurIPS 2019, arXiv 1810.05723): the pieces of the method that the
// tests check against independent references. The method itself is make_aciq (methods.h).
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "quant/method_options.h"

namespace vitq {

// The method's options; each part can be switched off for an ablation.
struct AciqOptions : MethodOptions {
  bool clip = true;             // analytical activation clipping
  std::string dist = "auto";    // auto (likelier fit) | laplace | gauss
  bool bit_alloc = true;        // per-channel weight bit allocation
  bool bias_correction = true;  // per-channel weight mean/norm restoration
  void declare(OptionDecls& d) override;
  std::string fit_target(const Target& t) override;  // no bias correction without weight zero points
};

enum class AciqDist { Laplace, Gauss };
const char* aciq_dist_name(AciqDist d);

// Maximum-likelihood fits of a Laplace(μ, b) and a Gaussian(μ, σ) to n values (location = the
// sample mean for both: b = E|x − μ|, σ² = E(x − μ)²), and their mean log-likelihoods. `best`
// is the family with the higher likelihood (both have two parameters, so this is also the AIC
// choice). Deterministic whatever the thread count.
struct AciqFit {
  double mean = 0, b = 0, sigma = 0;
  double ll_laplace = 0, ll_gauss = 0;  // mean log-likelihood per value
  double max_abs = 0, max_pos = 0;      // max |x| and max x
  AciqDist best = AciqDist::Laplace;
  double scale(AciqDist d) const { return d == AciqDist::Laplace ? b : sigma; }
};
AciqFit aciq_fit(const float* x, size_t n);

// Expected squared error per value (Banner et al., Sec. 3 "ACIQ": the Laplace and Gaussian closed
// forms, adapted to vitq's grid)
// of quantizing X ~ dist(μ, s) with clip value α on the `bits`-bit grid of step Δ = α / hi:
//   signed   [−(hi+1)Δ, hiΔ], hi = 2^(b−1) − 1:  T(α − μ) + T(α(1 + 1/hi) + μ) + Δ²/12
//   unsigned [0, hiΔ],        hi = 2^b − 1:      T(α − μ) + Δ²/12  (the data is ≥ 0)
// where T(a) = E[(U − a)² ; U > a] is the clipping noise of one tail of the centred variable U
// (closed forms in aciq.cpp) and Δ²/12 the paper's rounding-noise approximation. For μ = 0 and
// the paper's grid this is exactly its Laplace (2b²e^(−α/b) + rounding) and Gaussian expressions.
double aciq_expected_mse(AciqDist d, double mu, double s, double alpha, int bits, bool is_unsigned);

// The clip value minimising aciq_expected_mse (convex in α), by golden-section search.
double aciq_optimal_clip(AciqDist d, double mu, double s, int bits, bool is_unsigned);

// Per-channel bit allocation (Banner et al. Sec. 4): the number of bins of channel i is
// proportional to range_i^(2/3), i.e. b_i = log2(λ·range_i^(2/3)), with λ set so that the bits
// sum to the layer's budget N·bits; each b_i is clamped to [min_bits, max_bits] (λ found with
// the clamp, water-filling), then rounded down and the remaining bits handed out by largest
// fractional part — so Σ b_i ≤ N·bits always. If bits ≥ max_bits every channel gets
// min(bits, max_bits).
std::vector<int> aciq_allocate_bits(const std::vector<double>& ranges, int bits, int min_bits = 2, int max_bits = 8);

}  // namespace vitq
