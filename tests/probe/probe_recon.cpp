// Probe subcommand for block reconstruction (quant/reconstruct.h): the loss and the gradients of a
// block's output error with respect to its dequantized weights and biases, with the block's
// parameters as the plan runs them, for tests/parity/test_recon.py (torch.autograd).
#include <memory>
#include <vector>

#include "core/error.h"
#include "engine/vit_forward.h"
#include "model/vit_model.h"
#include "probe.h"
#include "quant/plan.h"
#include "quant/plan_transforms.h"
#include "quant/reconstruct.h"
#include "quant/simulate.h"

namespace vitq::probe {
namespace {

struct GArgs {
  std::string model, plan, x, target, out;
  int block = 0, images = 1;
  double drop = 0;
};

void write_vec(const std::string& path, const std::vector<float>& v) { write_raw(path, v.data(), v.size()); }

}  // namespace

void register_recon(CLI::App& app) {
  auto a = std::make_shared<GArgs>();
  CLI::App* c = app.add_subcommand("recon_grad", "Loss and gradients of a block's output error under a plan");
  c->add_option("--model", a->model)->required();
  c->add_option("--plan", a->plan)->required();
  c->add_option("--block", a->block)->required();
  c->add_option("--images", a->images)->required();
  c->add_option("--x", a->x, "the block input, images × tokens × D raw f32")->required();
  c->add_option("--target", a->target, "the target output, same shape")->required();
  c->add_option("--drop", a->drop, "QDrop's probability of an activation element left unquantized");
  c->add_option("--out", a->out,
                "prefix: PREFIX.out.f32 (the block output); per linear site S (qkv, proj, fc1, fc2): PREFIX.S.w.f32 "
                "(dequantized weight), PREFIX.S.b.f32 (bias incl. correction), PREFIX.S.dw.f32, PREFIX.S.db.f32; "
                "PREFIX.norm{1,2}.{g,b}.f32, PREFIX.signs.f32 (MLP rotation, if any), PREFIX.d{q,k,v}_step.f32 "
                "(per-head gradients of the Q, K, V steps), PREFIX.S.dlogclip.f32 (gradient of the log clip ratio of S's "
                "per-token input); prints JSON")
      ->required();
  c->callback([a] {
    const ViTModel ck = load_vit_model(a->model);
    const QuantPlan plan = load_plan(a->plan);
    std::unique_ptr<ViTModel> holder;
    const ViTModel& m = apply_plan_transforms(ck, plan, holder, a->plan);
    const ViTConfig& cfg = m.cfg;
    const size_t n = size_t(a->images) * size_t(cfg.tokens()) * size_t(cfg.embed_dim);
    const std::vector<float> x = read_f32(a->x, n), t = read_f32(a->target, n);
    PlanSimulator sim(m, plan);
    BlockGrads g;
    const double loss = block_loss_and_grads(m, sim, plan, a->block, x.data(), t.data(), a->images, &g, a->drop);
    const BlockWeights& bw = m.blocks[size_t(a->block)];
    for (const auto& [kind, short_name] : {std::pair{SiteKind::Qkv, "qkv"}, {SiteKind::Proj, "proj"},
                                           {SiteKind::Fc1, "fc1"}, {SiteKind::Fc2, "fc2"}}) {
      const SiteId id{kind, a->block};
      const LinearWeights& lw = *site_weights(m, id);
      const SitePlan* sp = plan.find(id);
      const int N = lw.out();
      std::vector<float> w, b(size_t(N), 0.0f);
      dequantized_weight(lw, sp, w);
      if (!lw.b.empty()) std::copy(lw.b.data.begin(), lw.b.data.end(), b.begin());
      if (sp && !sp->bias_correction.empty())
        for (int ch = 0; ch < N; ++ch) b[size_t(ch)] += sp->bias_correction[size_t(ch)];
      const std::string p = a->out + "." + short_name;
      write_vec(p + ".w.f32", w);
      write_vec(p + ".b.f32", b);
      const size_t gi = size_t(std::find(g.sites.begin(), g.sites.end(), id.name()) - g.sites.begin());
      if (gi >= g.sites.size()) fail(ErrorKind::Internal, "no gradient for ", id.name());
      write_vec(p + ".dw.f32", g.dw[gi]);
      write_vec(p + ".db.f32", g.db[gi]);
      write_vec(p + ".dlogclip.f32", {g.dlog_clip[gi]});
    }
    for (const auto& [name, ln] : {std::pair{"norm1", &bw.norm1}, {"norm2", &bw.norm2}}) {
      write_raw(a->out + "." + name + ".g.f32", ln->gamma.ptr(), size_t(ln->gamma.numel()));
      write_raw(a->out + "." + name + ".b.f32", ln->beta.ptr(), size_t(ln->beta.numel()));
    }
    if (!m.mlp_rotation_signs.empty()) write_vec(a->out + ".signs.f32", m.mlp_rotation_signs);
    write_vec(a->out + ".dq_step.f32", g.dq_step);
    write_vec(a->out + ".dk_step.f32", g.dk_step);
    write_vec(a->out + ".dv_step.f32", g.dv_step);
    // The block's output under the plan, for the test's forward check.
    std::vector<float> out = x;
    ViTForward f(m, FpGemm::PerCall);
    f.block(a->block, out.data(), a->images, &sim);
    write_vec(a->out + ".out.f32", out);
    std::printf("{\"loss\": %.17g, \"rotated_mlp\": %s}\n", loss, m.mlp_rotation_signs.empty() ? "false" : "true");
  });
}

}  // namespace vitq::probe
