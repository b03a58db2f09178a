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
#include "quant/plan_transforms.h"
#include "runtime/quantized_model.h"

namespace vitq {
namespace {

struct ExportArgs {
  std::string model, plan, out, onnx;
  bool force = false, allow_non_finite = false;
};

void run_onnx_export(const ExportArgs& a) {
  StagedFile out(a.onnx, OutputCheck{"--onnx", {a.model, a.plan}});
  std::string bytes, what;
  ViTModel model;
  if (is_quantized_model_dir(a.model)) {  // its own plan, on its integer weights (dequantized)
    if (!a.plan.empty())
      fail(ErrorKind::Usage, a.model, " is a quantized model directory with its own plan; --plan is for FP32 checkpoints");
    const QuantizedViT qm = load_quantized_model(a.model, {a.allow_non_finite});
    model = dequantized_model(qm);
    const QuantPlan plan = simulation_plan(qm);
    OnnxExportInfo info;
    bytes = export_onnx(model, &plan, &info);
    what = cat(a.model, "/plan.json (", plan.method, "): ", info.summary());
  } else {
    model = load_vit_model(a.model, {a.allow_non_finite});
    if (a.plan.empty()) {
      bytes = export_onnx(model, nullptr);
      what = "FP32";
    } else {
      const QuantPlan plan = load_plan(a.plan);
      check_plan_matches(plan, model.cfg, a.plan);
      std::unique_ptr<ViTModel> holder;
      const ViTModel& rewritten = apply_plan_transforms(model, plan, holder, a.plan);
      OnnxExportInfo info;
      bytes = export_onnx(rewritten, &plan, &info);
      what = cat(a.plan, " (", plan.method, "): ", info.summary());
    }
  }
  out.commit(bytes);
  std::printf("wrote %s (ONNX opset 17, %s, %.1f MB; input 'pixels' [batch, %d, %d, %d], output 'logits' "
              "[batch, %d])\n", a.onnx.c_str(), what.c_str(), double(bytes.size()) / 1e6, model.cfg.in_chans,
              model.cfg.img_size, model.cfg.img_size, model.cfg.num_classes);
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
  c->add_option("--model", a->model,
                "FP32 checkpoint directory (model.safetensors + config.json); with --onnx also a quantized model "
                "directory (exported with its own plan)")
      ->required();
  c->add_option("--plan", a->plan, "Quantization plan (plan.json); required with -o, optional with --onnx");
  c->add_option("-o,--out", a->out,
                "Output directory: model.safetensors, config.json, plan.json. Must not be (or contain) the model "
                "or the plan; an existing non-empty directory needs --force");
  c->add_option("--onnx", a->onnx,
                "Write the model as an ONNX graph (opset 17; input 'pixels' [batch, C, H, W] preprocessed as the "
                "model's config says, output 'logits'), checked with the ONNX checker: FP32, or with --plan (or from a "
                "quantized model directory) in QDQ form - QuantizeLinear/DequantizeLinear on each quantized operand, "
                "int8 weight codes; per-token steps and level softmax grids as the float operators that compute vitq's "
                "codes, the MLP rotation and QwT as MatMuls (docs/FORMAT.md). Codes over 8 bits are refused naming the "
                "site. Replaced whole; never an input");
  c->add_flag("--force", a->force, "Replace the output directory if it exists and is not empty (as a whole)");
  add_allow_non_finite_flag(c, a->allow_non_finite);
  c->callback([a] { run_export(*a); });
}

}  // namespace vitq
