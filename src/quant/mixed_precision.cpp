#include "quant/mixed_precision.h"

#include <Eigen/SVD>
#include <algorithm>
#include <memory>
#include <chrono>
#include <map>

#include "core/error.h"
#include "quant/plan_transforms.h"
#include "quant/observers.h"
#include "quant/simulate.h"
#include "quant/staged_forward.h"

namespace vitq {

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

}  // namespace

MixedPrecisionResult calibrate_mixed_precision(const ViTModel& model, const float* images, int n, Method& method,
                                               const CalibOptions& base, const MixedPrecisionOptions& mpo,
                                               const std::function<void(const std::string&)>& stage,
                                               const std::function<void(const CalibProgress&)>& progress) {
  const auto t0 = clock_type::now();
  const ViTConfig& c = model.cfg;
  std::vector<int> cand = mpo.candidates;
  if (cand.empty())
    for (int b = mpo.target_bits - 2; b <= mpo.target_bits + 2; ++b)
      if (b >= kMinBits && b <= kMaxBits) cand.push_back(b);
  const int modules = 2 * c.depth, C = int(cand.size());

  // 1. A uniform plan at every candidate bit-width, from the method itself.
  std::vector<QuantPlan> plans;
  for (int b : cand) {
    if (stage) stage(cat("uniform W", b, "A", b, " plan"));
    CalibOptions o = base;
    o.bits = {b, b};
    o.block_bits.clear();
    Calibrator cal(model, images, n);
    plans.push_back(cal.run(method, o, progress).plan);
  }

  // 2. Sensitivity and perturbations, module by module along the FP model. With transforms the
  // plans are for the rewritten model (the same FP function, the same rewrite for every width).
  if (stage) stage("sensitivity (nuclear norms) and perturbations");
  std::unique_ptr<ViTModel> rewritten;
  const ViTModel& run_model = apply_plan_transforms(model, plans.at(0), rewritten, "mixed precision");
  const int svd_n = std::min(n, std::max(1, mpo.svd_images));
  Sensitivity sens = module_sensitivity(run_model, images, n, base.batch, plans, svd_n);
  const std::vector<double>& sigma = sens.sigma;
  std::vector<std::vector<double>>& pert = sens.pert;
  for (auto& row : pert)
    for (auto& v : row) v /= n;  // mean squared-error norm per image

  // 3. Exact allocation under the uniform model's weight size.
  const size_t M = static_cast<size_t>(modules), NC = static_cast<size_t>(C);
  std::vector<std::vector<double>> cost(M, std::vector<double>(NC));
  std::vector<std::vector<int64_t>> size(M, std::vector<int64_t>(NC));
  int64_t budget = 0;
  for (int m = 0; m < modules; ++m) {
    const BlockWeights& bw = model.blocks[size_t(m / 2)];
    const int64_t params = m % 2 == 0 ? bw.qkv.w.numel() + bw.proj.w.numel() : bw.fc1.w.numel() + bw.fc2.w.numel();
    budget += params * mpo.target_bits;
    for (int k = 0; k < C; ++k) {
      cost[size_t(m)][size_t(k)] = sigma[size_t(m)] * pert[size_t(m)][size_t(k)];
      size[size_t(m)][size_t(k)] = params * cand[size_t(k)];
    }
  }
  std::vector<AllocationPoint> front = pareto_frontier(cost, size, budget);
  const AllocationPoint best = allocate_bits(cost, size, budget);

  // 4. Final calibration with the chosen bits.
  CalibOptions fin = base;
  fin.bits = {mpo.target_bits, mpo.target_bits};  // patch_embed (and head) stay at the target width
  fin.block_bits.resize(size_t(modules));
  for (int m = 0; m < modules; ++m) {
    const int b = cand[size_t(best.choice[size_t(m)])];
    fin.block_bits[size_t(m)] = {b, b};
  }
  if (stage) stage("final calibration with the chosen bits");
  Calibrator cal(model, images, n);
  MixedPrecisionResult res;
  res.final = cal.run(method, fin, progress);

  res.report = allocation_report(mpo.target_bits, cand, budget, best, front, sigma, pert, cost, svd_n);
  res.report["seconds"] = std::chrono::duration<double>(clock_type::now() - t0).count();
  return res;
}

}  // namespace vitq
