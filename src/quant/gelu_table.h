// GELU as a table on a quantized input (plan.h: GeluTable) — the integer element-wise GELU of
// I-ViT / HAGO-style lowering, as a plan step any method can be followed by (--gelu-table).
//
//   gelu_table_values   the table: GELU(c · scale) for c = lo … lo + 2^bits − 1, computed with the
//                       very kernel (engine/kernels.h bias_gelu_rows) the simulator applies to
//                       the fake-quantized fc1 output, so the two agree bit for bit
//   fit_gelu_table      the grid of one block from samples of its GELU input: the covered interval
//                       [lo·Δ, hi·Δ] minimising the mean squared error of the GELU *output*
//                       (GELU is flat below about −4, so the grid need not reach the minimum)
//   fit_gelu_tables     every quantized fc1 site of a plan: samples its output in the simulated
//                       model over the calibration images, then fits each block's table
#pragma once
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "model/vit_model.h"
#include "quant/plan.h"

namespace vitq {

std::vector<float> gelu_table_values(const GeluTable& t);

// x: n samples of a GELU input (n ≥ 1, finite).
GeluTable fit_gelu_table(const float* x, size_t n, int bits);

// `model` is the checkpoint (the plan's transforms are applied here); images: n × C × H × W.
// progress(done, total) after each batch.
void fit_gelu_tables(const ViTModel& model, QuantPlan& plan, const float* images, int n, int bits,
                     const std::function<void(int, int)>& progress = {});

}  // namespace vitq
