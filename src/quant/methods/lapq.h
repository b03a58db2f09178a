// LAPQ — Nahshan, Chmiel, Baskin, Zheltonozhskii, Banner, Bronstein, Mendelson, "Loss aware
// post-training quantization" (arXiv 1911.07190, Machine Learning 2021): pieces exposed for the
// tests. The method itself is make_lapq (methods.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "quant/method_options.h"
#include "quant/network_kl.h"  // kl_from_logits: the loss LAPQ minimises without labels
#include "numerics/quantizer.h"

namespace vitq {

struct LapqOptions : MethodOptions {
  std::vector<double> p = {2, 2.5, 3, 3.5, 4};  // Lp norms of the initialisation
  int evals = 400;        // network loss evaluations in the network-level step, all included
  int loss_images = 32;   // calibration images the loss is computed on (0 = all)
  double range = 2.0;     // joint step: each step within [init / r, init · r]
  bool joint = true;      // false: stop after choosing p (ablation)
  void declare(OptionDecls& d) override;
};

// For each p of `ps`, the step Δ minimising Σ_i |v_i − Q_Δ(v_i)|^p over the values (the paper's
// layer-wise Lp-norm initialisation), Q_Δ the quantizer of grid `r`. Searched over
// Δ ∈ [2^-8·Δ₀, Δ₀] (Δ₀ the max-based step; a larger step only adds rounding error): a
// log-spaced grid shared by all p, then golden-section refinement around each p's best grid
// point. Uses at most `max_samples` values (a seeded random subset when n is larger).
std::vector<float> lp_optimal_steps(const float* v, size_t n, QRange r, const std::vector<double>& ps,
                                    size_t max_samples = size_t(1) << 16, uint64_t seed = 0);

// Σ_i |v_i − Q_Δ(v_i)|^p (for tests and reports).
double lp_error(const float* v, size_t n, float delta, QRange r, double p);

}  // namespace vitq
