// The picture of a mixed-precision search (`vitq quantize --mixed-precision B` writes
// OUT/frontier.svg): network KL to FP32 against the blocks' weight size for what the search
// visited — the Pareto frontier as the module costs predict it, the frontier points measured on
// the simulated network, the uniform plans of every candidate width, the budget, and the plan
// kept. Elements carry a class (frontier, checked, uniform, chosen, budget) for tools and tests.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace vitq {

// `report`: calibrate_mixed_precision's end-to-end report (fields frontier, checked,
// uniform_widths, budget_weight_bits, chosen, ...). Deterministic text.
std::string frontier_svg(const nlohmann::ordered_json& report, const std::string& title);

}  // namespace vitq
