// MinMax: Δ = max|·| / qmax for every operand (the max-based step Δ₀ of the paper).
#include "quant/calibrate.h"
#include "quant/methods/methods.h"

namespace vitq {

void MinmaxOptions::declare(OptionDecls& d) {
  d.flag("--per-channel-weights", &per_channel_weights, "one weight step per output channel");
  d.flag("--per-head", &per_head, "one step per head for both operands of the attention matmuls");
}

namespace {

class MinMax : public Method {
 public:
  explicit MinMax(const MinmaxOptions& o) : o_(o) {}
  std::string name() const override { return "minmax"; }
  nlohmann::ordered_json settings(const GridPolicy& g) const override {
    nlohmann::ordered_json j = {{"unsigned_softmax", g.unsigned_softmax()}, {"per_channel_weights", o_.per_channel_weights}};
    if (o_.per_head) j["per_head"] = true;
    return j;
  }
  SitePlan calibrate(const SiteObservation& obs, Bits bits, SiteNotes&) override {
    SitePlan sp = minmax_site_plan(obs, bits);
    if (o_.per_channel_weights && !obs.attention()) set_channel_max_scales(obs, sp.w);
    if (o_.per_head && obs.attention())
      set_head_scales(obs, sp, [](const std::vector<float>& v, QRange) { return max_abs(v.data(), v.size()); });
    return sp;
  }

 private:
  MinmaxOptions o_;
};

}  // namespace

std::unique_ptr<Method> make_minmax(const MethodConfig& cfg) {
  return std::make_unique<MinMax>(cfg.get<MinmaxOptions>("minmax"));
}

}  // namespace vitq
