#include "quant/ln_smoothing.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "quant/observers.h"
#include "quant/staged_forward.h"

namespace vitq {

std::map<std::string, std::vector<float>> ln_smoothing_factors(const ViTModel& model, const float* images, int n,
                                                               double alpha, int batch) {
  if (!(alpha >= 0.0 && alpha <= 1.0)) fail(ErrorKind::Usage, "--smooth-alpha must be in [0, 1], got ", alpha);
  StagedForward fwd(model, images, n, batch);
  ChannelAbsMax hook({SiteKind::Qkv, SiteKind::Fc1});
  fwd.replay(0, fwd.stages() - 1, nullptr, &hook);
  std::map<std::string, std::vector<float>> out;
  for (const auto& [name, xmax] : hook.max_abs) {
    SiteId id;
    parse_site_name(name, &id);
    const LinearWeights* lw = site_weights(model, id);
    const int N = lw->out(), K = lw->in();
    std::vector<float> s(size_t(K), 1.0f);
    for (int k = 0; k < K; ++k) {
      float wmax = 0.0f;
      for (int r = 0; r < N; ++r) wmax = std::max(wmax, std::fabs(lw->w.ptr()[size_t(r) * K + k]));
      const double xm = xmax[size_t(k)];
      if (xm > 0.0 && wmax > 0.0) {
        const double v = std::pow(xm, alpha) / std::pow(double(wmax), 1.0 - alpha);
        if (std::isfinite(v) && v > 0.0) s[size_t(k)] = float(v);
      }
    }
    out[name] = std::move(s);
  }
  return out;
}

ViTModel apply_ln_smoothing(const ViTModel& model, const std::map<std::string, std::vector<float>>& factors,
                            const std::string& source) {
  ViTModel m = model;
  for (const auto& [name, s] : factors) {
    SiteId id;
    if (!parse_site_name(name, &id) || (id.kind != SiteKind::Qkv && id.kind != SiteKind::Fc1) || id.block < 0 ||
        id.block >= m.cfg.depth)
      fail(ErrorKind::Model, source, ": ln_smoothing: '", name, "' is not a site fed by a LayerNorm of this model");
    BlockWeights& b = m.blocks[size_t(id.block)];
    LayerNormWeights& ln = id.kind == SiteKind::Qkv ? b.norm1 : b.norm2;
    LinearWeights& lw = id.kind == SiteKind::Qkv ? b.qkv : b.fc1;
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
  return m;
}

}  // namespace vitq
