#include "synth/layer_stats.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/error.h"
#include "synth/vit_input_grad.h"

namespace vitq {

void image_layer_stats(const ViTInputGrad& g, const ViTConfig& cfg, int i, float* mean, float* sd) {
  const int T = cfg.tokens(), D = cfg.embed_dim;
#pragma omp parallel for schedule(static)
  for (int l = 0; l < g.layers(); ++l) {
    const float* x = g.layer_input(l) + size_t(i) * T * D;
    for (int j = 0; j < D; ++j) {
      double s = 0;
      for (int t = 0; t < T; ++t) s += x[size_t(t) * D + size_t(j)];
      const double mu = s / T;
      double v = 0;
      for (int t = 0; t < T; ++t) {
        const double e = double(x[size_t(t) * D + size_t(j)]) - mu;
        v += e * e;
      }
      mean[size_t(l) * D + size_t(j)] = float(mu);
      sd[size_t(l) * D + size_t(j)] = float(std::sqrt(v / T + kStatEps));
    }
  }
}

StatTargets centre_targets(const ViTModel& model, const Dataset& data, int per_class, int batch) {
  const ViTConfig& c = model.cfg;
  const int NC = c.num_classes, D = c.embed_dim;
  const size_t n = data.size();
  ViTInputGrad g(model);
  StatTargets t;
  t.layers = g.layers();
  t.dim = D;
  const size_t LD = size_t(t.layers) * D;
  const size_t img = size_t(c.in_chans) * c.img_size * c.img_size;
  std::map<int, int> taken;                       // class → images used
  std::map<int, std::vector<double>> sum_m, sum_s;  // class → Σ statistics
  std::vector<double> gm(LD, 0.0), gs(LD, 0.0);
  std::vector<float> images(size_t(batch) * img), logits(size_t(batch) * NC), m(LD), s(LD);
  size_t full = 0;  // classes with per_class images: every class full ends the scan
  for (size_t i0 = 0; i0 < n && full < size_t(NC); i0 += size_t(batch)) {
    const int b = int(std::min(n - i0, size_t(batch)));
    for (int k = 0; k < b; ++k) data.load(i0 + size_t(k), c.preprocess, images.data() + size_t(k) * img);
    g.forward(images.data(), b, logits.data());
    for (int k = 0; k < b; ++k) {
      int cls = data.label(i0 + size_t(k));
      if (cls < 0 || cls >= NC) {
        const float* lg = logits.data() + size_t(k) * NC;
        cls = int(std::max_element(lg, lg + NC) - lg);
      }
      if (taken[cls] >= per_class) continue;
      if (++taken[cls] == per_class) ++full;
      image_layer_stats(g, c, k, m.data(), s.data());
      auto& cm = sum_m[cls];
      auto& cs = sum_s[cls];
      cm.resize(LD, 0.0);
      cs.resize(LD, 0.0);
      for (size_t e = 0; e < LD; ++e) {
        cm[e] += m[e];
        cs[e] += s[e];
        gm[e] += m[e];
        gs[e] += s[e];
      }
      ++t.images;
    }
  }
  if (taken.size() < 2)
    fail(ErrorKind::Data, data.describe(), ": ", taken.size(), " class centre(s); synthesis needs images of at least 2 classes");
  for (const auto& [cls, cnt] : taken) {
    t.classes.push_back(cls);
    std::vector<float> cm(LD), cs(LD);
    for (size_t e = 0; e < LD; ++e) {
      cm[e] = float(sum_m[cls][e] / cnt);
      cs[e] = float(sum_s[cls][e] / cnt);
    }
    t.mean.push_back(std::move(cm));
    t.sd.push_back(std::move(cs));
  }
  const double K = double(t.classes.size());
  t.global_mean.resize(LD);
  t.global_sd.resize(LD);
  t.spread_mean.resize(LD);
  t.spread_sd.resize(LD);
  for (size_t e = 0; e < LD; ++e) {
    t.global_mean[e] = float(gm[e] / t.images);
    t.global_sd[e] = float(gs[e] / t.images);
    double mm = 0, ms = 0, vm = 0, vs = 0;
    for (size_t k = 0; k < t.classes.size(); ++k) {
      mm += t.mean[k][e];
      ms += t.sd[k][e];
    }
    mm /= K;
    ms /= K;
    for (size_t k = 0; k < t.classes.size(); ++k) {
      vm += (t.mean[k][e] - mm) * (t.mean[k][e] - mm);
      vs += (t.sd[k][e] - ms) * (t.sd[k][e] - ms);
    }
    t.spread_mean[e] = float(std::sqrt(vm / K));
    t.spread_sd[e] = float(std::sqrt(vs / K));
  }
  t.layer_scale.resize(size_t(t.layers));
  for (int l = 0; l < t.layers; ++l) {
    double v = 0;
    for (int j = 0; j < D; ++j) v += double(t.global_sd[size_t(l) * D + size_t(j)]) * t.global_sd[size_t(l) * D + size_t(j)];
    t.layer_scale[size_t(l)] = float(v / D);
  }
  return t;
}

double stat_loss(const StatTargets& t, int centre, const float* mean, const float* sd, const float* noise_mean,
                 const float* noise_sd, const StatWeights& w, float* dmean, float* dsd) {
  const int D = t.dim;
  const float* cm = t.mean[size_t(centre)].data();
  const float* cs = t.sd[size_t(centre)].data();
  double loss = 0;
  for (int l = 0; l < t.layers; ++l) {
    const double unit = 1.0 / (double(t.layers) * D * t.layer_scale[size_t(l)]);
    for (int j = 0; j < D; ++j) {
      const size_t e = size_t(l) * D + size_t(j);
      const double jm = noise_mean ? double(noise_mean[e]) * w.jitter_mean * t.spread_mean[e] : 0.0;
      const double js = noise_sd ? double(noise_sd[e]) * w.jitter_sd * t.spread_sd[e] : 0.0;
      const double m = mean[e], s = sd[e];
      const double em[3] = {m - t.global_mean[e], m - (cm[e] + jm), m - cm[e]};
      const double es[3] = {s - t.global_sd[e], s - (cs[e] + js), s - cs[e]};
      const double wk[3] = {w.global, w.jitter, w.exact};
      double gm = 0, gs = 0;
      for (int k = 0; k < 3; ++k) {
        loss += unit * wk[k] * (em[k] * em[k] + es[k] * es[k]);
        gm += 2.0 * unit * wk[k] * em[k];
        gs += 2.0 * unit * wk[k] * es[k];
      }
      dmean[e] = float(gm);
      dsd[e] = float(gs);
    }
  }
  return loss;
}

double cross_entropy(const float* lg, int n, int cls, double scale, float* dg) {
  const double mx = *std::max_element(lg, lg + n);
  double z = 0;
  for (int k = 0; k < n; ++k) z += std::exp(double(lg[k]) - mx);
  for (int k = 0; k < n; ++k) dg[k] = float(scale * (std::exp(double(lg[k]) - mx) / z - (k == cls ? 1.0 : 0.0)));
  return std::log(z) + mx - lg[cls];
}

void stat_grad_to_inputs(const ViTInputGrad& g, const ViTConfig& cfg, int i, const float* mean, const float* sd,
                         const float* dmean, const float* dsd, const std::vector<float*>& dx) {
  const int T = cfg.tokens(), D = cfg.embed_dim;
#pragma omp parallel for schedule(static)
  for (int l = 0; l < g.layers(); ++l) {
    const float* x = g.layer_input(l) + size_t(i) * T * D;
    float* o = dx[size_t(l)] + size_t(i) * T * D;
    const float *m = mean + size_t(l) * D, *s = sd + size_t(l) * D;
    const float *gm = dmean + size_t(l) * D, *gs = dsd + size_t(l) * D;
    for (int t = 0; t < T; ++t)
      for (int j = 0; j < D; ++j)
        o[size_t(t) * D + size_t(j)] =
            float(double(gm[j]) / T + double(gs[j]) * (double(x[size_t(t) * D + size_t(j)]) - m[j]) / (double(T) * s[j]));
  }
}

}  // namespace vitq
