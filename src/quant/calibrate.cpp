#include "quant/calibrate.h"

#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <set>

#include "core/error.h"
#include "core/finite.h"
#include "engine/vit_forward.h"
#include "quant/ln_smoothing.h"
#include "numerics/quantizer.h"
#include "quant/similarity.h"
#include "quant/simulate.h"

namespace vitq {
namespace {

using clock_type = std::chrono::steady_clock;

// Thrown by a capture hook once it has what it came for, to skip the rest of a stage.
struct StopForward {};

// Per-site buffers holding one tensor of every calibration image.
struct SiteBuffers {
  avector<float> x, w, y;
};

// Captures site tensors of a batch into whole-calibration-set buffers, optionally delegating
// the computation to an inner hook (the simulator of the plan so far).
class CaptureHook : public SiteHook {
 public:
  CaptureHook(const std::map<SiteId, SiteShape>& shapes, int n_images) : shapes_(shapes), n_(n_images) {}

  SiteHook* inner = nullptr;
  std::set<SiteId> want_y, want_xw;  // outputs / inputs to capture
  SiteId stop_after{SiteKind::Head, -2};  // stop the stage after capturing this site
  int offset = 0;                       // first image of the current batch
  std::map<SiteId, SiteBuffers> buf;

  bool compute(const SiteCall& c) override { return inner ? inner->compute(c) : false; }

  void observe(const SiteCall& c) override {
    const SiteShape& s = shapes_.at(c.site);
    const int64_t rows = int64_t(s.groups_per_image) * s.M;
    if (want_y.count(c.site)) copy(buf[c.site].y, c.y, rows * s.N, c.images);
    if (want_xw.count(c.site)) {
      copy(buf[c.site].x, c.x, rows * s.K, c.images);
      if (c.site.is_attention()) copy(buf[c.site].w, c.w, int64_t(s.groups_per_image) * s.N * s.K, c.images);
    }
    if (c.site == stop_after) throw StopForward{};
  }

 private:
  void copy(avector<float>& dst, const float* src, int64_t per_image, int images) {
    if (dst.size() != size_t(per_image) * size_t(n_)) dst.assign(size_t(per_image) * size_t(n_), 0.0f);
    std::copy_n(src, per_image * images, dst.data() + per_image * offset);
  }
  const std::map<SiteId, SiteShape>& shapes_;
  int n_;
};

}  // namespace

Bits Calibrator::site_bits(const SiteId& id, const CalibOptions& opt) {
  Bits b = opt.bits;
  if (!opt.block_bits.empty() && id.block >= 0) {
    const bool msa = id.kind == SiteKind::Qkv || id.kind == SiteKind::MatmulQK || id.kind == SiteKind::MatmulAV ||
                     id.kind == SiteKind::Proj;
    b = opt.block_bits.at(size_t(2 * id.block + (msa ? 0 : 1)));
  }
  b.x_grid = opt.grids.unsigned_softmax && id.kind == SiteKind::MatmulAV ? Grid::Unsigned : Grid::Signed;
  return b;
}

Calibrator::Calibrator(const ViTModel& model, const float* images, int n) : m_(model), images_(images), n_(n) {}

SitePlan minmax_site_plan(const SiteObservation& obs, Bits bits) {
  SitePlan sp;
  sp.x.bits = bits.x;
  sp.x.grid = bits.x_grid;
  sp.x.scale = max_step(max_abs(obs.x, size_t(obs.x_per_image()) * size_t(obs.images)), sp.x.range());
  sp.w.bits = bits.w;
  const size_t wn = obs.attention() ? size_t(obs.w_per_image()) * size_t(obs.images) : size_t(obs.shape.N) * obs.shape.K;
  sp.w.scale = max_step(max_abs(obs.w, wn), sp.w.range());
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

CalibrationResult Calibrator::run(Method& method, const CalibOptions& opt,
                                  const std::function<void(const CalibProgress&)>& progress) {
  const auto t_start = clock_type::now();
  const ViTConfig& c = m_.cfg;
  // With LayerNorm smoothing every site sees the rewritten model; the plan gets the factors at
  // the end (a plan that has them rewrites the checkpoint it is applied to).
  std::map<std::string, std::vector<float>> smoothing;
  if (opt.smooth_ln_alpha >= 0.0)
    smoothing = ln_smoothing_factors(m_, images_, n_, opt.smooth_ln_alpha, std::max(1, opt.batch));
  std::unique_ptr<ViTModel> smoothed;
  const ViTModel& model = smoothed_model(m_, smoothing, smoothed, "ln_smoothing");
  const int N = n_, T = c.tokens(), D = c.embed_dim, B = std::max(1, opt.batch);
  const size_t img_floats = size_t(c.in_chans) * c.img_size * c.img_size;
  const size_t tok_floats = size_t(T) * D;

  std::map<SiteId, SiteShape> shapes;
  std::vector<SiteShape> order = model_sites(c);
  for (const auto& s : order) shapes[s.id] = s;

  CalibrationResult res;
  QuantPlan& plan = res.plan;
  plan.method = method.name();
  plan.settings = method.settings(opt.grids);
  plan.tool_version = VITQ_VERSION;
  plan.architecture = c.architecture;

  // Which sites get quantized, grouped by stage: 0 = embed, 1..depth = blocks, depth+1 = head.
  const int stages = c.depth + 2;
  std::vector<std::vector<SiteId>> stage_sites(static_cast<size_t>(stages));
  size_t total_sites = 0;
  for (const auto& s : order) {
    const SiteId& id = s.id;
    int st = id.block >= 0 ? id.block + 1 : (id.kind == SiteKind::PatchEmbed ? 0 : stages - 1);
    bool q = id.block >= 0 || (id.kind == SiteKind::PatchEmbed ? opt.quantize_patch_embed : opt.quantize_head);
    if (q) {
      stage_sites[size_t(st)].push_back(id);
      ++total_sites;
    }
  }

  ViTForward fwd(model, FpGemm::PerCall);
  PlanSimulator sim(model, plan);
  avector<float> xf(size_t(N) * tok_floats), xq(size_t(N) * tok_floats), scratch(size_t(B) * tok_floats);
  std::vector<float> logits(size_t(B) * size_t(c.num_classes));

  // Runs stage `st` on images [i0, i0 + b): embed reads the images and writes `x`; blocks
  // update `x` in place; the head reads `x`.
  auto run_stage = [&](int st, int i0, int b, float* x, SiteHook* hook) {
    if (st == 0) fwd.embed(images_ + size_t(i0) * img_floats, b, x, hook);
    else if (st == stages - 1) fwd.head(x, b, logits.data(), hook);
    else fwd.block(st - 1, x, b, hook);
  };

  size_t done = 0;
  for (int st = 0; st < stages; ++st) {
    const auto& sites = stage_sites[size_t(st)];
    const bool last = st == stages - 1;
    if (sites.empty() && last) break;

    // 1. FP pass: targets of this stage's sites (and FP inputs), advancing the FP stream.
    CaptureHook fp(shapes, N);
    fp.want_y.insert(sites.begin(), sites.end());
    if (opt.inputs == CalibInputs::FP) fp.want_xw.insert(sites.begin(), sites.end());
    for (int i0 = 0; i0 < N; i0 += B) {
      const int b = std::min(B, N - i0);
      fp.offset = i0;
      run_stage(st, i0, b, xf.data() + size_t(i0) * tok_floats, &fp);
    }

    // 2. Each site in execution order.
    for (const SiteId& id : sites) {
      const auto t0 = clock_type::now();
      if (progress) progress({done, total_sites, id.name()});
      const SiteShape& shape = shapes.at(id);
      SiteBuffers* in = nullptr;
      CaptureHook qc(shapes, N);
      if (opt.inputs == CalibInputs::Quantized) {
        qc.inner = &sim;
        qc.want_xw.insert(id);
        qc.stop_after = id;
        for (int i0 = 0; i0 < N; i0 += B) {
          const int b = std::min(B, N - i0);
          qc.offset = i0;
          float* x = scratch.data();
          if (st > 0) std::copy_n(xq.data() + size_t(i0) * tok_floats, size_t(b) * tok_floats, x);
          try {
            run_stage(st, i0, b, x, &qc);
          } catch (const StopForward&) {
          }
        }
        in = &qc.buf[id];
      } else {
        in = &fp.buf[id];
      }
      SiteObservation obs;
      obs.shape = shape;
      obs.images = N;
      obs.x = in->x.data();
      const LinearWeights* lw = site_weights(model, id);
      obs.w = lw ? lw->w.ptr() : in->w.data();
      obs.bias = lw && !lw->b.empty() ? lw->b.ptr() : nullptr;
      obs.target = fp.buf[id].y.data();
      // A NaN/Inf here would turn every similarity into nan and every step into garbage.
      check_finite_operand(id, "input (first operand)", in->x, shape, N, opt.inputs);
      if (!lw) check_finite_operand(id, "second operand", in->w, shape, N, opt.inputs);
      check_finite_operand(id, "FP32 output", fp.buf[id].y, shape, N, CalibInputs::FP);

      SiteReport rep;
      rep.site = id.name();
      rep.bits = site_bits(id, opt);
      SitePlan sp = method.calibrate(obs, rep.bits, rep.notes);
      rep.x_scale = sp.x.scale;
      rep.w_scale = sp.w.scale;
      if (!std::isfinite(sp.x.scale) || !std::isfinite(sp.w.scale))
        fail(ErrorKind::Internal, "method ", method.name(), " chose a non-finite step at site ", id.name(),
             " from finite inputs (x step ", sp.x.scale, ", w step ", sp.w.scale, ")");
      SiteEval before = evaluate_site_plan(obs, minmax_site_plan(obs, {rep.bits.w, rep.bits.x}));
      SiteEval after = evaluate_site_plan(obs, sp);
      rep.sim_before = before.pearson;
      rep.sim_after = after.pearson;
      rep.cosine_after = after.cosine;
      rep.mse_after = after.mse;
      plan.sites[id.name()] = std::move(sp);
      rep.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
      res.sites.push_back(std::move(rep));
      ++done;
      if (opt.inputs == CalibInputs::Quantized) qc.buf.clear();
    }

    // 3. Quantized pass: advance the quantized stream with the stage's plan.
    if (!last) {
      for (int i0 = 0; i0 < N; i0 += B) {
        const int b = std::min(B, N - i0);
        run_stage(st, i0, b, xq.data() + size_t(i0) * tok_floats, &sim);
      }
    }
  }
  if (progress) progress({done, total_sites, ""});
  method.refine(NetworkContext{model, images_, n_, B}, plan, res.refine_notes);
  plan.ln_smoothing = std::move(smoothing);
  res.seconds = std::chrono::duration<double>(clock_type::now() - t_start).count();
  return res;
}

}  // namespace vitq
