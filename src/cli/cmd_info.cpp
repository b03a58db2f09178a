// vitq info: architecture, parameters, FLOPs and the matmul sites of a checkpoint.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "core/error.h"
#include "engine/site.h"
#include "model/vit_model.h"
#include "runtime/quantized_model.h"

namespace vitq {
namespace {

// A quantized model directory: how each site is quantized and stored.
void run_info_quantized(const std::string& dir) {
  const QuantizedViT q = load_quantized_model(dir);
  std::printf("model         %s (quantized model directory, format %d; docs/FORMAT.md)\n", dir.c_str(),
              kQuantizedFormatVersion);
  std::printf("architecture  %s, plan method %s, %zu quantized sites\n\n", q.cfg.architecture.c_str(),
              q.plan.method.c_str(), q.plan.sites.size());
  std::printf("%-26s %7s %7s %-13s %s\n", "site", "x bits", "w bits", "storage", "w steps");
  for (const SiteShape& s : model_sites(q.cfg)) {
    const SitePlan* sp = q.plan.find(s.id);
    const std::string x = !sp ? "FP32" : cat(sp->x.bits, sp->x.grid == Grid::Unsigned ? "u" : "");
    std::string w = !sp ? "FP32" : cat(sp->w.bits);
    std::string storage = "-", steps = sp ? (sp->w.per_channel() ? "per channel" : "per tensor") : "-";
    if (!s.id.is_attention()) {
      const StoredLinear& l = q.linear(s.id);
      storage = l.quantized ? code_storage_name(code_storage(l.bits)) : "F32";
      if (sp && !sp->w.channel_bits.empty()) w = "per ch.";
    } else if (sp) {
      storage = "(activations)";
    }
    std::printf("%-26s %7s %7s %-13s %s\n", s.id.name().c_str(), x.c_str(), w.c_str(), storage.c_str(), steps.c_str());
  }
}

void run_info(const std::string& dir) {
  if (is_quantized_model_dir(dir)) return run_info_quantized(dir);
  ViTModel m = load_vit_model(dir);
  const ViTConfig& c = m.cfg;
  const Preprocess& p = c.preprocess;
  std::printf("model         %s\n", dir.c_str());
  std::printf("architecture  %s (%s layout)\n", c.architecture.c_str(),
              c.layout == CheckpointLayout::Timm ? "timm" : "Hugging Face");
  std::printf("structure     embed_dim %d, depth %d, heads %d (head_dim %d), mlp %d, patch %d, %d px, %d channels\n",
              c.embed_dim, c.depth, c.num_heads, c.head_dim(), c.mlp_hidden, c.patch_size, c.img_size, c.in_chans);
  std::printf("tokens        %d (%d patches + %s)\n", c.tokens(), c.num_patches(),
              c.distilled ? "class and distillation tokens" : "class token");
  std::printf("classes       %d%s\n", c.num_classes, c.distilled ? " (output = mean of head and head_dist)" : "");
  std::printf("layernorm eps %g\n", double(c.ln_eps));
  std::printf("preprocess    %s resize %s, %s, mean [%g, %g, %g], std [%g, %g, %g]\n", interp_name(p.interp),
              p.resize_exact ? cat("to ", p.width, "x", p.height).c_str()
                             : cat("of the short side to ", int(double(p.height) / p.crop_pct)).c_str(),
              p.resize_exact ? "no crop" : cat("center crop ", p.height, " (crop_pct ", p.crop_pct, ")").c_str(),
              double(p.mean[0]), double(p.mean[1]), double(p.mean[2]), double(p.std[0]), double(p.std[1]),
              double(p.std[2]));
  std::printf("parameters    %lld (%.2f M)\n", static_cast<long long>(m.parameter_count()),
              double(m.parameter_count()) / 1e6);

  std::vector<SiteShape> sites = model_sites(c);
  double total = 0;
  for (const auto& s : sites) total += 2.0 * s.groups_per_image * double(s.M) * s.N * s.K;
  std::printf("matmul FLOPs  %.3f GFLOP per image (2 x multiply-adds)\n\n", total / 1e9);
  std::printf("%-26s %7s %6s %6s %6s %10s  %s\n", "site", "groups", "M", "N", "K", "MFLOP", "operands");
  for (const auto& s : sites) {
    const double f = 2.0 * s.groups_per_image * double(s.M) * s.N * s.K;
    const char* ops = s.id.kind == SiteKind::MatmulQK   ? "Q x K^T (both activations)"
                      : s.id.kind == SiteKind::MatmulAV ? "softmax x V (both activations)"
                                                        : "activation x weight^T";
    std::printf("%-26s %7d %6d %6d %6d %10.2f  %s\n", s.id.name().c_str(), s.groups_per_image, s.M, s.N, s.K,
                f / 1e6, ops);
  }
  std::printf("\nM, N, K are per image (M = tokens); groups = heads for the attention matmuls.\n");
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  CLI::App* c = app.add_subcommand("info", "Architecture, parameter count, FLOPs and matmul sites of a checkpoint");
  c->add_option("--model", *dir, "Checkpoint directory: model.safetensors + config.json")->required();
  c->callback([dir] { run_info(*dir); });
}

}  // namespace vitq
