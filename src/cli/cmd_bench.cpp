// vitq bench: forward latency of a model on random inputs (for the speed benchmarks).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "cli/commands.h"
#include "core/error.h"
#include "engine/vit_forward.h"
#include "model/vit_model.h"

namespace vitq {
namespace {

struct BenchArgs {
  std::string model, json_out;
  int batch = 1, threads = 0, warmup = 3, iters = 20;
};

void run_bench(const BenchArgs& a) {
  set_threads(a.threads);
  if (a.batch < 1 || a.iters < 1 || a.warmup < 0) fail(ErrorKind::Usage, "--batch and --iters must be >= 1");
  ViTModel m = load_vit_model(a.model);
  const ViTConfig& c = m.cfg;
  ViTForward fwd(m);
  const size_t img = size_t(c.in_chans) * c.img_size * c.img_size;
  avector<float> x(img * size_t(a.batch));
  std::mt19937 rng(0);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& v : x) v = nd(rng);
  std::vector<float> logits(size_t(a.batch) * size_t(c.num_classes));
  for (int i = 0; i < a.warmup; ++i) fwd.run(x.data(), a.batch, logits.data());
  std::vector<double> ms;
  for (int i = 0; i < a.iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fwd.run(x.data(), a.batch, logits.data());
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  const double med = sorted[sorted.size() / 2];
  std::printf("%s batch %d, %d threads: median %.3f ms per batch, %.3f ms per image (min %.3f, max %.3f)\n",
              c.architecture.c_str(), a.batch, omp_get_max_threads(), med, med / a.batch, sorted.front(),
              sorted.back());
  if (!a.json_out.empty()) {
    nlohmann::ordered_json j;
    j["model"] = a.model;
    j["batch"] = a.batch;
    j["threads"] = omp_get_max_threads();
    j["ms_per_batch"] = ms;
    j["median_ms_per_image"] = med / a.batch;
    std::ofstream f(a.json_out);
    f << j.dump(2) << "\n";
    if (!f) fail(ErrorKind::Io, a.json_out, ": write failed");
  }
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* c = app.add_subcommand("bench", "Forward latency on random inputs (median over --iters runs)");
  c->add_option("--model", a->model, "Checkpoint directory")->required();
  c->add_option("--batch", a->batch, "Images per forward")->capture_default_str();
  c->add_option("--threads", a->threads, "Threads (0 = all cores)")->capture_default_str();
  c->add_option("--warmup", a->warmup, "Untimed runs first")->capture_default_str();
  c->add_option("--iters", a->iters, "Timed runs")->capture_default_str();
  c->add_option("--json", a->json_out, "Write the per-run times as JSON");
  c->callback([a] { run_bench(*a); });
}

}  // namespace vitq
