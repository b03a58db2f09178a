// vitq's mixed precision (MixedPrecisionOptions::sensitivity = EndToEnd): the cost of a module at a
// bit-width is the end-to-end KL of the network's output from the FP32 model's with that module
// at that width and every other module at the target width (quantization errors compound, which
// a module's own output perturbation does not see); the allocation's Pareto frontier is then
// checked on the simulated network, and the uniform model stays the answer unless a mixed one
// measures better. All on calibration images, label-free.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "quant/network_kl.h"
#include "quant/plan.h"

namespace vitq {

// Module m = 2·block (attention: qkv, the attention matmuls, proj) or 2·block + 1 (MLP: fc1,
// fc2) of the transformer blocks.
bool site_in_module(const SiteId& id, int module);

// A plan whose module m takes its entries from module_plans[m] and the rest (patch embedding,
// head) from `base`. A block's error compensation comes from the plan of its module of fewer
// bits (module_bits; the attention's on a tie): the larger error is the one it corrects.
QuantPlan compose_module_plans(const QuantPlan& base, const std::vector<const QuantPlan*>& module_plans,
                               const std::vector<int>& module_bits);

// cost[m][k]: KL with module m from plans[k] and every other module from plans[base_k].
std::vector<std::vector<double>> module_kl_costs(NetworkKl& kl, const std::vector<QuantPlan>& plans, int base_k,
                                                 const std::vector<int>& bits,
                                                 const std::function<void(const std::string&)>& note = {});

}  // namespace vitq
