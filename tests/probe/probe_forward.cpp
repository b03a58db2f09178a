// Probe subcommands for the forward pass: logits and site tensors for a raw input batch.
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/vit_forward.h"
#include "model/vit_model.h"
#include "numerics/hadamard.h"  // splitmix64_next
#include "probe.h"
#include "quant/plan.h"
#include "quant/plan_transforms.h"
#include "quant/simulate.h"

namespace vitq::probe {
namespace {

// Records the output of one named site.
class Capture : public SiteHook {
 public:
  explicit Capture(std::string name) : name_(std::move(name)) {}
  void observe(const SiteCall& c) override {
    if (c.site.name() != name_) return;
    const size_t n = size_t(c.groups) * size_t(c.M) * size_t(c.N);
    out.assign(c.y, c.y + n);
  }
  std::vector<float> out;

 private:
  std::string name_;
};

// Records one site's output while `inner` (the plan's simulator, or null: FP32) computes the sites.
class SimCapture : public SiteHook {
 public:
  SimCapture(SiteHook* inner, std::string name) : inner_(inner), cap_(std::move(name)) {}
  bool compute(const SiteCall& c) override { return inner_ && inner_->compute(c); }
  void observe(const SiteCall& c) override { cap_.observe(c); }
  const std::vector<float>& out() const { return cap_.out; }

 private:
  SiteHook* inner_;
  Capture cap_;
};

// Moves every site output by one unit in the last place, up or down by a hash of (seed, call,
// index): the size of the difference two engines' summation orders make in a GEMM's result,
// injected at every site, so that a test can measure how often a plan's predictions survive it.
class PerturbOutputs : public SiteHook {
 public:
  PerturbOutputs(SiteHook* inner, uint64_t seed, std::string only)
      : inner_(inner), state_(seed), only_(std::move(only)) {}
  bool compute(const SiteCall& c) override { return inner_ && inner_->compute(c); }
  void observe(const SiteCall& c) override {
    if (!only_.empty() && c.site.name().find(only_) == std::string::npos) return;
    const size_t n = size_t(c.groups) * size_t(c.M) * size_t(c.N);
    for (size_t i = 0; i < n; ++i) {
      const bool up = splitmix64_next(state_) >> 63;
      c.y[i] = std::nextafter(c.y[i], up ? INFINITY : -INFINITY);
    }
  }

 private:
  SiteHook* inner_;
  uint64_t state_;
  std::string only_;  // perturb only the sites whose name contains this (empty: every site)
};

struct Args {
  std::string model, input, out, site, plan, perturb_only;
  int64_t perturb_seed = -1;
  int batch = 1;
  bool per_call = false;
};

void run(const Args& a) {
  const ViTModel checkpoint = load_vit_model(a.model);
  // --plan: the simulated model (the plan's transforms applied, its sites quantize-dequantized).
  std::unique_ptr<QuantPlan> plan;
  std::unique_ptr<ViTModel> holder;
  std::unique_ptr<PlanSimulator> sim;
  if (!a.plan.empty()) plan = std::make_unique<QuantPlan>(load_plan(a.plan));
  const ViTModel& m = plan ? apply_plan_transforms(checkpoint, *plan, holder, a.plan) : checkpoint;
  if (plan) sim = std::make_unique<PlanSimulator>(m, *plan);
  const ViTConfig& c = m.cfg;
  const size_t img = size_t(c.in_chans) * c.img_size * c.img_size;
  std::vector<float> x = read_f32(a.input, img * size_t(a.batch));
  avector<float> xa(x.begin(), x.end());
  std::vector<float> logits(size_t(a.batch) * size_t(c.num_classes));
  ViTForward fwd(m, a.per_call ? FpGemm::PerCall : FpGemm::Packed);
  if (a.site.empty() && a.perturb_seed >= 0) {
    PerturbOutputs perturb(sim.get(), uint64_t(a.perturb_seed), a.perturb_only);
    fwd.run(xa.data(), a.batch, logits.data(), &perturb);
    write_raw(a.out, logits.data(), logits.size());
  } else if (a.site.empty()) {
    fwd.run(xa.data(), a.batch, logits.data(), sim.get());
    write_raw(a.out, logits.data(), logits.size());
  } else {
    SimCapture cap(sim.get(), a.site);
    fwd.run(xa.data(), a.batch, logits.data(), &cap);
    if (cap.out().empty()) fail(ErrorKind::Usage, "no site named '", a.site, "'");
    write_raw(a.out, cap.out().data(), cap.out().size());
  }
}

}  // namespace

void register_forward(CLI::App& app) {
  auto a = std::make_shared<Args>();
  CLI::App* c = app.add_subcommand("forward", "Logits (or one site's output) for a raw float32 NCHW input");
  c->add_option("--model", a->model)->required();
  c->add_option("--input", a->input, "raw float32, batch x C x H x W")->required();
  c->add_option("--batch", a->batch)->required();
  c->add_option("--site", a->site, "dump this site's output instead of the logits");
  c->add_option("--plan", a->plan, "simulate this quantization plan (the logits, or --site's output under it)");
  c->add_option("--out", a->out)->required();
  c->add_option("--perturb-outputs", a->perturb_seed,
                 "move every site's output by one ulp (direction from this seed) before it is used (logits only)");
  c->add_option("--perturb-only", a->perturb_only,
                 "with --perturb-outputs: move only the sites whose name contains this string");
  c->add_flag("--per-call-gemm", a->per_call, "every product through dnnl_sgemm (the calibration's FP path)");
  c->callback([a] { run(*a); });
}

}  // namespace vitq::probe
