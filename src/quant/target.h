// Hardware descriptions (HAGO's backend descriptions): what a backend executes, as data. The
// descriptions live in the repository's targets/*.json (compiled into vitq as built-ins) or in a
// user's file of the same schema. A plan records the description it was made for; `vitq quantize
// --target` shapes the method's recipe by it and refuses any option or plan entry it cannot run.
//
// Schema (every field required; unknown fields are errors):
//   name, summary, runtime ("vitq" | "onnx")
//   gemm: [{input, weight, accumulator, max_bits}]   the integer GEMMs; a site's operands may be
//         as wide as the widest GEMM's max_bits (2..10)
//   weights:  {per_channel, channel_bits, offset}    per-output-channel steps; per-channel widths;
//                                                    an asymmetric weight (weight_offset, a zero point)
//   inputs:   {grids: [...], per_head, per_token}    activation grids (signed, unsigned, log2,
//                                                    logsqrt2, float); per-head steps of the attention
//                                                    operands; dynamic per-token steps
//   float_ops: {compensation, mlp_rotation}          float GEMMs beside the quantized ones (QwT
//                                                    compensation; the online Hadamard of fc2's input)
//   elementwise: {gelu, softmax, layernorm, requantize}  how they can run: gelu "fp32", "lut8" or
//                                                    "lut10" (a table on an input code of at most
//                                                    8 / 10 bits, plan.h GeluTable); softmax the same
//                                                    (an exponent table, plan.h SoftmaxTable); the
//                                                    others "fp32"
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "numerics/quantizer.h"
#include "quant/plan.h"

namespace vitq {

struct Target {
  std::string name, summary, runtime;
  int max_bits = 8;  // the widest GEMM's
  struct {
    bool per_channel = false, channel_bits = false, offset = false;
  } weights;
  struct {
    std::vector<Grid> grids;
    bool per_head = false, per_token = false;
  } inputs;
  struct {
    bool compensation = false, mlp_rotation = false;
  } float_ops;
  struct {
    int gelu_table_bits = 0;     // the widest GELU table input (0: GELU in float only)
    int softmax_table_bits = 0;  // the widest softmax exponent table (0: softmax in float only)
  } elementwise;
  nlohmann::ordered_json json;  // the description as given (recorded in the plan)

  bool allows_grid(Grid g) const;
};

// Validates a description; errors (ErrorKind::Model) name `source` and the field.
Target target_from_json(const nlohmann::ordered_json& j, const std::string& source);

// The built-in descriptions' names (targets/*.json), sorted.
std::vector<std::string> builtin_target_names();

// A built-in by name, else a description file at that path.
Target load_target(const std::string& name_or_path);

// What a plan entry needs that a target lacks.
enum class TargetGap { Width, ChannelWidths, ChannelSteps, Grid, PerToken, PerHead, WeightOffset, FloatGemm, Elementwise };
struct TargetViolation {
  TargetGap gap;
  std::string what;  // "site blocks.0.attn.qkv, x: dynamic per-token steps; ..."
};

// What in `plan` the target cannot run, one entry each; empty = the target runs the plan.
std::vector<TargetViolation> plan_target_violations(const QuantPlan& plan, const Target& t);

}  // namespace vitq
