#include "quant/mixed_precision.h"

#include <Eigen/SVD>
#include <algorithm>
#include <memory>
#include <chrono>
#include <map>

#include "core/error.h"
#include "quant/mixed_precision_kl.h"
#include "quant/plan_transforms.h"
#include "quant/observers.h"
#include "quant/simulate.h"
#include "quant/staged_forward.h"

namespace vitq {

double paired_gain_se(const std::vector<double>& candidate, const std::vector<double>& base) {
  if (candidate.size() != base.size() || candidate.empty())
    fail(ErrorKind::Internal, "paired_gain_se: ", candidate.size(), " and ", base.size(), " values");
  const size_t n = base.size();
  double mean = 0;
  for (size_t i = 0; i < n; ++i) mean += base[i] - candidate[i];
  mean /= double(n);
  double ss = 0;
  for (size_t i = 0; i < n; ++i) ss += (base[i] - candidate[i] - mean) * (base[i] - candidate[i] - mean);
  const double se = n > 1 ? std::sqrt(ss / double(n - 1) / double(n)) : 0.0;
  if (se > 0) return mean / se;
  return mean > 0 ? INFINITY : mean < 0 ? -INFINITY : 0.0;
}

std::vector<AllocationPoint> pareto_frontier(const std::vector<std::vector<double>>& cost,
                                             const std::vector<std::vector<int64_t>>& size, int64_t max_size) {
  std::vector<AllocationPoint> front = {AllocationPoint{}};
  for (size_t m = 0; m < cost.size(); ++m) {
    std::vector<AllocationPoint> next;
    for (const auto& p : front)
      for (size_t c = 0; c < cost[m].size(); ++c) {
        AllocationPoint q{p.size + size[m][c], p.omega + cost[m][c], p.choice};
        if (q.size > max_size) continue;
        q.choice.push_back(int(c));
        next.push_back(std::move(q));
      }
    std::stable_sort(next.begin(), next.end(), [](const AllocationPoint& a, const AllocationPoint& b) {
      return a.size != b.size ? a.size < b.size : a.omega < b.omega;
    });
    front.clear();
    for (auto& p : next)  // keep a point only if it is cheaper than every smaller one
      if (front.empty() || p.omega < front.back().omega) {
        if (!front.empty() && front.back().size == p.size) continue;
        front.push_back(std::move(p));
      }
  }
  return front;
}

AllocationPoint allocate_bits(const std::vector<std::vector<double>>& cost,
                              const std::vector<std::vector<int64_t>>& size, int64_t budget) {
  std::vector<AllocationPoint> f = pareto_frontier(cost, size, budget);
  if (f.empty() || (f.size() == 1 && f[0].choice.size() != cost.size()))
    fail(ErrorKind::Usage, "mixed precision: no bit allocation fits the size budget");
  return f.back();  // the largest size within budget has the least Ω
}

namespace {

using clock_type = std::chrono::steady_clock;

double nuclear_norm(const float* a, int rows, int cols) {
  Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> m(a, rows, cols);
  Eigen::BDCSVD<Eigen::MatrixXf> svd(m.cast<float>());
  return double(svd.singularValues().cast<double>().sum());
}

// Per module (2·block = attention, 2·block + 1 = MLP): σ, the mean nuclear norm of its
// sensitivity matrix over the first svd_n images, and the perturbation at each candidate plan.
struct Sensitivity {
  std::vector<double> sigma;
  std::vector<std::vector<double>> pert;  // [module][candidate], Σ over images of ||Ŷ − Y||²
};

// Sums of the nuclear norms of a block's sensitivity matrices and their counts.
struct NormSums {
  double msa = 0, mlp = 0;
  int count_msa = 0, count_mlp = 0;
};

// Adds the nuclear norms of the sensitivity matrices in one block's FP pass on a batch (the
// first svd_here images of it) to `sums`: the attention maps P (matmul_av's input, per image
// and head) and the MLP output (fc2's).
class SensitivityHook : public SelectiveSimulation {
 public:
  SensitivityHook(int blk, int svd_here, int T, int D, int H, NormSums& sums) {
    on_site = [=, this, &sums](const SiteCall& call) {
      if (svd_here == 0) return;
      if (call.site == SiteId{SiteKind::MatmulAV, blk}) {  // call.x holds P, image-major
        vals_.assign(size_t(svd_here) * H, 0.0);
#pragma omp parallel for schedule(dynamic, 1)
        for (int g = 0; g < svd_here * H; ++g) vals_[size_t(g)] = nuclear_norm(call.x + size_t(g) * T * T, T, T);
        for (double v : vals_) sums.msa += v;
        sums.count_msa += svd_here * H;
      } else if (call.site == SiteId{SiteKind::Fc2, blk}) {
        vals_.assign(size_t(svd_here), 0.0);
#pragma omp parallel for schedule(dynamic, 1)
        for (int g = 0; g < svd_here; ++g) vals_[size_t(g)] = nuclear_norm(call.y + size_t(g) * T * D, T, D);
        for (double v : vals_) sums.mlp += v;
        sums.count_mlp += svd_here;
      }
    };
  }
 private:
  std::vector<double> vals_;
};

Sensitivity module_sensitivity(const ViTModel& run_model, const float* images, int n, int batch,
                               const std::vector<QuantPlan>& plans, int svd_n) {
  const ViTConfig& c = run_model.cfg;
  const int T = c.tokens(), D = c.embed_dim, H = c.num_heads, C = int(plans.size());
  StagedForward fwd(run_model, images, n, batch);
  const int B = fwd.batch();
  const size_t tok = fwd.stream_floats();
  Sensitivity r{std::vector<double>(size_t(2 * c.depth), 0.0),
                std::vector<std::vector<double>>(size_t(2 * c.depth), std::vector<double>(size_t(C), 0.0))};
  avector<float> x = fwd.new_stream(), work(size_t(B) * tok);
  fwd.advance(0, x.data(), nullptr);
  avector<float> y_msa(size_t(B) * tok), y_mlp(size_t(B) * tok), q_out(size_t(B) * tok);
  for (int blk = 0; blk < c.depth; ++blk) {
    const SiteId proj{SiteKind::Proj, blk}, fc2{SiteKind::Fc2, blk};
    NormSums sums;
    for (int i0 = 0; i0 < n; i0 += B) {
      const int b = std::min(B, n - i0);
      // FP block: outputs of both modules, and the sensitivity matrices.
      SensitivityHook fp(blk, std::max(0, std::min(b, svd_n - i0)), T, D, H, sums);
      fp.capture[proj] = y_msa.data();
      fp.capture[fc2] = y_mlp.data();
      float* xb = x.data() + size_t(i0) * tok;
      std::copy_n(xb, size_t(b) * tok, work.data());
      fwd.run(blk + 1, i0, b, work.data(), &fp);
      // Each module alone at each candidate width.
      for (int k = 0; k < C; ++k) {
        PlanSimulator sim(run_model, plans[size_t(k)]);
        for (int msa = 1; msa >= 0; --msa) {
          SelectiveSimulation q;
          q.inner = &sim;
          for (SiteKind kind : {SiteKind::Qkv, SiteKind::MatmulQK, SiteKind::MatmulAV, SiteKind::Proj, SiteKind::Fc1,
                                SiteKind::Fc2})
            if (SiteId{kind, blk}.in_attention_module() == bool(msa)) q.allowed.insert({kind, blk});
          q.capture[msa ? proj : fc2] = q_out.data();
          std::copy_n(xb, size_t(b) * tok, work.data());
          fwd.run(blk + 1, i0, b, work.data(), &q);
          const float* ref = msa ? y_msa.data() : y_mlp.data();
          double e = 0;
          for (size_t j = 0; j < size_t(b) * tok; ++j) {
            const double d = double(q_out[j]) - ref[j];
            e += d * d;
          }
          r.pert[size_t(2 * blk + (msa ? 0 : 1))][size_t(k)] += e;
        }
      }
      fwd.run(blk + 1, i0, b, xb, nullptr);  // advance the FP stream
    }
    r.sigma[size_t(2 * blk)] = sums.count_msa ? sums.msa / sums.count_msa : 0;
    r.sigma[size_t(2 * blk + 1)] = sums.count_mlp ? sums.mlp / sums.count_mlp : 0;
  }
  return r;
}

// The report of the allocation: the chosen bits per module, its inputs, and the Pareto frontier.
nlohmann::ordered_json allocation_report(int target_bits, const std::vector<int>& cand, int64_t budget,
                                         const AllocationPoint& best, const std::vector<AllocationPoint>& front,
                                         const std::vector<double>& sigma, const std::vector<std::vector<double>>& pert,
                                         const std::vector<std::vector<double>>& cost, int svd_n) {
  const int modules = int(sigma.size());
  nlohmann::ordered_json r;
  r["target_bits"] = target_bits;
  r["candidates"] = cand;
  r["budget_weight_bits"] = budget;
  r["chosen_weight_bits"] = best.size;
  r["omega"] = best.omega;
  r["svd_images"] = svd_n;
  r["sensitivity"] = "nuclear norm of the attention map (MSA, mean over images and heads) / of the MLP output "
                     "(mean over images)";
  r["perturbation"] = "||Y_hat - Y||^2 of the module output (attention proj / fc2), module alone quantized, "
                      "mean over calibration images";
  nlohmann::ordered_json mods = nlohmann::ordered_json::array();
  for (int m = 0; m < modules; ++m) {
    nlohmann::ordered_json j;
    j["module"] = cat("blocks.", m / 2, m % 2 == 0 ? ".attn" : ".mlp");
    j["sigma"] = sigma[size_t(m)];
    j["perturbation"] = pert[size_t(m)];
    j["omega"] = cost[size_t(m)];
    j["bits"] = cand[size_t(best.choice[size_t(m)])];
    mods.push_back(j);
  }
  r["modules"] = mods;
  nlohmann::ordered_json fr = nlohmann::ordered_json::array();
  for (const auto& p : front) {
    std::vector<int> bits;
    for (int k : p.choice) bits.push_back(cand[size_t(k)]);
    fr.push_back({{"weight_bits", p.size}, {"omega", p.omega}, {"bits", bits}});
  }
  r["pareto_frontier"] = fr;
  return r;
}

double mean_of(const std::vector<double>& v) {
  double t = 0;
  for (double x : v) t += x;
  return v.empty() ? 0.0 : t / double(v.size());
}

// Weight parameters per module (the size of a choice is params × bits).
std::vector<int64_t> module_params(const ViTModel& model) {
  std::vector<int64_t> p;
  for (const BlockWeights& bw : model.blocks) {
    p.push_back(bw.qkv.w.numel() + bw.proj.w.numel());
    p.push_back(bw.fc1.w.numel() + bw.fc2.w.numel());
  }
  return p;
}

// What an allocation step returns: the chosen width per module and the report.
struct Allocation {
  std::vector<int> bits;
  nlohmann::ordered_json report;
  std::vector<double> uniform_kl, composed_kl;  // end to end: per check image, uniform and the best checked point
};

// The paper's allocation: σ · perturbation, exact under the budget.
Allocation nuclear_allocation(const ViTModel& model, const float* images, int n, const CalibOptions& base,
                              const MixedPrecisionOptions& mpo, const std::vector<int>& cand,
                              const std::vector<QuantPlan>& plans, const std::vector<std::vector<int64_t>>& size,
                              int64_t budget) {
  // With transforms the plans are for the rewritten model (the same FP function, the same
  // rewrite for every width).
  std::unique_ptr<ViTModel> rewritten;
  const ViTModel& run_model = apply_plan_transforms(model, plans.at(0), rewritten, "mixed precision");
  const int svd_n = std::min(n, std::max(1, mpo.svd_images));
  Sensitivity sens = module_sensitivity(run_model, images, n, base.batch, plans, svd_n);
  std::vector<std::vector<double>>& pert = sens.pert;
  for (auto& row : pert)
    for (auto& v : row) v /= n;  // mean squared-error norm per image
  std::vector<std::vector<double>> cost(pert.size(), std::vector<double>(cand.size()));
  for (size_t m = 0; m < pert.size(); ++m)
    for (size_t k = 0; k < cand.size(); ++k) cost[m][k] = sens.sigma[m] * pert[m][k];
  const std::vector<AllocationPoint> front = pareto_frontier(cost, size, budget);
  const AllocationPoint best = allocate_bits(cost, size, budget);
  Allocation a;
  for (int k : best.choice) a.bits.push_back(cand[size_t(k)]);
  a.report = allocation_report(mpo.target_bits, cand, budget, best, front, sens.sigma, pert, cost, svd_n);
  a.report["allocation"] = "nuclear (the paper's)";
  return a;
}

// vitq's allocation (mixed_precision_kl.h): end-to-end KL costs, then the frontier's points
// nearest the budget checked on the simulated network against the uniform target plan
// (plans[base_k]); the least measured KL wins, the uniform plan on a tie.
Allocation end_to_end_allocation(NetworkKl& cost_kl, NetworkKl& kl, const MixedPrecisionOptions& mpo,
                                 const std::vector<int>& cand, const std::vector<QuantPlan>& plans, int base_k,
                                 const std::vector<std::vector<int64_t>>& size, int64_t budget,
                                 const std::function<void(const std::string&)>& stage) {
  std::vector<int> bits = cand;
  if (size_t(base_k) == cand.size()) bits.push_back(mpo.target_bits);  // the target is not a candidate
  std::vector<std::vector<double>> cost = module_kl_costs(cost_kl, plans, base_k, bits, stage);
  const std::vector<double> uniform_pi = kl.per_image(plans[size_t(base_k)]);
  const double uniform_kl = mean_of(uniform_pi);
  // The additive prediction of a choice's network KL from the costs: the uniform plan's KL on the
  // cost images plus each module's change from it (Ω − (M − 1)·that KL).
  const size_t M = cost.size();
  auto weight_bits = [&](const std::vector<int>& per_module) {  // size[m][0] / cand[0]: module m's parameters
    int64_t wb = 0;
    for (size_t m = 0; m < M; ++m) wb += size[m][0] / cand[0] * per_module[m];
    return wb;
  };
  const double cost_base = cost.at(0).at(size_t(base_k));
  auto predicted = [&](double omega) { return omega - double(M - 1) * cost_base; };
  for (auto& row : cost) row.resize(cand.size());
  const std::vector<AllocationPoint> front = pareto_frontier(cost, size, budget);
  Allocation a{std::vector<int>(M, mpo.target_bits), {}, uniform_pi, uniform_pi};
  double best_kl = uniform_kl;
  nlohmann::ordered_json checked = nlohmann::ordered_json::array();
  const size_t first = front.size() > size_t(mpo.check_points) ? front.size() - size_t(mpo.check_points) : 0;
  for (size_t i = first; i < front.size(); ++i) {
    const AllocationPoint& p = front[i];
    if (p.choice.size() != M) continue;
    std::vector<const QuantPlan*> per_module;
    std::vector<int> pb;
    for (int k : p.choice) per_module.push_back(&plans[size_t(k)]), pb.push_back(cand[size_t(k)]);
    const std::vector<double> measured_pi = kl.per_image(compose_module_plans(plans[size_t(base_k)], per_module, pb));
    const double measured = mean_of(measured_pi);
    checked.push_back({{"weight_bits", p.size}, {"predicted_sum_kl", p.omega}, {"predicted_kl", predicted(p.omega)},
                       {"kl", measured}, {"bits", pb}});
    if (stage) stage(cat("frontier point of ", p.size, " weight bits: KL ", measured, " (uniform W", mpo.target_bits,
                         "A", mpo.target_bits, ": ", uniform_kl, ")"));
    if (measured < best_kl) best_kl = measured, a.bits = pb, a.composed_kl = measured_pi;
  }
  nlohmann::ordered_json& r = a.report;
  r["target_bits"] = mpo.target_bits;
  r["candidates"] = cand;
  r["allocation"] = "end-to-end";
  r["cost"] = "KL(p_fp || p_q) of the network's output, mean over the KL images, with the module at the "
              "candidate width and every other module at the target width (uniform plans of the method composed); "
              "the checked allocations, the uniform plan (uniform_kl) and the final plans measured on the check "
              "images (with a hold-out: the held-out calibration images, which no plan was calibrated on)";
  r["kl_images"] = cost_kl.images();
  r["check_images"] = kl.images();
  r["budget_weight_bits"] = budget;
  r["uniform_kl"] = uniform_kl;
  r["module_costs"] = cost;
  r["cost_uniform_kl"] = cost_base;
  nlohmann::ordered_json fr = nlohmann::ordered_json::array();
  for (const AllocationPoint& p : front) fr.push_back({{"weight_bits", p.size}, {"predicted_kl", predicted(p.omega)}});
  r["frontier"] = fr;
  r["checked"] = checked;
  // The uniform plans of the other widths on the check images: where the mixed plans stand.
  nlohmann::ordered_json widths = nlohmann::ordered_json::array();
  for (size_t k = 0; k < plans.size(); ++k) {
    widths.push_back({{"bits", bits[k]}, {"weight_bits", weight_bits(std::vector<int>(M, bits[k]))},
                      {"kl", int(k) == base_k ? uniform_kl : kl.of(plans[k])}});
  }
  r["uniform_widths"] = widths;
  r["chosen"] = a.bits == std::vector<int>(M, mpo.target_bits) ? "uniform" : "mixed";
  r["chosen_kl_composed"] = best_kl;
  r["bits"] = a.bits;
  r["chosen_weight_bits"] = weight_bits(a.bits);
  return a;
}

// The uniform plans composed module by module at `module_bits` (widths[k]: uniform[k]'s width),
// with each site's report line from the plan it came from.
CalibrationResult composed_result(const std::vector<CalibrationResult>& uniform, const std::vector<int>& widths,
                                  int base_k, const std::vector<int>& module_bits) {
  auto index_of = [&](int b) { return size_t(std::find(widths.begin(), widths.end(), b) - widths.begin()); };
  std::vector<const QuantPlan*> per_module;
  for (int b : module_bits) per_module.push_back(&uniform.at(index_of(b)).plan);
  CalibrationResult r = uniform[size_t(base_k)];
  r.plan = compose_module_plans(uniform[size_t(base_k)].plan, per_module, module_bits);
  for (SiteReport& line : r.sites) {
    SiteId id;
    if (!parse_site_name(line.site, &id) || id.block < 0) continue;
    const auto& from = uniform.at(index_of(module_bits[size_t(2 * id.block + (id.in_attention_module() ? 0 : 1))])).sites;
    for (const SiteReport& f : from)
      if (f.site == line.site) line = f;
  }
  r.block_notes = nlohmann::ordered_json();
  return r;
}

// The split of the end-to-end choice: every k-th image is held out, the rest calibrate. The
// calibration subset is in dataset order (often by class), so the split interleaves.
struct HeldOutSplit {
  avector<float> fit, held;
  int n_fit = 0, n_held = 0;
};

HeldOutSplit split_images(const float* images, int n, size_t per_image, int k) {
  HeldOutSplit s;
  s.n_held = n / k;
  s.n_fit = n - s.n_held;
  s.fit.resize(size_t(s.n_fit) * per_image);
  s.held.resize(size_t(s.n_held) * per_image);
  int f = 0, h = 0;
  for (int i = 0; i < n; ++i) {
    float* dst = i % k == k - 1 ? s.held.data() + size_t(h++) * per_image : s.fit.data() + size_t(f++) * per_image;
    std::copy_n(images + size_t(i) * per_image, per_image, dst);
  }
  return s;
}

// The method's uniform plan at each width, calibrated on `images`.
std::vector<CalibrationResult> uniform_plans(const ViTModel& model, const float* images, int n, Method& method,
                                             const CalibOptions& base, const std::vector<int>& widths,
                                             const std::function<void(const std::string&)>& stage,
                                             const std::function<void(const CalibProgress&)>& progress) {
  std::vector<CalibrationResult> uniform;
  for (int b : widths) {
    if (stage) stage(cat("uniform W", b, "A", b, " plan on ", n, " images"));
    CalibOptions o = base;
    o.bits = {b, b};
    o.block_bits.clear();
    Calibrator cal(model, images, n);
    uniform.push_back(cal.run(method, o, progress));
  }
  return uniform;
}

// The method calibrated with one width per module (patch embedding and head at the target width).
CalibrationResult calibrate_widths(const ViTModel& model, const float* images, int n, Method& method,
                                   const CalibOptions& base, int target, const std::vector<int>& module_bits,
                                   const std::function<void(const CalibProgress&)>& progress) {
  CalibOptions fin = base;
  fin.bits = {target, target};
  fin.block_bits.clear();
  for (int b : module_bits) fin.block_bits.push_back({b, b});
  Calibrator cal(model, images, n);
  return cal.run(method, fin, progress);
}

// What the end-to-end choice keeps (measured on the check images).
enum class Kept { Uniform, Recalibrated, Composed };

Kept choose_plan(NetworkKl& kl, const QuantPlan& recalibrated, const Allocation& alloc, double min_gain_se,
                 nlohmann::ordered_json& report) {
  const std::vector<double> rec_pi = kl.per_image(recalibrated);
  const double final_kl = mean_of(rec_pi), composed_kl = mean_of(alloc.composed_kl);
  report["recalibrated_kl"] = final_kl;
  const bool composed = composed_kl < final_kl;
  const double z = paired_gain_se(composed ? alloc.composed_kl : rec_pi, alloc.uniform_kl);
  report["gain_se"] = std::isfinite(z) ? nlohmann::ordered_json(z) : nlohmann::ordered_json("inf");
  if (!(z > min_gain_se)) {
    report["chosen"] = cat("uniform (the better mixed plan, ", composed ? "composed" : "recalibrated",
                           ", measured ", z, " standard errors better; ", min_gain_se, " needed)");
    return Kept::Uniform;
  }
  if (composed) {
    report["final"] = "composed: the uniform plans at the chosen widths (they measured better than the "
                      "recalibrated mixed plan)";
    return Kept::Composed;
  }
  report["final"] = "recalibrated: the method calibrated again with the chosen widths";
  return Kept::Recalibrated;
}

}  // namespace

MixedPrecisionResult calibrate_mixed_precision(const ViTModel& model, const float* images, int n, Method& method,
                                               const CalibOptions& base, const MixedPrecisionOptions& mpo,
                                               const std::function<void(const std::string&)>& stage,
                                               const std::function<void(const CalibProgress&)>& progress) {
  const auto t0 = clock_type::now();
  std::vector<int> cand = mpo.candidates;
  if (cand.empty())
    for (int b = mpo.target_bits - 2; b <= mpo.target_bits + 2; ++b)
      if (b >= kMinBits && b <= std::min(kMaxBits, mpo.max_bits)) cand.push_back(b);
  const bool e2e = mpo.sensitivity == MpSensitivity::EndToEnd;

  // 0. End to end with a hold-out: plans and costs from the fit images, every choice on the held-out ones.
  const bool hold = e2e && mpo.holdout > 1 && n >= mpo.holdout;
  HeldOutSplit split;
  if (hold)
    split = split_images(images, n, size_t(model.cfg.in_chans) * model.cfg.img_size * model.cfg.img_size,
                         mpo.holdout);
  const float* fit = hold ? split.fit.data() : images;
  const int n_fit = hold ? split.n_fit : n;

  // 1. A uniform plan at every candidate bit-width (end to end: and at the target), from the method itself.
  std::vector<int> widths = cand;
  int base_k = int(std::find(cand.begin(), cand.end(), mpo.target_bits) - cand.begin());
  if (e2e && size_t(base_k) == cand.size()) widths.push_back(mpo.target_bits);
  std::vector<CalibrationResult> uniform = uniform_plans(model, fit, n_fit, method, base, widths, stage, progress);
  std::vector<QuantPlan> plans;
  for (const CalibrationResult& u : uniform) plans.push_back(u.plan);

  // 2. Costs and the allocation under the uniform model's weight size.
  const std::vector<int64_t> params = module_params(model);
  std::vector<std::vector<int64_t>> size(params.size(), std::vector<int64_t>(cand.size()));
  int64_t budget = 0;
  for (size_t m = 0; m < params.size(); ++m) {
    budget += params[m] * mpo.target_bits;
    for (size_t k = 0; k < cand.size(); ++k) size[m][k] = params[m] * cand[k];
  }
  MixedPrecisionResult res;
  if (!e2e) {
    if (stage) stage("sensitivity (nuclear norms) and perturbations");
    Allocation alloc = nuclear_allocation(model, images, n, base, mpo, cand, plans, size, budget);
    res.report = std::move(alloc.report);
    if (stage) stage("final calibration with the chosen bits");
    res.final = calibrate_widths(model, images, n, method, base, mpo.target_bits, alloc.bits, progress);
    res.report["seconds"] = std::chrono::duration<double>(clock_type::now() - t0).count();
    return res;
  }
  if (stage) stage("end-to-end KL of each module at each width");
  NetworkKl cost_kl(model, fit, std::min(n_fit, std::max(1, mpo.kl_images)), base.batch);
  const int n_check = hold ? split.n_held : n;
  NetworkKl kl(model, hold ? split.held.data() : images,
               mpo.check_images > 0 ? std::min(n_check, mpo.check_images) : n_check, base.batch);
  Allocation alloc = end_to_end_allocation(cost_kl, kl, mpo, cand, plans, base_k, size, budget, stage);
  res.report = std::move(alloc.report);
  res.report["holdout"] = hold ? mpo.holdout : 0;
  res.report["fit_images"] = n_fit;

  // 3. The best measured of: the mixed plan calibrated again with the chosen widths, the uniform
  // plans composed at those widths (each module calibrated by the method at its width), uniform.
  Kept kept = Kept::Uniform;
  CalibrationResult recalibrated;
  const bool mixed = std::any_of(alloc.bits.begin(), alloc.bits.end(), [&](int b) { return b != mpo.target_bits; });
  if (mixed) {  // a checked point measured better on average
    if (stage) stage("calibration with the chosen bits");
    recalibrated = calibrate_widths(model, fit, n_fit, method, base, mpo.target_bits, alloc.bits, progress);
    kept = choose_plan(kl, recalibrated.plan, alloc, mpo.min_gain_se, res.report);
  }
  if (kept == Kept::Uniform) {
    res.report["bits"] = std::vector<int>(alloc.bits.size(), mpo.target_bits);
    res.report["chosen_weight_bits"] = budget;
  }

  // 4. With a hold-out, what was kept is calibrated again on all the images.
  if (!hold) {
    res.final = kept == Kept::Uniform        ? std::move(uniform[size_t(base_k)])
                : kept == Kept::Recalibrated ? std::move(recalibrated)
                                             : composed_result(uniform, widths, base_k, alloc.bits);
  } else {
    if (stage) stage(cat("the kept plan calibrated on all ", n, " images"));
    if (kept == Kept::Recalibrated) {
      res.final = calibrate_widths(model, images, n, method, base, mpo.target_bits, alloc.bits, progress);
    } else {
      std::vector<int> used = {mpo.target_bits};
      if (kept == Kept::Composed)
        for (int b : alloc.bits)
          if (std::find(used.begin(), used.end(), b) == used.end()) used.push_back(b);
      std::vector<CalibrationResult> all = uniform_plans(model, images, n, method, base, used, {}, progress);
      res.final = kept == Kept::Uniform ? std::move(all[0]) : composed_result(all, used, 0, alloc.bits);
    }
  }
  res.report["seconds"] = std::chrono::duration<double>(clock_type::now() - t0).count();
  return res;
}

}  // namespace vitq
