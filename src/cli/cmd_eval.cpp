// vitq eval: accuracy and speed of a model on a labelled dataset.
#include <omp.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/validators.h"
#include "cli/progress.h"
#include "core/error.h"
#include "engine/non_finite_probe.h"
#include "io/output_dir.h"
#include "eval/evaluate.h"
#include "eval/shards.h"
#include "model/vit_model.h"
#include "quant/plan.h"
#include "runtime/int_vit_forward.h"
#include "runtime/model_runner.h"
#include "runtime/quantized_model.h"

namespace vitq {
namespace {

struct EvalArgs {
  std::string model, data, class_map, json_out, plan, reference;
  std::optional<std::string> shard;
  std::vector<std::string> merge;
  bool no_auto_map = false, skip_bad = false, quiet = false, simulate = false, allow_non_finite = false;
  int batch = 16, threads = 0;
  size_t limit = 0;
  uint64_t seed = 0;
};

// The accuracy lines of a result (the --json document of a run, or of merged shards).
void print_accuracy(const nlohmann::ordered_json& j) {
  const size_t images = j["images"], top1 = j["top1_correct"], top5 = j["top5_correct"], non_finite = j["non_finite"];
  std::printf("top-1    %.2f %%  (%zu/%zu)\n", j["top1"].get<double>(), top1, images);
  std::printf("top-5    %.2f %%  (%zu/%zu)\n", j["top5"].get<double>(), top5, images);
  if (!j["skipped"].empty()) std::printf("skipped  %zu unreadable images (not counted)\n", j["skipped"].size());
  if (non_finite)
    std::printf("non-finite  %zu images with NaN/Inf logits, counted as wrong (--allow-non-finite)\n", non_finite);
  if (j.contains("reference")) {
    const auto& r = j["reference"];
    std::printf("vs ref   agreement %.2f %%  (%zu/%zu same top-1 as %s), mean KL(ref || model) %.5f\n",
                r["agreement"].get<double>(), r["agreement_count"].get<size_t>(), images,
                r["model"].get<std::string>().c_str(), r["kl_mean"].get<double>());
  }
}

// --merge: the shards' JSON results joined into the unsharded run's.
void run_merge(const EvalArgs& a) {
  std::unique_ptr<StagedFile> json_out;
  if (!a.json_out.empty()) json_out = std::make_unique<StagedFile>(a.json_out, OutputCheck{"--json", a.merge});
  const nlohmann::ordered_json j = merge_eval_shards(a.merge);
  std::printf("merged   %zu shards of %s on %s (%s)\n", a.merge.size(), j["model"].get<std::string>().c_str(),
              j["data"].get<std::string>().c_str(), j["engine"].get<std::string>().c_str());
  print_accuracy(j);
  if (json_out) json_out->commit(j.dump(2) + "\n");
}

// The usage checks of a run; returns whether --model is a quantized model directory (docs/FORMAT.md).
bool check_run_options(const EvalArgs& a) {
  if (a.model.empty() || a.data.empty())
    fail(ErrorKind::Usage, a.model.empty() ? "--model" : "--data", " is required (or --merge SHARD.json...)");
  // A quantized model directory runs in integers, or with --simulate through the simulator on its
  // dequantized weights; an FP32 checkpoint runs in FP32 or simulates --plan.
  const bool quantized = is_quantized_model_dir(a.model);
  if (quantized && !a.plan.empty())
    fail(ErrorKind::Usage, a.model, " is a quantized model directory with its own plan; --plan is for FP32 checkpoints "
         "(use --simulate to run the quantized model quantize-dequantize)");
  if (!quantized && a.simulate)
    fail(ErrorKind::Usage, "--simulate needs a quantized model directory (from 'vitq quantize -o DIR'); for an FP32 "
         "checkpoint give --plan");
  return quantized;
}

std::unique_ptr<Dataset> open_eval_data(const EvalArgs& a, const ViTConfig& cfg) {
  DatasetOptions dopt;
  dopt.class_map = a.class_map;
  dopt.auto_class_map = !a.no_auto_map;
  std::unique_ptr<Dataset> data = open_dataset(a.data, dopt);
  if (data->num_classes() > cfg.num_classes)
    fail(ErrorKind::Data, a.data, ": dataset has ", data->num_classes(), " classes but the model has ",
         cfg.num_classes);
  // Labels from sorted folder names are model class indices only if every class has a folder:
  // a tree of only cat/ and dog/ would be classes 0 and 1 and score 0 % without a word.
  if (data->classes_from_folder_names() && data->num_classes() != cfg.num_classes)
    std::fprintf(stderr,
                 "warning: %s has %d class folders but the model has %d classes, and no class map was given: "
                 "labels are the indices of the sorted folder names, so they are wrong unless the folders are "
                 "the model's first %d classes in order. Give --class-map FILE (the model's class folder names, "
                 "one per line) to label them correctly.\n",
                 a.data.c_str(), data->num_classes(), cfg.num_classes, data->num_classes());
  return data;
}

// --reference: the FP32 checkpoint run on the same preprocessed images (null without it).
std::unique_ptr<ViTModel> load_reference(const EvalArgs& a, const ViTConfig& cfg) {
  if (a.reference.empty()) return nullptr;
  if (is_quantized_model_dir(a.reference))
    fail(ErrorKind::Usage, "--reference ", a.reference, " is a quantized model directory; give the FP32 checkpoint");
  auto ref = std::make_unique<ViTModel>(load_vit_model(a.reference, {a.allow_non_finite}));
  const Preprocess &p = cfg.preprocess, &q = ref->cfg.preprocess;
  if (ref->cfg.num_classes != cfg.num_classes || p.channels != q.channels || p.height != q.height ||
      p.width != q.width || p.interp != q.interp || p.crop_pct != q.crop_pct || p.mean != q.mean || p.std != q.std ||
      p.resize_exact != q.resize_exact)
    fail(ErrorKind::Usage, "--reference ", a.reference, ": its classes or preprocessing differ from ", a.model,
         "'s, so the two cannot be compared image by image");
  return ref;
}

void print_run_header(const EvalArgs& a, const ModelRunner& runner, bool quantized, const Dataset& data,
                      size_t images, size_t selected, const Shard& shard) {
  const ViTConfig& cfg = runner.config();
  const QuantPlan* plan = runner.plan();
  if (quantized)
    std::printf("model    %s (%s, quantized model directory)\n", a.model.c_str(), cfg.architecture.c_str());
  else
    std::printf("model    %s (%s, %.2f M parameters)\n", a.model.c_str(), cfg.architecture.c_str(),
                double(runner.float_model()->parameter_count()) / 1e6);
  std::printf("data     %s\n", data.describe().c_str());
  if (quantized) {
    const IntViTForward* ifwd = runner.integer_forward();
    const int amx = ifwd ? ifwd->amx_attention_blocks() : 0;
    const std::string engine =
        a.simulate ? "simulated: quantize-dequantize, float GEMM"
        : amx > 0  ? cat("integer: int8 GEMMs (oneDNN u8 x s8; attention of ", amx, "/", cfg.depth,
                         " blocks on vitq's AMX kernels)")
                   : std::string("integer: int8 GEMMs (oneDNN u8 x s8)");
    std::printf("plan     %s/plan.json (%s, %zu quantized sites; %s)\n", a.model.c_str(), plan->method.c_str(),
                plan->sites.size(), engine.c_str());
  }
  else if (plan)
    std::printf("plan     %s (%s, %zu quantized sites; simulated: quantize-dequantize, float GEMM)\n",
                a.plan.c_str(), plan->method.c_str(), plan->sites.size());
  if (images != data.size())
    std::printf("subset   %zu of %zu images (--limit %zu, --seed %llu)\n", images, data.size(), a.limit,
                static_cast<unsigned long long>(a.seed));
  if (shard.sharded())
    std::printf("shard    %d/%d: %zu of the %zu selected images (vitq eval --merge joins the shards' --json)\n",
                shard.index, shard.count, images, selected);
  std::fflush(stdout);
}

EvalOptions eval_options(const EvalArgs& a, ModelRunner& runner) {
  EvalOptions opt;
  opt.batch = a.batch;
  opt.on_bad_image = a.skip_bad ? BadImagePolicy::Skip : BadImagePolicy::Fail;
  opt.allow_non_finite = a.allow_non_finite;
  opt.locate_non_finite = [&runner](const float* image) -> std::string {
    if (!runner.float_forward()) return "the integer run (vitq eval --simulate on this directory names the site)";
    NonFiniteProbe probe(runner.hook());
    std::vector<float> lg(size_t(runner.config().num_classes));
    runner.float_forward()->run(image, 1, lg.data(), &probe);
    return probe.found().empty() ? "the classifier head" : probe.found();
  };
  return opt;
}

// The --json document of a run (print_accuracy reads it too).
nlohmann::ordered_json result_json(const EvalArgs& a, const ModelRunner& runner, bool quantized, const Dataset& data,
                                   const EvalResult& r, const ReferenceAgreement* agreement, const Shard& shard,
                                   size_t selected) {
  nlohmann::ordered_json j;
  j["model"] = a.model;
  j["architecture"] = runner.config().architecture;
  j["plan"] = quantized ? a.model + "/plan.json" : a.plan;
  j["engine"] = runner.engine();
  j["data"] = a.data;
  j["dataset"] = data.describe();
  j["images"] = r.images;
  j["top1"] = r.top1_pct();
  j["top5"] = r.top5_pct();
  j["top1_correct"] = r.top1;
  j["top5_correct"] = r.top5;
  j["skipped"] = r.skipped;
  j["non_finite"] = r.non_finite;
  j["limit"] = a.limit;
  j["seed"] = a.seed;
  j["batch"] = a.batch;
  j["threads"] = omp_get_max_threads();
  j["seconds"] = r.seconds;
  j["forward_seconds"] = r.forward_seconds;
  j["images_per_second"] = r.seconds > 0 ? double(r.images) / r.seconds : 0.0;
  if (agreement)
    j["reference"] = {{"model", a.reference}, {"agreement", agreement->agreement_pct()},
                      {"agreement_count", agreement->agree()}, {"kl_mean", agreement->kl_mean()},
                      {"kl_sum", agreement->kl_sum()}};
  if (shard.sharded()) j["shard"] = {{"index", shard.index}, {"count", shard.count}, {"selected", selected}};
  j["evaluated"] = r.evaluated;      // dataset index of each evaluated image
  j["predictions"] = r.predictions;  // its top-1 class
  return j;
}

void run_eval(const EvalArgs& a) {
  if (!a.merge.empty()) return run_merge(a);
  const bool quantized = check_run_options(a);
  const Shard shard = a.shard ? parse_shard(*a.shard) : Shard{};
  set_threads(a.threads);
  // --json: never one of the inputs; checked writable now, written whole at the end.
  std::unique_ptr<StagedFile> json_out;
  if (!a.json_out.empty())
    json_out = std::make_unique<StagedFile>(a.json_out,
                                            OutputCheck{"--json", {a.model, a.data, a.plan, a.class_map, a.reference}});
  ModelRunner runner(a.model, {a.plan, a.simulate, a.allow_non_finite});
  const ViTConfig& cfg = runner.config();
  std::unique_ptr<Dataset> data = open_eval_data(a, cfg);
  std::vector<size_t> idx = select_subset(data->size(), a.limit, a.seed);
  const size_t selected = idx.size();
  idx = shard_slice(idx, shard);
  std::unique_ptr<ViTModel> ref = load_reference(a, cfg);
  print_run_header(a, runner, quantized, *data, idx.size(), selected, shard);

  EvalOptions opt = eval_options(a, runner);
  ReferenceAgreement agreement;
  std::unique_ptr<ViTForward> ref_fwd;
  std::vector<float> ref_logits;
  if (ref) {
    ref_fwd = std::make_unique<ViTForward>(*ref);
    opt.on_batch = [&](const float* images, int n, const float* logits) {
      ref_logits.resize(size_t(n) * size_t(ref->cfg.num_classes));
      ref_fwd->run(images, n, ref_logits.data());
      agreement.add(logits, ref_logits.data(), n, ref->cfg.num_classes);
    };
  }
  ForwardFn forward = [&](const float* x, int b, float* logits) { runner.run(x, b, logits); };
  Progress bar("eval", idx.size(), a.quiet);
  EvalResult r = evaluate(cfg, forward, *data, idx, opt, [&](const EvalProgress& p) {
    bar.update(p.done, cat("top-1 ", p.done ? 100.0 * double(p.top1) / double(p.done) : 0.0, "%"));
  });
  bar.finish();

  for (const auto& s : r.skipped) std::fprintf(stderr, "skipped: %s\n", s.c_str());
  const nlohmann::ordered_json j = result_json(a, runner, quantized, *data, r, ref ? &agreement : nullptr, shard, selected);
  print_accuracy(j);
  std::printf("speed    %.1f images/s end to end, %.1f images/s in the forward (batch %d, %d threads)\n",
              j["images_per_second"].get<double>(),
              r.forward_seconds > 0 ? double(r.images) / r.forward_seconds : 0.0, a.batch, j["threads"].get<int>());
  if (json_out) json_out->commit(j.dump(2) + "\n");
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* c = app.add_subcommand("eval", "Top-1/top-5 accuracy and speed of a model on a labelled dataset");
  c->add_option("--model", a->model,
                "Checkpoint directory: model.safetensors + config.json (timm or Hugging Face), or a quantized model "
                "directory from 'vitq quantize -o' (run in integers). Required unless --merge");
  c->add_option("--data", a->data,
                "Dataset: an ImageFolder directory (one subfolder per class; JPEG/PNG), or MNIST-style IDX "
                "files (a *-images-idx3-ubyte[.gz] file, or a directory holding t10k-*/train-* files). Required "
                "unless --merge");
  c->add_option("--plan", a->plan, "Quantization plan (plan.json from 'vitq quantize') to simulate");
  c->add_flag("--simulate", a->simulate,
              "With a quantized model directory: run its plan quantize-dequantize with float GEMMs (the "
              "simulator) instead of in integers");
  c->add_option("--class-map", a->class_map,
                "Class map file: one class folder name per line, class index = line number (timm "
                "--class-map). Without it, a class_map.txt in the data directory or its parent is used if "
                "present, else sorted folder order");
  c->add_flag("--no-auto-class-map", a->no_auto_map, "Do not look for class_map.txt; use sorted folder order");
  c->add_option("--batch", a->batch, "Images per forward pass")->capture_default_str()->check(opt::integer(1, opt::kMaxBatch));
  c->add_option("--threads", a->threads, "Threads (0 = all cores)")->capture_default_str()->check(opt::integer(0, opt::kMaxThreads));
  c->add_option("--limit", a->limit, "Evaluate a deterministic random subset of N images (0 = all)")->check(opt::integer(0, 1LL << 40));
  c->add_option("--seed", a->seed, "Seed of the --limit subset")->capture_default_str()->check(opt::seed());
  c->add_option("--reference", a->reference,
                "An FP32 checkpoint (e.g. the model a quantized one came from) run on the same images: reports the "
                "share of images with the same top-1 prediction and the mean KL divergence KL(p_ref || p) of the "
                "two softmax outputs (the paired measures of how far quantization moved the model; the reference "
                "costs one FP32 forward per image; the end-to-end speed includes it)");
  c->add_option("--json", a->json_out,
                "Also write the results as JSON to this file (replaced whole at the end; never one of the inputs)");
  c->add_flag("--skip-bad-images", a->skip_bad,
              "Report unreadable/corrupt images and go on (default: stop with an error naming the file)");
  c->add_option("--shard", a->shard,
                "K/N: evaluate only the K-th of N contiguous slices of the images (1 <= K <= N; after --limit), "
                "e.g. one task of a Slurm array; give each shard its own --json and join them with --merge");
  CLI::Option* merge = c->add_option("--merge", a->merge,
                "SHARD.json...: join the --json results of shards 1..N of one run (any order) into the result of the "
                "unsharded run (same counts and per-image predictions); prints it, and writes it with --json");
  for (const char* name : {"--model", "--data", "--plan", "--simulate", "--class-map", "--reference", "--shard",
                           "--limit", "--skip-bad-images"})
    merge->excludes(name);
  add_allow_non_finite_flag(c, a->allow_non_finite);
  c->add_flag("-q,--quiet", a->quiet, "No progress output");
  c->callback([a] { run_eval(*a); });
}

}  // namespace vitq
