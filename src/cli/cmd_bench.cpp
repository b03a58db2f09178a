// vitq bench: forward latency of a model on random inputs (for the speed benchmarks), and the
// per-site latency table of the integer runtime (--latency-table) that prices mixed precision.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <filesystem>

#include "cli/commands.h"
#include "cli/validators.h"
#include "core/error.h"
#include "io/output_dir.h"
#include "engine/vit_forward.h"
#include "model/vit_model.h"
#include "quant/calib_random.h"
#include "quant/calibrate.h"
#include "quant/latency_table.h"
#include "quant/method.h"
#include "quant/simulate.h"
#include "runtime/int_vit_forward.h"
#include "runtime/quantized_model.h"
#include "runtime/stage_latency.h"

namespace vitq {
namespace {

struct BenchArgs {
  std::string model, json_out, latency_table;
  std::vector<int> widths = {8, 10};  // --widths: of --latency-table from a checkpoint
  int batch = 1, threads = 0, warmup = 3, iters = 20;
  bool simulate = false, profile = false, allow_non_finite = false;
};

// --latency-table: the per-site latency of the integer runtime here, added to FILE (made if
// absent). From a quantized model: the entry of its (uniform) width. From a checkpoint: MinMax
// plans on random images at each of --widths (the timing does not depend on the steps).
void run_latency_table(const BenchArgs& a) {
  const bool quantized = is_quantized_model_dir(a.model);
  std::unique_ptr<QuantizedViT> qm;
  ViTModel m;
  if (quantized) qm = std::make_unique<QuantizedViT>(load_quantized_model(a.model, {a.allow_non_finite}));
  else m = load_vit_model(a.model, {a.allow_non_finite});
  const ViTConfig& cfg = quantized ? qm->cfg : m.cfg;
  LatencyTable t = latency_table_for(cfg, a.batch);
  if (std::filesystem::exists(a.latency_table)) {  // add to it: same model shape, batch and threads
    LatencyTable old = load_latency_table(a.latency_table);
    check_latency_table_model(old, cfg, a.latency_table);
    if (old.batch != t.batch || old.threads != t.threads)
      fail(ErrorKind::Usage, a.latency_table, ": measured at batch ", old.batch, " with ", old.threads,
           " threads; this run is at batch ", t.batch, " with ", t.threads, " (use the same, or another file)");
    old.cpu = t.cpu;
    t = std::move(old);
  }
  StagedFile out(a.latency_table, OutputCheck{"--latency-table", {a.model}});
  auto add = [&](const QuantizedViT& q) {
    const LatencyEntry e = measure_stage_latency(q, a.batch, a.warmup, a.iters, a.model);
    t.add(e);
    std::printf("%2d bits: qkv %.4f  attention %.4f  proj %.4f  fc1 %.4f  fc2 %.4f ms/image per block; rest %.4f; "
                "total %.3f ms/image\n",
                e.bits, e.qkv, e.attention, e.proj, e.fc1, e.fc2, e.rest, e.total(cfg.depth));
    std::fflush(stdout);
  };
  if (quantized) {
    add(*qm);
  } else {
    const CalibrationSet cs = random_calibration_set(8, 0, m.cfg.preprocess);
    auto method = make_method("minmax", MethodConfig());
    for (int b : a.widths) {
      CalibOptions o;
      o.bits = {b, b};
      o.batch = 8;
      const QuantPlan plan = Calibrator(m, cs.images.data(), cs.n).run(*method, o).plan;
      add(quantize_model(m, plan));
    }
  }
  out.commit(latency_table_json(t).dump(2) + "\n");
  std::printf("wrote %s (%zu widths, batch %d, %d threads)\n", a.latency_table.c_str(), t.entries.size(), t.batch,
              t.threads);
}

void run_bench(const BenchArgs& a) {
  set_threads(a.threads);
  if (!a.latency_table.empty()) {
    if (a.simulate || a.profile || !a.json_out.empty())
      fail(ErrorKind::Usage, "--latency-table is a run of its own: without --simulate, --profile and --json");
    run_latency_table(a);
    return;
  }
  std::unique_ptr<StagedFile> json_out;
  if (!a.json_out.empty()) json_out = std::make_unique<StagedFile>(a.json_out, OutputCheck{"--json", {a.model}});
  if (a.batch < 1 || a.iters < 1 || a.warmup < 0) fail(ErrorKind::Usage, "--batch and --iters must be >= 1");
  // A quantized model directory runs in integers (or, with --simulate, quantize-dequantize).
  const bool quantized = is_quantized_model_dir(a.model);
  if (a.simulate && !quantized) fail(ErrorKind::Usage, "--simulate needs a quantized model directory");
  std::unique_ptr<QuantizedViT> qm;
  if (quantized) qm = std::make_unique<QuantizedViT>(load_quantized_model(a.model, {a.allow_non_finite}));
  ViTModel m;
  if (!quantized) m = load_vit_model(a.model, {a.allow_non_finite});
  else if (a.simulate) m = dequantized_model(*qm);
  else m.cfg = qm->cfg;
  const ViTConfig& c = m.cfg;
  ViTForward vf(m);
  std::unique_ptr<QuantPlan> plan;
  std::unique_ptr<PlanSimulator> sim;
  std::unique_ptr<IntViTForward> ifwd;
  if (quantized && a.simulate) {
    plan = std::make_unique<QuantPlan>(simulation_plan(*qm));
    sim = std::make_unique<PlanSimulator>(m, *plan);
  } else if (quantized) {
    ifwd = std::make_unique<IntViTForward>(*qm);
    drop_linear_weights(*qm);  // the integer forward keeps its own packed copies
  }
  const std::string engine = !quantized ? "fp32" : a.simulate ? "simulated" : "integer";
  struct {
    ViTForward& vf;
    PlanSimulator* sim;
    IntViTForward* ifwd;
    void run(const float* x, int b, float* logits) {
      if (ifwd) ifwd->run(x, b, logits);
      else vf.run(x, b, logits, sim);
    }
  } fwd{vf, sim.get(), ifwd.get()};
  const avector<float> x = bench_images(c, a.batch);
  std::vector<float> logits(size_t(a.batch) * size_t(c.num_classes));
  for (int i = 0; i < a.warmup; ++i) fwd.run(x.data(), a.batch, logits.data());
  std::vector<double> ms;
  for (int i = 0; i < a.iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fwd.run(x.data(), a.batch, logits.data());
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  nlohmann::ordered_json profile = nlohmann::ordered_json::object();
  if (a.profile && ifwd) {  // stage times over the timed runs
    ifwd->set_profiling(true);
    for (int i = 0; i < a.iters; ++i) fwd.run(x.data(), a.batch, logits.data());
    double total = 0;
    for (const auto& [n, s] : ifwd->profile_seconds()) total += s;
    std::printf("stage        ms/image   share\n");
    for (const auto& [n, s] : ifwd->profile_seconds())
      std::printf("%-10s %10.3f %6.1f%%\n", n.c_str(), 1e3 * s / a.iters / a.batch, 100.0 * s / total);
    for (const auto& [n, s] : ifwd->profile_seconds()) profile[n] = 1e3 * s / a.iters / a.batch;
  }
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  const double med = sorted[sorted.size() / 2];
  std::printf("%s %s batch %d, %d threads: median %.3f ms per batch, %.3f ms per image (min %.3f, max %.3f)\n",
              c.architecture.c_str(), engine.c_str(), a.batch, omp_get_max_threads(), med, med / a.batch, sorted.front(),
              sorted.back());
  if (!a.json_out.empty()) {
    nlohmann::ordered_json j;
    j["model"] = a.model;
    j["engine"] = engine;
    j["batch"] = a.batch;
    j["threads"] = omp_get_max_threads();
    j["ms_per_batch"] = ms;
    j["median_ms_per_image"] = med / a.batch;
    if (!profile.empty()) j["profile_ms_per_image"] = profile;
    json_out->commit(j.dump(2) + "\n");
  }
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* c = app.add_subcommand("bench", "Forward latency on random inputs (median over --iters runs)");
  c->add_option("--model", a->model, "Checkpoint directory, or a quantized model directory (runs in integers)")
      ->required();
  c->add_flag("--simulate", a->simulate, "Quantized model directory: run its plan quantize-dequantize instead");
  add_allow_non_finite_flag(c, a->allow_non_finite);
  c->add_flag("--profile", a->profile, "Integer runs: time per stage (another --iters runs after the timed ones)");
  c->add_option("--batch", a->batch, "Images per forward")->capture_default_str()->check(opt::integer(1, opt::kMaxBatch));
  c->add_option("--threads", a->threads, "Threads (0 = all cores)")->capture_default_str()->check(opt::integer(0, opt::kMaxThreads));
  c->add_option("--warmup", a->warmup, "Untimed runs first")->capture_default_str()->check(opt::integer(0, 1000000));
  c->add_option("--iters", a->iters, "Timed runs")->capture_default_str()->check(opt::integer(1, 1000000));
  c->add_option("--json", a->json_out, "Write the per-run times as JSON");
  c->add_option("--latency-table", a->latency_table,
                "Measure the per-site latency table of the integer runtime on this machine (ms per image of each "
                "block site and of the rest, for vitq quantize --mixed-precision --mp-budget latency=MS) and add it to "
                "FILE (made if absent; same model shape, batch and threads). --model a quantized model: its width; "
                "a checkpoint: each of --widths, on MinMax plans of random images");
  c->add_option("--widths", a->widths, "--latency-table from a checkpoint: the widths to measure")
      ->delimiter(',')
      ->capture_default_str()
      ->check(opt::integer(kMinBits, kMaxBits));
  c->callback([a] { run_bench(*a); });
}

}  // namespace vitq
