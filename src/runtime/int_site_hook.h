// The integer computation of single sites, unfused: a SiteHook that runs every quantized site
// of a plan as int8 GEMMs (quantize the inputs, u8 x s8 -> s32, dequantize), for any ViTForward.
// It is the reference the fused IntViTForward is tested against, and what the unit tests compare
// with the simulator site by site (same codes, integer instead of float products).
#pragma once
#include "numerics/softmax_table.h"
#include <map>
#include <memory>

#include "core/aligned.h"
#include "engine/site.h"
#include "runtime/int_linear.h"
#include "runtime/quantized_model.h"

namespace vitq {

class IntegerSiteHook : public SiteHook {
 public:
  // Linear sites take their integer weights from `q` (the call's float weights are ignored).
  explicit IntegerSiteHook(const QuantizedViT& q);
  bool compute(const SiteCall& call) override;
  bool softmax(int block, float* s, int rows, int n, float scale) override;  // the plan's softmax table

 private:
  const QuantizedViT& q_;
  std::map<SiteId, std::unique_ptr<IntLinear>> linear_;
  std::unique_ptr<SoftmaxExpTable> softmax_;
};

// One call of a site under plan `sp`, in integers: linear sites quantize call.w with the plan
// (plan_weight_codes) and add call.bias plus the bias correction; attention sites quantize both
// operands. call.y receives the result. (For tests; prepares the weights on every call.)
void int_site_compute(const SiteCall& call, const SitePlan& sp);

// The linear site of `call` with its plan as a prepared IntLinear (weights quantized here).
std::unique_ptr<IntLinear> make_int_linear(const SiteCall& call, const SitePlan& sp);

}  // namespace vitq
