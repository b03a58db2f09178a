// Probe subcommands for the forward pass: logits and site tensors for a raw input batch.
#include <memory>
#include <vector>

#include "core/error.h"
#include "engine/vit_forward.h"
#include "model/vit_model.h"
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

struct Args {
  std::string model, input, out, site, plan;
  int batch = 1;
  bool per_call = false;
};

void run(const Args& a) {
  const ViTModel checkpoint = load_vit_model(a.model);
  // --plan: the simulated model (the plan's transforms applied, its sites quantize-dequantized).
  std::unique_ptr<QuantPlan> plan;
  std::unique_ptr<ViTModel> holder;
  std::unique_ptr<PlanSimulator> sim;
  if (!a.plan.empty() && !a.site.empty()) fail(ErrorKind::Usage, "--plan gives logits only, not --site");
  if (!a.plan.empty()) plan = std::make_unique<QuantPlan>(load_plan(a.plan));
  const ViTModel& m = plan ? apply_plan_transforms(checkpoint, *plan, holder, a.plan) : checkpoint;
  if (plan) sim = std::make_unique<PlanSimulator>(m, *plan);
  const ViTConfig& c = m.cfg;
  const size_t img = size_t(c.in_chans) * c.img_size * c.img_size;
  std::vector<float> x = read_f32(a.input, img * size_t(a.batch));
  avector<float> xa(x.begin(), x.end());
  std::vector<float> logits(size_t(a.batch) * size_t(c.num_classes));
  ViTForward fwd(m, a.per_call ? FpGemm::PerCall : FpGemm::Packed);
  if (a.site.empty()) {
    fwd.run(xa.data(), a.batch, logits.data(), sim.get());
    write_raw(a.out, logits.data(), logits.size());
  } else {
    Capture cap(a.site);
    fwd.run(xa.data(), a.batch, logits.data(), &cap);
    if (cap.out.empty()) fail(ErrorKind::Usage, "no site named '", a.site, "'");
    write_raw(a.out, cap.out.data(), cap.out.size());
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
  c->add_option("--plan", a->plan, "simulate this quantization plan (logits only)");
  c->add_option("--out", a->out)->required();
  c->add_flag("--per-call-gemm", a->per_call, "every product through dnnl_sgemm (the calibration's FP path)");
  c->callback([a] { run(*a); });
}

}  // namespace vitq::probe
