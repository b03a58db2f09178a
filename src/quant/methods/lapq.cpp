// LAPQ, Loss Aware Post-training Quantization (Nahshan et al. 2019), in three steps:
//   1. per site (calibrate): for each p of --lapq-p, the steps of both operands minimising the
//      Lp norm of their quantization error (the paper's layer-wise initialisation);
//   2. network level (refine): the p whose steps give the least network loss on the loss images
//      (the paper picks p by the loss: the Lp-optimal steps for different p trace a path
//      through step space, and the loss along it has a minimum);
//   3. joint optimisation of all steps on the network loss with Powell's derivative-free
//      BOBYQA (NLopt LN_BOBYQA) from that initialisation (the paper uses Powell's method).
// The loss needs no labels: KL(p_FP32 ‖ p_quantized) of the softmax outputs, the FP32 logits
// computed once. (Cross-entropy with labels is not offered: the calibration driver does not
// load labels — calibration is unlabelled by design.)
//
// Why block-coordinate BOBYQA and not one BOBYQA over all steps: BOBYQA (as NLopt implements
// it) first evaluates 2n+1 interpolation points; a ViT-Ti has n = 146 steps, i.e. 293
// evaluations of the whole network before the first model step. Optimising one transformer
// block's steps at a time (n = 12, 25 points; patch_embed joins block 0, a quantized head the
// last block) spends the same ≈2 evaluations per step on the initial model but then makes
// model steps in every block, and each evaluation only runs the network from that block on:
// the residual stream entering the block is cached under the current best plan, so an
// evaluation is exact (the same loss as a full forward) at about half the cost on average.
// Blocks are visited in execution order; sweeps repeat while the budget allows, each with a
// smaller initial trust region. Every evaluation is counted against --lapq-evals; the best
// point seen is kept, so the final loss is never above the initialisation's.
#include "quant/methods/lapq.h"

#include <nlopt.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <functional>
#include <map>
#include <random>

#include "core/aligned.h"
#include "core/error.h"
#include "core/golden_section.h"
#include "quant/calibrate.h"
#include "quant/methods/methods.h"
#include "quant/simulate.h"
#include "quant/staged_forward.h"

namespace vitq {
namespace {

// Sums over the values of |v − Q(v)|^p for each p, in fixed chunks summed in order. Serial:
// callers parallelise over candidate steps (small parallel regions per call cost more than
// they gain on a loaded machine, where each one waits for every thread to be scheduled).
void lp_errors(const float* v, size_t n, float delta, QRange r, const std::vector<double>& ps, double* out) {
  const size_t P = ps.size();
  // e^p = e^⌊p⌋ · (√e if p is a half-integer): cheap for the usual p; std::pow otherwise.
  std::vector<int> ip(P), kind(P);  // kind: 0 integer, 1 half-integer, 2 other
  for (size_t j = 0; j < P; ++j) {
    ip[j] = int(std::floor(ps[j]));
    const double f = ps[j] - ip[j];
    kind[j] = f == 0 ? 0 : (f == 0.5 ? 1 : 2);
  }
  constexpr size_t chunk = 4096;
  const size_t nc = (n + chunk - 1) / chunk;
  std::vector<double> part(nc * P, 0.0);
  for (size_t c = 0; c < nc; ++c) {
    float err[chunk];
    const size_t b = c * chunk, len = std::min(n, b + chunk) - b;
    fake_quantize(v + b, err, len, delta, r);  // vectorised (runtime-dispatched) quantizer
    for (size_t i = 0; i < len; ++i) err[i] = std::fabs(v[b + i] - err[i]);
    for (size_t j = 0; j < P; ++j) {
      double acc = 0;
      if (kind[j] == 2) {
        for (size_t i = 0; i < len; ++i) acc += std::pow(double(err[i]), ps[j]);
      } else {
        const int k = ip[j];
        const bool half = kind[j] == 1;
#pragma omp simd reduction(+ : acc)
        for (size_t i = 0; i < len; ++i) {
          const double e = err[i];
          double pw = half ? std::sqrt(e) : 1.0;
          for (int t = 0; t < k; ++t) pw *= e;
          acc += pw;
        }
      }
      part[c * P + j] = acc;
    }
  }
  for (size_t j = 0; j < P; ++j) {
    double s = 0;
    for (size_t c = 0; c < nc; ++c) s += part[c * P + j];
    out[j] = s;
  }
}

}  // namespace

double lp_error(const float* v, size_t n, float delta, QRange r, double p) {
  double e = 0;
  lp_errors(v, n, delta, r, {p}, &e);
  return e;
}

std::vector<float> lp_optimal_steps(const float* v, size_t n, QRange r, const std::vector<double>& ps,
                                    size_t max_samples, uint64_t seed) {
  const float d0 = max_step(max_abs(v, n), r);
  std::vector<float> steps(ps.size(), d0);
  if (n == 0 || ps.empty()) return steps;
  std::vector<float> sample;
  if (n > max_samples) {  // with replacement; rng() % n: platform-independent
    std::mt19937_64 rng(seed ^ 0x5851f42d4c957f2dull);
    sample.resize(max_samples);
    for (float& s : sample) s = v[rng() % n];
    v = sample.data();
    n = sample.size();
  }
  // Log-spaced grid of Δ/Δ₀ in [2^-8, 1], every p at once.
  const int G = 40;
  const size_t P = ps.size();
  std::vector<double> t(G), err(size_t(G) * P);
  for (int i = 0; i < G; ++i) t[size_t(i)] = std::exp2(-8.0 + 8.0 * i / (G - 1));
#pragma omp parallel for schedule(dynamic, 1)
  for (int i = 0; i < G; ++i) lp_errors(v, n, float(d0 * t[size_t(i)]), r, ps, err.data() + size_t(i) * P);
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t j = 0; j < P; ++j) {
    int best = 0;
    for (int i = 1; i < G; ++i)
      if (err[size_t(i) * P + j] < err[size_t(best) * P + j]) best = i;
    // Golden-section refinement between the neighbours of the best grid point.
    // 20 steps; the best point evaluated is kept.
    double bt = t[size_t(best)], be = err[size_t(best) * P + j];
    auto f = [&](double x) {
      const double e = lp_error(v, n, float(d0 * x), r, ps[j]);
      if (e < be) be = e, bt = x;
      return e;
    };
    golden_section(f, t[size_t(std::max(best - 1, 0))], t[size_t(std::min(best + 1, G - 1))],
                   [](double, double, int step) { return step < 20; });
    steps[j] = float(d0 * bt);
  }
  return steps;
}

namespace {

// The network loss of the plan being optimised, evaluated from a cached residual stream: the
// input of stage `from` (0 = embedding from the images, 1..depth = blocks, depth+1 = head) for
// every loss image, under the current plan.
class LossEval {
 public:
  LossEval(const ViTModel& m, const float* images, int n, int batch, const QuantPlan& plan)
      : fwd_(m, images, n, batch), sim_(m, plan) {
    fp_.resize(size_t(n) * fwd_.logit_floats());
    q_.resize(size_t(n) * fwd_.logit_floats());
    fwd_.replay(0, fwd_.stages() - 1, nullptr, nullptr, fp_.data());
    cache_ = fwd_.new_stream();
  }
  void forget(const SiteId& id) { sim_.forget(id); }

  double loss() {
    fwd_.replay(from_, fwd_.stages() - 1, cache_.data(), &sim_, q_.data());
    ++evals_;
    return kl_from_logits(fp_.data(), q_.data(), fwd_.images(), int(fwd_.logit_floats()));
  }

  // Moves the cache to the input of stage s under the current plan (s < from restarts at 0).
  void advance_to(int s) {
    if (s < from_) from_ = 0;
    for (; from_ < s; ++from_) fwd_.advance(from_, cache_.data(), &sim_);
  }
  int evals() const { return evals_; }

 private:
  StagedForward fwd_;
  PlanSimulator sim_;
  int from_ = 0, evals_ = 0;
  std::vector<float> fp_, q_;
  avector<float> cache_;
};

// One variable of the network-level optimisation: a step of a planned site.
struct Var {
  std::string site;
  SiteId id;
  bool is_w;
  const std::vector<float>* steps;  // per p
  float init = 0;                   // step at the chosen p
  int stage = 0;
};

// The variables one BOBYQA run optimises together: the steps of one block (stage key).
struct Group {
  int key = 0, first_stage = 0;
  std::vector<size_t> vars;
};

// Consecutive variables of one block form a group; patch_embed joins block 0, the head the last.
std::vector<Group> block_groups(const std::vector<Var>& vars, int depth) {
  std::vector<Group> groups;
  for (size_t i = 0; i < vars.size(); ++i) {
    const int key = std::clamp(vars[i].stage, 1, depth);
    if (groups.empty() || groups.back().key != key) groups.push_back({key, vars[i].stage, {}});
    groups.back().vars.push_back(i);
    groups.back().first_stage = std::min(groups.back().first_stage, vars[i].stage);
  }
  return groups;
}

struct BobyqaResult {
  std::vector<double> best;  // the best point evaluated (x0 if nothing beat start_loss)
  double best_loss = 0;
  std::string status;        // NLopt's result, or the reason it stopped
};

// Minimises loss over [-bound, bound]^n from x0 with NLopt's LN_BOBYQA (initial trust region
// rho, at most max_evals evaluations), keeping the best point seen. An exception thrown by
// loss stops the run and is rethrown.
BobyqaResult bobyqa_minimize(const std::function<double(const double*)>& loss, const std::vector<double>& x0,
                             double start_loss, double bound, double rho, int max_evals) {
  const unsigned n = unsigned(x0.size());
  BobyqaResult r{x0, start_loss, ""};
  std::exception_ptr err;
  nlopt::opt opt(nlopt::LN_BOBYQA, n);
  struct Ctx {
    const std::function<double(const double*)>* loss;
    BobyqaResult* r;
    std::exception_ptr* err;
    nlopt::opt* opt;
  } ctx{&loss, &r, &err, &opt};
  opt.set_min_objective(
      [](unsigned nn, const double* x, double*, void* data) -> double {
        auto* c = static_cast<Ctx*>(data);
        try {
          const double l = (*c->loss)(x);
          if (l < c->r->best_loss) {
            c->r->best_loss = l;
            c->r->best.assign(x, x + nn);
          }
          return l;
        } catch (...) {
          *c->err = std::current_exception();
          c->opt->force_stop();
          return HUGE_VAL;
        }
      },
      &ctx);
  opt.set_lower_bounds(std::vector<double>(n, -bound));
  opt.set_upper_bounds(std::vector<double>(n, bound));
  opt.set_initial_step(rho);
  opt.set_maxeval(max_evals);
  opt.set_xtol_abs(1e-3);
  std::vector<double> x = x0;
  double fx = 0;
  try {
    r.status = nlopt_result_to_string(nlopt_result(opt.optimize(x, fx)));
  } catch (const std::exception& e) {  // roundoff-limited, forced stop, ...: keep the best seen
    r.status = e.what();
  }
  if (err) std::rethrow_exception(err);
  return r;
}

class Lapq : public Method {
 public:
  Lapq(const LapqOptions& a, uint64_t seed) : a_(a), seed_(seed) {
    if (a.p.empty()) fail(ErrorKind::Usage, "--lapq-p needs at least one value");
    for (double p : a.p)
      if (!(p >= 0.5 && p <= 8)) fail(ErrorKind::Usage, "--lapq-p values must be in [0.5, 8] (got ", p, ")");
    if (a.evals < int(a.p.size()) + 1)
      fail(ErrorKind::Usage, "--lapq-evals must be at least the number of --lapq-p values + 1");
    if (a.loss_images < 0) fail(ErrorKind::Usage, "--lapq-loss-images must be >= 0");
    if (!(a.range > 1 && a.range <= 16)) fail(ErrorKind::Usage, "--lapq-range must be in (1, 16]");
    // The driver's per-site pass uses the middle p (the network-level step then picks one).
    p_default_ = a.p.size() / 2;
  }
  std::string name() const override { return "lapq"; }
  nlohmann::ordered_json settings(const GridPolicy& g) const override {
    return {{"p", a_.p},
            {"joint", a_.joint},
            {"evals", a_.evals},
            {"loss_images", a_.loss_images},
            {"range", a_.range},
            {"loss", "kl_fp32"},
            {"optimizer", "nlopt LN_BOBYQA, block-coordinate"},
            {"unsigned_softmax", g.unsigned_softmax()},
            {"seed", seed_}};
  }

  SitePlan calibrate(const SiteObservation& obs, Bits bits, SiteNotes& notes) override {
    SitePlan sp = minmax_site_plan(obs, bits);
    const size_t nx = size_t(obs.x_per_image()) * obs.images;
    const size_t nw = obs.attention() ? size_t(obs.w_per_image()) * obs.images : size_t(obs.shape.N) * obs.shape.K;
    const uint64_t seed = seed_ * 0x9e3779b97f4a7c15ull + std::hash<std::string>{}(obs.shape.id.name());
    Init& in = init_[obs.shape.id.name()];
    in.x = lp_optimal_steps(obs.x, nx, sp.x.range(), a_.p, size_t(1) << 16, seed);
    in.w = lp_optimal_steps(obs.w, nw, sp.w.range(), a_.p, size_t(1) << 16, seed + 1);
    sp.x.scale = in.x[p_default_];
    sp.w.scale = in.w[p_default_];
    nlohmann::ordered_json jx = nlohmann::ordered_json::object(), jw = nlohmann::ordered_json::object();
    for (size_t j = 0; j < a_.p.size(); ++j) {
      const std::string k = nlohmann::ordered_json(a_.p[j]).dump();
      jx[k] = in.x[j];
      jw[k] = in.w[j];
    }
    notes.j["lp_steps_x"] = jx;
    notes.j["lp_steps_w"] = jw;
    return sp;
  }

  void refine(const NetworkContext& net, QuantPlan& plan, nlohmann::ordered_json& notes) override;

 private:
  struct Refine;
  struct Init {
    std::vector<float> x, w;  // Lp-optimal steps per p
  };
  LapqOptions a_;
  uint64_t seed_;
  size_t p_default_ = 0;
  std::map<std::string, Init> init_;
};

// The state of one network-level step: the variables, the loss and its log.
struct Lapq::Refine {
  const LapqOptions& a;
  QuantPlan& plan;
  std::vector<Var> vars;
  LossEval ev;
  nlohmann::ordered_json curve = nlohmann::ordered_json::array();
  std::vector<double> xcur;  // log(step / init) per variable

  void set_step(const Var& v, float step) {
    SitePlan& sp = plan.sites.at(v.site);
    (v.is_w ? sp.w.scale : sp.x.scale) = step;
  }
  void forget_all() {
    for (const Var& v : vars) ev.forget(v.id);
  }
  double full_loss() {
    ev.advance_to(0);
    const double l = ev.loss();
    curve.push_back(l);
    return l;
  }
  size_t select_p(double& init_loss, nlohmann::ordered_json& p_losses);
  int sweep(const std::vector<Group>& groups, int sweep_index, int budget, double& best_loss,
            nlohmann::ordered_json& group_log);
};

// Step 2: every site at its Lp-optimal steps for each p; the p of the least network loss.
size_t Lapq::Refine::select_p(double& init_loss, nlohmann::ordered_json& p_losses) {
  size_t best_p = 0;
  init_loss = INFINITY;
  for (size_t j = 0; j < a.p.size(); ++j) {
    for (const Var& v : vars) set_step(v, (*v.steps)[j]);
    forget_all();
    const double l = full_loss();
    p_losses[nlohmann::ordered_json(a.p[j]).dump()] = l;
    if (l < init_loss) init_loss = l, best_p = j;
  }
  for (Var& v : vars) {
    v.init = (*v.steps)[best_p];
    set_step(v, v.init);
  }
  forget_all();
  return best_p;
}

// Step 3, one sweep over the blocks in log(step / init) space, the budget shared in proportion
// to each group's size. Returns the evaluations used.
int Lapq::Refine::sweep(const std::vector<Group>& groups, int sweep_index, int budget, double& best_loss,
                        nlohmann::ordered_json& group_log) {
  auto need = [](const Group& g) { return 2 * int(g.vars.size()) + 2; };
  const double rho = 0.15 / double(1 << sweep_index), bound = std::log(a.range);
  int dims_left = int(vars.size()), used_total = 0;
  for (const Group& g : groups) {
    const int n = int(g.vars.size());
    const int gb = std::min(budget, std::max(need(g), int(double(budget) * n / dims_left)));
    dims_left -= n;
    if (gb < need(g)) {
      group_log.push_back({{"sweep", sweep_index}, {"first_site", vars[g.vars.front()].site}, {"skipped", "budget"}});
      continue;
    }
    ev.advance_to(g.first_stage);
    std::vector<double> x0(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) x0[size_t(i)] = xcur[g.vars[size_t(i)]];
    const int evals0 = ev.evals();
    auto apply = [&](const double* x) {
      for (int i = 0; i < n; ++i) {
        const Var& v = vars[g.vars[size_t(i)]];
        set_step(v, float(v.init * std::exp(x[i])));
        if (v.is_w) ev.forget(v.id);
      }
    };
    const BobyqaResult r = bobyqa_minimize(
        [&](const double* x) {
          apply(x);
          const double l = ev.loss();
          curve.push_back(l);
          return l;
        },
        x0, best_loss, bound, rho, gb);
    apply(r.best.data());  // the best point seen (the start if nothing beat it)
    for (int i = 0; i < n; ++i) xcur[g.vars[size_t(i)]] = r.best[size_t(i)];
    const int used = ev.evals() - evals0;
    budget -= used;
    used_total += used;
    group_log.push_back({{"sweep", sweep_index},
                         {"first_site", vars[g.vars.front()].site},
                         {"steps", n},
                         {"evals", used},
                         {"start_loss", best_loss},
                         {"best_loss", r.best_loss},
                         {"nlopt", r.status}});
    best_loss = r.best_loss;
  }
  return used_total;
}

void Lapq::refine(const NetworkContext& net, QuantPlan& plan, nlohmann::ordered_json& notes) {
  using clock_type = std::chrono::steady_clock;
  const auto t0 = clock_type::now();
  const ViTConfig& cfg = net.model.cfg;
  const int n_loss = a_.loss_images == 0 ? net.n : std::min(net.n, a_.loss_images);

  // The variables: both steps of every planned site, in execution order (not an input whose
  // format fixes its step: per token, or a level grid)
  std::vector<Var> vars;
  for (const SiteShape& s : model_sites(cfg)) {
    auto it = plan.sites.find(s.id.name());
    auto in = init_.find(s.id.name());
    if (it == plan.sites.end() || in == init_.end() || !it->second.x.quantized()) continue;
    const OperandQuant& x = it->second.x;
    if (!x.per_token && !is_level_grid(x.grid))
      vars.push_back({s.id.name(), s.id, false, &in->second.x, 0, stage_of(s.id, cfg.depth)});
    // (not a weight whose codes or per-channel steps were chosen after the method, e.g. by GPTQ:
    // the per-tensor step no longer applies to it)
    // (nor K per token: its rows' steps are found at run time)
    if (!it->second.has_weight_codes() && !it->second.w.per_channel() && !it->second.w.per_token)
      vars.push_back({s.id.name(), s.id, true, &in->second.w, 0, stage_of(s.id, cfg.depth)});
  }
  if (vars.empty()) return;
  const size_t nv = vars.size();
  Refine st{a_, plan, std::move(vars), LossEval(net.model, net.images, n_loss, net.batch, plan), {},
            std::vector<double>(nv, 0.0)};

  // 2. Choose p by the network loss.
  nlohmann::ordered_json p_losses = nlohmann::ordered_json::object();
  double init_loss = INFINITY;
  const size_t best_p = st.select_p(init_loss, p_losses);
  const double t_select = std::chrono::duration<double>(clock_type::now() - t0).count();

  // 3. Joint optimisation, block by block (see the file comment).
  const std::vector<Group> groups = block_groups(st.vars, cfg.depth);
  double best_loss = init_loss;
  int budget = a_.evals - int(a_.p.size()) - 1;  // 1 for the final check
  nlohmann::ordered_json group_log = nlohmann::ordered_json::array();
  int sweeps = 0, total_need = 0;
  for (const Group& g : groups) total_need += 2 * int(g.vars.size()) + 2;
  const bool enough = budget >= total_need;
  while (a_.joint && sweeps < 4 && budget >= (sweeps == 0 ? 2 * int(groups.front().vars.size()) + 2 : total_need)) {
    budget -= st.sweep(groups, sweeps, budget, best_loss, group_log);
    ++sweeps;
  }
  // Final check: a full evaluation of the plan kept (deterministic: equals the best seen).
  const double final_loss = st.full_loss();
  if (final_loss > init_loss) {  // cannot happen with a deterministic forward; guard anyway
    for (Var& v : st.vars) st.set_step(v, v.init);
    st.forget_all();
  }
  nlohmann::ordered_json steps = nlohmann::ordered_json::object();
  for (size_t i = 0; i < nv; ++i)
    steps[st.vars[i].site + (st.vars[i].is_w ? ".w" : ".x")] = {{"init", st.vars[i].init},
                                                                {"ratio", std::exp(st.xcur[i])}};
  notes["method"] = "lapq";
  notes["loss"] = cat("mean KL(softmax FP32 || softmax quantized) over ", n_loss,
                      " calibration images (no labels: the calibration set is unlabelled)");
  notes["loss_images"] = n_loss;
  notes["p_losses"] = p_losses;
  notes["chosen_p"] = a_.p[best_p];
  notes["init_loss"] = init_loss;
  notes["final_loss"] = std::min(final_loss, init_loss);
  notes["optimizer"] = "NLopt LN_BOBYQA (Powell), one block's steps at a time, log(step/init) in [-ln r, ln r]";
  notes["variables"] = nv;
  notes["groups"] = groups.size();
  notes["sweeps"] = sweeps;
  notes["budget_covers_one_sweep"] = enough;
  notes["evaluations"] = st.ev.evals();
  notes["seconds_p_selection"] = t_select;
  notes["seconds"] = std::chrono::duration<double>(clock_type::now() - t0).count();
  notes["loss_curve"] = st.curve;
  notes["group_steps"] = group_log;
  notes["steps"] = steps;
}

}  // namespace

void LapqOptions::declare(OptionDecls& d) {
  d.reals("--lapq-p", &p, 0.5, 8, "the p of the Lp-norm initialisations, comma-separated; the network loss picks one");
  d.integer("--lapq-evals", &evals, 1, 1000000,
            "network loss evaluations of the network-level step in all (one per p, the joint BOBYQA steps, one final "
            "check); one block's optimisation needs 2n+2 for its n steps (26 for a ViT block)");
  d.integer("--lapq-loss-images", &loss_images, 0, 65536,
            "calibration images the network loss is computed on (the first of the seeded calibration subset; 0 = "
            "all)");
  d.real("--lapq-range", &range, 1, 16, "the joint step keeps each step within [init / r, init * r]", true);
  d.off_switch("--lapq-no-joint", &joint, "stop after choosing p, no joint optimisation (ablation)");
}

std::unique_ptr<Method> make_lapq(const MethodConfig& cfg) {
  return std::make_unique<Lapq>(cfg.get<LapqOptions>("lapq"), cfg.common.seed);
}

}  // namespace vitq
