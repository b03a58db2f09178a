// vitq quantize: calibrate a quantization plan with a PTQ method and write it with a report.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <chrono>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/frontier_svg.h"
#include "cli/method_options_cli.h"
#include "cli/quantize_target.h"
#include "cli/model_export.h"
#include "cli/progress.h"
#include "cli/validators.h"
#include "core/error.h"
#include "io/output_dir.h"
#include "model/vit_model.h"
#include "quant/calib_data.h"
#include "quant/gelu_table.h"
#include "quant/calib_random.h"
#include "quant/calib_report.h"
#include "quant/calibrate.h"
#include "quant/method.h"
#include "quant/mixed_precision.h"
#include "quant/mp_search.h"
#include "runtime/stage_latency.h"

namespace vitq {
namespace {

struct QuantizeArgs {
  std::string model, calib, class_map, method = "liu2021", out, calib_inputs = "quant";
  std::string target = "cpu-vnni";  // --target: a built-in hardware description or a file
  int bits = 0, wbits = 0, abits = 0, threads = 0, batch = 32, mixed_precision = 0, mp_svd_images = 32;
  std::vector<int> mp_candidates;
  std::string mp_sensitivity = "kl";
  int mp_kl_images = 64, mp_check = 8, mp_check_images = 0, mp_holdout = 4;
  double mp_min_gain_se = 2.0;
  std::string mp_budget;        // --mp-budget KIND=VALUE (empty: the uniform width's size)
  MpBudget budget;              // mp_budget parsed (run_quantize)
  std::string latency_table;    // --latency-table FILE
  int latency_batch = 8;        // --latency-batch: batch of latencies measured here
  size_t calib_size = 256;
  bool calib_mirror = false;  // --calib-mirror: each calibration image also mirrored (add_mirrored_views)
  int random_calib = 0;     // --random-calibration N: N random images instead of --calib
  bool plan_only = false;   // --plan-only: no quantized model directory
  bool force = false;       // --force: replace a non-empty output directory
  bool allow_non_finite = false;
  bool fast = false;        // --fast: the method's measured fast configuration (MethodOptions::apply_fast)
  bool smooth_ln = false;   // --smooth-ln
  bool ln_center = false;   // --ln-center
  bool ln_reparam = false;  // --ln-reparam
  double smooth_alpha = 0.5;
  bool unsigned_softmax = false;
  std::string softmax_grid;  // --softmax-grid (empty: signed, or unsigned with --unsigned-softmax)
  bool per_token = false;    // --per-token
  bool per_token_qk = false; // --per-token-qk
  int patch_embed_abits = 0; // --patch-embed-abits
  bool rotate = false, rotate_mlp = false;  // --rotate, --rotate-mlp
  uint64_t rotation_seed = 0;
  float token_clip = 1.0f;      // --token-clip
  int token_group = 0;          // --token-group
  std::string weight_rounding;  // --weight-rounding (empty: nearest, or the method's recipe)
  GptqOptions gptq;
  bool ridge = false;           // --ridge-update
  RidgeOptions ridge_opt;
  std::string ridge_target = "local";
  ReconOptions recon;           // --recon-iters, ...
  std::string recon_target = "local";
  int gelu_table = 0;           // --gelu-table BITS (0 = GELU in float)
  int softmax_table = 0;        // --softmax-table BITS (0 = float softmax)
  bool qwt = false;             // --qwt
  CompensationOptions qwt_opt;
  std::string qwt_target = "local";
  CLI::App* cmd = nullptr;      // to tell which options the command line gave
  bool quantize_head = false, quiet = false;
  bool skip_bad = false;    // --skip-bad-images
  MethodConfig methods;     // every method's options (each method declares its own)
  MethodOptionFlags method_flags;  // which of them the command line gave
};

void print_table(const CalibrationResult& r) {
  std::printf("\n%-26s %5s %12s %12s %10s %10s %11s %8s\n", "site", "W/A", "x step", "w step", "pearson0",
              "pearson", "mse", "seconds");
  for (const auto& s : r.sites)
    std::printf("%-26s %2d/%-2d %12.5g %12.5g %10.6f %10.6f %11.4g %8.2f\n", s.site.c_str(), s.bits.w, s.bits.x,
                double(s.x_scale), double(s.w_scale), s.sim_before, s.sim_after, s.mse_after, s.seconds);
  std::printf("pearson0 = similarity at max-based steps (MinMax), pearson = with the method's plan; both are the\n"
              "mean over calibration images of the Pearson correlation of the site output with the FP output.\n");
}

// The method's recipe (Method::recipe), shaped by the target, for every driver option the
// command line did not give; returns what it set, for the header (and in `dropped` what the
// target left out).
std::string apply_recipe(const Method& method, QuantizeArgs& a, CalibOptions& opt, const Target& target,
                         std::string& dropped) {
  const Recipe r = recipe_for_target(method.recipe(a.wbits, a.abits), target, dropped);
  auto given = [&](const char* flag) { return a.cmd->get_option(flag)->count() > 0; };
  std::string out;
  auto note = [&](const std::string& s) { out += (out.empty() ? "" : ", ") + s; };
  if (r.softmax && !given("--softmax-grid") && !given("--unsigned-softmax")) {
    opt.grids.softmax = *r.softmax;
    note(cat(grid_name(*r.softmax), " softmax grid"));
  }
  if (r.per_token && !given("--per-token")) {
    a.per_token = opt.grids.per_token = *r.per_token;
    if (*r.per_token) note("per-token inputs");
  }
  if (r.per_token_qk && !given("--per-token-qk")) {
    a.per_token_qk = opt.grids.per_token_qk = *r.per_token_qk;
    if (*r.per_token_qk) note("per-token Q and K");
  }
  if (r.patch_embed_abits && !given("--patch-embed-abits")) {
    opt.grids.patch_embed_abits = *r.patch_embed_abits;
    note(cat("patch embedding input at ", *r.patch_embed_abits, " bits"));
  }
  if (r.token_clip && !given("--token-clip")) {
    opt.grids.token_clip = *r.token_clip;
    note(cat("token ranges clipped to ", *r.token_clip));
  }
  if (r.token_group && !given("--token-group")) {
    opt.grids.token_group = *r.token_group;
    if (*r.token_group) note(cat("token ranges per ", *r.token_group, " channels"));
  }
  if (r.gptq && !given("--weight-rounding")) {
    opt.weight_rounding = *r.gptq ? WeightRounding::Gptq : WeightRounding::Nearest;
    if (*r.gptq) note("GPTQ weight rounding");
  }
  if (r.ridge && !given("--ridge-update")) {
    opt.ridge = *r.ridge;
    if (opt.ridge) note("ridge weight update");
  }
  if (r.qwt && !given("--qwt")) {
    opt.compensation.on = *r.qwt;
    if (opt.compensation.on) note("QwT compensation");
  }
  if (r.recon_iters && !given("--recon-iters")) {
    opt.recon.iters = a.recon.iters = *r.recon_iters;
    if (a.recon.iters) note(cat("block reconstruction (", a.recon.iters, " steps per block)"));
  }
  if (r.recon_head_share && !given("--recon-head-share") && a.recon.iters > 0) {
    opt.recon.head_share = a.recon.head_share = *r.recon_head_share;
    if (a.recon.head_share > 0) note(cat("last block's class token given ", a.recon.head_share, " of its reconstruction loss"));
  }
  if (r.recon_act_lr && !given("--recon-act-lr") && a.recon.iters > 0) {
    opt.recon.act_lr = a.recon.act_lr = *r.recon_act_lr;
    if (a.recon.act_lr > 0) note(cat("activation quantizers trained in the reconstruction (lr ", a.recon.act_lr, ")"));
  }
  if (r.rotate && !given("--rotate")) {
    a.rotate = *r.rotate;
    if (a.rotate) note("rotation");
  }
  if (r.rotate_mlp && !given("--rotate-mlp")) {
    a.rotate_mlp = *r.rotate_mlp;
    if (a.rotate_mlp) note("MLP rotation");
  }
  return out;
}

// --bits / --wbits / --abits / --mixed-precision resolved into a.wbits and a.abits (or a usage error).
void resolve_bits(QuantizeArgs& a) {
  if (a.mixed_precision) {
    if (a.bits || a.wbits || a.abits)
      fail(ErrorKind::Usage, "--mixed-precision B sets the bits per module; do not also give --bits/--wbits/--abits");
    if (a.mixed_precision < kMinBits || a.mixed_precision > kMaxBits)
      fail(ErrorKind::Usage, "--mixed-precision must be in [", kMinBits, ", ", kMaxBits, "]");
    a.bits = a.mixed_precision;
  }
  if (a.bits) {
    if (a.wbits || a.abits) fail(ErrorKind::Usage, "give either --bits or --wbits/--abits, not both");
    a.wbits = a.abits = a.bits;
  }
  if (!a.wbits || !a.abits) fail(ErrorKind::Usage, "give --bits B, or --wbits B and --abits B");
  for (int b : {a.wbits, a.abits})
    if (b < kMinBits || b > kMaxBits) fail(ErrorKind::Usage, "bit-widths must be in [", kMinBits, ", ", kMaxBits, "]");
}

// The calibration images: a seeded subset of --calib (then `data` holds the dataset), or
// --random-calibration's standard normal pixels.
CalibrationSet load_calibration(QuantizeArgs& a, const ViTModel& model, std::unique_ptr<Dataset>& data) {
  if (a.random_calib > 0 ? !a.calib.empty() : a.calib.empty())
    fail(ErrorKind::Usage, "give either --calib DIR or --random-calibration N (random images, for speed tests)");
  if (a.random_calib > 0) {
    a.calib = cat("random:", a.random_calib);
    return random_calibration_set(a.random_calib, a.methods.common.seed, model.cfg.preprocess);
  }
  DatasetOptions dopt;
  dopt.class_map = a.class_map;
  dopt.use = DatasetUse::Calibration;  // a directory of IDX files: the training split, no labels
  data = open_dataset(a.calib, dopt);
  std::fprintf(stderr, "loading calibration images from %s ...\n", data->describe().c_str());
  CalibrationSet cs = load_calibration_set(*data, a.calib_size, a.methods.common.seed, model.cfg.preprocess, a.skip_bad);
  for (const auto& s : cs.skipped) std::fprintf(stderr, "skipped: %s\n", s.c_str());
  if (!cs.skipped.empty())
    std::fprintf(stderr, "warning: %zu unreadable calibration images skipped; calibrating on the %d others\n",
                 cs.skipped.size(), cs.n);
  return cs;
}

// The driver options the command line gives (the method's recipe fills in the rest).
CalibOptions calib_options(const QuantizeArgs& a) {
  CalibOptions opt;
  opt.bits = {a.wbits, a.abits};
  opt.inputs = a.calib_inputs == "fp" ? CalibInputs::FP : CalibInputs::Quantized;
  opt.quantize_head = a.quantize_head;
  if (a.unsigned_softmax && !a.softmax_grid.empty() && a.softmax_grid != "unsigned")
    fail(ErrorKind::Usage, "--unsigned-softmax and --softmax-grid ", a.softmax_grid, " contradict each other");
  if (a.unsigned_softmax || a.softmax_grid == "unsigned") opt.grids.softmax = Grid::Unsigned;
  if (a.softmax_grid == "log2") opt.grids.softmax = Grid::Log2;
  if (a.softmax_grid == "float") opt.grids.softmax = Grid::Float;
  if (a.softmax_grid == "logsqrt2") opt.grids.softmax = Grid::LogSqrt2;
  opt.grids.per_token = a.per_token;
  opt.grids.per_token_qk = a.per_token_qk;
  opt.grids.token_clip = a.token_clip;
  opt.grids.token_group = a.token_group;
  opt.grids.patch_embed_abits = a.patch_embed_abits;
  if (a.smooth_ln) opt.transforms.smooth_ln_alpha = a.smooth_alpha;
  opt.transforms.ln_center = a.ln_center;
  opt.transforms.ln_reparam = a.ln_reparam;
  if (a.weight_rounding == "gptq") opt.weight_rounding = WeightRounding::Gptq;
  opt.gptq = a.gptq;
  opt.ridge = a.ridge;
  opt.ridge_opt = a.ridge_opt;
  opt.ridge_opt.target = a.ridge_target == "fp" ? RidgeTarget::Fp : RidgeTarget::Local;
  opt.recon = a.recon;
  opt.recon.target = a.recon_target == "local" ? ReconTarget::Local : ReconTarget::Fp;
  opt.recon.seed = a.methods.common.seed;
  opt.compensation = a.qwt_opt;
  opt.compensation.on = a.qwt;
  opt.compensation.target = a.qwt_target == "fp" ? CompensationTarget::Fp : CompensationTarget::Local;
  opt.batch = a.batch;
  return opt;
}

void print_header(const QuantizeArgs& a, const ViTModel& model, const Method& method, const CalibOptions& opt,
                  const CalibrationSet& cs, const Dataset* data, const std::string& recipe, const Target& target,
                  const std::string& dropped) {
  std::printf("model    %s (%s)\n", a.model.c_str(), model.cfg.architecture.c_str());
  std::printf("target   %s: %s\n", target.name.c_str(), target.summary.c_str());
  if (!dropped.empty()) std::printf("         changed for the target (it cannot run them): %s\n", dropped.c_str());
  std::printf("method   %s, W%dA%d, %s\n", method.name().c_str(), a.wbits, a.abits,
              method.settings(opt.grids).dump().c_str());
  std::printf("calib    %d images%s from %s (%s); site inputs from the %s model\n", cs.n,
              cs.mirrored ? cat(" (", cs.n / 2, " and each mirrored)").c_str() : "", a.calib.c_str(),
              data ? data->describe().c_str() : "standard normal pixels", opt.inputs == CalibInputs::FP ? "FP32" : "partly quantized");
  if (!cs.skipped.empty())
    std::printf("skipped  %zu unreadable calibration images (listed in plan.json)\n", cs.skipped.size());
  std::printf("head     %s\n", opt.quantize_head ? "quantized" : "kept in FP32 (use --quantize-head to quantize it)");
  if (!recipe.empty()) std::printf("recipe   %s (the method's at W%dA%d; each can be overridden)\n", recipe.c_str(), a.wbits, a.abits);
  if (a.smooth_ln)
    std::printf("smooth   LayerNorm smoothing, alpha %g: qkv and fc1 calibrated on the rewritten model\n", a.smooth_alpha);
  if (a.ln_center)
    std::printf("center   LayerNorm centring: qkv and fc1 inputs centred per channel, the shift in the layer's bias\n");
  std::fflush(stdout);
}

// The calibration itself (with --mixed-precision: its sensitivity and perturbation passes too,
// their report in `mp_report`), with a progress bar.
CalibrationResult calibrate(const QuantizeArgs& a, const ViTModel& model, const CalibrationSet& cs,
                            Method& method, const CalibOptions& opt, const Target& target,
                            nlohmann::ordered_json& mp_report, LatencyTable& latency) {
  Progress bar("calibrate", 1, a.quiet);
  auto on_progress = [&](const CalibProgress& p) {
    if (!p.event.empty()) {
      if (!a.quiet) std::fprintf(stderr, "\n%s\n", p.event.c_str());
      return;
    }
    bar.set_total(p.total);
    bar.update(p.done, p.site);
  };
  CalibrationResult r;
  if (a.mixed_precision) {
    MixedPrecisionOptions mpo;
    mpo.target_bits = a.mixed_precision;
    mpo.candidates = a.mp_candidates;
    mpo.max_bits = target.max_bits;  // the default candidates stop at what the target runs
    mpo.svd_images = a.mp_svd_images;
    mpo.sensitivity = a.mp_sensitivity == "nuclear" ? MpSensitivity::Nuclear : MpSensitivity::EndToEnd;
    mpo.kl_images = a.mp_kl_images;
    mpo.check_points = a.mp_check;
    mpo.check_images = a.mp_check_images;
    mpo.holdout = a.mp_holdout;
    mpo.min_gain_se = a.mp_min_gain_se;
    mpo.budget_kind = a.budget.kind;
    mpo.budget_value = a.budget.value;
    if (mpo.budget_kind == BudgetKind::Latency || !a.latency_table.empty()) {
      mpo.latency = &latency;
      if (a.latency_table.empty()) latency = latency_table_for(model.cfg, a.latency_batch);
      mpo.measure_latency = [&](const QuantPlan& p) {
        const QuantizedViT q = quantize_model(model, p);
        return measure_stage_latency(q, latency.batch, 2, 5, "mixed precision");
      };
    }
    MixedPrecisionResult mr = calibrate_mixed_precision(
        model, cs.images.data(), cs.n, method, opt, mpo,
        [&](const std::string& st) {
          bar.finish();
          if (!a.quiet) std::fprintf(stderr, "mixed precision: %s\n", st.c_str());
          bar = Progress("calibrate", 1, a.quiet);
        },
        on_progress);
    r = std::move(mr.final);
    mp_report = std::move(mr.report);
  } else {
    Calibrator cal(model, cs.images.data(), cs.n);
    r = cal.run(method, opt, on_progress);
  }
  bar.finish();
  return r;
}

// What the plan records of the command line besides the method's own settings.
void record_settings(const QuantizeArgs& a, const CalibOptions& opt, const CalibrationSet& cs,
                     const std::string& recipe, QuantPlan& plan) {
  plan.calibration = cs.identity(a.calib, a.methods.common.seed);
  plan.calibration["inputs"] = opt.inputs == CalibInputs::FP ? "fp" : "quantized";
  plan.settings["wbits"] = a.wbits;
  plan.settings["abits"] = a.abits;
  plan.settings["quantize_head"] = opt.quantize_head;
  if (a.smooth_ln) plan.settings["smooth_ln_alpha"] = a.smooth_alpha;
  if (a.ln_center) plan.settings["ln_center"] = true;
  if (a.ln_reparam) plan.settings["ln_reparam"] = true;
  if (!recipe.empty()) plan.settings["recipe"] = recipe;
  if (a.mixed_precision) plan.settings["mixed_precision"] = a.mixed_precision;
}

void run_quantize(QuantizeArgs& a) {
  set_threads(a.threads);
  resolve_bits(a);
  if (a.calib_inputs != "quant" && a.calib_inputs != "fp")
    fail(ErrorKind::Usage, "--calib-inputs must be 'quant' or 'fp'");
  if (a.fast && !a.methods.of(a.method).apply_fast())  // fills in only what was left at its exhaustive default
    fail(ErrorKind::Usage, "--fast applies to the methods with a fast configuration (", fast_method_names(),
         "), not to --method ", a.method);
  if (!a.mp_budget.empty()) {  // before anything is loaded
    if (!a.mixed_precision) fail(ErrorKind::Usage, "--mp-budget bounds the allocation of --mixed-precision; give that too");
    a.budget = MpBudget::parse(a.mp_budget);
    if (a.budget.kind == BudgetKind::KlFloor && a.mp_sensitivity == "nuclear")
      fail(ErrorKind::Usage, "--mp-budget kl=... is measured end to end: it needs --mp-sensitivity kl");
  }
  if (!a.latency_table.empty() && !a.mixed_precision)
    fail(ErrorKind::Usage, "--latency-table prices the widths of --mixed-precision; give that too");
  const Target target = load_target(a.target);
  check_options_for_target(CalibOptions{}, a.wbits, a.abits, {}, target);  // the bit-widths, before any loading
  std::string dropped = a.methods.of(a.method).fit_target(target);
  std::unique_ptr<Method> method = make_method(a.method, a.methods);
  a.method_flags.warn_unused(a.method, a.methods);
  if (method->settings(GridPolicy{}).value("per_head", false) && !target.inputs.per_head)
    fail(ErrorKind::Usage, "--per-head: target ", target.name, " has one step per tensor for activations");
  // Before minutes of calibration: the output must not be (or contain) an input, must be empty
  // unless --force, and must be writable. Everything is written into a staging directory that
  // replaces OUT only at the end.
  StagedDir out(a.out, {"-o", {a.model, a.calib, a.class_map}, a.force});

  ViTModel model = load_vit_model(a.model, {a.allow_non_finite});
  std::unique_ptr<Dataset> data;
  CalibrationSet cs = load_calibration(a, model, data);
  CalibOptions opt = calib_options(a);
  const std::string recipe = apply_recipe(*method, a, opt, target, dropped);
  if (a.calib_mirror) add_mirrored_views(cs, model.cfg.preprocess.channels, model.cfg.preprocess.height,
                                         model.cfg.preprocess.width);
  if (a.cmd->get_option("--token-clip")->count() > 0 && a.token_clip != 1.0f && !opt.grids.per_token)
    std::fprintf(stderr, "warning: --token-clip %g has no effect without per-token inputs (--per-token)\n",
                 double(a.token_clip));
  if (a.cmd->get_option("--token-group")->count() > 0 && a.token_group > 0 && !opt.grids.per_token)
    std::fprintf(stderr, "warning: --token-group %d has no effect without per-token inputs (--per-token)\n",
                 a.token_group);
  if (opt.grids.per_token || opt.grids.per_token_qk) {  // Calibrator::site_bits: run-time steps need 8-bit codes
    int widest = std::max(a.wbits, a.abits);
    if (a.mixed_precision)
      widest = a.mp_candidates.empty() ? std::min(a.mixed_precision + 2, target.max_bits)
                                       : *std::max_element(a.mp_candidates.begin(), a.mp_candidates.end());
    const int run_time_max = OperandQuant::kMaxPerTokenBits;
    if (widest > run_time_max)
      std::fprintf(stderr, "note: per-token steps (%s) are for sites of at most %d bits; sites at %s keep static "
                   "steps chosen by the method\n",
                   opt.grids.per_token && opt.grids.per_token_qk ? "--per-token, --per-token-qk"
                   : opt.grids.per_token                         ? "--per-token"
                                                                 : "--per-token-qk",
                   run_time_max, cat(run_time_max + 1, widest > run_time_max + 1 ? cat("-", widest) : "", " bits").c_str());
  }
  if (a.rotate || a.rotate_mlp) opt.transforms.rotation = PlanRotation{a.rotation_seed, a.rotate, a.rotate, a.rotate_mlp};
  check_options_for_target(opt, a.wbits, a.abits, a.mp_candidates, target);
  check_tables_for_target(a.gelu_table, a.softmax_table, target);
  print_header(a, model, *method, opt, cs, data.get(), recipe, target, dropped);

  const auto t_calib = std::chrono::steady_clock::now();
  nlohmann::ordered_json mp_report;
  // --latency-table: read before calibrating (its errors first); widths it lacks are measured here.
  LatencyTable latency;
  if (!a.latency_table.empty()) {
    latency = load_latency_table(a.latency_table);
    check_latency_table_model(latency, model.cfg, a.latency_table);
  }
  const size_t latency_entries = latency.entries.size();
  CalibrationResult r = calibrate(a, model, cs, *method, opt, target, mp_report, latency);
  if (a.softmax_table) {  // before the GELU tables: they are fitted on the model with it
    r.plan.softmax_table = SoftmaxTable{a.softmax_table, 16.0f};
    r.plan.settings["softmax_table_bits"] = a.softmax_table;
  }
  if (a.gelu_table) {
    Progress bar("GELU tables", cs.n, a.quiet);
    fit_gelu_tables(model, r.plan, cs.images.data(), cs.n, a.gelu_table, [&](int done, int) { bar.update(done, ""); });
    bar.finish();
    r.plan.settings["gelu_table_bits"] = a.gelu_table;
  }
  // All of the calibration: with mixed precision, the sensitivity and perturbation passes too.
  const double calib_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_calib).count();
  r.plan.target = target.json;
  check_plan_for_target(r.plan, target);
  record_settings(a, opt, cs, recipe, r.plan);

  if (!a.quiet) print_table(r);
  const std::string& dir = out.path();
  save_plan(r.plan, dir + "/plan.json");
  try {  // never leave a plan that vitq itself refuses to read (OUT is replaced only at commit())
    (void)load_plan(dir + "/plan.json");
  } catch (const Error& e) {
    std::string why = e.what();  // named as OUT/plan.json, not by the staging directory
    if (why.rfind(dir, 0) == 0) why = a.out + why.substr(dir.size());
    fail(ErrorKind::Internal, "the plan this run made does not pass its own checks (a bug in vitq; nothing was written "
         "to ", a.out, "): ", why);
  }
  const bool picture = mp_report.contains("frontier");
  if (picture) {
    const int b = a.mixed_precision, held = mp_report.value("holdout", 0);
    const std::string within = a.mp_budget.empty() ? cat("at the W", b, "A", b, " size")
                                                   : mp_report["budget"].value("text", std::string());
    std::ofstream f(dir + "/frontier.svg");
    f << frontier_svg(mp_report, cat("Mixed precision, ", within, ", ", a.method, ": KL on ",
                                     mp_report["check_images"].get<int>(), held ? " held-out" : "",
                                     " calibration images"));
    if (!f) fail(ErrorKind::Io, a.out, "/frontier.svg: write failed");
  }
  if (!latency.entries.empty()) {  // the table the search priced widths with (measured entries added)
    std::ofstream f(dir + "/latency_table.json");
    f << latency_table_json(latency).dump(2) << "\n";
    if (!f) fail(ErrorKind::Io, a.out, "/latency_table.json: write failed");
    if (latency.entries.size() > latency_entries)
      mp_report["latency_table"] = cat("measured here at batch ", latency.batch, " (", latency.entries.size() - latency_entries,
                                       " widths): ", a.out, "/latency_table.json");
  }
  CalibRunInfo run{a.model, model.cfg.architecture, omp_get_max_threads(), calib_seconds, peak_rss_mb(),
                   std::move(mp_report)};
  const nlohmann::ordered_json rep = calibration_report(r, run);
  {
    std::ofstream f(dir + "/report.json");
    f << rep.dump(1) << "\n";
    if (!f) fail(ErrorKind::Io, a.out, "/report.json: write failed");
  }
  if (!a.plan_only) export_quantized_dir(model, r.plan, a.model, dir, a.out);
  out.commit();
  std::printf("\ncalibrated %zu sites in %.1f s (peak memory %.0f MB)\nwrote %s/plan.json and %s/report.json%s\n",
              r.sites.size(), calib_seconds, peak_rss_mb(), a.out.c_str(), a.out.c_str(),
              picture ? cat(" (the mixed-precision search: ", a.out, "/frontier.svg)").c_str() : "");
}

void add_input_options(CLI::App* c, QuantizeArgs* a) {
  c->option_defaults()->group("Calibration data");
  c->add_option("--model", a->model, "Checkpoint directory (model.safetensors + config.json)")->required();
  c->add_option("--calib", a->calib, "Calibration images: ImageFolder directory, or an IDX images file or a directory of IDX files (its "
                "training split, train-*, is used; the labels file is not needed)");
  c->add_option("--random-calibration", a->random_calib,
                "Calibrate on N images of standard normal pixels instead of --calib (speed tests of random-weight "
                "models)")
      ->check(opt::integer(1, 4096));
  c->add_option("--class-map", a->class_map, "Class map of the calibration ImageFolder (only to read it)");
  c->add_flag("--skip-bad-images", a->skip_bad,
              "Report unreadable/corrupt calibration images and calibrate on the others (default: stop with an "
              "error naming the file); it is an error if none can be read");
  c->add_option("--calib-size", a->calib_size, "Calibration images, a seeded random subset (0 = all)")
      ->capture_default_str()
      ->check(opt::integer(0, 1 << 24));
  c->add_flag("--calib-mirror,!--no-calib-mirror", a->calib_mirror,
              "Also calibrate on each calibration image mirrored left to right (twice the samples from the same "
              "images, for block reconstruction and QwT to fit to). Recorded in "
              "the plan. Off: on held-out calibration images it did not lower KL at W4A4 (docs/RESULTS.md)");
  c->add_option("--seed", a->methods.common.seed, "Seed of the calibration subset and of any sampling")->capture_default_str()
      ->check(opt::seed());
  c->add_option("--calib-inputs", a->calib_inputs,
                "Where each site's calibration inputs come from: 'quant' = the model with the earlier sites "
                "already quantized, 'fp' = the FP32 model")
      ->capture_default_str();
}

void add_bits_options(CLI::App* c, QuantizeArgs* a) {
  std::string target_names;
  for (const std::string& n : builtin_target_names()) target_names += (target_names.empty() ? "" : ", ") + n;
  c->option_defaults()->group("Method and bit-widths");
  c->add_option("--method", a->method, "PTQ method: " + method_names())->capture_default_str();
  c->add_option("--target", a->target,
                "The hardware the plan is for: a built-in description (" + target_names +
                    "; targets/*.json) or a description file. It bounds the bit-widths, leaves out of the "
                    "method's recipe what it cannot run, refuses such options, checks the plan, and is recorded in it")
      ->capture_default_str();
  c->add_option("--bits", a->bits, "Weight and activation bits (2-10)")
      ->check(opt::integer(kMinBits, kMaxBits));
  c->add_option("--wbits", a->wbits, "Weight bits (with --abits)")
      ->check(opt::integer(kMinBits, kMaxBits));
  c->add_option("--abits", a->abits, "Activation bits (with --wbits)")
      ->check(opt::integer(kMinBits, kMaxBits));
  c->add_option("--mixed-precision", a->mixed_precision,
                "Mixed precision within the weight size of the uniform B-bit model: bits per MSA/MLP module "
                "(candidates B-2..B+2), weights and inputs alike, allocated by --mp-sensitivity; with 'kl' the "
                "uniform B-bit plan is kept unless a mixed one measures better on held-out calibration images, "
                "and OUT/frontier.svg pictures the search")
      ->check(opt::integer(kMinBits, kMaxBits));
  c->add_option("--mp-sensitivity", a->mp_sensitivity,
                "Mixed precision: the cost of a module at a width. 'kl' (vitq's): the end-to-end KL of the "
                "network's output from the FP32 model's with the module at that width and the rest at B (the "
                "method's uniform plans composed; errors compound), then the allocations nearest the budget "
                "measured on the simulated network against uniform B. 'nuclear' (the paper's): the nuclear norm "
                "of the module's attention map / output times its output perturbation with the module alone "
                "quantized")
      ->capture_default_str()
      ->check(CLI::IsMember({"kl", "nuclear"}));
  c->add_option("--mp-kl-images", a->mp_kl_images,
                "Mixed precision 'kl': calibration images of the per-module KL measurements (the first N)")
      ->capture_default_str()
      ->check(opt::integer(1, 65536));
  c->add_option("--mp-check", a->mp_check,
                "Mixed precision 'kl': allocations of the Pareto frontier (those nearest the budget) measured on "
                "the simulated network; the best is calibrated with its widths, and the plan kept is the one that "
                "measures best of that, the uniform plans composed at those widths, and uniform B")
      ->capture_default_str()
      ->check(opt::integer(1, 64));
  c->add_option("--mp-check-images", a->mp_check_images,
                "Mixed precision 'kl': images of those measurements and of the final choice (the first N of the "
                "held-out images, or of all with --mp-holdout 0; 0 = all of them)")
      ->capture_default_str()
      ->check(opt::integer(0, 1 << 24));
  c->add_option("--mp-holdout", a->mp_holdout,
                "Mixed precision 'kl': every K-th calibration image is held out; the uniform plans, the module "
                "costs and the mixed plans come from the others, every check and the final choice between "
                "mixed and uniform is measured on the held-out images (a plan is not judged on the images it "
                "was fitted to), and the plan kept is then calibrated on all images. 0 = no hold-out")
      ->capture_default_str()
      ->check(opt::integer(0, 1 << 16));
  c->add_option("--mp-min-gain-se", a->mp_min_gain_se,
                "Mixed precision 'kl': the mixed plan replaces uniform B only if its KL on the check images is "
                "lower by more than this many standard errors of the paired per-image difference (0: any "
                "improvement)")
      ->capture_default_str()
      ->check(opt::real(0, 100));
  c->add_option("--mp-budget", a->mp_budget,
                "Mixed precision: the budget the allocation stays within instead of the uniform B-bit size. "
                "'size=MB': MB (10^6 bytes) of the transformer blocks' quantized weights; 'latency=MS': ms per image "
                "of the integer model as the latency table predicts it (--latency-table, or measured here on the "
                "method's uniform plans of each width: then OUT/latency_table.json, and the plan can differ from "
                "run to run as timings do); 'kl=X' (with --mp-sensitivity kl): an accuracy floor, the cheapest "
                "allocation (by latency with --latency-table, else by size) whose KL to the FP32 output on the "
                "check images is at most X. With a budget the uniform B plan does not fit, the best mixed plan "
                "is kept")
      ->type_name("KIND=VALUE");
  c->add_option("--latency-table", a->latency_table,
                "Mixed precision: the per-site latency table of this machine (vitq bench --latency-table) that prices "
                "each module's width; widths it lacks (by 8-bit plane count: 1 up to 8 bits, 2 for 9-10) are "
                "measured here. Written to OUT/latency_table.json with what was added")
      ->check(CLI::ExistingFile);
  c->add_option("--latency-batch", a->latency_batch,
                "Mixed precision: the batch of latencies measured here (without --latency-table)")
      ->capture_default_str()
      ->check(opt::integer(1, opt::kMaxBatch));
  c->add_option("--mp-candidates", a->mp_candidates, "Mixed precision: candidate bit-widths (default B-2..B+2)")
      ->delimiter(',')
      ->check(opt::integer(kMinBits, kMaxBits));
  c->add_option("--mp-svd-images", a->mp_svd_images, "Mixed precision 'nuclear': images used for the nuclear norms")
      ->capture_default_str()
      ->check(opt::integer(1, 65536));
  c->add_flag("--quantize-head", a->quantize_head, "Also quantize the classifier head (default: FP32)");
  c->add_flag("--fast", a->fast,
              "The method's fast configuration, for the options left at their defaults: easyquant --coarse-stride "
              "10; liu2021 --coarse-stride 10 --rank-tokens 64 (the configuration whose accuracy the README "
              "measures). About 4x faster calibration; approximate, the plan differs from the exhaustive search's");
}

void add_grid_options(CLI::App* c, QuantizeArgs* a) {
  c->option_defaults()->group("Quantization grids");
  c->add_flag("--unsigned-softmax", a->unsigned_softmax,
              "Fix: quantize the softmax output (input of matmul_av) on an unsigned grid [0, 2^b-1] "
              "instead of the paper's signed grid, which wastes its negative half");
  c->add_option("--softmax-grid", a->softmax_grid,
                "Grid of the softmax output (the input of matmul_av): 'signed' (the paper's), 'unsigned' (= "
                "--unsigned-softmax), 'log2' (levels 2^-e, FQ-ViT), 'logsqrt2' (levels 2^-e/2, RepQ-ViT), 'float' (a small float on [0, 1]: b-4 mantissa "
                "bits, uniform within each octave; log2 at 4 bits). The level grids run P.V as 16-bit fixed point "
                "(docs/FORMAT.md)")
      ->check(CLI::IsMember({"signed", "unsigned", "log2", "logsqrt2", "float"}));
  c->add_flag("--per-token,!--no-per-token", a->per_token,
              "Quantize the input of every linear site per token: each row gets its own step and zero point from "
              "its own range, computed at run time (asymmetric, dynamic); the method then chooses only the weights. "
              "Sites of 9-10 bits (--bits 10, mixed precision) keep static steps");
  c->add_flag("--per-token-qk,!--no-per-token-qk", a->per_token_qk,
              "Quantize Q and K of every attention score product per token: each row of a head gets its own "
              "symmetric step max|row| / qmax at run time, so the rows' steps factor out of Q.K^T (plan format 8). "
              "The vitq method's recipe: on at 6-bit activations and fewer. Sites of 9-10 bits keep static steps");
  c->add_option("--patch-embed-abits", a->patch_embed_abits,
                "Bits of the patch embedding's input (the normalized pixels); default: the activation bits")
      ->check(opt::integer(kMinBits, kMaxBits));
  c->add_option("--token-clip", a->token_clip,
                "Per-token inputs: quantize each row on alpha x [min, max] of its own range (alpha < 1 clips the "
                "row's extremes for finer steps on the rest; recorded in the plan). The vitq method's recipe: 0.95 "
                "at 4-bit activations")
      ->capture_default_str()
      ->check(opt::real(0.01, 1));
  c->add_option("--token-group", a->token_group,
                "Per-token inputs: give each group of this many consecutive input channels of a row its own step "
                "and zero point (0: one per row). Applies to the sites whose input width it divides; the integer "
                "runtime runs one GEMM per group. The vitq method's recipe: 64 at 5- and 6-bit activations, 32 at 4 bits and fewer")
      ->capture_default_str()
      ->check(opt::integer(0, 1 << 16));
}

void add_transform_options(CLI::App* c, QuantizeArgs* a) {
  c->option_defaults()->group("Model transforms (any method; the same FP32 function)");
  c->add_flag("--smooth-ln", a->smooth_ln,
              "Fix (any method): move the range of each LayerNorm output channel into the following weights "
              "(LN gamma/beta divided, qkv/fc1 weight columns multiplied by s_k = max|x_k|^alpha / "
              "max|W_k|^(1-alpha); the same FP function) before calibrating, so that one activation step suits "
              "post-LN channels of very different ranges. The factors go into the plan");
  c->add_flag("--ln-center", a->ln_center,
              "Fix (any method): centre each LayerNorm output channel before qkv and fc1 (LN beta minus the "
              "channel's mid-range (min+max)/2 over the calibration images, added back through the layer's bias; "
              "the same FP function), so that the symmetric activation grid is not wasted on one-sided channels. "
              "With --smooth-ln the factors then use the centred ranges. The shifts go into the plan");
  c->add_flag("--rotate,!--no-rotate", a->rotate,
              "Rotate the model before calibrating (any method; the same FP function, no run-time cost): centre "
              "the residual stream's writers, fold each LayerNorm's gamma/beta into the next layer, rotate the "
              "stream by a randomized Hadamard matrix, and each head's Q/K and V by Hadamard matrices, which "
              "spreads outlier channels over all channels (QuaRot-style). Recorded in the plan");
  c->add_flag("--rotate-mlp,!--no-rotate-mlp", a->rotate_mlp,
              "Also rotate fc2's input (after GELU) by a randomized Hadamard transform at run time (fc2's weight "
              "rotated to match): spreads the outliers of the MLP's hidden units; costs one fast transform per token "
              "and block (see docs/RESULTS.md)");
  c->add_option("--rotation-seed", a->rotation_seed, "Seed of the rotations' random signs")
      ->capture_default_str()
      ->check(opt::seed());
  c->add_flag("--ln-reparam", a->ln_reparam,
              "Fix (any method): RepQ-ViT's reparameterisation of the post-LayerNorm activations (qkv and fc1 "
              "inputs): each channel centred on its calibration mid-range and scaled to the median channel range "
              "(DopQ-ViT's robust shared target), the shifts and scales folded into the LayerNorm and the next "
              "layer (the same FP function), so that one per-tensor step fits every channel. Not with --smooth-ln");
  c->add_option("--smooth-alpha", a->smooth_alpha, "--smooth-ln: migration strength alpha in [0, 1]")
      ->check(opt::real(0, 1))
      ->capture_default_str();
}

void add_rounding_options(CLI::App* c, QuantizeArgs* a) {
  c->option_defaults()->group("Weight rounding and closed-form compensation (any method)");
  c->add_option("--weight-rounding", a->weight_rounding,
                "How the integer weights are rounded on the method's grid: 'nearest' (the method's own codes), or "
                "'gptq' (GPTQ: column by column, each rounding error spread over the columns not yet rounded through "
                "the inverse of E[x x^T] of the site's quantized calibration inputs; any method)")
      ->check(CLI::IsMember({"nearest", "gptq"}));
  c->add_option("--gptq-damp", a->gptq.damp, "GPTQ: damping added to E[x x^T]'s diagonal, relative to its mean")
      ->capture_default_str()
      ->check(opt::real(0, 10));
  c->add_flag("--gptq-act-order", a->gptq.act_order, "GPTQ: round the columns in order of decreasing E[x_k^2]");
  c->add_flag("--ridge-update,!--no-ridge-update", a->ridge,
              "Before rounding (any method): refit each linear site's FP32 weights and bias so that, fed its "
              "quantized calibration inputs, it reproduces the FP32 model's output (ridge regression towards the "
              "original weights, in closed form; ERQ-style activation-error compensation); the weights are then "
              "rounded on the method's grid (--weight-rounding) and the rounding's mean error folded into the bias");
  c->add_option("--ridge-target", a->ridge_target,
                "Ridge update: what the refit site reproduces: 'local' (its own FP32 output of its unquantized "
                "input, ERQ's) or 'fp' (the FP32 model's output of the site, also undoing earlier layers' errors; "
                "measured much worse on ViT-Ti, docs/RESULTS.md)")
      ->capture_default_str()
      ->check(CLI::IsMember({"local", "fp"}));
  c->add_option("--ridge-damp", a->ridge_opt.damp,
                "Ridge update: the ridge penalty, relative to the mean of diag(E[x x^T]) (larger: closer to the "
                "original weights)")
      ->capture_default_str()
      ->check(opt::real(1e-6, 100));
  c->add_option("--gelu-table", a->gelu_table,
                "After calibration (any method): GELU as a table — each block's GELU input (fc1's output) is "
                "quantized to BITS bits on a grid fitted to the calibration images (least GELU-output error) and "
                "the integer runtime looks GELU up instead of computing it (with a per-tensor fc2 input the table "
                "gives fc2's codes directly). It changes the model a little, so it is a choice: the simulator "
                "computes the same. 0 = GELU in float")
      ->check(CLI::IsMember({0, 4, 5, 6, 7, 8, 9, 10}));
  c->add_option("--softmax-table", a->softmax_table,
                "After calibration (any method): the softmax's exponent from a table — each exponent argument "
                "(max − score)/sqrt(d) is put on a grid of 2^BITS points over [0, 16] and its exponential read from "
                "two 32-entry tables (no exp per value in the integer runtime). It changes the model a little, so it "
                "is a choice: the simulator computes the same. 0 = the float softmax")
      ->check(CLI::IsMember({0, 6, 7, 8, 9, 10}));
  c->add_flag("--qwt,!--no-qwt", a->qwt,
              "After each block (any method): QwT error compensation - a linear map of the block's input, fitted "
              "in closed form to the error the quantized block leaves in its output, added to the block's output "
              "(FP32 at run time: one embed_dim x embed_dim product per block and token; see docs/RESULTS.md for "
              "its speed cost). Recorded in the plan");
  c->add_option("--qwt-target", a->qwt_target,
                "QwT: the error fitted: 'local' (the FP32 block's output of the same quantized input, QwT's) or "
                "'fp' (the FP32 model's output of the block, also undoing earlier blocks' errors)")
      ->capture_default_str()
      ->check(CLI::IsMember({"local", "fp"}));
  c->add_option("--qwt-damp", a->qwt_opt.damp,
                "QwT: ridge penalty of the fit, relative to the mean of diag(E[x x^T]) of the block inputs")
      ->capture_default_str()
      ->check(opt::real(0, 100));
}

void add_recon_options(CLI::App* c, QuantizeArgs* a) {
  c->option_defaults()->group("Block reconstruction (any method)");
  c->add_option("--recon-iters", a->recon.iters,
                "Block reconstruction (any method): after each block's sites, train the integer weight codes and the "
                "bias corrections of its linear sites for N Adam steps so that the block, run exactly as the plan "
                "runs it, reproduces the FP32 block's output (straight-through rounding; BRECQ-style). 0 = off. "
                "Costs about N x 0.075 s per block on 2 cores for ViT-Ti at --recon-batch 8")
      ->capture_default_str()
      ->check(opt::integer(0, 1000000));
  c->add_option("--recon-batch", a->recon.batch, "Reconstruction: calibration images per step")
      ->capture_default_str()
      ->check(opt::integer(1, 1024));
  c->add_option("--recon-lr", a->recon.lr,
                "Reconstruction: Adam learning rate of the latent weight codes, in code units (cosine-decayed to 0)")
      ->capture_default_str()
      ->check(opt::real(0, 10));
  c->add_option("--recon-bias-lr", a->recon.bias_lr,
                "Reconstruction: Adam learning rate of the bias corrections (0: biases not trained)")
      ->capture_default_str()
      ->check(opt::real(0, 10));
  c->add_option("--recon-step-lr", a->recon.step_lr,
                "Reconstruction: also train each weight channel's step (as a log gain) and offset with this Adam "
                "learning rate (0: the method's grid is kept)")
      ->capture_default_str()
      ->check(opt::real(0, 10));
  c->add_option("--recon-act-lr", a->recon.act_lr,
                "Reconstruction: also train the activation quantizers - the per-head steps of Q, K and V and each "
                "linear input's per-token clip ratio (as log gains, LSQ-style straight-through gradients) - with this "
                "Adam learning rate (0: the method's steps and clip ratios are kept)")
      ->capture_default_str()
      ->check(opt::real(0, 10));
  c->add_option("--recon-drop", a->recon.drop,
                "Reconstruction: QDrop - in each training step every element of a quantized activation keeps its "
                "float value with this probability (the losses reported and the revert check use the plan as is). "
                "0.5 measured worse than 0 on held-out ViT-Ti calibration images")
      ->capture_default_str()
      ->check(opt::real(0, 1));
  c->add_option("--recon-head-share", a->recon.head_share,
                "Reconstruction: in the last block, the share of the loss given to the tokens the head reads (the "
                "class token, and the distillation token): 0 = every token alike (the class token is 1/197 of "
                "ViT-Ti's loss though the head reads only it), 1 = only those tokens")
      ->capture_default_str()
      ->check(opt::real(0, 1));
  c->add_option("--recon-fisher", a->recon.fisher,
                "Reconstruction: the share of Fisher token weights in the block loss (BRECQ-style, one weight per "
                "token: how much the token's error moves the FP model's prediction, E over labels drawn from its "
                "own output of the squared gradient of their log-likelihood; 8 draws per image, one backward pass "
                "each, before the first block). 0 = every token alike; off by default: 0.5 did not lower the KL on held-out "
                "ViT-Ti calibration images at W4A4 (docs/RESULTS.md)")
      ->capture_default_str()
      ->check(opt::real(0, 1));
  c->add_option("--recon-target", a->recon_target,
                "Reconstruction: the output reproduced: 'local' (the FP32 block's output of the same quantized "
                "input) or 'fp' (the FP32 model's block output, BRECQ's; measured worse on held-out images of "
                "ViT-Ti)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp", "local"}));
}

void add_run_options(CLI::App* c, QuantizeArgs* a) {
  c->option_defaults()->group("Output and run");
  c->add_option("--batch", a->batch, "Images per forward pass during calibration")->capture_default_str()
      ->check(opt::integer(1, opt::kMaxBatch));
  c->add_option("--threads", a->threads, "Threads (0 = all cores)")->capture_default_str()
      ->check(opt::integer(0, opt::kMaxThreads));
  c->add_option("-o,--out", a->out,
                "Output directory (plan.json, report.json; plan_codes.safetensors for methods that choose "
                "integer weights: bitsplit, aciq with bias correction; and the quantized model: model.safetensors "
                "+ config.json, docs/FORMAT.md). Checked before calibrating: it must not be (or contain) the model or the "
                "calibration data, and an existing non-empty directory needs --force. Written into a staging "
                "directory beside it that replaces it only when everything is written")
      ->required();
  c->add_flag("--plan-only", a->plan_only,
              "Write only plan.json and report.json, not the quantized model (model.safetensors, config.json)");
  c->add_flag("--force", a->force,
              "Replace the output directory if it exists and is not empty (as a whole: files that vitq did not "
              "write go too; a directory holding subdirectories is never replaced)");
  add_allow_non_finite_flag(c, a->allow_non_finite);
  c->add_flag("-q,--quiet", a->quiet, "No progress output and no per-site table");
}

}  // namespace

void add_quantize_command(CLI::App& app) {
  auto a = std::make_shared<QuantizeArgs>();
  CLI::App* c = app.add_subcommand("quantize", "Calibrate a quantization plan from unlabelled images");
  add_input_options(c, a.get());
  add_bits_options(c, a.get());
  add_grid_options(c, a.get());
  add_transform_options(c, a.get());
  add_rounding_options(c, a.get());
  add_recon_options(c, a.get());
  add_run_options(c, a.get());
  c->option_defaults()->group("Options");
  a->method_flags = add_method_options(c, a->methods);
  a->cmd = c;
  c->callback([a] { run_quantize(*a); });
}

}  // namespace vitq
