#include "synth/synthesize.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "numerics/hadamard.h"
#include "synth/vit_input_grad.h"

namespace vitq {
namespace {

// Deterministic draws on every platform: splitmix64 → uniform → Box–Muller.
struct Rng {
  uint64_t state;
  double uniform() { return (double(splitmix64_next(state) >> 11) + 0.5) * 0x1.0p-53; }
  double normal() {
    constexpr double kTwoPi = 6.28318530717958647692;
    return std::sqrt(-2.0 * std::log(uniform())) * std::cos(kTwoPi * uniform());
  }
  int below(int n) { return int(splitmix64_next(state) % uint64_t(n)); }
};

// The pixels' range in the model's input space: p/255 normalised, p in [0, 255].
struct PixelRange {
  std::vector<float> lo, hi, mean, sd;
  explicit PixelRange(const ViTConfig& c) {
    for (int ch = 0; ch < c.in_chans; ++ch) {
      const float m = c.preprocess.mean[size_t(ch)], s = c.preprocess.std[size_t(ch)];
      mean.push_back(m);
      sd.push_back(s);
      lo.push_back((0.0f - m) / s);
      hi.push_back((1.0f - m) / s);
    }
  }
};

// One step's view of an image: circular shift by (oy, ox) and an optional mirror, as an index
// map: view[p] = image[map[p]] per channel plane (S × S).
void view_map(int S, int oy, int ox, bool flip, std::vector<int>& map) {
  map.resize(size_t(S) * S);
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) {
      const int sy = (y + oy + S) % S, u = (x + ox + S) % S, sx = flip ? S - 1 - u : u;
      map[size_t(y) * S + size_t(x)] = sy * S + sx;
    }
}

// Total variation (mean over the image's elements of the squared differences of horizontal and
// vertical neighbours) of one image, its gradient added to g.
double tv_loss(const float* x, int C, int S, double w, float* g) {
  const double n = double(C) * S * S;
  double loss = 0;
  for (int c = 0; c < C; ++c) {
    const float* p = x + size_t(c) * S * S;
    float* gp = g + size_t(c) * S * S;
    for (int y = 0; y < S; ++y)
      for (int xx = 0; xx < S; ++xx) {
        const size_t i = size_t(y) * S + size_t(xx);
        if (xx + 1 < S) {
          const double d = double(p[i + 1]) - p[i];
          loss += d * d;
          gp[i + 1] += float(2.0 * w * d / n);
          gp[i] -= float(2.0 * w * d / n);
        }
        if (y + 1 < S) {
          const double d = double(p[i + size_t(S)]) - p[i];
          loss += d * d;
          gp[i + size_t(S)] += float(2.0 * w * d / n);
          gp[i] -= float(2.0 * w * d / n);
        }
      }
  }
  return loss / n;
}

struct Batch {
  int first = 0, count = 0;
  std::vector<int> classes, centres;
};

// The last step's loss terms summed over a batch's images, and how many had their target class.
struct BatchTotals {
  double ce = 0, stats = 0, tv = 0, hits = 0;
};

class Synthesizer {
 public:
  Synthesizer(const ViTModel& m, const StatTargets* t, const SynthOptions& o)
      : m_(m), t_(t), o_(o), grad_(m), range_(m.cfg) {
    const ViTConfig& c = m.cfg;
    S_ = c.img_size;
    C_ = c.in_chans;
    n_img_ = size_t(C_) * S_ * S_;
    shift_ = o.shift >= 0 ? o.shift : S_ / 8;
  }

  // Optimises the batch's images x (count × C × S × S, normalised) in place.
  BatchTotals run_batch(const Batch& bt, float* x, Rng& rng, const std::function<void(const SynthProgress&)>& progress) {
    const ViTConfig& c = m_.cfg;
    const int B = bt.count, NC = c.num_classes, L = grad_.layers(), D = c.embed_dim, T = c.tokens();
    const size_t LD = size_t(L) * D;
    std::vector<float> view(size_t(B) * n_img_), dview(view.size()), g(view.size()), am(view.size(), 0.0f),
        av(view.size(), 0.0f), logits(size_t(B) * NC), dlogits(logits.size()), mean(LD), sd(LD), dmean(LD),
        dsd(LD), nm(LD), ns(LD);
    std::vector<std::vector<float>> dlayer(size_t(L), std::vector<float>(size_t(B) * T * D));
    std::vector<float*> dl(static_cast<size_t>(L), nullptr);
    std::vector<const float*> dlc(size_t(L), nullptr);
    for (int l = 0; l < L; ++l) dl[size_t(l)] = dlayer[size_t(l)].data();
    std::vector<int> map;
    BatchTotals r;
    constexpr double kB1 = 0.5, kB2 = 0.9, kEps = 1e-8;  // DeepInversion's Adam settings for images
    for (int it = 0; it < o_.iters; ++it) {
      const int oy = shift_ > 0 ? rng.below(2 * shift_ + 1) - shift_ : 0;
      const int ox = shift_ > 0 ? rng.below(2 * shift_ + 1) - shift_ : 0;
      const bool flip = o_.flip && rng.below(2) == 1;
      view_map(S_, oy, ox, flip, map);
#pragma omp parallel for collapse(2) schedule(static)
      for (int b = 0; b < B; ++b)
        for (int ch = 0; ch < C_; ++ch) {
          const float* src = x + size_t(b) * n_img_ + size_t(ch) * S_ * S_;
          float* dst = view.data() + size_t(b) * n_img_ + size_t(ch) * S_ * S_;
          for (size_t p = 0; p < map.size(); ++p) dst[p] = src[map[p]];
        }
      grad_.forward(view.data(), B, logits.data());
      double ce = 0, st = 0, tv = 0, hits = 0;
      for (int b = 0; b < B; ++b) {  // cross-entropy of the softmax to the target class
        const float* lg = logits.data() + size_t(b) * NC;
        const int cls = bt.classes[size_t(b)];
        ce += cross_entropy(lg, NC, cls, o_.ce, dlogits.data() + size_t(b) * NC);
        hits += int(std::max_element(lg, lg + NC) - lg) == cls;
      }
      if (t_ && o_.stats > 0) {
        for (int b = 0; b < B; ++b) {
          image_layer_stats(grad_, c, b, mean.data(), sd.data());
          for (size_t e = 0; e < LD; ++e) {
            nm[e] = float(rng.normal());
            ns[e] = float(rng.normal());
          }
          st += stat_loss(*t_, bt.centres[size_t(b)], mean.data(), sd.data(), nm.data(), ns.data(), o_.stat_weights,
                          dmean.data(), dsd.data());
          for (size_t e = 0; e < LD; ++e) {
            dmean[e] = float(o_.stats * dmean[e]);
            dsd[e] = float(o_.stats * dsd[e]);
          }
          stat_grad_to_inputs(grad_, c, b, mean.data(), sd.data(), dmean.data(), dsd.data(), dl);
        }
        for (int l = 0; l < L; ++l) dlc[size_t(l)] = dl[size_t(l)];
      }
      grad_.backward(dlogits.data(), dlc, dview.data());
      // Back to the image's own pixels, then the priors on them.
      std::fill(g.begin(), g.end(), 0.0f);
#pragma omp parallel for collapse(2) schedule(static)
      for (int b = 0; b < B; ++b)
        for (int ch = 0; ch < C_; ++ch) {
          const float* src = dview.data() + size_t(b) * n_img_ + size_t(ch) * S_ * S_;
          float* dst = g.data() + size_t(b) * n_img_ + size_t(ch) * S_ * S_;
          for (size_t p = 0; p < map.size(); ++p) dst[map[p]] += src[p];
        }
      for (int b = 0; b < B; ++b) {
        float* xi = x + size_t(b) * n_img_;
        float* gi = g.data() + size_t(b) * n_img_;
        if (o_.tv > 0) tv += tv_loss(xi, C_, S_, o_.tv, gi);
        for (size_t e = 0; e < n_img_; ++e) gi[e] += float(2.0 * o_.l2 * xi[e] / double(n_img_));
      }
      // Adam with a cosine-decayed step; pixels kept in range.
      constexpr double kPi = 3.14159265358979323846;
      const double lr = o_.lr * 0.5 * (1.0 + std::cos(kPi * it / o_.iters));
      const double c1 = 1.0 - std::pow(kB1, it + 1), c2 = 1.0 - std::pow(kB2, it + 1);
#pragma omp parallel for collapse(2) schedule(static)
      for (int b = 0; b < B; ++b)
        for (int ch = 0; ch < C_; ++ch) {
          const size_t o = size_t(b) * n_img_ + size_t(ch) * S_ * S_;
          for (size_t p = 0; p < size_t(S_) * S_; ++p) {
            const size_t e = o + p;
            am[e] = float(kB1 * am[e] + (1 - kB1) * g[e]);
            av[e] = float(kB2 * av[e] + (1 - kB2) * double(g[e]) * g[e]);
            const double step = lr * (am[e] / c1) / (std::sqrt(av[e] / c2) + kEps);
            x[e] = std::clamp(float(x[e] - step), range_.lo[size_t(ch)], range_.hi[size_t(ch)]);
          }
        }
      r = {ce, st, tv, hits};
      if (progress) {
        SynthProgress p;
        p.image0 = bt.first;
        p.images = B;
        p.iter = it + 1;
        p.iters = o_.iters;
        p.ce = ce / B;
        p.stats = st / B;
        p.tv = tv / B;
        p.loss = (o_.ce * ce + o_.stats * st + o_.tv * tv) / B;
        progress(p);
      }
    }
    return r;
  }

  size_t image_elems() const { return n_img_; }
  const PixelRange& range() const { return range_; }

 private:
  const ViTModel& m_;
  const StatTargets* t_;
  const SynthOptions& o_;
  ViTInputGrad grad_;
  PixelRange range_;
  int S_ = 0, C_ = 0, shift_ = 0;
  size_t n_img_ = 0;
};

}  // namespace

SynthResult synthesize(const ViTModel& model, const StatTargets* centres, const SynthOptions& opt,
                       const std::function<void(const SynthProgress&)>& progress) {
  const ViTConfig& c = model.cfg;
  if (opt.images < 1 || opt.iters < 1 || opt.batch < 1) fail(ErrorKind::Usage, "synth: images, iters and batch must be >= 1");
  if (c.preprocess.height != c.img_size || c.preprocess.width != c.img_size || c.preprocess.channels != c.in_chans)
    fail(ErrorKind::Model, "synth: the model's preprocessing (", c.preprocess.width, "x", c.preprocess.height, "x",
         c.preprocess.channels, ") does not give its input size ", c.img_size, "x", c.img_size, "x", c.in_chans);
  Synthesizer s(model, centres, opt);
  const size_t ne = s.image_elems();
  SynthResult out;
  out.pixels.resize(size_t(opt.images) * ne);
  std::vector<float> x;
  Rng rng{opt.seed ^ 0x5eed5eed5eed5eedULL};
  double ce = 0, st = 0, tv = 0, hits = 0;
  for (int i0 = 0; i0 < opt.images; i0 += opt.batch) {
    Batch bt;
    bt.first = i0;
    bt.count = std::min(opt.batch, opt.images - i0);
    for (int k = 0; k < bt.count; ++k) {
      const int i = i0 + k;
      if (centres) {
        const int cc = i % int(centres->classes.size());
        bt.centres.push_back(cc);
        bt.classes.push_back(centres->classes[size_t(cc)]);
      } else {
        bt.centres.push_back(-1);
        bt.classes.push_back(int(int64_t(i) * c.num_classes / opt.images));
      }
    }
    // Start: N(0, 1) noise in the normalised input space, clipped to the pixels' range.
    x.resize(size_t(bt.count) * ne);
    const size_t plane = size_t(c.img_size) * c.img_size;
    for (size_t e = 0; e < x.size(); ++e) {
      const size_t ch = (e / plane) % size_t(c.in_chans);
      x[e] = std::clamp(float(rng.normal()), s.range().lo[ch], s.range().hi[ch]);
    }
    const BatchTotals r = s.run_batch(bt, x.data(), rng, progress);
    ce += r.ce;
    st += r.stats;
    tv += r.tv;
    hits += r.hits;
    for (size_t e = 0; e < x.size(); ++e) {  // p = round((x·std + mean)·255)
      const size_t ch = (e / plane) % size_t(c.in_chans);
      const double v = (double(x[e]) * s.range().sd[ch] + s.range().mean[ch]) * 255.0;
      out.pixels[size_t(i0) * ne + e] = uint8_t(std::clamp(std::lround(v), 0L, 255L));
    }
    out.classes.insert(out.classes.end(), bt.classes.begin(), bt.classes.end());
    out.centre.insert(out.centre.end(), bt.centres.begin(), bt.centres.end());
  }
  out.ce = ce / opt.images;
  out.stats = st / opt.images;
  out.tv = tv / opt.images;
  out.hit_rate = hits / opt.images;
  return out;
}

Image stored_image(const SynthResult& r, const ViTConfig& cfg, int i) {
  const int S = cfg.img_size, C = cfg.in_chans;
  int rw = 0, rh = 0;
  preprocess_resize_size(S, S, cfg.preprocess, &rw, &rh);
  rw = std::max(rw, S);
  rh = std::max(rh, S);
  const int ox = center_crop_offset(rw, S), oy = center_crop_offset(rh, S);
  Image img = Image::blank(rw, rh, C);
  const uint8_t* src = r.pixels.data() + size_t(i) * C * S * S;
  for (int y = 0; y < rh; ++y)
    for (int x = 0; x < rw; ++x) {
      const int sy = std::clamp(y - oy, 0, S - 1), sx = std::clamp(x - ox, 0, S - 1);
      for (int ch = 0; ch < C; ++ch)
        img.pixels[(size_t(y) * rw + size_t(x)) * C + size_t(ch)] = src[(size_t(ch) * S + size_t(sy)) * S + size_t(sx)];
    }
  return img;
}

}  // namespace vitq
