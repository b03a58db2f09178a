// Simulated quantization: a SiteHook that runs each planned site on quantize-dequantized
// operands (float GEMM), adds the plan's weight offset and bias correction, and leaves FP32
// sites alone; an fc1 site with a GELU table (plan.h: GeluTable) has its output put on the
// table's grid, so that the forward's GELU computes the table's entry. Computes exactly what
// plan.h describes.
#pragma once
#include <map>
#include <memory>
#include <vector>

#include "core/aligned.h"
#include "engine/site.h"
#include "model/vit_model.h"
#include "numerics/softmax_table.h"
#include "quant/plan.h"

namespace vitq {

class PlanSimulator : public SiteHook {
 public:
  // Keeps references to model and plan. A site's weights are quantized on its first call and
  // cached: a site's plan entry must not change afterwards (call forget() if it does). A plan
  // with transforms is for the rewritten model: pass apply_plan_transforms(checkpoint, plan, ...)
  // and run the forward on that same model (plan_transforms.h).
  PlanSimulator(const ViTModel& model, const QuantPlan& plan);
  bool compute(const SiteCall& call) override;
  // The plan's softmax table, if it has one (numerics/softmax_table.h).
  bool softmax(int block, float* s, int rows, int n, float scale) override;
  void forget(const SiteId& id) { wq_.erase(id); }

 private:
  const ViTModel& m_;
  const QuantPlan& plan_;
  std::map<SiteId, avector<float>> wq_;  // weight codes (as floats) of planned linear sites
  avector<float> xbuf_, wbuf_;
  std::unique_ptr<SoftmaxExpTable> softmax_;
};

// Applies the site plan to one call with float GEMMs: the reference computation shared by
// the simulator and the calibration search. `wq` = the weight codes as floats
// (site_weight_codes_f32, quant/weight_codes.h; or null to quantize call.w here).
//
// The GEMM multiplies the integer codes (integer-valued floats: the sums are exact below 2^24),
// and the epilogue scales each output by Δx·Δw_c and adds bias, bias correction and weight
// offset with the integer runtime's kernels (numerics/int8_kernels.h). Mathematically this is
// the quantize-dequantize product x̂·ŵᵀ of plan.h; numerically it is what the integer runtime
// computes, so simulated and integer runs agree bit for bit whenever no sum reaches 2^24.
void simulate_site(const SiteCall& call, const SitePlan& sp, const float* wq, avector<float>& xbuf,
                   avector<float>& wbuf);

// The plan's element-wise options as the simulator applies them (the integer site hook shares
// them): an fc1 site's output put on its GELU table's grid (nothing for other sites or without a
// table); the plan's softmax exponent table (or null); and the softmax of `rows` rows with that
// table, over OpenMP threads (false, nothing done, for a null table).
void put_on_gelu_grid(const QuantPlan& plan, const SiteCall& call);
std::unique_ptr<SoftmaxExpTable> plan_softmax_table(const QuantPlan& plan);
bool softmax_with_table(const SoftmaxExpTable* t, float* s, int rows, int n, float scale);

// y[g][r][n] += corr[(g % heads) * N + n] for attention sites, corr[n] for linear sites.
void add_bias_correction(const SiteCall& call, const std::vector<float>& corr);
// y[r][n] += offset[n] · Σ_k x[r][k] (linear sites; x = the quantized input the GEMM used).
void add_weight_offset(const SiteCall& call, const std::vector<float>& offset);

}  // namespace vitq
