// vitq: the project's own method — the recipe that measured best on the shared ViT-Ti and CIFAR
// models (docs/RESULTS.md has the ablation), every part of it an option of its own:
//   weights          per output channel, asymmetric (codes on the signed grid plus an offset): the
//                    clipping ratio of each channel's [min, max] that minimises the squared
//                    rounding error (quant/gptq.h: fit_channel_grid); the driver's GPTQ step then
//                    chooses the codes on that grid (recipe: --weight-rounding gptq);
//   attention        one step per head for Q, K, V (and P on a uniform grid), each the clipped
//                    max-based step of least squared error over the calibration values; at 4-bit
//                    activations Q and K per token instead (recipe: --per-token-qk);
//   other inputs     a per-tensor step of least squared error, unless the driver quantizes them
//                    per token (recipe: --per-token) or on a level grid (recipe: --softmax-grid float);
//   recipe           also the patch embedding's input at 8 bits, and at 6 bits or fewer the
//                    rotations (--rotate --rotate-mlp);
//   compensation     --compensate: none; closed-form = QwT's per-block linear compensation (--qwt,
//                    about a minute on ViT-Ti); reconstruct = block reconstruction of the codes and
//                    bias corrections (--recon-iters kReconIters, ~8 min on ViT-Ti, 2 cores; at 4-bit
//                    activations also the activation steps, --recon-act-lr kReconActLr, and half the
//                    last block's loss on the class token, --recon-head-share kReconHeadShare), then
//                    QwT; auto (the default) = closed-form at 6 bits or fewer, none above (at 8
//                    bits it buys nothing measurable and costs run time: docs/RESULTS.md).
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "quant/calibrate.h"
#include "quant/gptq.h"
#include "quant/methods/methods.h"
#include "quant/target.h"

namespace vitq {

void VitqOptions::declare(OptionDecls& d) {
  d.off_switch("--vitq-no-per-head", &per_head, "one step per tensor (not per head) for the attention operands");
  d.flag("--vitq-symmetric-weights", &symmetric_weights,
         "symmetric per-channel weight grids (zero point 0, as ONNX QDQ / TensorRT want) instead of asymmetric ones");
  d.text("--compensate", &compensate,
         "error compensation: none, closed-form (QwT per-block linear compensation, --qwt; about a minute on "
         "ViT-Ti), reconstruct (block reconstruction of the codes and bias corrections, then QwT; "
         "--recon-iters 500 and at 4-bit activations --recon-act-lr 0.001 --recon-head-share 0.5 unless given, about 8 min on "
         "ViT-Ti with 2 cores), or auto (default: closed-form at "
         "6 bits or fewer, none at more)");
}

std::string VitqOptions::fit_target(const Target& t) {
  std::string changed;
  if (per_head && !t.inputs.per_head) per_head = false, changed = "per-head attention steps";
  if (!symmetric_weights && !t.weights.offset) {
    symmetric_weights = true;
    changed += std::string(changed.empty() ? "" : ", ") + "asymmetric weights (symmetric per-channel grids instead)";
  }
  return changed;
}

// Block reconstruction steps per block at --compensate reconstruct.
constexpr int kReconIters = 500;
// Adam learning rate of the activation steps in that reconstruction at 4-bit activations.
constexpr double kReconActLr = 1e-3;
// Share of the last block's reconstruction loss given to the tokens the head reads, at 4-bit activations.
constexpr double kReconHeadShare = 0.5;

namespace {

constexpr size_t kSearchValues = size_t(1) << 18;  // values an MSE search looks at (an even subsample)
constexpr int kRatios = 80;                        // clipping ratios 1.00, 0.99, ..., 0.21

// The extent a (step = a / hi) among ratio · max|v| that minimises Σ (v − Q(v))² on grid r, over
// an even subsample of at most kSearchValues values.
float mse_extent(const float* v, size_t n, QRange r) {
  const size_t stride = std::max<size_t>(1, (n + kSearchValues - 1) / kSearchValues);
  std::vector<float> s;
  for (size_t i = 0; i < n; i += stride) s.push_back(v[i]);
  const float mx = max_abs(s.data(), s.size());
  if (!(mx > 0)) return 0.0f;
  std::vector<float> y(s.size());
  float best = mx;
  double best_err = INFINITY;
  for (int i = 0; i < kRatios; ++i) {
    const float a = mx * float(100 - i) / 100.0f;
    fake_quantize(s.data(), y.data(), s.size(), max_step(a, r), r);
    double e = 0;
    for (size_t k = 0; k < s.size(); ++k) e += double(y[k] - s[k]) * double(y[k] - s[k]);
    if (e < best_err) best_err = e, best = a;
  }
  return best;
}

class Vitq : public Method {
 public:
  explicit Vitq(const VitqOptions& o) : o_(o) {}
  std::string name() const override { return "vitq"; }
  nlohmann::ordered_json settings(const GridPolicy& g) const override {
    return {{"unsigned_softmax", g.unsigned_softmax()}, {"per_head", o_.per_head},
            {"weights", o_.symmetric_weights ? "per-channel symmetric, MSE clipping" : "per-channel asymmetric, MSE clipping"},
            {"activations", "MSE clipping"}};
  }
  Recipe recipe(int wbits, int abits) const override {
    Recipe r;
    r.softmax = Grid::Float;
    r.per_token = true;
    r.patch_embed_abits = std::max(8, abits);
    r.gptq = true;
    // Measured on the calibration images (KL to FP32 of ViT-Ti, docs/RESULTS.md): 0.95 helps at
    // 4-bit activations, hurts at 6.
    if (abits <= 4) r.token_clip = 0.95f;
    // Measured on two calibration/held-out splits (docs/RESULTS.md): a step per 64 input channels of
    // a row instead of one per row lowers the held-out KL at every compensation level at 4 bits,
    // and at 6 bits with the default compensation (0.0177 -> 0.0138, 0.0200 -> 0.0094); at 4 bits
    // 32 channels lowered the reconstruction's mean held-out KL further (0.237 -> 0.220) and left
    // closed-form's where it was (0.328 -> 0.320).
    if (abits <= 6) r.token_group = abits <= 4 ? 32 : 64;
    // Measured on held-out calibration images (docs/RESULTS.md, "Per-token Q and K"): a step per
    // row of Q and of K instead of one per head lowers the W4A4 KL on CIFAR at every compensation
    // level (reconstruct 0.0208 -> 0.0182) and ViT-Ti's reconstruct KL on both splits; at W6A6
    // (closed-form) CIFAR 0.0032 -> 0.0012 and ViT-Ti 0.0107 -> 0.0085, 0.0105 -> 0.0089.
    if (abits <= 6) r.per_token_qk = true;
    const bool low = std::min(wbits, abits) <= 6;
    r.rotate = low;
    r.rotate_mlp = low;
    const std::string& c = o_.compensate;
    r.qwt = c == "closed-form" || c == "reconstruct" || (c == "auto" && low);
    r.recon_iters = c == "reconstruct" ? kReconIters : 0;
    // Measured on two calibration/held-out splits of the calibration images (docs/RESULTS.md):
    // training the per-head Q/K/V steps and per-token clip ratios lowers the held-out KL at 4-bit
    // activations (0.442 -> 0.366, 0.516 -> 0.388); at 6 bits it does not help.
    if (abits <= 4) r.recon_act_lr = kReconActLr;
    // The head reads only the class token of the last block, 1/197 of ViT-Ti's block loss. Giving
    // it half lowered the held-out KL at 4-bit activations (docs/RESULTS.md).
    if (abits <= 4) r.recon_head_share = kReconHeadShare;
    return r;
  }
  SitePlan calibrate(const SiteObservation& obs, Bits bits, SiteNotes& notes) override {
    SitePlan sp = minmax_site_plan(obs, bits);
    if (obs.attention()) {
      if (o_.per_head) {
        set_head_scales(obs, sp, [](const std::vector<float>& v, QRange r) { return mse_extent(v.data(), v.size(), r); });
      } else {
        sp.w.scale = max_step(mse_extent(obs.w, size_t(obs.w_per_image()) * size_t(obs.images), sp.w.range()), sp.w.range());
        if (!bits.x_fixed())
          sp.x.scale = max_step(mse_extent(obs.x, size_t(obs.x_per_image()) * size_t(obs.images), sp.x.range()), sp.x.range());
      }
      return sp;
    }
    if (!bits.x_fixed())
      sp.x.scale = max_step(mse_extent(obs.x, size_t(obs.x_per_image()) * size_t(obs.images), sp.x.range()), sp.x.range());
    const int N = obs.shape.N, K = obs.shape.K;
    const ChannelGrid g = fit_channel_grid(obs.w, N, K, bits.w, nullptr, o_.symmetric_weights);
    std::vector<int16_t> codes(size_t(N) * size_t(K));
    round_to_grid(obs.w, N, K, g, codes.data());
    set_plan_weight_codes(sp, g, std::move(codes));  // offsets only if any is nonzero (never when symmetric)
    double mean_ratio = 0;
    for (float r : g.ratio) mean_ratio += r;
    notes.j["mean_clip_ratio"] = mean_ratio / N;
    return sp;
  }

 private:
  VitqOptions o_;
};

}  // namespace

std::unique_ptr<Method> make_vitq(const MethodConfig& cfg) {
  const VitqOptions& o = cfg.get<VitqOptions>("vitq");
  if (o.compensate != "none" && o.compensate != "closed-form" && o.compensate != "reconstruct" && o.compensate != "auto")
    fail(ErrorKind::Usage, "--compensate must be none, closed-form, reconstruct or auto (got '", o.compensate, "')");
  return std::make_unique<Vitq>(o);
}

}  // namespace vitq
