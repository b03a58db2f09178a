// The integer weight codes of a linear site under its plan — computed here only, for the
// simulator, the integer runtime and the quantized-model writer alike (plan.h):
//   qw[c][k] = the plan's weight_codes[c·K + k] if it has them, else
//              clip(round(W[c][k] / Δw_c)) on channel c's grid (quantizer.h: quantize_one).
#pragma once
#include <cstdint>

#include "quant/plan.h"

namespace vitq {

// codes: N × K. Throws Error(Internal) if the plan's codes or channel steps do not fit N × K.
void site_weight_codes(const float* w, int N, int K, const SitePlan& sp, int16_t* codes);
// The same codes as floats (the simulator's float GEMM multiplies them).
void site_weight_codes_f32(const float* w, int N, int K, const SitePlan& sp, float* codes);

}  // namespace vitq
