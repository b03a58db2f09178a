// Block reconstruction (--reconstruct; the BRECQ / QDrop family, with straight-through weights as
// in GLF-Q): after a transformer block's sites have their plan entries, the integer weight codes
// and the bias corrections of its four linear sites are trained so that the block, run exactly as
// the plan runs it (the simulator: every quantizer, grid and epilogue of the deployed model), maps
// its inputs in the partly quantized model to the target outputs:
//     min_θ  mean_r ‖block_Q(x_r; θ) − y_r‖²,
// θ = a latent code u per weight (the code used is clip(round(u)) on the channel's grid; the
// gradient passes the rounding straight through, in code units: ∂L/∂u = ∂L/∂ŵ · Δ_c), the bias
// correction of each linear site and, with --recon-step-lr, each channel's grid itself:
// ŵ_ck = Δ_c·q_ck + o_c with Δ_c = Δ⁰_c·e^{s_c}, ∂L/∂s_c = Δ_c·Σ_k ∂L/∂ŵ_ck·q_ck and
// ∂L/∂o_c = Σ_k ∂L/∂ŵ_ck (o_c trained in units of Δ⁰_c; only on grids that have offsets), and with
// --recon-act-lr the activation quantizers: the per-head steps Δ_h of the attention operands Q, K
// (matmul_qk) and V (matmul_av) on uniform grids, and the clip ratio α of each linear site's
// per-token input, with LSQ's gradient (Esser et al. 2020): x̂ = Δ·clip(round(x/Δ)), ∂x̂/∂Δ =
// round(x/Δ) − x/Δ inside the grid, its end code outside; trained as log gains like the weight
// steps (α kept ≤ 1). Adam, a cosine-decayed learning rate, --recon-iters steps of
// --recon-batch images drawn at random (seeded). The target y is
//   local  the FP block's output of the same input (the default), or
//   fp     the FP model's output of the block (BRECQ's), which also asks the block to undo the
//          error of the blocks before it: trained on 150 of ViT-Ti's calibration images it did
//          worse than the local target on the other 50 (docs/RESULTS.md).
// The gradient of the block output is written out here (backward.cpp-style, on oneDNN's sgemm):
// through fc2, the MLP rotation, GELU, fc1, LayerNorm 2, proj, P·V, softmax, Q·Kᵀ and qkv, every
// activation quantizer passed straight through (zero outside a uniform grid's clipping range).
// With --recon-drop p (QDrop, Wei et al. 2022), each training step leaves every element of the
// block's quantized activations unquantized with probability p (forward and backward; the losses
// reported and the revert check run the plan as it is). On ViT-Ti's 150/50 calibration split p = 0.5
// did worse on the 50 than p = 0 (KL 0.49 vs 0.37, 300 steps), so it is off by default.
// With --recon-fisher λ each token's squared error is weighted by (1 − λ)·1 (or the head share's
// weight) + λ·its Fisher token weight (quant/fisher_tokens.h: how much the token's error moves the
// FP model's prediction), so the loss follows the network's output KL instead of treating every
// token and block output alike.
// The result is ordinary plan data: weight codes (SitePlan::weight_codes) and bias corrections.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/vit_model.h"
#include "quant/plan.h"

namespace vitq {

class StagedForward;
class PlanSimulator;

enum class ReconTarget { Fp, Local };

struct ReconOptions {
  int iters = 0;              // --recon-iters (0: off)
  int batch = 8;              // --recon-batch: images per step
  double lr = 5e-3;           // --recon-lr: Adam step of the latent codes, in code units
  double bias_lr = 1e-4;      // --recon-bias-lr: Adam step of the bias corrections (0: not trained)
  double step_lr = 0;         // --recon-step-lr: Adam step of each channel's log step and of its offset
                              // (in steps); 0: the grid stays as the method chose it
  double act_lr = 0;          // --recon-act-lr: Adam step of the log per-head steps of Q, K, V and of the
                              // log per-token clip ratios of the linear inputs (0: kept)
  ReconTarget target = ReconTarget::Local;
  double drop = 0;            // --recon-drop: QDrop's probability of leaving an activation element unquantized
  double head_share = 0;      // --recon-head-share: in the last block, the loss's share of the tokens the
                              // head reads (the prefix tokens); 0: all tokens alike
  double fisher = 0;          // --recon-fisher λ: each token's loss weight is (1 − λ)·its plain (or head-share)
                              // weight + λ·its Fisher weight (quant/fisher_tokens.h); 0: not used
  uint64_t seed = 0;
  bool on() const { return iters > 0; }
};

struct ReconProgress {
  int block = 0, iter = 0, iters = 0;
  double loss = 0;  // running mean of the recent steps' losses
};

// Trains block `block` of `model` (stage block + 1 of fwd) in `plan`: x_in / y_target are the
// block's inputs and targets for all of fwd's images (n × tokens × D); token_weight, with
// opt.fisher > 0, the block's Fisher token weights (n × tokens, mean 1; fisher_token_weights). The plan's linear sites of
// the block must be quantized with per-channel steps (or a per-tensor one) and no per-channel
// bit-widths; sites that are not are left alone. Returns notes for the report (losses before and
// after on all images, codes changed, seconds).
nlohmann::ordered_json reconstruct_block(StagedForward& fwd, PlanSimulator& sim, int block, const float* x_in,
                                         const float* y_target, QuantPlan& plan, const ReconOptions& opt,
                                         const std::function<void(const ReconProgress&)>& progress = {},
                                         const float* token_weight = nullptr);

// One forward and backward of block `block` on b images (x: b × tokens × D, target likewise) under
// `plan` (run by `sim` on `model`). Returns the loss mean((y − target)²); grads: per linear site name
// (blocks.i.attn.qkv, ...) ∂L/∂ŵ (N × K, the dequantized weights ŵ = Δ_c·q + o_c) and ∂L/∂b (N).
// For tests (the probe's recon_grad) and the training loop.
struct BlockGrads {
  std::vector<std::string> sites;
  std::vector<std::vector<float>> dw, db;
  // ∂L/∂Δ_h of the steps of Q (matmul_qk's x), K (its w) and V (matmul_av's w), one per head (a
  // per-tensor step's gradient is their sum); zero where the operand is not on a uniform grid, and
  // dropped elements (QDrop) contribute nothing.
  std::vector<float> dq_step, dk_step, dv_step;
  // Per linear site (as `sites`): ∂L/∂log α of its per-token input quantizer's clip ratio α (the
  // row step Δ_r = α·(max_r − min_r)/(2^b − 1), the zero point independent of α), LSQ's
  // straight-through step gradient: Σ_r Δ_r Σ_k ∂L/∂x̂_rk·(round(x/Δ_r) − x/Δ_r inside, the end
  // code outside). 0 where the input is not quantized per token.
  std::vector<float> dlog_clip;
};
// The dequantized weight ŵ = Δ_c·q + o_c of a linear site under its plan entry (N × K; the
// plan's codes or its rounding of the layer's weights), or the layer's own weights if `sp` is
// null or FP32.
void dequantized_weight(const LinearWeights& lw, const SitePlan* sp, std::vector<float>& w);

// drop: QDrop's probability (ReconOptions::drop) for this one call, with a fixed seed; head_share:
// the loss's share of the prefix tokens (ReconOptions::head_share, here for any block); token_weight
// (b × tokens) and fisher: the Fisher token weights and their share λ (ReconOptions::fisher).
double block_loss_and_grads(const ViTModel& model, PlanSimulator& sim, const QuantPlan& plan, int block,
                            const float* x, const float* target, int b, BlockGrads* grads, double drop = 0,
                            double head_share = 0, const float* token_weight = nullptr, double fisher = 0);

}  // namespace vitq
