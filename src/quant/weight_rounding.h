// The weight-rounding step of the calibration driver (--weight-rounding gptq): after a method
// has chosen a linear site's weight grid (its steps, and offsets if any), GPTQ (quant/gptq.h)
// chooses the integer codes on that grid so as to minimise the expected squared output error
// over the site's calibration inputs — as the quantized site will see them: the partly quantized
// model's input, quantized with the site's own input format (per tensor or per token). Any method
// can be followed by it; the plan then holds the codes (SitePlan::weight_codes) with the grid's
// per-channel steps and offsets (w.channel_scales, weight_offset).
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "quant/gptq.h"
#include "quant/method.h"

namespace vitq {

enum class WeightRounding { Nearest, Gptq };

// One input row x (K values) of a linear site quantize-dequantized with format q (per tensor or
// per token; copied if q is not quantized) into out; with mask, also the straight-through mask
// of the rounding: 1 where the quantizer did not clip (a per-token row clips only outside its
// clipped range [α·mn, α·mx], not where its end codes round one step past the grid), else 0.
void dequantize_input_row(const float* x, int K, const OperandQuant& q, float* out, float* mask = nullptr);

// Rows [r0, r0 + n) of the observation's input, quantize-dequantized with x (copied if x is not
// quantized), into out (n × K).
void dequantized_rows(const SiteObservation& obs, const OperandQuant& x, int64_t r0, int64_t n, float* out);

// The observation's input rows in chunks of kRowChunk, quantize-dequantized with x: chunk(t, r0, n,
// xs) for rows [r0, r0 + n) (xs: n × K) runs for up to omp_get_max_threads() chunks at a time in
// parallel (t: the thread's slot, below that count; a GEMM inside runs single-threaded), then
// merge(t) for each of them in chunk order — so sums merged in order do not depend on the thread
// count.
constexpr int64_t kRowChunk = 1024;
using RowChunkFn = std::function<void(int t, int64_t r0, int64_t n, const float* xs)>;
void for_quantized_row_chunks(const SiteObservation& obs, const OperandQuant& x, const RowChunkFn& chunk,
                              const std::function<void(int)>& merge);

// H = Σ_r x̂_r x̂_rᵀ over the observation's input rows, x̂ = the rows quantize-dequantized with
// `x` (FP32 rows if x is not quantized): K × K row-major, double. Float products within chunks of
// rows, double across chunks, in a fixed order: the result does not depend on the thread count.
std::vector<double> quantized_input_gram(const SiteObservation& obs, const OperandQuant& x);

// The site's grid as a ChannelGrid: per channel the plan's step (channel_scales or scale) and
// offset (weight_offset or 0). False if the plan has per-channel bit-widths (not supported).
bool plan_channel_grid(const SitePlan& sp, int N, ChannelGrid* g);

// Writes codes on grid g into the plan: per-channel steps (scale: the largest), the offsets if any
// is nonzero, the codes.
void set_plan_weight_codes(SitePlan& sp, const ChannelGrid& g, std::vector<int16_t> codes);

// Replaces the codes of linear site `obs` by GPTQ's on the plan's grid; notes get the expected
// output errors of round-to-nearest and of GPTQ (Σ_c eᵀHe / Σ_c wᵀHw) and the damping used.
// Leaves attention sites, FP32 weights and per-channel bit-widths alone (returns false).
// W: the weights to round (N × K; null: the site's own, obs.w); H: the Gram matrix if already
// computed (null: computed here).
bool gptq_weight_step(const SiteObservation& obs, SitePlan& sp, const GptqOptions& opt, nlohmann::ordered_json& notes,
                      const float* W = nullptr, const std::vector<double>* H = nullptr);

}  // namespace vitq
