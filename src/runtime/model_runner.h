// A model directory as vitq runs it — the one place that decides the engine, for `vitq eval`
// and the Python module:
//   an FP32 checkpoint                      "fp32"      ViTForward
//   the same with a plan (plan.json)        "simulated" the plan's transforms applied, PlanSimulator
//   a quantized model directory             "integer"   IntViTForward (int8 GEMMs)
//   the same with `simulate`                "simulated" its plan on its dequantized weights
// A plan with a quantized directory, or `simulate` with a checkpoint, is an Error(Usage); callers
// check first to name their own options.
#pragma once
#include <memory>
#include <string>

#include "engine/vit_forward.h"
#include "model/vit_model.h"
#include "quant/plan.h"

namespace vitq {

class PlanSimulator;
class IntViTForward;
struct QuantizedViT;

struct RunnerOptions {
  std::string plan;  // plan.json to simulate on an FP32 checkpoint ("" = none)
  bool simulate = false;  // a quantized model directory: quantize-dequantize instead of integers
  bool allow_non_finite = false;
};

class ModelRunner {
 public:
  ModelRunner(const std::string& dir, const RunnerOptions& opt);
  ~ModelRunner();
  ModelRunner(const ModelRunner&) = delete;
  ModelRunner& operator=(const ModelRunner&) = delete;

  const ViTConfig& config() const { return cfg_; }
  const std::string& engine() const { return engine_; }  // "fp32", "simulated" or "integer"
  bool quantized_dir() const { return quantized_; }
  const QuantPlan* plan() const { return plan_.get(); }  // null for FP32
  const ViTModel* float_model() const { return model_.get(); }  // null for the integer run
  // The FP forward of a float run and the hook it runs under (the plan's simulator, or null for
  // FP32), e.g. to wrap the hook in another; both null in integers.
  ViTForward* float_forward() { return fwd_.get(); }
  SiteHook* hook();
  // The integer engine (null for a float run).
  const IntViTForward* integer_forward() const { return ifwd_.get(); }

  // Logits of `batch` preprocessed images (batch × C × H × W); one call at a time (buffers are kept).
  void run(const float* images, int batch, float* logits);

 private:
  ViTConfig cfg_;
  std::string engine_;
  bool quantized_ = false;
  std::unique_ptr<QuantizedViT> qm_;
  std::unique_ptr<ViTModel> model_;
  std::unique_ptr<QuantPlan> plan_;
  std::unique_ptr<PlanSimulator> sim_;
  std::unique_ptr<ViTForward> fwd_;
  std::unique_ptr<IntViTForward> ifwd_;
};

}  // namespace vitq
