// The calibration driver: runs the calibration images through the model block by block,
// shows each site to the method in execution order, and assembles the plan.
//
// Per block it keeps two residual streams for all calibration images: the FP model's (whose
// site outputs are the targets O) and the partly quantized model's (whose site inputs are
// what the quantized site will really see). With CalibInputs::FP the site inputs come from
// the FP stream instead. Memory: the two streams plus one block's site tensors.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "quant/method.h"
#include "quant/plan.h"
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
  // LayerNorm smoothing (quant/ln_smoothing.h): calibrate the model rewritten with factors of
  // this α from the calibration images; the plan records them. < 0 = off.
  double smooth_ln_alpha = -1.0;
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
  std::string site;
};

struct CalibrationResult {
  QuantPlan plan;
  std::vector<SiteReport> sites;
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
  static Bits site_bits(const SiteId& id, const CalibOptions& opt);

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

// The max-based (MinMax) plan of a site: Δ = max|·| / qmax for both operands, on bits.x_grid.
SitePlan minmax_site_plan(const SiteObservation& obs, Bits bits);

}  // namespace vitq
