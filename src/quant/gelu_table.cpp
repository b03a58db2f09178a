#include "quant/gelu_table.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/aligned.h"
#include "core/error.h"
#include "engine/kernels.h"
#include "engine/vit_forward.h"
#include "quant/plan_transforms.h"
#include "quant/simulate.h"

namespace vitq {

std::vector<float> gelu_table_values(const GeluTable& t) {
  const size_t n = size_t(1) << t.bits;
  std::vector<float> v(n);
  // c · Δ exactly as fake_quantize writes it (code_f(...) · Δ), then the simulator's GELU kernel.
  for (size_t i = 0; i < n; ++i) v[i] = float(t.lo + int32_t(i)) * t.scale;
  bias_gelu_rows(v.data(), 1, n, nullptr);
  return v;
}

GeluTable fit_gelu_table(const float* x, size_t n, int bits) {
  if (n == 0) fail(ErrorKind::Internal, "fit_gelu_table: no samples");
  if (bits < 4 || bits > 10) fail(ErrorKind::Internal, "fit_gelu_table: bits ", bits, " outside [4, 10]");
  // The search runs on at most 2^18 of the samples (evenly strided).
  const size_t stride = std::max<size_t>(1, n >> 18);
  avector<float> xs;
  for (size_t i = 0; i < n; i += stride) xs.push_back(x[i]);
  const auto [mn_it, mx_it] = std::minmax_element(x, x + n);
  const float mn = *mn_it, mx = *mx_it;
  const int32_t span = (int32_t(1) << bits) - 1;
  avector<float> g(xs), q(xs.size());
  bias_gelu_rows(g.data(), 1, g.size(), nullptr);

  GeluTable best{bits, 0.0f, 0};
  double best_err = INFINITY;
  auto consider = [&](float a, float b) {
    if (!(b > a)) return;
    GeluTable t{bits, (b - a) / float(span), 0};
    if (!(t.scale >= 1e-30f) || !std::isfinite(t.scale)) return;
    t.lo = int32_t(std::nearbyint(a / t.scale));
    fake_quantize(xs.data(), q.data(), xs.size(), t.scale, t.range());
    bias_gelu_rows(q.data(), 1, q.size(), nullptr);
    double err = 0;
    for (size_t i = 0; i < q.size(); ++i) err += double(q[i] - g[i]) * double(q[i] - g[i]);
    if (err < best_err) best_err = err, best = t;
  };
  // The covered interval [a, b]: b a fraction of the maximum; a the minimum or, GELU being flat
  // below about −4, a higher floor.
  const float top = std::max(mx, 0.0f);
  for (float r : {1.0f, 0.95f, 0.9f, 0.85f, 0.8f, 0.75f, 0.7f, 0.65f, 0.6f, 0.5f}) {
    const float b = top > 0 ? r * top : 1e-3f;
    consider(std::min(mn, 0.0f), b);
    for (float floor : {-10.0f, -8.0f, -6.0f, -5.0f, -4.0f, -3.5f, -3.0f, -2.5f, -2.0f})
      if (floor > mn) consider(floor, b);
  }
  if (!(best.scale > 0)) best = {bits, 1e-3f, -(span / 2)};  // constant input: any small grid
  return best;
}

namespace {

// The simulator, recording a strided sample (and the exact range) of every quantized fc1 output.
class Fc1Sampler : public SiteHook {
 public:
  Fc1Sampler(const ViTModel& m, const QuantPlan& plan, size_t stride) : sim_(m, plan), stride_(stride) {}
  bool compute(const SiteCall& call) override {
    const bool done = sim_.compute(call);
    if (done && call.site.kind == SiteKind::Fc1) {
      std::vector<float>& s = samples_[call.site.block];
      const size_t n = size_t(call.M) * size_t(call.N);
      for (size_t i = offset_[call.site.block] % stride_; i < n; i += stride_) s.push_back(call.y[i]);
      offset_[call.site.block] = (offset_[call.site.block] + stride_ - n % stride_) % stride_;
    }
    return done;
  }
  bool softmax(int block, float* s, int rows, int n, float scale) override {
    return sim_.softmax(block, s, rows, n, scale);
  }
  std::map<int, std::vector<float>> samples_;

 private:
  PlanSimulator sim_;
  size_t stride_;
  std::map<int, size_t> offset_;
};

}  // namespace

void fit_gelu_tables(const ViTModel& model, QuantPlan& plan, const float* images, int n, int bits,
                     const std::function<void(int, int)>& progress) {
  plan.gelu_tables.clear();
  std::unique_ptr<ViTModel> holder;
  const ViTModel& m = apply_plan_transforms(model, plan, holder, "GELU tables");
  const ViTConfig& c = m.cfg;
  // About 2^21 samples per block: a stride prime to the hidden width, so that every channel is sampled.
  const size_t total = size_t(n) * size_t(c.tokens()) * size_t(c.mlp_hidden);
  size_t stride = std::max<size_t>(1, total >> 21) | 1;
  while (std::gcd(stride, size_t(c.mlp_hidden)) != 1) stride += 2;
  Fc1Sampler hook(m, plan, stride);
  ViTForward fwd(m, FpGemm::PerCall);
  const int batch = 16;
  const size_t img = size_t(c.in_chans) * size_t(c.img_size) * size_t(c.img_size);
  std::vector<float> logits(size_t(batch) * size_t(c.num_classes));
  for (int b0 = 0; b0 < n; b0 += batch) {
    const int nb = std::min(batch, n - b0);
    fwd.run(images + size_t(b0) * img, nb, logits.data(), &hook);
    if (progress) progress(b0 + nb, n);
  }
  for (auto& [block, s] : hook.samples_) {
    if (s.empty()) continue;
    for (float v : s)
      if (!std::isfinite(v))
        fail(ErrorKind::Model, "GELU table of block ", block, ": the fc1 output is not finite on the calibration images");
    plan.gelu_tables[SiteId{SiteKind::Fc1, block}.name()] = fit_gelu_table(s.data(), s.size(), bits);
  }
}

}  // namespace vitq
