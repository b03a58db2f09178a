// Percentile: activation steps from the p-th percentile of |x| over the calibration data
// (default 99.99), weights from their maximum.
#include "quant/calibrate.h"
#include "quant/methods/methods.h"
#include "quant/stats.h"

namespace vitq {

void PercentileOptions::declare(OptionDecls& d) {
  d.real("--percentile", &percentile, 0, 100, "the percentile of |x| (0-100]", /*lo_open=*/true);
  d.flag("--per-channel-weights", &per_channel_weights, "one weight step per output channel");
  d.flag("--per-head", &per_head, "one step per head for both operands of the attention matmuls");
}

namespace {

class Percentile : public Method {
 public:
  explicit Percentile(const PercentileOptions& o) : o_(o) {}
  std::string name() const override { return "percentile"; }
  nlohmann::ordered_json settings(const GridPolicy& g) const override {
    nlohmann::ordered_json j = {{"percentile", o_.percentile},
            {"unsigned_softmax", g.unsigned_softmax()},
            {"per_channel_weights", o_.per_channel_weights}};
    if (o_.per_head) j["per_head"] = true;
    return j;
  }
  SitePlan calibrate(const SiteObservation& obs, Bits bits, SiteNotes& notes) override {
    SitePlan sp = minmax_site_plan(obs, bits);
    const double px = percentile_abs(obs.x, size_t(obs.x_per_image()) * size_t(obs.images), o_.percentile);
    sp.x.scale = max_step(float(px), sp.x.range());
    notes.j["x_percentile_value"] = px;
    if (obs.attention()) {  // the second operand is an activation too
      const double pw = percentile_abs(obs.w, size_t(obs.w_per_image()) * size_t(obs.images), o_.percentile);
      sp.w.scale = max_step(float(pw), sp.w.range());
      notes.j["w_percentile_value"] = pw;
      if (o_.per_head) {
        const double pct = o_.percentile;
        set_head_scales(obs, sp, [pct](const std::vector<float>& v, QRange) { return float(percentile_abs(v.data(), v.size(), pct)); });
      }
    } else if (o_.per_channel_weights) {
      set_channel_max_scales(obs, sp.w);
    }
    return sp;
  }

 private:
  PercentileOptions o_;
};

}  // namespace

std::unique_ptr<Method> make_percentile(const MethodConfig& cfg) {
  return std::make_unique<Percentile>(cfg.get<PercentileOptions>("percentile"));
}

}  // namespace vitq
