// Mixed precision: every MSA module and every MLP module of the transformer blocks gets one
// bit-width (weights and inputs alike), at most the weight size of the uniform target model.
// By default the cost of a module at a width is end-to-end (MpSensitivity::EndToEnd,
// mixed_precision_kl.h). The paper's (Liu et al. 2021, Sec. 3.4; MpSensitivity::Nuclear):
// sensitivity σ of a module: the nuclear norm of its attention map (MSA) or of its output
// feature (MLP) on calibration images. Cost of a choice: Ω = Σ σ_m · ||Ŷ_m − Y_m||², with the
// perturbation of the module's output measured with the module alone quantized at each
// candidate bit-width (the method's own plan at that width). The allocation of least Ω whose
// weight storage does not exceed the uniform model's is found exactly, over the Pareto
// frontier of (size, Ω) built module by module.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "quant/calibrate.h"
#include "quant/latency_table.h"

namespace vitq {

// One point of the frontier: total size, total cost and the candidate index per module.
struct AllocationPoint {
  int64_t size = 0;
  double omega = 0;
  std::vector<int> choice;
};

// Every non-dominated (size, Ω) over all assignments of candidates to modules, sorted by size
// (strictly decreasing Ω); sizes above `max_size` are dropped. cost[m][c], size[m][c].
std::vector<AllocationPoint> pareto_frontier(const std::vector<std::vector<double>>& cost,
                                             const std::vector<std::vector<int64_t>>& size, int64_t max_size);

// The point of least Ω with size <= budget (ties: the smaller size). Throws if none fits.
AllocationPoint allocate_bits(const std::vector<std::vector<double>>& cost,
                              const std::vector<std::vector<int64_t>>& size, int64_t budget);

// How much lower `candidate` is than `base`, paired per image: mean(base − candidate) over its
// standard error (sample standard deviation / √n); ±inf when every difference is equal and
// non-zero, 0 when all are zero.
double paired_gain_se(const std::vector<double>& candidate, const std::vector<double>& base);

// How a module's cost at a width is measured.
enum class MpSensitivity {
  EndToEnd,  // vitq's: end-to-end KL with the module at that width, the rest at the target (mixed_precision_kl.h)
  Nuclear,   // the paper's: nuclear norm × the module's own output perturbation, the module alone quantized
};

enum class BudgetKind {
  Size,     // MB (10^6 bytes) of the transformer blocks' quantized weights
  Latency,  // ms per image of the integer model, from a latency table (latency_table.h)
  KlFloor,  // KL(FP32 || quantized) of the network output on the check images
};

struct MixedPrecisionOptions {
  int target_bits = 6;       // the uniform model whose size is the budget
  std::vector<int> candidates;  // default: target − 2 .. target + 2, clipped to [2, max_bits]
  int max_bits = kMaxBits;      // the widest the hardware runs (Target::max_bits)
  MpSensitivity sensitivity = MpSensitivity::EndToEnd;
  int svd_images = 32;       // Nuclear: calibration images used for the nuclear norms
  int kl_images = 64;        // EndToEnd: calibration images of the KL measurements
  int check_points = 8;      // EndToEnd: frontier points within the budget checked on the simulated network
  int check_images = 0;      // EndToEnd: images of those checks and of the final choice (0 = all check images)
  // EndToEnd: every holdout-th calibration image is held out: the plans and module costs come from
  // the others, the checks and the final choice are measured on the held-out images (so a plan is
  // not judged on the images it was fitted to), and what was kept is calibrated again on all
  // images. 0 or 1: no hold-out, everything on all images.
  int holdout = 4;
  // EndToEnd: a mixed plan replaces the uniform one only if its KL on the check images is lower by
  // more than this many standard errors of the paired per-image difference (0: any improvement).
  double min_gain_se = 2.0;
  // The budget (quant/mp_search.h): the weight size of the transformer blocks (0: the uniform
  // target width's, the default), the latency of the integer model by a latency table, or an
  // accuracy floor (the cheapest allocation whose KL on the check images is within it: by latency
  // with a latency table, else by size). The paper's allocation takes size and latency budgets.
  BudgetKind budget_kind = BudgetKind::Size;
  double budget_value = 0;
  // Per-module prices of each width for latency budgets (and the floor's resource); widths it
  // lacks (by plane count, latency_table.h) are measured with measure_latency on the method's
  // uniform plan of that width, if given, else an Error(Usage) names them.
  // Entries measured here are added to the table.
  LatencyTable* latency = nullptr;
  std::function<LatencyEntry(const QuantPlan&)> measure_latency;
};

struct MixedPrecisionResult {
  CalibrationResult final;  // calibrated with the chosen per-module bits
  nlohmann::ordered_json report;
};

MixedPrecisionResult calibrate_mixed_precision(const ViTModel& model, const float* images, int n, Method& method,
                                               const CalibOptions& base, const MixedPrecisionOptions& mp,
                                               const std::function<void(const std::string&)>& stage = {},
                                               const std::function<void(const CalibProgress&)>& progress = {});

}  // namespace vitq
