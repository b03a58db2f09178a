// MinMax: Δ = max|·| / qmax for every operand (the max-based step Δ₀ of the paper).
#include "quant/calibrate.h"
#include "quant/methods/methods.h"

namespace vitq {
namespace {

class MinMax : public Method {
 public:
  explicit MinMax(const MethodArgs& a) : a_(a) {}
  std::string name() const override { return "minmax"; }
  nlohmann::ordered_json settings() const override {
    return {{"unsigned_softmax", a_.unsigned_softmax}, {"per_channel_weights", a_.per_channel_weights}};
  }
  SitePlan calibrate(const SiteObservation& obs, Bits bits, SiteNotes&) override {
    SitePlan sp = minmax_site_plan(obs, bits, a_.unsigned_softmax);
    if (a_.per_channel_weights && !obs.attention()) set_channel_max_scales(obs, sp.w);
    return sp;
  }

 private:
  MethodArgs a_;
};

}  // namespace

std::unique_ptr<Method> make_minmax(const MethodArgs& a) { return std::make_unique<MinMax>(a); }

}  // namespace vitq
