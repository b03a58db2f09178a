// vitq export: write the quantized model directory of an existing plan (e.g. a hand-edited one),
// or the model as an ONNX graph (--onnx).
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/model_export.h"
#include "core/error.h"
#include "interop/onnx_export.h"
#include "io/output_dir.h"
#include "model/vit_model.h"
#include "quant/plan.h"

namespace vitq {
namespace {

struct ExportArgs {
  std::string model, plan, out, onnx;
  bool force = false, allow_non_finite = false;
};

void run_onnx_export(const ExportArgs& a) {
  if (!a.plan.empty())
    fail(ErrorKind::Usage, "--onnx with --plan: the QDQ export of a quantization plan is not implemented yet; "
         "--onnx alone exports the FP32 model");
  StagedFile out(a.onnx, OutputCheck{"--onnx", {a.model}});
  const ViTModel model = load_vit_model(a.model, {a.allow_non_finite});
  const std::string bytes = export_onnx_fp32(model);
  out.commit(bytes);
  std::printf("wrote %s (ONNX opset 17, FP32, %.1f MB; input 'pixels' [batch, %d, %d, %d], output 'logits' "
              "[batch, %d])\n", a.onnx.c_str(), double(bytes.size()) / 1e6, model.cfg.in_chans, model.cfg.img_size,
              model.cfg.img_size, model.cfg.num_classes);
}

void run_export(const ExportArgs& a) {
  if (!a.onnx.empty()) {
    if (!a.out.empty()) fail(ErrorKind::Usage, "give either -o (quantized model directory) or --onnx, not both");
    return run_onnx_export(a);
  }
  if (a.out.empty() || a.plan.empty())
    fail(ErrorKind::Usage, a.out.empty() ? "-o" : "--plan", " is required (or --onnx FILE for an ONNX graph)");
  StagedDir out(a.out, {"-o", {a.model, a.plan}, a.force});
  ViTModel model = load_vit_model(a.model, {a.allow_non_finite});
  QuantPlan plan = load_plan(a.plan);
  check_plan_matches(plan, model.cfg, a.plan);
  export_quantized_dir(model, plan, a.model, out.path(), a.out);
  out.commit();
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  CLI::App* c = app.add_subcommand(
      "export",
      "Write the quantized model directory (integer weights, docs/FORMAT.md) of a checkpoint and a plan, or the "
      "checkpoint as an ONNX graph (--onnx)");
  c->add_option("--model", a->model, "FP32 checkpoint directory (model.safetensors + config.json)")->required();
  c->add_option("--plan", a->plan, "Quantization plan (plan.json); required with -o");
  c->add_option("-o,--out", a->out,
                "Output directory: model.safetensors, config.json, plan.json. Must not be (or contain) the model "
                "or the plan; an existing non-empty directory needs --force");
  c->add_option("--onnx", a->onnx,
                "Write the FP32 model as an ONNX graph (opset 17; input 'pixels' [batch, C, H, W] preprocessed as the "
                "model's config says, output 'logits'), checked with the ONNX checker. Replaced whole; never an input");
  c->add_flag("--force", a->force, "Replace the output directory if it exists and is not empty (as a whole)");
  add_allow_non_finite_flag(c, a->allow_non_finite);
  c->callback([a] { run_export(*a); });
}

}  // namespace vitq
