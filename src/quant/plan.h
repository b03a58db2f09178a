// A quantization plan: plain data saying, for every matmul site, how its operands are
// quantized. Produced by a calibration method, saved as JSON next to the weights, read by
// both the simulator (quantize-dequantize) and the integer runtime.
//
// What a linear site computes under its plan (x̂ = Δx·qx, qx = clip(round(x/Δx)) on x's grid):
//     y[r][c] = Σ_k x̂[r][k] · ŵ[c][k]  +  weight_offset[c] · Σ_k x̂[r][k]  +  bias[c]  +  bias_correction[c]
// with the dequantized weight ŵ[c][k] = Δw_c · qw[c][k], where
//     Δw_c      = w.channel_scales[c] if present, else w.scale;
//     qw[c][k]  = weight_codes[c·K + k] if the site has weight_codes, else
//                 clip(round(W[c][k] / Δw_c)) on the grid of w.channel_bits[c] (or w.bits).
// In integer form: y[r][c] = Δx·Δw_c·Σ_k qx·qw + weight_offset[c]·Δx·Σ_k qx[r][k] + bias terms —
// one integer GEMM plus one integer row sum of qx per input row.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/site.h"
#include "numerics/quantizer.h"

namespace vitq {

// How one operand of a site is quantized. bits == 0: stays FP32.
struct OperandQuant {
  int bits = 0;
  Grid grid = Grid::Signed;         // the grid of the codes (quantizer.h); level grids: x of matmul_av only
  float scale = 0.0f;               // per-tensor step Δ (a level grid's: 2^−15; per-token: unused, 0)
  // Per-output-channel steps Δw_c (weights of linear sites only; empty = `scale` for all). When
  // present, `scale` is informational (the largest channel step).
  std::vector<float> channel_scales;
  // Per-output-channel bit-widths b_c (ACIQ's bit allocation; needs channel_scales; empty =
  // `bits` for all). Channel c's codes lie in [−2^(b_c−1), 2^(b_c−1) − 1]; `bits` is then the
  // layer's nominal (average) width, and Σ_c b_c ≤ N·bits.
  std::vector<int> channel_bits;
  // Per-token (dynamic) quantization: each row gets its own step at run time, from its own
  // values; no stored step. The input of a linear site: a step and zero point per row (or per
  // channel group) from its range (quantizer.h: TokenQuant). Q (x) and K (w) of matmul_qk: a
  // symmetric step per row of one head, Δ = max|row| / hi · s (quantizer.h: token_step_symmetric),
  // so that S[i][j] = Δq_i · Δk_j · Σ_d q̂[i][d]·k̂[j][d] (plan format 8).
  bool per_token = false;
  // The widest codes a per-token operand (and the weights of a grouped per-token input) may have:
  // run-time steps are for codes of one int8 plane.
  static constexpr int kMaxPerTokenBits = 8;
  // Per-head steps (the operands of attention sites; empty = `scale` for every head). When
  // present, `scale` is informational (the largest).
  std::vector<float> head_scales;
  // Per-token inputs: the clip ratio α of each row's range (quantizer.h: token_quant); 1 = none.
  float token_clip = 1.0f;
  // Per-token inputs in groups: each row's K channels split into K / token_group consecutive
  // groups of token_group channels, each group with its own step and zero point (its own range,
  // clipped by token_clip). 0 = one group of the whole row. Must divide K; weights ≤ 8 bits.
  // Integer form: y[r][c] = Δw_c · Σ_g Δ[r][g] · Σ_{k∈g} qx[r][k]·qw[c][k] (+ bias terms).
  int token_group = 0;

  bool quantized() const { return bits > 0; }
  bool per_channel() const { return !channel_scales.empty(); }
  bool clips_tokens() const { return per_token && token_clip != 1.0f; }
  bool groups_tokens() const { return per_token && token_group > 0; }
  // The number of channel groups of a per-token row of K channels (1 if not grouped).
  int token_groups(int K) const { return token_group_count(per_token, token_group, K); }
  // The rule itself, for the runtime's copy of these fields: K / g for per-token rows in groups of
  // g channels that divide K (plan validation rejects the others), else 1.
  static int token_group_count(bool per_token, int g, int64_t K) {
    return per_token && g > 0 && K % g == 0 ? int(K / g) : 1;
  }
  bool per_head() const { return !head_scales.empty(); }
  float head_scale(int h) const { return head_scales.empty() ? scale : head_scales[size_t(h)]; }
  QRange range() const { return qrange(bits, grid); }
  QRange channel_range(size_t c) const { return qrange(channel_bits.empty() ? bits : channel_bits[c], grid); }
  bool operator==(const OperandQuant&) const = default;
};

struct SitePlan {
  OperandQuant x;  // first operand: the activation input
  OperandQuant w;  // second operand: the weight, or K / Vᵀ for the attention matmuls
  // Added to the site's output per output channel (bias correction); length N for linear
  // sites, heads × N for attention sites; empty = none.
  std::vector<float> bias_correction;
  // Per-output-channel weight offset o_c (linear sites; length N; empty = none): the effective
  // weight is ŵ[c][k] + o_c, so the site adds o_c · Σ_k x̂[r][k] to y[r][c]. Input-dependent,
  // hence not foldable into the bias. Used by ACIQ's bias correction (Banner et al. 2019) to
  // restore each channel's FP weight mean.
  std::vector<float> weight_offset;
  // Integer weight codes chosen by the method instead of round(W / Δ) (linear sites; needs
  // w.channel_scales; N × K row-major int16; empty = codes computed from the FP weights). Each
  // code lies on its channel's grid. Bit-Split stores its stitched codes here; ACIQ its codes
  // when bias correction rescales the channel steps. Saved in a companion safetensors file
  // (see save_plan), not in the JSON.
  std::vector<int16_t> weight_codes;
  bool has_weight_codes() const { return !weight_codes.empty(); }
  bool operator==(const SitePlan&) const = default;
};

// An orthogonal rotation of the model (quant/rotation.h), recorded in the plan as a transform.
struct PlanRotation {
  uint64_t seed = 0;
  bool residual = true, heads = true, mlp = false;
  bool operator==(const PlanRotation&) const = default;
};

// Error compensation of one transformer block (QwT, quant/compensation.h): the block's output
// gets x·Wᵀ + b of its input x added, W [dim, dim] row-major ([out, in]), b [dim]; FP32 at run time.
struct BlockCompensation {
  std::vector<float> w, b;
  bool operator==(const BlockCompensation&) const = default;
};

// GELU as a table (plan option --gelu-table; quant/gelu_table.h): the GELU input — fc1's output,
// bias included — is quantized to a code c = clip(round(y / scale), lo, lo + 2^bits − 1) and the
// GELU output is GELU(c · scale), exact in float: the integer runtime reads it from a 2^bits-entry
// table indexed by c − lo (or, with a per-tensor fc2 input, the fc2 input code itself).
struct GeluTable {
  int bits = 8;
  float scale = 0.0f;
  int32_t lo = 0;
  QRange range() const { return {lo, lo + (int32_t(1) << bits) - 1}; }
  bool operator==(const GeluTable&) const = default;
};

// Softmax with a table exponent (plan option --softmax-table; numerics/softmax_table.h): every
// block's softmax puts its exponent arguments on a grid of 2^bits points over [0, range] and reads
// the exponentials from tables.
struct SoftmaxTable {
  int bits = 10;
  float range = 16.0f;
  bool operator==(const SoftmaxTable&) const = default;
};

struct QuantPlan {
  std::string method;                 // "liu2021", "minmax", ...
  nlohmann::ordered_json settings;    // method settings as given (bits, flags, ...)
  nlohmann::ordered_json calibration; // calibration set identity: paths, count, hash, seed, inputs
  std::string tool_version;
  std::string architecture;
  std::map<std::string, SitePlan> sites;  // by site name; a site absent here stays FP32
  // LayerNorm smoothing (--smooth-ln; quant/ln_smoothing.h): for a site fed by a LayerNorm
  // (blocks.i.attn.qkv after norm1, blocks.i.mlp.fc1 after norm2), factors s_k per input channel.
  // The plan applies to the model rewritten as LN γ_k/s_k, β_k/s_k and weight columns W[:,k]·s_k
  // (the same FP function); its steps and codes are those of the rewritten model. Empty = none.
  std::map<std::string, std::vector<float>> ln_smoothing;
  // LayerNorm centring (--ln-center; quant/ln_smoothing.h): for the same sites, shifts μ_k per
  // input channel, applied before the factors: LN β_k − μ_k and the layer's bias b + W·μ (the
  // same FP function). Empty = none.
  std::map<std::string, std::vector<float>> ln_shift;
  // Rotation (--rotate; quant/rotation.h): applied to the checkpoint before the LayerNorm
  // rewrites; the plan's sites and LayerNorm vectors are those of the rotated model. None = unset.
  std::optional<PlanRotation> rotation;
  // Error compensation by block index (quant/compensation.h); empty = none. Applied to the model
  // like the transforms (plan_transforms.h); the tensors live in the companion file
  // `<stem>_compensation.safetensors` (save_plan), F32 blocks.i.compensation.{weight,bias}.
  std::map<int, BlockCompensation> compensation;
  // GELU tables by the fc1 site whose output they take (blocks.i.mlp.fc1; that site must be
  // quantized); a block absent here runs GELU in float.
  std::map<std::string, GeluTable> gelu_tables;
  // Softmax with a table exponent in every block; none = the float softmax.
  std::optional<SoftmaxTable> softmax_table;
  // The hardware description the plan was made for (quant/target.h), as given; null = none recorded.
  nlohmann::ordered_json target;

  const SitePlan* find(const SiteId& id) const;
  bool operator==(const QuantPlan& o) const;
};

// Sites with weight_codes are marked `"weight_codes": true` in the JSON; the codes themselves
// live in the companion file `codes_file` (a name relative to the plan's directory), recorded at
// the top level with the FNV-1a 64 hash of the codes' content.
nlohmann::ordered_json plan_to_json(const QuantPlan& plan, const std::string& codes_file = "plan_codes.safetensors",
                                   const std::string& compensation_file = "plan_compensation.safetensors");
// The plan format a plan is written in: 1, or 2 if it uses the fields of format 2 (per-token
// inputs, level grids, per-head steps, a rotation), which format-1 readers would misread, or 3 if
// it has error compensation (which format-2 readers would ignore).
int plan_format_version(const QuantPlan& plan);
// Validates the JSON (field types, bit ranges 2..10, positive finite scales, site names);
// errors name `source` (the file) and the field. If sites have weight codes, they are read
// from the companion file in the directory of `source` (tensor per site, I16 [N, K]) and
// checked against the recorded hash and each channel's grid.
QuantPlan plan_from_json(const nlohmann::ordered_json& j, const std::string& source);

// Deterministic: the same plan gives the same bytes (floats written with round-trip precision).
// A plan with weight codes also writes `<stem>_codes.safetensors` next to `path` (plan.json →
// plan_codes.safetensors): one I16 tensor [N, K] per site, named by the site.
void save_plan(const QuantPlan& plan, const std::string& path);
QuantPlan load_plan(const std::string& path);
std::string plan_codes_file_name(const std::string& plan_path);
std::string plan_compensation_file_name(const std::string& plan_path);

// Checks that every site of the plan exists in the model and that per-channel/bias/offset
// vectors and weight codes have the model's sizes. Throws Error(Model) naming the plan file and site.
struct ViTConfig;
void check_plan_matches(const QuantPlan& plan, const ViTConfig& cfg, const std::string& source);

}  // namespace vitq
