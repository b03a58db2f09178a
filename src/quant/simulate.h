// Simulated quantization: a SiteHook that runs each planned site on quantize-dequantized
// operands (float GEMM), adds the plan's bias correction, and leaves FP32 sites alone.
#pragma once
#include <map>
#include <vector>

#include "core/aligned.h"
#include "engine/site.h"
#include "model/vit_model.h"
#include "quant/plan.h"

namespace vitq {

// Fake-quantizes a weight matrix [rows x cols] as the plan's operand says (per-tensor or
// per-output-channel, with per-channel bit-widths if given).
void fake_quantize_weight(const float* w, float* out, int rows, int cols, const OperandQuant& q);

class PlanSimulator : public SiteHook {
 public:
  // Keeps references to model and plan. A site's weights are quantized on its first call and
  // cached: a site's plan entry must not change afterwards (call forget() if it does).
  PlanSimulator(const ViTModel& model, const QuantPlan& plan);
  bool compute(const SiteCall& call) override;
  void forget(const SiteId& id) { wq_.erase(id); }

 private:
  const ViTModel& m_;
  const QuantPlan& plan_;
  std::map<SiteId, avector<float>> wq_;  // fake-quantized weights of planned linear sites
  avector<float> xbuf_, wbuf_;
};

// Applies the site plan to one call with float GEMMs: the reference computation shared by
// the simulator and the calibration search. `wq` = pre-quantized weight (or null to
// quantize call.w here).
void simulate_site(const SiteCall& call, const SitePlan& sp, const float* wq, avector<float>& xbuf,
                   avector<float>& wbuf);

// y[g][r][n] += corr[(g % heads) * N + n] for attention sites, corr[n] for linear sites.
void add_bias_correction(const SiteCall& call, const std::vector<float>& corr);

}  // namespace vitq
