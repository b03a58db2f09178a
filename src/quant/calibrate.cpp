#include "quant/calibrate.h"

#include <chrono>
#include <cmath>
#include <map>
#include <memory>

#include "core/error.h"
#include "core/finite.h"
#include "numerics/level_grid.h"
#include "numerics/quantizer.h"
#include "quant/fisher_tokens.h"
#include "quant/observers.h"
#include "quant/plan_transforms.h"
#include "quant/similarity.h"
#include "quant/simulate.h"
#include "quant/staged_forward.h"

namespace vitq {
namespace {

using clock_type = std::chrono::steady_clock;

// The sites to quantize, by stage (staged_forward.h), in execution order.
std::vector<std::vector<SiteId>> planned_sites(const std::vector<SiteShape>& order, const CalibOptions& opt,
                                               int depth) {
  std::vector<std::vector<SiteId>> by_stage(size_t(depth + 2));
  for (const auto& s : order) {
    const SiteId& id = s.id;
    const bool q = id.block >= 0 || (id.kind == SiteKind::PatchEmbed ? opt.quantize_patch_embed : opt.quantize_head);
    if (q) by_stage[size_t(stage_of(id, depth))].push_back(id);
  }
  return by_stage;
}

// Fits block (stage st)'s compensation on its quantized inputs xq to target − block_Q(xq) (target:
// the FP model's output of the block, or the FP block's output of xq) and puts it into the plan
// and the model being calibrated.
nlohmann::ordered_json compensate_block(StagedForward& fwd, PlanSimulator& sim, int st, const float* xq,
                                        const float* target, const CompensationOptions& opt, ViTModel& model,
                                        QuantPlan& plan) {
  const size_t n = size_t(fwd.images()) * fwd.stream_floats();
  avector<float> yq(xq, xq + n), e(n);
  fwd.advance(st, yq.data(), &sim);  // the quantized block
  for (size_t i = 0; i < n; ++i) e[i] = target[i] - yq[i];
  const int D = model.cfg.embed_dim;
  const CompensationFit f = fit_compensation(xq, e.data(), target, int64_t(n / size_t(D)), D, opt.damp);
  const int block = st - 1;
  if (f.used()) {
    plan.compensation[block] = f.comp;
    set_model_compensation(model, plan);
  }
  return compensation_notes(f);
}

}  // namespace

Bits Calibrator::site_bits(const SiteId& id, const CalibOptions& opt, int K) {
  Bits b = opt.bits;
  if (!opt.block_bits.empty() && id.block >= 0) {
    b = opt.block_bits.at(size_t(2 * id.block + (id.in_attention_module() ? 0 : 1)));
  }
  b.x_grid = id.kind == SiteKind::MatmulAV ? opt.grids.softmax : Grid::Signed;
  if (id.kind == SiteKind::PatchEmbed && opt.grids.patch_embed_abits) b.x = opt.grids.patch_embed_abits;
  // Run-time steps are for 8-bit codes (plan.h): a site of a 9- or 10-bit module (mixed precision,
  // --bits 10) keeps static steps the method chooses, whatever --per-token / --per-token-qk say.
  const int run_time_max = OperandQuant::kMaxPerTokenBits;
  b.x_per_token = opt.grids.per_token && !id.is_attention() && b.x <= run_time_max;
  if (b.x_per_token) b.x_token_clip = opt.grids.token_clip;
  const int tg = opt.grids.token_group;  // a group of the whole row is the ungrouped form
  if (b.x_per_token && tg > 0 && K > tg && K % tg == 0 && b.w <= run_time_max) b.x_token_group = tg;
  b.qk_per_token = opt.grids.per_token_qk && id.kind == SiteKind::MatmulQK && b.x <= run_time_max && b.w <= run_time_max;
  return b;
}

Calibrator::Calibrator(const ViTModel& model, const float* images, int n) : m_(model), images_(images), n_(n) {}

void set_input_format(OperandQuant& x, Bits bits) {
  if (!bits.x_fixed()) return;
  x.bits = bits.x;
  x.grid = bits.x_grid;
  x.per_token = bits.x_per_token || bits.qk_per_token;
  x.token_clip = bits.x_per_token ? bits.x_token_clip : 1.0f;
  x.token_group = bits.x_per_token ? bits.x_token_group : 0;
  x.scale = x.per_token ? 0.0f : kLevelStep;
  x.head_scales.clear();
}

void set_key_format(OperandQuant& w, Bits bits) {
  if (!bits.qk_per_token) return;
  w.per_token = true;
  w.grid = Grid::Signed;
  w.scale = 0.0f;
  w.head_scales.clear();
}

SitePlan minmax_site_plan(const SiteObservation& obs, Bits bits) {
  SitePlan sp;
  sp.x.bits = bits.x;
  sp.x.grid = bits.x_grid;
  if (bits.x_fixed()) set_input_format(sp.x, bits);
  else sp.x.scale = max_step(max_abs(obs.x, size_t(obs.x_per_image()) * size_t(obs.images)), sp.x.range());
  sp.w.bits = bits.w;
  const size_t wn = obs.attention() ? size_t(obs.w_per_image()) * size_t(obs.images) : size_t(obs.shape.N) * obs.shape.K;
  sp.w.scale = max_step(max_abs(obs.w, wn), sp.w.range());
  set_key_format(sp.w, bits);
  return sp;
}

SiteEval evaluate_site_plan(const SiteObservation& obs, const SitePlan& sp) {
  avector<float> y(size_t(obs.y_per_image()) * size_t(obs.images)), xbuf, wbuf;
  simulate_site(obs.call(y.data()), sp, nullptr, xbuf, wbuf);
  SiteEval e;
  const size_t per = size_t(obs.y_per_image());
  for (int i = 0; i < obs.images; ++i) {
    PairStats st = pair_stats(obs.target + per * size_t(i), y.data() + per * size_t(i), per);
    e.pearson += st.pearson();
    e.cosine += st.cosine();
    e.mse += st.mse();
  }
  e.pearson /= obs.images;
  e.cosine /= obs.images;
  e.mse /= obs.images;
  return e;
}

// Names the site, operand and calibration image of the first non-finite value of a captured
// site tensor (images × per-image values).
static void check_finite_operand(const SiteId& id, const char* what, const avector<float>& v, const SiteShape& shape,
                          int images, CalibInputs inputs) {
  const size_t bad = first_non_finite(v.data(), v.size());
  if (bad == v.size()) return;
  const size_t per_image = v.size() / size_t(std::max(1, images));
  fail(ErrorKind::Model, "site ", id.name(), ": its ", what, " holds non-finite values (",
       count_non_finite(v.data(), v.size()), " of ", v.size(), ", first ", v[bad], " on calibration image ",
       per_image ? bad / per_image : 0, ") in the ", inputs == CalibInputs::FP ? "FP32" : "partly quantized",
       " model: an activation overflows float32 before or at this site, or a weight loaded with --allow-non-finite is not finite (",
       shape.M, "x", shape.K, " per image and group)");
}

// One site: its observation from the captured tensors, the method's plan entry (into `plan`),
// and the report line.
static SiteReport calibrate_site(Method& method, const ViTModel& model, const SiteShape& shape, int n,
                                 const SiteTensors& in, const SiteTensors& fp, const CalibOptions& opt,
                                 QuantPlan& plan) {
  const auto t0 = clock_type::now();
  const SiteId& id = shape.id;
  SiteObservation obs;
  obs.shape = shape;
  obs.images = n;
  obs.x = in.x.data();
  const LinearWeights* lw = site_weights(model, id);
  obs.w = lw ? lw->w.ptr() : in.w.data();
  obs.bias = lw && !lw->b.empty() ? lw->b.ptr() : nullptr;
  obs.target = fp.y.data();
  // A NaN/Inf here would turn every similarity into nan and every step into garbage.
  check_finite_operand(id, "input (first operand)", in.x, shape, n, opt.inputs);
  if (!lw) check_finite_operand(id, "second operand", in.w, shape, n, opt.inputs);
  check_finite_operand(id, "FP32 output", fp.y, shape, n, CalibInputs::FP);

  SiteReport rep;
  rep.site = id.name();
  rep.bits = Calibrator::site_bits(id, opt, shape.K);
  SitePlan sp = method.calibrate(obs, rep.bits, rep.notes);
  set_input_format(sp.x, rep.bits);  // per-token inputs and level grids have no step to choose
  set_key_format(sp.w, rep.bits);    // nor K per token
  const bool gptq = opt.weight_rounding == WeightRounding::Gptq;
  if (opt.ridge) ridge_weight_step(obs, sp, opt.ridge_opt, gptq ? &opt.gptq : nullptr, rep.notes.j);
  else if (gptq) gptq_weight_step(obs, sp, opt.gptq, rep.notes.j);
  rep.x_scale = sp.x.scale;
  rep.w_scale = sp.w.scale;
  if (!std::isfinite(sp.x.scale) || !std::isfinite(sp.w.scale))
    fail(ErrorKind::Internal, "method ", method.name(), " chose a non-finite step at site ", id.name(),
         " from finite inputs (x step ", sp.x.scale, ", w step ", sp.w.scale, ")");
  SiteEval before = evaluate_site_plan(obs, minmax_site_plan(obs, rep.bits));
  SiteEval after = evaluate_site_plan(obs, sp);
  rep.sim_before = before.pearson;
  rep.sim_after = after.pearson;
  rep.cosine_after = after.cosine;
  rep.mse_after = after.mse;
  plan.sites[id.name()] = std::move(sp);
  rep.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
  return rep;
}

// The driver's format choices and steps beyond the method's own echo (absent at their defaults).
static void record_driver_settings(const CalibOptions& opt, QuantPlan& plan) {
  if (is_level_grid(opt.grids.softmax)) plan.settings["softmax_grid"] = grid_name(opt.grids.softmax);
  if (opt.grids.per_token) plan.settings["per_token_inputs"] = true;
  if (opt.grids.per_token && opt.grids.token_clip != 1.0f) plan.settings["token_clip"] = opt.grids.token_clip;
  if (opt.grids.per_token && opt.grids.token_group > 0) plan.settings["token_group"] = opt.grids.token_group;
  if (opt.grids.per_token_qk) plan.settings["per_token_qk"] = true;
  if (opt.grids.patch_embed_abits) plan.settings["patch_embed_abits"] = opt.grids.patch_embed_abits;
  if (opt.weight_rounding == WeightRounding::Gptq)
    plan.settings["weight_rounding"] = {{"method", "gptq"}, {"damp", opt.gptq.damp}, {"block", opt.gptq.block},
                                        {"act_order", opt.gptq.act_order}};
  if (opt.recon.on()) {
    auto& r = plan.settings["reconstruction"];
    r = {{"iters", opt.recon.iters}, {"batch", opt.recon.batch}, {"lr", opt.recon.lr}, {"bias_lr", opt.recon.bias_lr},
         {"target", opt.recon.target == ReconTarget::Fp ? "fp" : "local"}, {"seed", opt.recon.seed}};
    // Options added later: recorded only when used, so plans made without them keep their bytes.
    if (opt.recon.drop > 0) r["drop"] = opt.recon.drop;
    if (opt.recon.head_share > 0) r["head_share"] = opt.recon.head_share;
    if (opt.recon.step_lr > 0) r["step_lr"] = opt.recon.step_lr;
    if (opt.recon.act_lr > 0) r["act_lr"] = opt.recon.act_lr;
    if (opt.recon.fisher > 0) r["fisher"] = {{"share", opt.recon.fisher}, {"samples", kFisherSamples}};
  }
  if (opt.compensation.on)
    plan.settings["compensation"] = {
        {"method", "qwt"},
        {"target", opt.compensation.target == CompensationTarget::Fp ? "fp" : "local"},
        {"damp", opt.compensation.damp}};
  if (opt.ridge)
    plan.settings["ridge_update"] = {{"damp", opt.ridge_opt.damp},
                                     {"target", opt.ridge_opt.target == RidgeTarget::Fp ? "fp" : "local"}};
}

// Step 4 of Calibrator::run for block `blk`, its progress and result lines reported as events.
static nlohmann::ordered_json reconstruct_stage(StagedForward& fwd, PlanSimulator& sim, int blk, const float* xq,
                                               const float* target, const float* token_weight, QuantPlan& plan,
                                               const ReconOptions& opt, size_t done, size_t total_sites,
                                               const std::function<void(const CalibProgress&)>& progress) {
  auto rp = [&](const ReconProgress& p) {
    if (progress)
      progress({done, total_sites, cat("blocks.", blk, " reconstruction ", p.iter, "/", p.iters, " loss ", p.loss), ""});
  };
  nlohmann::ordered_json n = reconstruct_block(fwd, sim, blk, xq, target, plan, opt, rp, token_weight);
  if (progress && n.contains("loss_before"))
    progress({done, total_sites, "",
              cat("blocks.", blk, " reconstructed: block output MSE ", n["loss_before"].get<double>(), " -> ",
                  n["loss_after"].get<double>(), n["reverted"].get<bool>() ? " (kept the start: no gain)" : "",
                  ", ", n["seconds"].get<double>(), " s")});
  return n;
}

// The plan's header: method, its settings and the driver's, version, architecture.
static void start_plan(const Method& method, const CalibOptions& opt, const ViTConfig& c, QuantPlan& plan) {
  plan.method = method.name();
  plan.settings = method.settings(opt.grids);
  record_driver_settings(opt, plan);
  plan.tool_version = VITQ_VERSION;
  plan.architecture = c.architecture;
}

// Step 2 of Calibrator::run for one site of stage st: its inputs replayed through the plan so far
// (or the FP pass's, CalibInputs::FP), its targets from the FP pass `fp`.
static SiteReport calibrate_stage_site(Method& method, StagedForward& fwd, PlanSimulator& sim, int st,
                                       const SiteId& id, const std::map<SiteId, SiteShape>& shapes,
                                       SiteTensorCapture& fp, float* xq, const CalibOptions& opt, QuantPlan& plan) {
  const int n = fwd.images();
  SiteTensorCapture qc(shapes, n);
  if (opt.inputs == CalibInputs::Quantized) {
    qc.inner = &sim;
    qc.want_xw.insert(id);
    qc.stop_after = id;
    fwd.replay(st, st, xq, &qc);
  }
  const SiteTensors& in = opt.inputs == CalibInputs::Quantized ? qc.buf[id] : fp.buf[id];
  return calibrate_site(method, fwd.model(), shapes.at(id), n, in, fp.buf[id], opt, plan);
}

CalibrationResult Calibrator::run(Method& method, const CalibOptions& opt,
                                  const std::function<void(const CalibProgress&)>& progress) {
  const auto t_start = clock_type::now();
  const ViTConfig& c = m_.cfg;
  CalibrationResult res;
  QuantPlan& plan = res.plan;
  start_plan(method, opt, c, plan);
  // The transforms first: every site sees the rewritten model.
  fit_plan_transforms(m_, images_, n_, opt.batch, opt.transforms, plan);
  std::unique_ptr<ViTModel> rewritten;
  apply_plan_transforms(m_, plan, rewritten, "ln_smoothing");
  // The compensation goes into the model as each block's is fitted: it needs a copy of its own.
  if (!rewritten && opt.compensation.on) rewritten = std::make_unique<ViTModel>(m_);
  const ViTModel& model = rewritten ? *rewritten : m_;

  std::map<SiteId, SiteShape> shapes;
  for (const auto& s : model_sites(c)) shapes[s.id] = s;
  const std::vector<std::vector<SiteId>> stage_sites = planned_sites(model_sites(c), opt, c.depth);
  size_t total_sites = 0, done = 0;
  for (const auto& v : stage_sites) total_sites += v.size();

  StagedForward fwd(model, images_, n_, opt.batch);
  PlanSimulator sim(model, plan);
  // The reconstruction's Fisher token weights, from the FP model before any block is compensated.
  std::vector<std::vector<float>> fisher;
  if (opt.recon.on() && opt.recon.fisher > 0)
    fisher = fisher_token_weights(model, images_, n_, opt.batch, kFisherSamples, opt.recon.seed, [&](int d, int n) {
      if (progress) progress({0, total_sites, cat("Fisher token weights ", d, "/", n, " images"), ""});
    });
  // The FP model's residual stream and the partly quantized model's (calibrate.h).
  avector<float> xf = fwd.new_stream(), xq = fwd.new_stream();
  for (int st = 0; st < fwd.stages(); ++st) {
    const auto& sites = stage_sites[size_t(st)];
    const bool last = st == fwd.stages() - 1;
    if (sites.empty() && last) break;

    // 1. FP pass: targets of this stage's sites (and FP inputs), advancing the FP stream.
    SiteTensorCapture fp(shapes, n_);
    fp.want_y.insert(sites.begin(), sites.end());
    if (opt.inputs == CalibInputs::FP) fp.want_xw.insert(sites.begin(), sites.end());
    fwd.advance(st, xf.data(), &fp);

    // 2. Each site in execution order, its inputs from the plan so far.
    for (const SiteId& id : sites) {
      if (progress) progress({done, total_sites, id.name(), ""});
      res.sites.push_back(calibrate_stage_site(method, fwd, sim, st, id, shapes, fp, xq.data(), opt, plan));
      ++done;
    }

    // 3. The method's step over the whole block, if it has one.
    if (st >= 1 && st <= c.depth && !sites.empty()) {
      BlockContext blk{fwd, st - 1, xq.data(), xf.data(), sim};
      nlohmann::ordered_json notes;
      method.calibrate_block(blk, plan, notes);
      if (!notes.is_null()) res.block_notes[cat("blocks.", st - 1)] = std::move(notes);
    }

    // The FP block's output of the quantized input (the local target of steps 4 and 5), computed
    // once when first asked for: neither step changes the FP block or xq.
    avector<float> fp_of_xq;
    auto local_target = [&]() -> const float* {
      if (fp_of_xq.empty()) {
        fp_of_xq.assign(xq.begin(), xq.end());
        fwd.advance(st, fp_of_xq.data(), nullptr);
      }
      return fp_of_xq.data();
    };

    // 4. Block reconstruction, if asked for: the block's codes and bias corrections trained.
    if (opt.recon.on() && st >= 1 && st <= c.depth && !sites.empty())
      res.block_notes[cat("blocks.", st - 1)]["reconstruction"] = reconstruct_stage(
          fwd, sim, st - 1, xq.data(), opt.recon.target == ReconTarget::Local ? local_target() : xf.data(),
          fisher.empty() ? nullptr : fisher[size_t(st - 1)].data(), plan, opt.recon, done, total_sites, progress);

    // 5. The block's error compensation, if asked for: fitted to what the finished block leaves.
    if (opt.compensation.on && st >= 1 && st <= c.depth && !sites.empty())
      res.block_notes[cat("blocks.", st - 1)]["compensation"] =
          compensate_block(fwd, sim, st, xq.data(),
                           opt.compensation.target == CompensationTarget::Local ? local_target() : xf.data(),
                           opt.compensation, *rewritten, plan);

    // 6. Quantized pass: advance the quantized stream with the stage's plan.
    if (!last) fwd.advance(st, xq.data(), &sim);
  }
  if (progress) progress({done, total_sites, "", ""});
  method.refine(NetworkContext{model, images_, n_, fwd.batch()}, plan, res.refine_notes);
  res.seconds = std::chrono::duration<double>(clock_type::now() - t_start).count();
  return res;
}

}  // namespace vitq
