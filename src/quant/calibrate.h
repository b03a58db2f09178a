// The calibration driver: runs the calibration images through the model block by block,
// shows each site to the method in execution order, and assembles the plan.
//
// Stage by stage (quant/staged_forward.h), it keeps two residual streams for all calibration
// images: the FP model's (whose site outputs are the targets O) and the partly quantized
// model's (whose site inputs are what the quantized site will really see). With CalibInputs::FP the site inputs come from
// the FP stream instead. After a block's sites, a method may optimise the block as a whole
// (Method::calibrate_block); after every stage, Method::refine sees the network. Memory: the
// two streams plus one block's site tensors.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "quant/compensation.h"
#include "quant/method.h"
#include "quant/reconstruct.h"
#include "quant/plan.h"
#include "quant/plan_transforms.h"
#include "quant/ridge_update.h"
#include "quant/weight_rounding.h"
#include "model/vit_model.h"

namespace vitq {

enum class CalibInputs { Quantized, FP };

struct CalibOptions {
  Bits bits;                      // uniform bit-widths (their grid: from `grids`)
  std::vector<Bits> block_bits;   // per-block override: [2·i] = MSA of block i, [2·i+1] = MLP; empty = uniform
  GridPolicy grids;               // the grid of each site's input operand (site_bits)
  CalibInputs inputs = CalibInputs::Quantized;
  bool quantize_patch_embed = true;
  bool quantize_head = false;
  int batch = 32;
  // Checkpoint rewrites fitted before any site is observed and recorded in the plan
  // (quant/plan_transforms.h); every site is calibrated on the rewritten model.
  TransformOptions transforms;
  // After the method's plan of each linear site: its integer weights by GPTQ on the method's
  // grid (quant/weight_rounding.h), or the method's own.
  WeightRounding weight_rounding = WeightRounding::Nearest;
  GptqOptions gptq;
  // Before the rounding: the weights and bias refit to the FP output from the quantized inputs
  // (quant/ridge_update.h).
  bool ridge = false;
  RidgeOptions ridge_opt;
  // After each block's sites (and the method's block step): block reconstruction of its weight
  // codes and bias corrections (quant/reconstruct.h), before the compensation.
  ReconOptions recon;
  // After each block (and the method's block step): QwT error compensation (quant/compensation.h),
  // fitted on the block's quantized inputs; later blocks see the compensated model.
  CompensationOptions compensation;
};

struct SiteReport {
  std::string site;
  Bits bits;
  float x_scale = 0, w_scale = 0;
  double sim_before = 0;  // objective similarity at max-based scales
  double sim_after = 0;   // at the method's scales (bias correction included)
  double cosine_after = 0, mse_after = 0;
  double seconds = 0;
  SiteNotes notes;
};

struct CalibProgress {
  size_t done = 0, total = 0;  // sites
  std::string site;            // the site being calibrated, or the block step's status
  std::string event;           // a line worth keeping (a block step finished), or empty
};

struct CalibrationResult {
  QuantPlan plan;
  std::vector<SiteReport> sites;
  nlohmann::ordered_json block_notes;   // from Method::calibrate_block and the compensation, by block name
  nlohmann::ordered_json refine_notes;  // from Method::refine, if the method has that step
  double seconds = 0;
};

class Calibrator {
 public:
  // images: n × C × H × W preprocessed calibration images (kept by reference).
  Calibrator(const ViTModel& model, const float* images, int n);

  CalibrationResult run(Method& method, const CalibOptions& opt,
                        const std::function<void(const CalibProgress&)>& progress = {});

  // The format of a site under the options: bits uniform or per block, the input's grid by `grids`.
  // K: the site's input channels (per-token channel groups apply where they divide K).
  static Bits site_bits(const SiteId& id, const CalibOptions& opt, int K = 0);

 private:
  const ViTModel& m_;
  const float* images_;
  int n_;
};

// Evaluates a site plan on an observation: similarities of Ô (bias correction included) to
// the target, per image then averaged.
struct SiteEval {
  double pearson = 0, cosine = 0, mse = 0;
};
SiteEval evaluate_site_plan(const SiteObservation& obs, const SitePlan& sp);

// The max-based (MinMax) plan of a site: Δ = max|·| / qmax for both operands, on bits.x_grid;
// an input whose format fixes its step (bits.x_fixed()) in that format.
SitePlan minmax_site_plan(const SiteObservation& obs, Bits bits);
// Puts the input operand in its fixed format (per token, or a level grid), if bits has one.
void set_input_format(OperandQuant& x, Bits bits);
// K of matmul_qk per token when bits.qk_per_token (plan.h): no stored step (else unchanged).
void set_key_format(OperandQuant& w, Bits bits);

}  // namespace vitq
