#include "quant/mixed_precision.h"

#include <Eigen/SVD>
#include <algorithm>
#include <memory>
#include <chrono>
#include <map>

#include "core/error.h"
#include "quant/mixed_precision_kl.h"
#include "quant/mp_search.h"
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
nlohmann::ordered_json allocation_report(const std::string& key, int target_bits, const std::vector<int>& cand, int64_t budget,
                                         const AllocationPoint& best, const std::vector<AllocationPoint>& front,
                                         const std::vector<double>& sigma, const std::vector<std::vector<double>>& pert,
                                         const std::vector<std::vector<double>>& cost, int svd_n) {
  const int modules = int(sigma.size());
  nlohmann::ordered_json r;
  r["target_bits"] = target_bits;
  r["candidates"] = cand;
  r["budget_" + key] = budget;
  r["chosen_" + key] = best.size;
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
    fr.push_back({{key, p.size}, {"omega", p.omega}, {"bits", bits}});
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
  bool gate_against_uniform = true;  // end to end: a mixed plan must beat uniform by min_gain_se to be kept
};

// What an allocation spends, per module and width: weight bits, and (with a latency table)
// nanoseconds per image of the integer model; and the bound the user stated.
struct Resources {
  std::vector<int64_t> params;    // weight parameters per module
  const LatencyTable* table = nullptr;
  int target_bits = 0;
  bool latency = false;           // the budget (or the floor's cheapest) is latency, else size
  bool floor = false;             // an accuracy floor instead of a budget
  int64_t budget = 0;             // on spend(): weight bits or ns per image (not for a floor)
  double kl_floor = 0;
  std::string describe;           // the budget in words

  int64_t size(size_t m, int bits) const { return params[m] * bits; }
  double module_ms(size_t m, int bits) const {
    const LatencyEntry* e = table->entry_for(bits);
    return m % 2 == 0 ? e->msa() : e->mlp();
  }
  int64_t spend(size_t m, int bits) const {
    return latency ? int64_t(std::llround(module_ms(m, bits) * 1e6)) : size(m, bits);
  }
  int64_t weight_bits(const std::vector<int>& b) const {
    int64_t t = 0;
    for (size_t m = 0; m < b.size(); ++m) t += size(m, b[m]);
    return t;
  }
  int64_t spend(const std::vector<int>& b) const {
    int64_t t = 0;
    for (size_t m = 0; m < b.size(); ++m) t += spend(m, b[m]);
    return t;
  }
  // ms per image outside the modules: the table's rest at the target width (patch embedding, head).
  double rest_ms() const { return table->entry_for(target_bits)->rest; }
  // Predicted ms per image: the rest plus each module at its width.
  double latency_ms(const std::vector<int>& b) const {
    double t = rest_ms();
    for (size_t m = 0; m < b.size(); ++m) t += module_ms(m, b[m]);
    return t;
  }
  std::vector<std::vector<int64_t>> spend_matrix(const std::vector<int>& cand) const {
    std::vector<std::vector<int64_t>> r(params.size(), std::vector<int64_t>(cand.size()));
    for (size_t m = 0; m < params.size(); ++m)
      for (size_t k = 0; k < cand.size(); ++k) r[m][k] = spend(m, cand[k]);
    return r;
  }
  // A point of the report: its weight bits and (with a table) predicted latency.
  void describe_point(nlohmann::ordered_json& j, const std::vector<int>& b) const {
    j["weight_bits"] = weight_bits(b);
    if (table) j["latency_ms"] = latency_ms(b);
  }
};

// The resources of the allocation and its budget. A latency budget (or a floor with a table)
// prices each width by the table; widths it lacks are measured on the method's uniform plan of
// that width (the target's first, then the widest), if the options can measure.
Resources resources(const ViTModel& model, const MixedPrecisionOptions& mpo, const std::vector<int>& widths,
                    const std::vector<QuantPlan>& plans, const std::function<void(const std::string&)>& stage) {
  Resources r;
  r.params = module_params(model);
  r.target_bits = mpo.target_bits;
  r.floor = mpo.budget_kind == BudgetKind::KlFloor;
  r.latency = mpo.budget_kind == BudgetKind::Latency || (r.floor && mpo.latency);
  r.describe = MpBudget{mpo.budget_kind, mpo.budget_value}.describe();
  if (r.latency && !mpo.latency) fail(ErrorKind::Internal, "mixed precision: a latency budget without a latency table");
  if (mpo.latency) {
    std::vector<size_t> order(widths.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = k;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      const bool ta = widths[a] == mpo.target_bits, tb = widths[b] == mpo.target_bits;
      return ta != tb ? ta : widths[a] > widths[b];
    });
    bool complete = true;
    for (size_t k : order) {
      const int b = widths[k];
      if (mpo.latency->entry_for(b)) continue;
      if (!mpo.measure_latency) {
        if (r.latency)
          fail(ErrorKind::Usage, "the latency table has no entry for ", b, "-bit modules (nor for any width of ",
               operand_planes(b), " 8-bit plane", operand_planes(b) > 1 ? "s" : "", "); make one with vitq bench "
               "--latency-table from a model quantized at ", b, " bits");
        complete = false;
        continue;
      }
      if (stage) stage(cat("latency of the uniform W", b, "A", b, " plan in the integer runtime"));
      LatencyEntry e = mpo.measure_latency(plans[k]);
      e.bits = b;
      mpo.latency->add(e);
    }
    if (complete) r.table = mpo.latency;
  }
  switch (mpo.budget_kind) {
    case BudgetKind::Size:
      if (mpo.budget_value > 0) r.budget = std::llround(mpo.budget_value * 8e6);
      else
        for (size_t m = 0; m < r.params.size(); ++m) r.budget += r.size(m, mpo.target_bits);
      break;
    case BudgetKind::Latency: {
      const double rest = r.rest_ms();
      r.budget = std::llround((mpo.budget_value - rest) * 1e6);
      if (r.budget <= 0)
        fail(ErrorKind::Usage, "--mp-budget latency=", mpo.budget_value, ": below what the patch embedding and head "
             "alone take (", rest, " ms/image in the latency table)");
      break;
    }
    case BudgetKind::KlFloor: r.kl_floor = mpo.budget_value; break;
  }
  return r;
}

// vitq's allocation (mixed_precision_kl.h): end-to-end KL costs, then the frontier searched
// under the budget (mp_search.h) with its points measured on the simulated network. Within a
// budget the uniform target plan (plans[base_k]) stays unless a point measures better (and the
// uniform plan fits); with a floor the cheapest point within it is taken (uniform if cheaper).
Allocation end_to_end_allocation(NetworkKl& cost_kl, NetworkKl& kl, const MixedPrecisionOptions& mpo,
                                 const std::vector<int>& cand, const std::vector<QuantPlan>& plans, int base_k,
                                 const Resources& res, const std::function<void(const std::string&)>& stage) {
  std::vector<int> bits = cand;
  if (size_t(base_k) == cand.size()) bits.push_back(mpo.target_bits);  // the target is not a candidate
  std::vector<std::vector<double>> cost = module_kl_costs(cost_kl, plans, base_k, bits, stage);
  const std::vector<double> uniform_pi = kl.per_image(plans[size_t(base_k)]);
  const double uniform_kl = mean_of(uniform_pi);
  // The additive prediction of a choice's network KL from the costs: the uniform plan's KL on the
  // cost images plus each module's change from it (Ω − (M − 1)·that KL).
  const size_t M = cost.size();
  const double cost_base = cost.at(0).at(size_t(base_k));
  auto predicted = [&](double omega) { return omega - double(M - 1) * cost_base; };
  for (auto& row : cost) row.resize(cand.size());
  const std::vector<int> uniform_bits(M, mpo.target_bits);
  auto widths_of = [&](const AllocationPoint& p) {
    std::vector<int> pb;
    for (int k : p.choice) pb.push_back(cand[size_t(k)]);
    return pb;
  };
  std::map<std::vector<int>, std::vector<double>> measured_pi;
  nlohmann::ordered_json checked = nlohmann::ordered_json::array();
  const MeasurePoint measure = [&](const AllocationPoint& p) {
    const std::vector<int> pb = widths_of(p);
    std::vector<const QuantPlan*> per_module;
    for (int k : p.choice) per_module.push_back(&plans[size_t(k)]);
    const std::vector<double>& pi = measured_pi[pb] =
        kl.per_image(compose_module_plans(plans[size_t(base_k)], per_module, pb));
    const double m = mean_of(pi);
    nlohmann::ordered_json c;
    res.describe_point(c, pb);
    c["predicted_sum_kl"] = p.omega;
    c["predicted_kl"] = predicted(p.omega);
    c["kl"] = m;
    c["bits"] = pb;
    checked.push_back(c);
    if (stage)
      stage(cat("frontier point of ", res.weight_bits(pb), " weight bits",
                res.table ? cat(", ", res.latency_ms(pb), " ms/image") : std::string(), ": KL ", m, " (uniform W",
                mpo.target_bits, "A", mpo.target_bits, ": ", uniform_kl, ")"));
    return m;
  };
  const std::vector<std::vector<int64_t>> spend = res.spend_matrix(cand);
  const SearchOutcome o = res.floor ? search_kl_floor(cost, spend, res.kl_floor, measure)
                                    : search_within_budget(cost, spend, res.budget, mpo.check_points, measure);
  const bool uniform_fits = res.floor ? uniform_kl <= res.kl_floor : res.spend(uniform_bits) <= res.budget;
  Allocation a{uniform_bits, {}, uniform_pi, uniform_pi};
  const AllocationPoint* best = o.chosen >= 0 ? &o.front[size_t(o.chosen)] : nullptr;
  if (!best && !uniform_fits) {
    if (res.floor) {
      double most = INFINITY;
      for (const MeasuredPoint& p : o.measured) most = std::min(most, p.kl);
      fail(ErrorKind::Usage, "mixed precision: no allocation of the candidate widths reaches ", res.describe,
           " (the most accurate measured KL ", most, ", uniform W", mpo.target_bits, "A", mpo.target_bits, " ",
           uniform_kl, "); raise the floor or add wider --mp-candidates");
    }
    int64_t least = 0;
    for (const auto& row : spend) least += *std::min_element(row.begin(), row.end());
    fail(ErrorKind::Usage, "mixed precision: no allocation of the candidate widths fits ", res.describe,
         " (the cheapest needs ", res.latency ? cat(double(least) / 1e6 + res.rest_ms(), " ms/image")
                                                : cat(double(least) / 8e6, " MB"), ")");
  }
  if (best) {
    const std::vector<int> pb = widths_of(*best);
    const double best_kl = mean_of(measured_pi.at(pb));
    const bool take = res.floor ? !uniform_fits || res.spend(pb) < res.spend(uniform_bits)
                                : !uniform_fits || best_kl < uniform_kl;
    if (take) a.bits = pb, a.composed_kl = measured_pi.at(pb);
  }
  // Against uniform only where uniform was an option of equal standing: within a budget it fits.
  a.gate_against_uniform = !res.floor && uniform_fits;
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
  nlohmann::ordered_json bj;
  bj["kind"] = res.floor ? "kl" : res.latency ? "latency" : "size";
  bj["resource"] = res.latency ? "latency" : "size";
  if (res.floor) bj["kl"] = res.kl_floor;
  else if (res.latency) bj["latency_ms"] = double(res.budget) / 1e6 + res.rest_ms();
  else bj["weight_bits"] = res.budget;
  bj["search"] = res.floor ? "the cheapest frontier point whose measured KL is within the floor (bisection)"
                           : cat("the ", mpo.check_points, " frontier points nearest the budget measured; the least KL");
  bj["text"] = res.describe;
  r["budget"] = bj;
  if (!res.floor && !res.latency) r["budget_weight_bits"] = res.budget;
  r["uniform_kl"] = uniform_kl;
  r["module_costs"] = cost;
  r["cost_uniform_kl"] = cost_base;
  nlohmann::ordered_json fr = nlohmann::ordered_json::array();
  for (const AllocationPoint& p : o.front) {
    nlohmann::ordered_json j;
    res.describe_point(j, widths_of(p));
    j["predicted_kl"] = predicted(p.omega);
    fr.push_back(j);
  }
  r["frontier"] = fr;
  r["checked"] = checked;
  // The uniform plans of the other widths on the check images: where the mixed plans stand.
  nlohmann::ordered_json widths = nlohmann::ordered_json::array();
  for (size_t k = 0; k < plans.size(); ++k) {
    nlohmann::ordered_json j;
    j["bits"] = bits[k];
    res.describe_point(j, std::vector<int>(M, bits[k]));
    j["kl"] = int(k) == base_k ? uniform_kl : kl.of(plans[k]);
    widths.push_back(j);
  }
  r["uniform_widths"] = widths;
  r["chosen"] = a.bits == uniform_bits ? "uniform" : "mixed";
  r["chosen_kl_composed"] = mean_of(a.composed_kl);
  r["bits"] = a.bits;
  r["chosen_weight_bits"] = res.weight_bits(a.bits);
  if (res.table) r["chosen_latency_ms"] = res.latency_ms(a.bits);
  return a;
}

// The paper's allocation: σ · perturbation, exact under the budget (size or latency).
Allocation nuclear_allocation(const ViTModel& model, const float* images, int n, const CalibOptions& base,
                              const MixedPrecisionOptions& mpo, const std::vector<int>& cand,
                              const std::vector<QuantPlan>& plans, const Resources& res) {
  if (res.floor)
    fail(ErrorKind::Usage, "mixed precision: an accuracy floor (--mp-budget kl=...) needs the end-to-end "
                           "measurement (--mp-sensitivity kl)");
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
  const std::vector<std::vector<int64_t>> spend = res.spend_matrix(cand);
  const std::vector<AllocationPoint> front = pareto_frontier(cost, spend, res.budget);
  const AllocationPoint best = allocate_bits(cost, spend, res.budget);
  Allocation a;
  for (int k : best.choice) a.bits.push_back(cand[size_t(k)]);
  a.report = allocation_report(res.latency ? "module_latency_ns" : "weight_bits", mpo.target_bits, cand, res.budget,
                               best, front, sens.sigma, pert, cost, svd_n);
  a.report["allocation"] = "nuclear (the paper's)";
  a.report["budget"] = {{"kind", res.latency ? "latency" : "size"}, {"text", res.describe}};
  a.report["chosen_weight_bits"] = res.weight_bits(a.bits);
  if (res.table) a.report["chosen_latency_ms"] = res.latency_ms(a.bits);
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
  if (alloc.gate_against_uniform && !(z > min_gain_se)) {
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

  // 2. What a width costs each module (size; latency from the table, widths it lacks measured)
  // and the budget.
  const Resources res_ = resources(model, mpo, widths, plans, stage);
  MixedPrecisionResult res;
  if (!e2e) {
    if (stage) stage("sensitivity (nuclear norms) and perturbations");
    Allocation alloc = nuclear_allocation(model, images, n, base, mpo, cand, plans, res_);
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
  Allocation alloc = end_to_end_allocation(cost_kl, kl, mpo, cand, plans, base_k, res_, stage);
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
    const std::vector<int> ub(alloc.bits.size(), mpo.target_bits);
    res.report["bits"] = ub;
    res.report["chosen_weight_bits"] = res_.weight_bits(ub);
    if (res_.table) res.report["chosen_latency_ms"] = res_.latency_ms(ub);
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
