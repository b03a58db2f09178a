// vitq synth: calibration images generated from the model itself (synth/synthesize.h), written as
// an ImageFolder tree that every --calib path reads unchanged.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/progress.h"
#include "cli/validators.h"
#include "core/error.h"
#include "data/dataset.h"
#include "data/encode_png.h"
#include "io/output_dir.h"
#include "model/vit_model.h"
#include "quant/calib_report.h"
#include "synth/synthesize.h"

namespace vitq {
namespace {

struct SynthArgs {
  std::string model, out, centres, class_map;
  int centres_per_class = 1, threads = 0;
  bool force = false, no_flip = false, quiet = false;
  SynthOptions opt;
  CLI::App* cmd = nullptr;
};

std::string class_dir(int cls) {
  char b[16];
  std::snprintf(b, sizeof b, "%04d", cls);
  return b;
}

void run_synth(SynthArgs& a) {
  set_threads(a.threads);
  a.opt.flip = !a.no_flip;
  if (a.centres.empty())
    for (const char* o : {"--centres-per-class", "--class-map", "--stats"})
      if (a.cmd->get_option(o)->count() > 0)
        fail(ErrorKind::Usage, o, " applies to the class centres: give --centres-from DIR (without it the synthesis is "
             "data-free)");
  StagedDir out(a.out, {"-o", {a.model, a.centres, a.class_map}, a.force});
  const ViTModel model = load_vit_model(a.model);
  const ViTConfig& cfg = model.cfg;
  const auto t0 = std::chrono::steady_clock::now();
  StatTargets centres;
  nlohmann::ordered_json centre_info = nullptr;
  if (!a.centres.empty()) {
    DatasetOptions dopt;
    dopt.class_map = a.class_map;
    dopt.use = DatasetUse::Calibration;
    const std::unique_ptr<Dataset> data = open_dataset(a.centres, dopt);
    std::fprintf(stderr, "class centres from %s (up to %d per class) ...\n", data->describe().c_str(),
                 a.centres_per_class);
    centres = centre_targets(model, *data, a.centres_per_class, a.opt.batch);
    centre_info = {{"from", a.centres}, {"per_class", a.centres_per_class}, {"images", centres.images},
                   {"classes", centres.classes.size()}};
    std::fprintf(stderr, "%zu class centres from %d images; LayerNorm inputs of %d layers\n", centres.classes.size(),
                 centres.images, centres.layers);
  } else {
    std::fprintf(stderr, "data-free: cross-entropy to evenly spread classes and the image priors only\n");
  }
  const auto t1 = std::chrono::steady_clock::now();
  const int batches = (a.opt.images + a.opt.batch - 1) / a.opt.batch;
  Progress bar("synth", size_t(batches) * size_t(a.opt.iters), a.quiet);
  const SynthResult r = synthesize(model, a.centres.empty() ? nullptr : &centres, a.opt, [&](const SynthProgress& p) {
    char s[160];
    std::snprintf(s, sizeof s, "images %d-%d  step %d/%d  loss %.4f (ce %.3f, stats %.4f, tv %.4f)", p.image0 + 1,
                  p.image0 + p.images, p.iter, p.iters, p.loss, p.ce, p.stats, p.tv);
    bar.update(size_t(p.image0 / a.opt.batch) * size_t(a.opt.iters) + size_t(p.iter), s);
  });
  bar.finish();
  const double gen_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  const double centre_s = std::chrono::duration<double>(t1 - t0).count();

  // OUT/<class>/synth_NNNNN.png, and OUT/class_map.txt naming each folder at its class's line, so
  // that the folders' labels are the model's class indices.
  const std::string& dir = out.path();
  std::vector<int> used;
  for (int i = 0; i < a.opt.images; ++i) {
    const std::string sub = dir + "/" + class_dir(r.classes[size_t(i)]);
    std::error_code ec;
    std::filesystem::create_directories(sub, ec);
    if (ec) fail(ErrorKind::Io, sub, ": cannot be created (", ec.message(), ")");
    char name[32];
    std::snprintf(name, sizeof name, "/synth_%05d.png", i);
    write_png(sub + name, stored_image(r, cfg, i));
  }
  {
    std::ofstream f(dir + "/class_map.txt");
    std::vector<bool> present(size_t(cfg.num_classes), false);
    for (int c : r.classes) present[size_t(c)] = true;
    int last = 0;
    for (int c = 0; c < cfg.num_classes; ++c)
      if (present[size_t(c)]) last = c;
    for (int c = 0; c <= last; ++c) f << (present[size_t(c)] ? class_dir(c) : "") << "\n";
    if (!f) fail(ErrorKind::Io, a.out, "/class_map.txt: write failed");
  }
  nlohmann::ordered_json rep;
  rep["model"] = a.model;
  rep["architecture"] = cfg.architecture;
  rep["images"] = a.opt.images;
  rep["mode"] = a.centres.empty() ? "data-free" : "class centres";
  rep["centres"] = centre_info;
  rep["options"] = {{"iters", a.opt.iters}, {"batch", a.opt.batch}, {"lr", a.opt.lr}, {"ce", a.opt.ce},
                    {"stats", a.opt.stats}, {"tv", a.opt.tv}, {"l2", a.opt.l2},
                    {"stat_weights", {{"global", a.opt.stat_weights.global}, {"jitter", a.opt.stat_weights.jitter},
                                      {"exact", a.opt.stat_weights.exact},
                                      {"jitter_mean", a.opt.stat_weights.jitter_mean},
                                      {"jitter_sd", a.opt.stat_weights.jitter_sd}}},
                    {"shift", a.opt.shift >= 0 ? a.opt.shift : cfg.img_size / 8}, {"flip", a.opt.flip},
                    {"seed", a.opt.seed}};
  rep["final"] = {{"ce", r.ce}, {"stats", r.stats}, {"tv", r.tv}, {"target_class_top1", r.hit_rate}};
  rep["seconds"] = {{"centres", centre_s}, {"generation", gen_s}};
  rep["threads"] = omp_get_max_threads();
  rep["peak_memory_mb"] = peak_rss_mb();
  {
    std::ofstream f(dir + "/report.json");
    f << rep.dump(1) << "\n";
    if (!f) fail(ErrorKind::Io, a.out, "/report.json: write failed");
  }
  out.commit();
  std::printf("wrote %d images to %s in %.1f s (%.1f s per image; peak memory %.0f MB); the model gives the "
              "target class to %.1f %% of them\n",
              a.opt.images, a.out.c_str(), gen_s, gen_s / a.opt.images, peak_rss_mb(), 100.0 * r.hit_rate);
}

}  // namespace

void add_synth_command(CLI::App& app) {
  auto a = std::make_shared<SynthArgs>();
  CLI::App* c = app.add_subcommand(
      "synth",
      "Generate calibration images from the model itself (FDDA / DeepInversion for ViTs): pixels optimised so the "
      "model gives each image its class and, with --centres-from, so its LayerNorm input statistics match class "
      "centres from one real image per class (with FDDA's jitter). Writes an ImageFolder tree of PNGs for --calib");
  c->add_option("--model", a->model, "Checkpoint directory (FP32)")->required()->check(CLI::ExistingDirectory);
  c->add_option("-o,--out", a->out, "Output directory: OUT/<class>/synth_NNNNN.png, class_map.txt, report.json")
      ->required();
  c->add_option("--images", a->opt.images, "Images to generate")->check(opt::integer(1, 100000))->capture_default_str();
  c->add_option("--centres-from", a->centres,
                "Real images (ImageFolder or IDX) whose LayerNorm statistics are the class centres; without it the "
                "synthesis is data-free (cross-entropy and priors only)");
  c->add_option("--centres-per-class", a->centres_per_class, "Images of each class averaged into its centre")
      ->check(opt::integer(1, 1000000))
      ->capture_default_str();
  c->add_option("--class-map", a->class_map, "Class map of the --centres-from ImageFolder");
  c->add_option("--iters", a->opt.iters, "Adam steps per batch of images")->check(opt::integer(1, 1000000))
      ->capture_default_str();
  c->add_option("--batch", a->opt.batch, "Images optimised together")->check(opt::integer(1, opt::kMaxBatch))
      ->capture_default_str();
  c->add_option("--lr", a->opt.lr, "Adam's step in normalised pixel units (cosine-decayed)")
      ->check(opt::real(0, 100, true))
      ->capture_default_str();
  c->add_option("--ce", a->opt.ce, "Weight of the cross-entropy to each image's class")->check(opt::real(0, 1e6))
      ->capture_default_str();
  c->add_option("--stats", a->opt.stats, "Weight of the LayerNorm statistics alignment (with --centres-from)")
      ->check(opt::real(0, 1e6))
      ->capture_default_str();
  c->add_option("--tv", a->opt.tv, "Weight of the total-variation prior")->check(opt::real(0, 1e6))->capture_default_str();
  c->add_option("--l2", a->opt.l2, "Weight of the pixel-magnitude prior")->check(opt::real(0, 1e6))->capture_default_str();
  c->add_option("--shift", a->opt.shift, "Largest random circular shift per step, pixels (-1: image size / 8)")
      ->check(opt::integer(-1, 100000))
      ->capture_default_str();
  c->add_flag("--no-flip", a->no_flip, "Do not mirror the images at random during the optimisation");
  c->add_option("--seed", a->opt.seed, "Seed of the initial noise, jitter and shifts")->check(opt::seed())
      ->capture_default_str();
  c->add_option("--threads", a->threads, "Threads (0 = all cores)")->check(opt::integer(0, opt::kMaxThreads))
      ->capture_default_str();
  c->add_flag("--force", a->force, "Replace a non-empty output directory of files");
  c->add_flag("-q,--quiet", a->quiet, "No progress bar");
  a->cmd = c;
  c->callback([a] { run_synth(*a); });
}

}  // namespace vitq
