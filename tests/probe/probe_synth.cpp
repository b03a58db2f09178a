// Probe subcommand for `vitq synth`'s gradients (synth/vit_input_grad.h, synth/layer_stats.h), for
// tests/parity/test_synth_grad.py (torch.autograd):
//  - linear: ∂/∂images of Σ logits·R + Σ_l Σ layer_l·R_l for given R (the backward alone);
//  - stats:  ∂/∂images of Σ_i CE(logits_i, class_i) + Σ_i stat_loss(image i's LayerNorm input
//            statistics, one target centre) — the synthesis loss without jitter.
#include <cstdint>
#include <memory>
#include <vector>

#include "model/vit_model.h"
#include "probe.h"
#include "synth/layer_stats.h"
#include "synth/vit_input_grad.h"

namespace vitq::probe {
namespace {

struct SArgs {
  std::string model, x, dlogits, dlayers, target, classes, out;
  int images = 1;
};

}  // namespace

void register_synth(CLI::App& app) {
  auto a = std::make_shared<SArgs>();
  CLI::App* c = app.add_subcommand("synth_grad", "Image gradients of the synthesis losses");
  c->add_option("--model", a->model)->required();
  c->add_option("--images", a->images)->required();
  c->add_option("--x", a->x, "images, N × C × H × W raw f32")->required();
  c->add_option("--dlogits", a->dlogits, "linear mode: R of the logits, N × classes");
  c->add_option("--dlayers", a->dlayers, "linear mode: R of every layer input, layers × N × tokens × D");
  c->add_option("--target", a->target, "stats mode: the centre's mean then sd, each layers × D");
  c->add_option("--classes", a->classes, "stats mode: int32 class per image");
  c->add_option("--out", a->out,
                "prefix: PREFIX.logits.f32, PREFIX.layers.f32 (layers × N × tokens × D), PREFIX.dx.f32; prints the "
                "stats mode's loss as JSON")
      ->required();
  c->callback([a] {
    const ViTModel m = load_vit_model(a->model);
    const ViTConfig& cfg = m.cfg;
    const int N = a->images, T = cfg.tokens(), D = cfg.embed_dim, NC = cfg.num_classes;
    const size_t img = size_t(cfg.in_chans) * cfg.img_size * cfg.img_size, per_layer = size_t(N) * T * D;
    const std::vector<float> x = read_f32(a->x, size_t(N) * img);
    ViTInputGrad g(m);
    const int L = g.layers();
    std::vector<float> logits(size_t(N) * NC), dx(x.size()), layers;
    g.forward(x.data(), N, logits.data());
    for (int l = 0; l < L; ++l) layers.insert(layers.end(), g.layer_input(l), g.layer_input(l) + per_layer);
    write_raw(a->out + ".logits.f32", logits.data(), logits.size());
    write_raw(a->out + ".layers.f32", layers.data(), layers.size());
    if (!a->dlogits.empty()) {
      const std::vector<float> dl = read_f32(a->dlogits, logits.size()), dla = read_f32(a->dlayers, L * per_layer);
      std::vector<const float*> d(static_cast<size_t>(L));
      for (int l = 0; l < L; ++l) d[size_t(l)] = dla.data() + size_t(l) * per_layer;
      g.backward(dl.data(), d, dx.data());
      write_raw(a->out + ".dx.f32", dx.data(), dx.size());
      std::printf("{}\n");
      return;
    }
    // Stats mode: one centre, the exact-centre term only.
    const size_t LD = size_t(L) * D;
    const std::vector<float> tg = read_f32(a->target, 2 * LD);
    const std::vector<int32_t> cls = read_raw<int32_t>(a->classes);
    if (cls.size() != size_t(N)) fail(ErrorKind::Data, a->classes, ": ", cls.size(), " classes for ", N, " images");
    StatTargets t;
    t.layers = L;
    t.dim = D;
    t.classes = {0};
    t.mean = {std::vector<float>(tg.begin(), tg.begin() + long(LD))};
    t.sd = {std::vector<float>(tg.begin() + long(LD), tg.end())};
    t.global_mean = t.global_sd = t.spread_mean = t.spread_sd = std::vector<float>(LD, 0.0f);
    t.layer_scale.assign(size_t(L), 0.0f);
    for (int l = 0; l < L; ++l) {
      double v = 0;
      for (int j = 0; j < D; ++j) v += double(t.sd[0][size_t(l) * D + size_t(j)]) * t.sd[0][size_t(l) * D + size_t(j)];
      t.layer_scale[size_t(l)] = float(v / D);
    }
    StatWeights w;
    w.global = w.jitter = 0;
    w.exact = 1;
    std::vector<float> dlog(logits.size()), mean(LD), sd(LD), dmean(LD), dsd(LD);
    std::vector<std::vector<float>> dlay(static_cast<size_t>(L), std::vector<float>(per_layer));
    std::vector<float*> dp;
    std::vector<const float*> dc;
    for (auto& v : dlay) {
      dp.push_back(v.data());
      dc.push_back(v.data());
    }
    double loss = 0;
    for (int i = 0; i < N; ++i) {
      loss += cross_entropy(logits.data() + size_t(i) * NC, NC, cls[size_t(i)], 1.0, dlog.data() + size_t(i) * NC);
      image_layer_stats(g, cfg, i, mean.data(), sd.data());
      loss += stat_loss(t, 0, mean.data(), sd.data(), nullptr, nullptr, w, dmean.data(), dsd.data());
      stat_grad_to_inputs(g, cfg, i, mean.data(), sd.data(), dmean.data(), dsd.data(), dp);
    }
    g.backward(dlog.data(), dc, dx.data());
    write_raw(a->out + ".dx.f32", dx.data(), dx.size());
    std::printf("{\"loss\": %.17g}\n", loss);
  });
}

}  // namespace vitq::probe
