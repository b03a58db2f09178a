// Error compensation per transformer block (QwT: "Quantization without Tears", Fu et al., CVPR
// 2025, `wujx2001/QwT`). After a block's sites have their plan entries, a linear map of the
// block's input is fitted to the error the quantized block leaves in its output:
//     W, b = argmin Σ_r ‖e_r − W x_r − b‖² + λ‖W‖²,
// r over the calibration tokens, x the block's input in the partly quantized model (earlier
// blocks compensated), and the error e_r
//   local  block_FP(x_r) − block_Q(x_r): the FP block's output of the same input (QwT's), or
//   fp     the FP model's output of the block − block_Q(x_r), which also asks the map to undo the
//          error of the blocks before it.
// λ = damp · mean diag(XᵀX) (QwT: none; a small one keeps the solve positive definite). The
// model then computes block(x) + x·Wᵀ + b, in FP32 (one D × D product per block and token). If
// the fit explains none of the error (R² ≤ 0 on the calibration tokens) the block gets none,
// as in QwT.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>

#include "quant/plan.h"

namespace vitq {

enum class CompensationTarget { Local, Fp };

struct CompensationOptions {
  bool on = false;  // --qwt
  CompensationTarget target = CompensationTarget::Local;
  double damp = 1e-4;  // λ relative to the mean of diag(XᵀX)
};

struct CompensationFit {
  BlockCompensation comp;        // W (D × D, [out, in]) and b (D)
  double r2 = 0;                 // 1 − Σ‖e − Wx − b‖² / Σ‖e − mean e‖²
  double rel_error_before = 0;   // Σ‖e‖² ÷ Σ‖y‖² (y: the target output)
  double rel_error_after = 0;    // Σ‖e − Wx − b‖² ÷ Σ‖y‖²
  bool used() const { return r2 > 0; }
};

// x: rows × D block inputs, e: rows × D errors, y: rows × D target outputs (for the relative
// errors). Throws Error(Model) if the system is not positive definite.
CompensationFit fit_compensation(const float* x, const float* e, const float* y, int64_t rows, int D, double damp);

nlohmann::ordered_json compensation_notes(const CompensationFit& f);

}  // namespace vitq
