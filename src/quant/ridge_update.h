// The activation-error step of the calibration driver (--ridge-update): before the weights are
// rounded, a linear site's FP32 weights and bias are refit so that the site, fed its input
// quantized, reproduces its output (ERQ's activation-quantization-error reduction, Zhong et al.
// ICML 2024, `zysxmu/ERQ`):
//     W', b' = argmin Σ_r ‖y_r − W' x̂_r − b'‖² + λ (‖W' − W‖² + ‖b' − b‖²),
// r over the calibration rows, x the site's input in the partly quantized model, x̂ = x
// quantize-dequantized with the site's own format, and the target y_r
//   local  x_r·Wᵀ + b: the site's FP32 output of the same input (ERQ's; the default), or
//   fp     the FP model's output of the site — which also asks the site to undo the error of the
//          layers before it; measured on ViT-Ti W4A4 it makes the model much worse (a least-squares
//          fit to a noisy input shrinks the output, and the shrinkage compounds over the layers;
//          docs/RESULTS.md).
// λ = damp · mean diag(X̃ᵀX̃). In closed form, with the constant input 1 for the bias:
// [W' b']ᵀ = (X̃ᵀX̃ + λI)⁻¹ (X̃ᵀY + λ[W b]ᵀ), X̃ = [X̂ 1] (Cholesky in double, Eigen). The weights
// are then rounded on the method's grid (nearest, or GPTQ with the same X̂ᵀX̂), and the mean error
// that rounding leaves is folded into the bias: b'' = b' + (W' − Ŵ)·mean_r x̂_r. The plan holds the
// result as weight codes and a bias correction b'' − b.
#pragma once
#include <nlohmann/json.hpp>
#include <vector>

#include "quant/gptq.h"
#include "quant/method.h"

namespace vitq {

enum class RidgeTarget { Local, Fp };

struct RidgeOptions {
  double damp = 0.01;  // λ relative to the mean of diag(X̃ᵀX̃)
  RidgeTarget target = RidgeTarget::Local;
};

// The solution W' (N × K row-major) and b' (N) for linear site `obs` with input format `x`
// (opt.target Fp: obs.target is the FP output), from one pass over the rows. Throws Error(Model)
// if the system is not positive definite (it is whenever damp > 0 and the inputs are finite).
struct RidgeFit {
  std::vector<float> w, b;
  std::vector<double> H;       // X̂ᵀX̂ (K × K), equal to quantized_input_gram's
  std::vector<double> mean_x;  // mean_r x̂_r (K)
  double rel_error_before = 0, rel_error_after = 0;  // Σ‖y − Wx̂ − b‖² and with W', b', ÷ Σ‖y‖²
};
RidgeFit ridge_fit(const SiteObservation& obs, const OperandQuant& x, const RidgeOptions& opt);

// The driver's step for linear site `obs` with the method's plan `sp`: the ridge fit, then its
// weights rounded on the method's grid (GPTQ if `gptq`, else nearest) into sp.weight_codes, and
// the bias correction b'' − b (replacing the method's). Notes get the relative output errors.
// Leaves attention sites, FP32 weights and per-channel bit-widths alone (returns false).
bool ridge_weight_step(const SiteObservation& obs, SitePlan& sp, const RidgeOptions& opt, const GptqOptions* gptq,
                       nlohmann::ordered_json& notes);

}  // namespace vitq
