// Bit-Split and Stitching — Wang, Chen, He, Chen, Liu, Cheng, "Towards accurate post-training
// network quantization via bit-split and stitching" (ICML 2020): the weight optimisation, exposed
// for the tests. The method itself is make_bitsplit (methods.h).
#pragma once
#include <cstdint>
#include <vector>

#include <string>

#include "quant/method_options.h"
#include "quant/plan.h"

namespace vitq {

struct BitSplitOptions : MethodOptions {
  std::string act = "percentile";  // method of the activation steps (with its own options)
  int epochs = 30;                 // alternating rounds at most
  void declare(OptionDecls& d) override;
  std::vector<std::string> uses_methods() const override { return {act}; }
};

struct BitSplitResult {
  int bits = 0;
  // Stitched integer codes, N × K row-major: codes = Σ_m 2^m · planes[m], in [−(2^(b−1)−1), 2^(b−1)−1].
  std::vector<int16_t> codes;
  std::vector<std::vector<int8_t>> planes;  // b − 1 ternary planes (N × K, values −1, 0, 1); planes[m] weighs 2^m
  std::vector<float> alpha;                 // per output channel: the step (ŵ = α_c · code)
  // Σ_c ‖X w_c − X ŵ_c‖² / (rows · N) on the calibration rows, for: max-based step with
  // round-to-nearest; the weight-MSE-optimal step with round-to-nearest (the initialisation,
  // as in the authors' code); the final bit-split.
  double mse_round_max = 0, mse_init = 0, mse_final = 0;
  int epochs = 0;  // alternating rounds run (stops early when no ternary value changes)
};

// Minimises the layer-output error Σ_c ‖X w_c − α_c · X q_c‖² over the per-channel steps α_c and
// the ternary planes of the codes q_c = Σ_m 2^m t_m,c (Sec. 3 of the paper): alternately
// α_c in closed form (least squares) and each bit plane in turn with the others fixed, each
// ternary value by exact coordinate minimisation. X = the inputs (rows × K; if `xq` is given,
// quantized with it first: the layer's real input), w = the FP weight (N × K). Deterministic;
// parallel over output channels.
BitSplitResult bit_split(const float* x, int64_t rows, int K, const float* w, int N, int bits, int max_epochs,
                         const OperandQuant* xq = nullptr);

}  // namespace vitq
