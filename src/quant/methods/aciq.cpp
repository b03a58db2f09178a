// ACIQ (Banner, Nahshan, Soudry 2019), three independent parts, each switchable for an ablation:
//   1. analytical clipping of every activation operand (Sec. 3): fit Laplace and Gaussian models,
//      keep the likelier, and clip where the closed-form expected error (clipping + rounding
//      noise) is least — minimised numerically, not read from the paper's table. Both operands
//      of the attention matmuls are activations, so both are clipped there.
//   2. per-output-channel bit allocation of the weights (Sec. 4): bins ∝ range^(2/3) under the
//      layer's bit budget, each channel 2..8 bits, with a max-based step at its own width.
//   3. weight bias correction (the paper's "bias-correction" section): per output channel, restore the FP
//      mean and the norm of the centred weights after quantization.
// Weights are never clipped (the paper finds no gain from clipping weights; Sec. 3).
#include "quant/methods/aciq.h"
#include "quant/target.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/golden_section.h"
#include "quant/calibrate.h"
#include "quant/methods/methods.h"
#include "numerics/quantizer.h"

namespace vitq {

const char* aciq_dist_name(AciqDist d) { return d == AciqDist::Laplace ? "laplace" : "gauss"; }

namespace {

constexpr double kPi = 3.14159265358979323846;

// Σ f(i) over [0, n) in fixed chunks summed in order: the same bits whatever the thread count.
template <class F>
double chunked_sum(size_t n, F f) {
  constexpr size_t chunk = size_t(1) << 16;
  const size_t nc = (n + chunk - 1) / chunk;
  std::vector<double> part(nc, 0.0);
#pragma omp parallel for schedule(static)
  for (size_t c = 0; c < nc; ++c) {
    double s = 0;
    const size_t e = std::min(n, (c + 1) * chunk);
    for (size_t i = c * chunk; i < e; ++i) s += f(i);
    part[c] = s;
  }
  return std::accumulate(part.begin(), part.end(), 0.0);
}

// Clipping noise of one tail, T(a) = E[(U − a)² ; U > a], U centred Laplace(b) or Gaussian(σ).
// Laplace, a ≥ 0: ∫_a^∞ (u − a)² e^(−u/b) / 2b du = b² e^(−a/b) (each half of the paper's 2b²e^(−α/b));
//          a < 0: E(U − a)² minus the lower part, by symmetry 2b² + a² − b² e^(a/b).
// Gaussian: with z = a/σ, σ²[(1 + z²) Q(z) − z φ(z)] (each half of the paper's Gaussian term), Q the upper tail.
double tail(AciqDist d, double s, double a) {
  if (d == AciqDist::Laplace) return a >= 0 ? s * s * std::exp(-a / s) : 2 * s * s + a * a - s * s * std::exp(a / s);
  const double z = a / s;
  const double q = 0.5 * std::erfc(z / std::sqrt(2.0));
  const double phi = std::exp(-0.5 * z * z) / std::sqrt(2 * kPi);
  return s * s * ((1 + z * z) * q - z * phi);
}

}  // namespace

AciqFit aciq_fit(const float* x, size_t n) {
  AciqFit f;
  if (n == 0) return f;
  f.mean = chunked_sum(n, [&](size_t i) { return double(x[i]); }) / double(n);
  const double mu = f.mean;
  f.b = chunked_sum(n, [&](size_t i) { return std::fabs(double(x[i]) - mu); }) / double(n);
  f.sigma = std::sqrt(chunked_sum(n, [&](size_t i) { const double d = double(x[i]) - mu; return d * d; }) / double(n));
  float mx = 0, mp = -INFINITY;
  for (size_t i = 0; i < n; ++i) {
    mx = std::max(mx, std::fabs(x[i]));
    mp = std::max(mp, x[i]);
  }
  f.max_abs = mx;
  f.max_pos = mp;
  // Mean log-likelihoods at the MLE scales: Laplace −log(2b) − 1, Gaussian −log(2πσ²)/2 − 1/2.
  f.ll_laplace = f.b > 0 ? -std::log(2 * f.b) - 1 : -INFINITY;
  f.ll_gauss = f.sigma > 0 ? -0.5 * std::log(2 * kPi * f.sigma * f.sigma) - 0.5 : -INFINITY;
  f.best = f.ll_gauss > f.ll_laplace ? AciqDist::Gauss : AciqDist::Laplace;
  return f;
}

double aciq_expected_mse(AciqDist d, double mu, double s, double alpha, int bits, bool is_unsigned) {
  const double hi = double(qrange(bits, is_unsigned ? Grid::Unsigned : Grid::Signed).hi);
  const double delta = alpha / hi;
  double e = tail(d, s, alpha - mu) + delta * delta / 12;
  if (!is_unsigned) e += tail(d, s, alpha * (1 + 1 / hi) + mu);  // lower end of the grid: −(hi+1)Δ
  return e;
}

double aciq_optimal_clip(AciqDist d, double mu, double s, int bits, bool is_unsigned) {
  if (!(s > 0)) fail(ErrorKind::Internal, "aciq: the distribution scale must be positive");
  // The error is convex in α (T'' = 2·P(U > a) ≥ 0, plus a parabola), so golden-section search
  // on a bracket surely holding the minimum converges to it: beyond |μ| + 60 s both tails are
  // below e^-60 s² (Laplace) while the rounding noise only grows.
  const auto [lo, hi] = golden_section(
      [&](double a) { return aciq_expected_mse(d, mu, s, a, bits, is_unsigned); }, 0.0, std::fabs(mu) + 60 * s,
      [&](double l, double h, int) { return h - l > 1e-12 * (std::fabs(mu) + s); });
  return 0.5 * (lo + hi);
}

std::vector<int> aciq_allocate_bits(const std::vector<double>& ranges, int bits, int min_bits, int max_bits) {
  const size_t n = ranges.size();
  if (bits >= max_bits) return std::vector<int>(n, std::min(bits, max_bits));
  if (bits < min_bits) fail(ErrorKind::Usage, "aciq: cannot allocate ", bits, " bits per channel on average with at least ",
                            min_bits, " per channel");
  // log2 of range^(2/3); a zero range (dead channel) gets the minimum anyway.
  std::vector<double> l(n);
  for (size_t i = 0; i < n; ++i) l[i] = ranges[i] > 0 ? (2.0 / 3.0) * std::log2(ranges[i]) : -1e30;
  auto real_bits = [&](double shift, size_t i) { return std::clamp(l[i] + shift, double(min_bits), double(max_bits)); };
  auto total = [&](double shift) {
    double t = 0;
    for (size_t i = 0; i < n; ++i) t += real_bits(shift, i);
    return t;
  };
  // Bisection on log2 λ: the clamped total is monotone in it.
  const double budget = double(n) * bits;
  double slo = -1e3, shi = 1e3;
  for (size_t i = 0; i < n; ++i)
    if (l[i] > -1e29) {
      slo = std::min(slo, min_bits - l[i] - 1);
      shi = std::max(shi, max_bits - l[i] + 1);
    }
  for (int it = 0; it < 200; ++it) {
    const double mid = 0.5 * (slo + shi);
    (total(mid) > budget ? shi : slo) = mid;
  }
  std::vector<int> out(n);
  std::vector<std::pair<double, size_t>> frac;
  int64_t used = 0;
  for (size_t i = 0; i < n; ++i) {
    const double r = real_bits(slo, i);  // total(slo) ≤ budget
    out[i] = int(std::floor(r));
    used += out[i];
    frac.push_back({r - out[i], i});
  }
  // Largest remainders first (ties: lower channel index), never past the budget or max_bits.
  std::stable_sort(frac.begin(), frac.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  int64_t left = int64_t(budget) - used;
  for (const auto& [fr, i] : frac) {
    if (left <= 0) break;
    if (fr > 0 && out[i] < max_bits) {
      ++out[i];
      --left;
    }
  }
  return out;
}

namespace {

class Aciq : public Method {
 public:
  explicit Aciq(const AciqOptions& a) : a_(a) {
    if (a.dist != "auto" && a.dist != "laplace" && a.dist != "gauss")
      fail(ErrorKind::Usage, "--aciq-dist must be auto, laplace or gauss (got '", a.dist, "')");
  }
  std::string name() const override { return "aciq"; }
  nlohmann::ordered_json settings(const GridPolicy& g) const override {
    return {{"clip", a_.clip},
            {"dist", a_.dist},
            {"bit_alloc", a_.bit_alloc},
            {"max_channel_bits", kMaxChannelBits},
            {"bias_correction", a_.bias_correction},
            {"unsigned_softmax", g.unsigned_softmax()}};
  }

  SitePlan calibrate(const SiteObservation& obs, Bits bits, SiteNotes& notes) override {
    SitePlan sp = minmax_site_plan(obs, bits);
    if (a_.clip) {
      clip(obs.x, size_t(obs.x_per_image()) * size_t(obs.images), sp.x, notes.j["x"]);
      if (obs.attention()) clip(obs.w, size_t(obs.w_per_image()) * size_t(obs.images), sp.w, notes.j["w"]);
    }
    if (!obs.attention()) weights(obs, sp, notes.j["weights"]);
    return sp;
  }

 private:
  static constexpr int kMaxChannelBits = 8;  // int8 weights in the integer runtime

  // Sets the operand's step from the analytical clip of its calibration values.
  void clip(const float* x, size_t n, OperandQuant& q, nlohmann::ordered_json& note) const {
    const AciqFit f = aciq_fit(x, n);
    const AciqDist d = a_.dist == "laplace" ? AciqDist::Laplace
                       : a_.dist == "gauss" ? AciqDist::Gauss
                                                 : f.best;
    note["dist"] = aciq_dist_name(d);
    note["mean"] = f.mean;
    note["laplace_b"] = f.b;
    note["gauss_sigma"] = f.sigma;
    note["loglik_laplace"] = f.ll_laplace;
    note["loglik_gauss"] = f.ll_gauss;
    if (!(f.scale(d) > 0)) {  // constant data: keep the max-based step
      note["alpha"] = nullptr;
      return;
    }
    const double cap = (q.grid == Grid::Unsigned) ? f.max_pos : f.max_abs;
    const double alpha = std::min(aciq_optimal_clip(d, f.mean, f.scale(d), q.bits, (q.grid == Grid::Unsigned)), cap);
    note["alpha"] = alpha;
    note["alpha_over_max"] = cap > 0 ? alpha / cap : 1.0;
    if (alpha > 0) q.scale = max_step(float(alpha), q.range());
  }

  void weights(const SiteObservation& obs, SitePlan& sp, nlohmann::ordered_json& note) const {
    const int N = obs.shape.N, K = obs.shape.K;
    OperandQuant& w = sp.w;
    std::vector<double> range(static_cast<size_t>(N));
    for (int c = 0; c < N; ++c) range[size_t(c)] = max_abs(obs.w + size_t(c) * K, size_t(K));
    if (a_.bit_alloc && w.bits < kMaxChannelBits) {
      w.channel_bits = aciq_allocate_bits(range, w.bits, kMinBits, kMaxChannelBits);
      const auto [mn, mx] = std::minmax_element(w.channel_bits.begin(), w.channel_bits.end());
      note["channel_bits_min"] = *mn;
      note["channel_bits_max"] = *mx;
      note["bits_used"] = std::accumulate(w.channel_bits.begin(), w.channel_bits.end(), int64_t(0));
      note["bits_budget"] = int64_t(N) * w.bits;
    }
    w.channel_scales.resize(size_t(N));
    for (int c = 0; c < N; ++c) w.channel_scales[size_t(c)] = max_step(float(range[size_t(c)]), w.channel_range(size_t(c)));
    if (a_.bias_correction) correct_bias(obs, sp, note);
    w.scale = *std::max_element(w.channel_scales.begin(), w.channel_scales.end());
  }

  // Per channel c with codes q = clip(round(W_c / Δ_c)) and Ŵ_c = Δ_c q: the corrected weight
  //   W̃_c = (Ŵ_c − μ̂_c)·ρ_c + μ_c,  ρ_c = ‖W_c − μ_c‖ / ‖Ŵ_c − μ̂_c‖,
  // has the FP mean μ_c and the FP centred norm. The paper writes the correction as
  // ρ_c·(Ŵ_c + μ_c − μ̂_c), which restores the mean only approximately; this form restores both
  // exactly. The plan holds it as codes q at step ρ_c·Δ_c (so the codes must be stored: round()
  // at the new step would give others) plus the per-channel offset μ_c − ρ_c·μ̂_c, which the
  // site applies as offset_c·Σ_k x̂_k (plan.h).
  void correct_bias(const SiteObservation& obs, SitePlan& sp, nlohmann::ordered_json& note) const {
    const int N = obs.shape.N, K = obs.shape.K;
    OperandQuant& w = sp.w;
    sp.weight_codes.resize(size_t(N) * size_t(K));
    sp.weight_offset.assign(size_t(N), 0.0f);
    double ratio_sum = 0, ratio_min = INFINITY, ratio_max = 0, off_max = 0;
#pragma omp parallel for schedule(static) reduction(+ : ratio_sum) reduction(min : ratio_min) \
    reduction(max : ratio_max, off_max)
    for (int c = 0; c < N; ++c) {
      const float* wc = obs.w + size_t(c) * K;
      int16_t* q = sp.weight_codes.data() + size_t(c) * K;
      const float d = w.channel_scales[size_t(c)];
      quantize_to_i16(wc, q, size_t(K), d, w.channel_range(size_t(c)));
      double mu = 0, muq = 0;
      for (int k = 0; k < K; ++k) {
        mu += wc[k];
        muq += double(q[k]) * d;
      }
      mu /= K;
      muq /= K;
      double nn = 0, nq = 0;
      for (int k = 0; k < K; ++k) {
        nn += (wc[k] - mu) * (wc[k] - mu);
        nq += (double(q[k]) * d - muq) * (double(q[k]) * d - muq);
      }
      const double rho = nq > 0 && nn > 0 ? std::sqrt(nn / nq) : 1.0;
      w.channel_scales[size_t(c)] = float(d * rho);
      sp.weight_offset[size_t(c)] = float(mu - rho * muq);
      ratio_sum += rho;
      ratio_min = std::min(ratio_min, rho);
      ratio_max = std::max(ratio_max, rho);
      off_max = std::max(off_max, std::fabs(mu - rho * muq));
    }
    note["norm_ratio_mean"] = ratio_sum / N;
    note["norm_ratio_min"] = ratio_min;
    note["norm_ratio_max"] = ratio_max;
    note["offset_max_abs"] = off_max;
  }

  AciqOptions a_;
};

}  // namespace

std::string AciqOptions::fit_target(const Target& t) {
  if (!bias_correction || t.weights.offset) return "";
  bias_correction = false;  // its per-channel weight offsets are zero points the target lacks
  return "bias correction (its weight offsets)";
}

void AciqOptions::declare(OptionDecls& d) {
  d.off_switch("--aciq-no-clip", &clip, "no analytical clipping; activations keep their max-based steps (ablation)");
  d.text("--aciq-dist", &dist,
         "distribution fitted to each activation for the clipping: auto (the likelier of the two maximum-likelihood "
         "fits, reported per site), laplace, gauss");
  d.off_switch("--aciq-no-bit-alloc", &bit_alloc,
               "no per-channel weight bit allocation; every channel gets the layer's bits, with its own max-based "
               "step (ablation)");
  d.off_switch("--aciq-no-bias-correction", &bias_correction,
               "no weight bias correction (restoring each channel's FP mean and norm) (ablation)");
}

std::unique_ptr<Method> make_aciq(const MethodConfig& cfg) { return std::make_unique<Aciq>(cfg.get<AciqOptions>("aciq")); }

}  // namespace vitq
