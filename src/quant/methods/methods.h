// The built-in PTQ methods (one file each): their factories, the options of those without a
// header of their own, and helpers they share. quant/methods/registry.cpp lists them.
#pragma once
#include <memory>
#include <functional>
#include <string>
#include <vector>

#include "quant/method.h"

namespace vitq {

struct MinmaxOptions : MethodOptions {
  bool per_channel_weights = false;
  bool per_head = false;
  void declare(OptionDecls& d) override;
};

struct PercentileOptions : MethodOptions {
  double percentile = 99.99;
  bool per_channel_weights = false;
  bool per_head = false;
  void declare(OptionDecls& d) override;
};

// easyquant's options; liu2021 adds the paper's components.
struct SearchMethodOptions : MethodOptions {
  std::string similarity;  // empty: the method's own default
  int candidates = 100;
  double alpha = 0.5, beta = 1.2;
  int max_rounds = 20;
  int search_tokens = 0;  // 0 = all tokens; k = k random tokens per image in the search
  int screen_tokens = 0;  // candidate screen: rows per image that rank all candidates (0 = none)
  int screen_keep = 8;    // candidate screen: how many of the screen's best are scored on all rows
  int coarse_stride = 0;  // coarse-to-fine sweeps: every this-many-th candidate first (0 = all)
  bool per_channel_weights = false;
  void declare(OptionDecls& d) override;
  bool apply_fast() override;  // --coarse-stride 10
};

struct Liu2021Options : SearchMethodOptions {
  bool ranking = true, bias_correction = true;
  double gamma = 0.1, theta = 0.2;
  int rank_tokens = 0;  // ranking loss: 0 = exact pair sum; m = pairs within m random tokens per row
  void declare(OptionDecls& d) override;
  bool apply_fast() override;  // and --rank-tokens 64
};

// vitq's own method (methods/vitq.cpp).
struct VitqOptions : MethodOptions {
  bool per_head = true;
  // --compensate: the error-compensation level of the recipe: none, closed-form (QwT), reconstruct
  // (block reconstruction, then QwT), or auto (closed-form at 6 bits or fewer, none above).
  std::string compensate = "auto";
  void declare(OptionDecls& d) override;
  bool symmetric_weights = false;  // --vitq-symmetric-weights: per-channel grids with zero offset
  std::string fit_target(const Target& t) override;
};

std::unique_ptr<Method> make_minmax(const MethodConfig& cfg);
std::unique_ptr<Method> make_vitq(const MethodConfig& cfg);
std::unique_ptr<Method> make_percentile(const MethodConfig& cfg);
std::unique_ptr<Method> make_easyquant(const MethodConfig& cfg);
std::unique_ptr<Method> make_liu2021(const MethodConfig& cfg);
std::unique_ptr<Method> make_aciq(const MethodConfig& cfg);
std::unique_ptr<Method> make_lapq(const MethodConfig& cfg);
std::unique_ptr<Method> make_bitsplit(const MethodConfig& cfg);

// Per-output-channel max-based weight steps (the per-channel option).
void set_channel_max_scales(const SiteObservation& obs, OperandQuant& w);

// The values of head h of an attention site's operand (images · heads groups of `per_group`
// values each, image-major), gathered.
std::vector<float> head_values(const float* v, int images, int heads, size_t per_group, int h);
// Per-head steps for both operands of an attention site (the per-head option): for each head,
// the step from `extent` (the largest |value| to represent) of that head's values; an operand
// whose format fixes its step (a level grid) is left alone.
void set_head_scales(const SiteObservation& obs, SitePlan& sp,
                     const std::function<float(const std::vector<float>&, QRange)>& extent);

}  // namespace vitq
