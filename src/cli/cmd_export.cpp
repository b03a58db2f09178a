// vitq export: write the quantized model directory of an existing plan (e.g. a hand-edited one).
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/model_export.h"
#include "core/error.h"
#include "io/output_dir.h"
#include "model/vit_model.h"
#include "quant/plan.h"

namespace vitq {
namespace {

struct ExportArgs {
  std::string model, plan, out;
  bool force = false, allow_non_finite = false;
};

void run_export(const ExportArgs& a) {
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
      "export", "Write the quantized model directory (integer weights, docs/FORMAT.md) of a checkpoint and a plan");
  c->add_option("--model", a->model, "FP32 checkpoint directory (model.safetensors + config.json)")->required();
  c->add_option("--plan", a->plan, "Quantization plan (plan.json)")->required();
  c->add_option("-o,--out", a->out,
                "Output directory: model.safetensors, config.json, plan.json. Must not be (or contain) the model "
                "or the plan; an existing non-empty directory needs --force")
      ->required();
  c->add_flag("--force", a->force, "Replace the output directory if it exists and is not empty (as a whole)");
  add_allow_non_finite_flag(c, a->allow_non_finite);
  c->callback([a] { run_export(*a); });
}

}  // namespace vitq
