// A quantization plan: plain data saying, for every matmul site, how its operands are
// quantized. Produced by a calibration method, saved as JSON next to the weights, read by
// both the simulator (quantize-dequantize) and the integer runtime.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/site.h"
#include "quant/quantizer.h"

namespace vitq {

// How one operand of a site is quantized. bits == 0: stays FP32.
struct OperandQuant {
  int bits = 0;
  bool is_unsigned = false;         // grid [0, 2^b − 1] instead of [−2^(b−1), 2^(b−1) − 1]
  float scale = 0.0f;               // per-tensor step Δ
  std::vector<float> channel_scales;  // per-output-channel steps (weights only; empty = per-tensor)
  std::vector<int> channel_bits;      // per-output-channel bit-widths (ACIQ; empty = `bits` for all)

  bool quantized() const { return bits > 0; }
  bool per_channel() const { return !channel_scales.empty(); }
  QRange range() const { return qrange(bits, is_unsigned); }
  QRange channel_range(size_t c) const { return qrange(channel_bits.empty() ? bits : channel_bits[c], is_unsigned); }
  bool operator==(const OperandQuant&) const = default;
};

struct SitePlan {
  OperandQuant x;  // first operand: the activation input
  OperandQuant w;  // second operand: the weight, or K / Vᵀ for the attention matmuls
  // Added to the site's output per output channel (bias correction); length N for linear
  // sites, heads × N for attention sites; empty = none.
  std::vector<float> bias_correction;
  bool operator==(const SitePlan&) const = default;
};

struct QuantPlan {
  std::string method;                 // "liu2021", "minmax", ...
  nlohmann::ordered_json settings;    // method settings as given (bits, flags, ...)
  nlohmann::ordered_json calibration; // calibration set identity: paths, count, hash, seed, inputs
  std::string tool_version;
  std::string architecture;
  std::map<std::string, SitePlan> sites;  // by site name; a site absent here stays FP32

  const SitePlan* find(const SiteId& id) const;
  bool operator==(const QuantPlan& o) const;
};

nlohmann::ordered_json plan_to_json(const QuantPlan& plan);
// Validates the JSON (field types, bit ranges 2..10, positive finite scales, site names);
// errors name `source` (the file) and the field.
QuantPlan plan_from_json(const nlohmann::ordered_json& j, const std::string& source);

// Deterministic: the same plan gives the same bytes (floats written with round-trip precision).
void save_plan(const QuantPlan& plan, const std::string& path);
QuantPlan load_plan(const std::string& path);

// Checks that every site of the plan exists in the model and that per-channel/bias vectors
// have the model's sizes. Throws Error(Model) naming the plan file and site.
struct ViTConfig;
void check_plan_matches(const QuantPlan& plan, const ViTConfig& cfg, const std::string& source);

}  // namespace vitq
