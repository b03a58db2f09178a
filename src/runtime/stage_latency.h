// Measures a quantized model's integer forward per stage (IntViTForward's profile) into a latency
// table entry (quant/latency_table.h): the mean over `iters` runs on random images after `warmup`
// runs, with the threads OpenMP has.
#pragma once
#include "core/aligned.h"
#include "quant/latency_table.h"
#include "runtime/quantized_model.h"

namespace vitq {

// The one width of every quantized site of the transformer blocks (weights and inputs alike);
// Error(Usage) naming `what` if the blocks are not all at one width.
int uniform_block_width(const QuantPlan& plan, int depth, const std::string& what);

// The inputs of a timed run: batch images of standard normal values (seed 0) in the
// preprocessed space (the integer runtime's time does not depend on them); vitq bench's too.
avector<float> bench_images(const ViTConfig& cfg, int batch);

// Needs q's linear weights (before drop_linear_weights). entry.bits = uniform_block_width.
LatencyEntry measure_stage_latency(const QuantizedViT& q, int batch, int warmup, int iters, const std::string& what);

// A table's header (architecture, sizes, batch, threads, CPU) for the model of `cfg`.
LatencyTable latency_table_for(const ViTConfig& cfg, int batch);

// Error(Usage) naming `path` if the table was made for another model shape.
void check_latency_table_model(const LatencyTable& t, const ViTConfig& cfg, const std::string& path);

}  // namespace vitq
