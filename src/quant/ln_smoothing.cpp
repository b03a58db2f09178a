#include "quant/ln_smoothing.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "quant/observers.h"
#include "quant/staged_forward.h"

namespace vitq {
namespace {

// s_k = h_k^α / max_c |W[c][k]|^(1−α), 1 where either is zero or the result is unusable.
std::vector<float> smoothing_factors(const LinearWeights& lw, const std::vector<double>& h, double alpha) {
  const int N = lw.out(), K = lw.in();
  std::vector<float> s(size_t(K), 1.0f);
  for (int k = 0; k < K; ++k) {
    float wmax = 0.0f;
    for (int r = 0; r < N; ++r) wmax = std::max(wmax, std::fabs(lw.w.ptr()[size_t(r) * K + k]));
    const double xm = h[size_t(k)];
    if (xm > 0.0 && wmax > 0.0) {
      const double v = std::pow(xm, alpha) / std::pow(double(wmax), 1.0 - alpha);
      if (std::isfinite(v) && v > 0.0) s[size_t(k)] = float(v);
    }
  }
  return s;
}

// The LayerNorm and the linear layer it feeds, for a site name; fails naming `source` otherwise.
std::pair<LayerNormWeights*, LinearWeights*> ln_fed_layer(ViTModel& m, const std::string& name,
                                                          const std::string& source, const char* field) {
  SiteId id;
  if (!parse_site_name(name, &id) || (id.kind != SiteKind::Qkv && id.kind != SiteKind::Fc1) || id.block < 0 ||
      id.block >= m.cfg.depth)
    fail(ErrorKind::Model, source, ": ", field, ": '", name, "' is not a site fed by a LayerNorm of this model");
  BlockWeights& b = m.blocks[size_t(id.block)];
  return id.kind == SiteKind::Qkv ? std::pair{&b.norm1, &b.qkv} : std::pair{&b.norm2, &b.fc1};
}

// β → β − μ and b → b + W·μ (before any scaling).
void apply_shift(LayerNormWeights& ln, LinearWeights& lw, const std::vector<float>& mu, const std::string& name,
                 const std::string& source) {
  const int N = lw.out(), K = lw.in();
  if (mu.size() != size_t(K))
    fail(ErrorKind::Model, source, ": ln_shift: site '", name, "' has ", mu.size(), " shifts, the layer has ", K,
         " input channels");
  for (int k = 0; k < K; ++k)
    if (!std::isfinite(mu[size_t(k)])) fail(ErrorKind::Model, source, ": ln_shift: site '", name, "': shift ", k, " is not finite");
  if (lw.b.empty()) lw.b = Tensor({int64_t(N)});
  for (int r = 0; r < N; ++r) {
    double acc = lw.b.data[size_t(r)];
    for (int k = 0; k < K; ++k) acc += double(lw.w.data[size_t(r) * K + k]) * mu[size_t(k)];
    lw.b.data[size_t(r)] = float(acc);
    if (!std::isfinite(lw.b.data[size_t(r)]))
      fail(ErrorKind::Model, source, ": ln_shift: site '", name, "': the shifts overflow bias ", r, " to a non-finite value");
  }
  for (int k = 0; k < K; ++k) ln.beta.data[size_t(k)] -= mu[size_t(k)];
}

// γ → γ / s, β → β / s, W[:, k] → W[:, k] · s_k.
void apply_factors(LayerNormWeights& ln, LinearWeights& lw, const std::vector<float>& s, const std::string& name,
                   const std::string& source) {
  const int N = lw.out(), K = lw.in();
  if (s.size() != size_t(K))
    fail(ErrorKind::Model, source, ": ln_smoothing: site '", name, "' has ", s.size(), " factors, the layer has ", K,
         " input channels");
  for (int k = 0; k < K; ++k) {
    const float f = s[size_t(k)];
    if (!(f > 0.0f) || !std::isfinite(f))
      fail(ErrorKind::Model, source, ": ln_smoothing: site '", name, "': factor ", k, " is not positive and finite");
    ln.gamma.data[size_t(k)] /= f;
    ln.beta.data[size_t(k)] /= f;
    bool finite = std::isfinite(ln.gamma.data[size_t(k)]) && std::isfinite(ln.beta.data[size_t(k)]);
    for (int r = 0; r < N; ++r) finite &= std::isfinite(lw.w.data[size_t(r) * K + k] *= f);
    if (!finite)  // a factor so small or large that the rewritten weights overflow float32
      fail(ErrorKind::Model, source, ": ln_smoothing: site '", name, "': factor ", k, " (", f,
           ") overflows the rewritten LayerNorm or weights to a non-finite value");
  }
}

// s_k = h_k / median of the positive h_j (1 for a channel with h_k = 0, or if none is positive).
std::vector<float> reparam_factors(const std::vector<double>& h) {
  std::vector<double> pos;
  for (double v : h)
    if (v > 0.0) pos.push_back(v);
  std::vector<float> s(h.size(), 1.0f);
  if (pos.empty()) return s;
  std::nth_element(pos.begin(), pos.begin() + long(pos.size() / 2), pos.end());
  const double target = pos[pos.size() / 2];
  for (size_t k = 0; k < h.size(); ++k)
    if (h[k] > 0.0) s[k] = float(h[k] / target);
  return s;
}

}  // namespace

LnRewrite fit_ln_rewrite(const ViTModel& model, const float* images, int n, int batch, double alpha, bool center,
                         bool reparam) {
  if (alpha >= 0.0 && !(alpha <= 1.0)) fail(ErrorKind::Usage, "--smooth-alpha must be in [0, 1], got ", alpha);
  if (alpha >= 0.0 && reparam) fail(ErrorKind::Usage, "--smooth-ln and --ln-reparam choose the factors differently; give one");
  center = center || reparam;  // RepQ-ViT's per-channel zero points
  LnRewrite out;
  if (alpha < 0.0 && !center) return out;
  StagedForward fwd(model, images, n, batch);
  ChannelRange hook({SiteKind::Qkv, SiteKind::Fc1});
  fwd.replay(0, fwd.stages() - 1, nullptr, &hook);
  for (const auto& [name, r] : hook.range) {
    SiteId id;
    parse_site_name(name, &id);
    const size_t K = r.lo.size();
    std::vector<float> mu(K, 0.0f);
    std::vector<double> h(K, 0.0);
    for (size_t k = 0; k < K; ++k) {
      if (center) mu[k] = float(0.5 * (double(r.lo[k]) + double(r.hi[k])));
      // max |x_k − μ_k| (with μ = 0: max |x_k|, the same value as a max over |x|)
      h[k] = std::max({0.0, std::fabs(double(r.lo[k] - mu[k])), std::fabs(double(r.hi[k] - mu[k]))});
    }
    if (center) out.shifts[name] = mu;
    if (alpha >= 0.0) out.factors[name] = smoothing_factors(*site_weights(model, id), h, alpha);
    if (reparam) out.factors[name] = reparam_factors(h);
  }
  return out;
}

ViTModel apply_ln_rewrite(const ViTModel& model, const SiteVectors& factors, const SiteVectors& shifts,
                          const std::string& source) {
  ViTModel m = model;
  for (const auto& [name, mu] : shifts) {
    auto [ln, lw] = ln_fed_layer(m, name, source, "ln_shift");
    apply_shift(*ln, *lw, mu, name, source);
  }
  for (const auto& [name, s] : factors) {
    auto [ln, lw] = ln_fed_layer(m, name, source, "ln_smoothing");
    apply_factors(*ln, *lw, s, name, source);
  }
  return m;
}

}  // namespace vitq
