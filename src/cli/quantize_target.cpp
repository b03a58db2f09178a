#include "cli/quantize_target.h"

#include "core/error.h"

namespace vitq {

Recipe recipe_for_target(Recipe r, const Target& t, std::string& dropped) {
  auto drop = [&](const std::string& s) { dropped += (dropped.empty() ? "" : ", ") + s; };
  if (r.softmax && !t.allows_grid(*r.softmax)) drop(cat(grid_name(*r.softmax), " softmax grid")), r.softmax.reset();
  if (r.per_token && *r.per_token && !t.inputs.per_token) drop("per-token inputs"), r.per_token.reset(), r.token_clip.reset(), r.token_group.reset();
  if (r.per_token_qk && *r.per_token_qk && !t.inputs.per_token) drop("per-token Q and K"), r.per_token_qk.reset();
  if (r.patch_embed_abits && *r.patch_embed_abits > t.max_bits)
    drop(cat("patch embedding input at ", *r.patch_embed_abits, " bits")), r.patch_embed_abits.reset();
  if (r.qwt && *r.qwt && !t.float_ops.compensation) drop("QwT compensation"), r.qwt.reset();
  if (r.rotate_mlp && *r.rotate_mlp && !t.float_ops.mlp_rotation) drop("MLP rotation"), r.rotate_mlp.reset();
  return r;
}

void check_options_for_target(const CalibOptions& opt, int wbits, int abits, const std::vector<int>& mp_candidates,
                              const Target& t) {
  auto refuse = [&](const std::string& what, const std::string& why) {
    fail(ErrorKind::Usage, what, ": target ", t.name, " ", why, " (", t.summary, ")");
  };
  const std::string widest = cat("runs GEMMs of at most ", t.max_bits, " bits");
  if (wbits > t.max_bits) refuse(cat(wbits, "-bit weights"), widest);
  if (abits > t.max_bits) refuse(cat(abits, "-bit activations"), widest);
  for (const Bits& b : opt.block_bits)
    if (b.w > t.max_bits || b.x > t.max_bits) refuse(cat(std::max(b.w, b.x), "-bit block"), widest);
  for (int b : mp_candidates)
    if (b > t.max_bits) refuse(cat("--mp-candidates ", b), widest);
  if (opt.grids.patch_embed_abits > t.max_bits) refuse(cat("--patch-embed-abits ", opt.grids.patch_embed_abits), widest);
  if (!t.allows_grid(opt.grids.softmax))
    refuse(cat("the ", grid_name(opt.grids.softmax), " softmax grid (--softmax-grid)"), "does not run that grid");
  if (opt.grids.per_token && !t.inputs.per_token) refuse("per-token inputs (--per-token)", "has static steps only");
  if (opt.grids.per_token_qk && !t.inputs.per_token) refuse("per-token Q and K (--per-token-qk)", "has static steps only");
  if (opt.compensation.on && !t.float_ops.compensation)
    refuse("QwT compensation (--qwt, --compensate)", "runs no float GEMMs beside the quantized ones");
  if (opt.transforms.rotation && opt.transforms.rotation->mlp && !t.float_ops.mlp_rotation)
    refuse("the MLP rotation (--rotate-mlp)", "runs no online float Hadamard of fc2's input");
}

void check_tables_for_target(int gelu_bits, int softmax_bits, const Target& t) {
  if (gelu_bits > t.elementwise.gelu_table_bits)
    fail(ErrorKind::Usage, "--gelu-table ", gelu_bits, ": target ", t.name,
         t.elementwise.gelu_table_bits ? cat(" runs GELU tables of at most ", t.elementwise.gelu_table_bits, " bits")
                                       : std::string(" runs GELU in float only"),
         " (", t.summary, ")");
  if (softmax_bits > t.elementwise.softmax_table_bits)
    fail(ErrorKind::Usage, "--softmax-table ", softmax_bits, ": target ", t.name,
         t.elementwise.softmax_table_bits
             ? cat(" runs softmax exponent tables of at most ", t.elementwise.softmax_table_bits, " bits")
             : std::string(" runs the softmax in float only"),
         " (", t.summary, ")");
}

void check_plan_for_target(const QuantPlan& plan, const Target& t) {
  const std::vector<TargetViolation> v = plan_target_violations(plan, t);
  if (v.empty()) return;
  std::string list;
  bool per_head = false, offset = false, channel = false;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i < 8) list += "\n  " + v[i].what;
    per_head |= v[i].gap == TargetGap::PerHead;
    offset |= v[i].gap == TargetGap::WeightOffset;
    channel |= v[i].gap == TargetGap::ChannelSteps || v[i].gap == TargetGap::ChannelWidths;
  }
  if (v.size() > 8) list += cat("\n  ... and ", v.size() - 8, " more");
  std::string hint;
  if (per_head) hint += "\nper-head steps come from the method: minmax/percentile without --per-head, vitq with --vitq-no-per-head";
  if (offset) hint += cat("\n", t.name, " needs symmetric weights: vitq makes them with --vitq-symmetric-weights, aciq without its bias correction (--aciq-no-bias-correction)");
  if (channel) hint += "\nper-channel steps or widths come from the method; choose one with per-tensor weights";
  fail(ErrorKind::Usage, "the plan of --method ", plan.method, " has ", v.size(), " entries target ", t.name,
       " cannot run (nothing was written):", list, hint);
}

}  // namespace vitq
