// The subcommands of the vitq tool; each file adds one to the application.
#pragma once
#include <CLI/CLI.hpp>

namespace vitq {

void add_eval_command(CLI::App& app);   // cmd_eval.cpp
void add_info_command(CLI::App& app);   // cmd_info.cpp
void add_bench_command(CLI::App& app);  // cmd_bench.cpp
void add_quantize_command(CLI::App& app);  // cmd_quantize.cpp
void add_export_command(CLI::App& app);    // cmd_export.cpp
void add_synth_command(CLI::App& app);     // cmd_synth.cpp

// Sets the OpenMP (and so oneDNN) thread count; 0 = all available cores.
void set_threads(int threads);

// The process's peak resident memory so far, MB.
double peak_rss_mb();

// --allow-non-finite: load checkpoints holding NaN/Inf weights (default: an error naming the tensor).
void add_allow_non_finite_flag(CLI::App* c, bool& flag);

}  // namespace vitq
