// Bit-Split and Stitching (Wang et al., ICML 2020). Weights of each linear site become
// α_c · Σ_m 2^m t_m (ternary t_m per bit), optimised against the layer output on the
// calibration inputs, then stitched into integer codes that the plan carries (SitePlan::
// weight_codes, with α_c as per-channel steps). Activations — and both operands of the
// attention matmuls, which have no weights — use another method of the user's choice
// (default percentile), as in the paper, which pairs bit-split weights with a separate
// activation quantizer.
//
// The layer output reconstructed is the FP weight's on the same inputs, ‖X̂Wᵀ − X̂Ŵᵀ‖, X̂ the
// site's quantized input as the driver shows it (the paper minimises the error of the layer's
// output rather than of the weights). Not the FP model's output: with inputs from the partly
// quantized model, regressing the FP outputs on them shrinks the least-squares steps α_c
// (errors in the regressor) — on ViT-Ti at W6A6 that gave 14 % top-1 instead of 61 % (dev).
#include "quant/methods/bitsplit.h"

#include <dnnl.h>

#include <algorithm>
#include <cmath>

#include "core/aligned.h"
#include "core/error.h"
#include "quant/calibrate.h"
#include "quant/methods/methods.h"
#include "numerics/quantizer.h"

namespace vitq {
namespace {

void sgemm_tn(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb, float* c) {
  // c (M × N) = aᵀ · b with a: K × M (lda), b: K × N (ldb), row-major.
  const dnnl_status_t st = dnnl_sgemm('T', 'N', M, N, K, 1.0f, a, lda, b, ldb, 0.0f, c, N);
  if (st != dnnl_success) fail(ErrorKind::Internal, "oneDNN sgemm failed (status ", int(st), ")");
}

// Closed-form objective of one channel, ‖Y_c‖² − 2α·T_c·q + α²·qᵀHq.
double channel_error(double yy, double alpha, const double* t, const double* hq, const int16_t* q, int K) {
  double tq = 0, qhq = 0;
  for (int k = 0; k < K; ++k) {
    tq += t[k] * q[k];
    qhq += hq[k] * q[k];
  }
  return yy - 2 * alpha * tq + alpha * alpha * qhq;
}

void mat_vec(const double* h, const int16_t* q, double* out, int K) {  // out = H q (H symmetric)
  for (int i = 0; i < K; ++i) {
    const double* hr = h + size_t(i) * K;
    double s = 0;
    for (int k = 0; k < K; ++k) s += hr[k] * q[k];
    out[i] = s;
  }
}

// H = X̂ᵀX̂ over the calibration rows (X̂: x fake-quantized by xq if given), accumulated in
// chunks (bounded memory), in double.
std::vector<double> input_gram(const float* x, int64_t rows, int K, const OperandQuant* xq) {
  const size_t KK = size_t(K) * K;
  std::vector<double> H(KK, 0.0);
  const int64_t chunk = 8192;
  avector<float> xc(size_t(std::min(rows, chunk)) * K), hc(KK);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t nr = std::min(chunk, rows - r0);
    const float* xs = x + r0 * K;
    if (xq && xq->quantized()) {
      fake_quantize(xs, xc.data(), size_t(nr) * K, xq->scale, xq->range());
      xs = xc.data();
    }
    sgemm_tn(K, K, nr, xs, K, xs, K, hc.data());
    for (size_t i = 0; i < KK; ++i) H[i] += hc[i];
  }
  return H;
}

// T_c = H w_c (= X̂ᵀ y_c for the target y_c = X̂ w_c) and ‖y_c‖² = w_cᵀ H w_c, per channel.
void gram_targets(const std::vector<double>& H, const float* w, int N, int K, std::vector<double>& T,
                  std::vector<double>& yy) {
  T.assign(size_t(N) * K, 0.0);
  yy.assign(size_t(N), 0.0);
#pragma omp parallel for schedule(static)
  for (int c = 0; c < N; ++c) {
    const float* wc = w + size_t(c) * K;
    double* t = T.data() + size_t(c) * K;
    double s = 0;
    for (int i = 0; i < K; ++i) {
      const double* hr = H.data() + size_t(i) * K;
      double acc = 0;
      for (int k = 0; k < K; ++k) acc += hr[k] * wc[k];
      t[i] = acc;
      s += acc * wc[i];
    }
    yy[size_t(c)] = s;
  }
}

void round_codes(const float* wc, int K, double alpha, int qm, int16_t* q) {
  for (int k = 0; k < K; ++k) q[k] = int16_t(std::clamp(std::nearbyint(wc[k] / alpha), double(-qm), double(qm)));
}

// The step minimising the weight error with round-to-nearest codes on the symmetric grid
// ±qm that b − 1 ternary planes can represent (alternate codes and least-squares step until
// the step settles), from alpha. q: scratch for the codes.
double weight_lsq_step(const float* wc, int K, int qm, double alpha, int16_t* q) {
  for (int it = 0; it < 100; ++it) {
    double wq = 0, qq = 0;
    round_codes(wc, K, alpha, qm, q);
    for (int k = 0; k < K; ++k) {
      wq += double(wc[k]) * q[k];
      qq += double(q[k]) * q[k];
    }
    if (!(qq > 0) || !(wq > 0)) break;
    const double next = wq / qq;
    const bool done = std::fabs(next - alpha) <= 1e-12 * alpha;
    alpha = next;
    if (done) break;
  }
  return alpha;
}

// One channel's ternary planes t[m] (K values each) and codes q, optimised in place: rounds of
// a least-squares step for the codes and a coordinate sweep over every ternary value, until
// no value changes or max_epochs. hq = H q on return. Returns the rounds run.
int ternary_sweeps(const std::vector<double>& H, const double* tcv, int K, const std::vector<int8_t*>& t, int max_epochs,
                   int16_t* q, double& alpha, std::vector<double>& hq) {
  auto refit = [&] {  // least-squares step for the current codes (kept positive: otherwise unchanged)
    double tq = 0, qhq = 0;
    for (int k = 0; k < K; ++k) {
      tq += tcv[k] * q[k];
      qhq += hq[k] * q[k];
    }
    if (qhq > 0 && tq > 0 && std::isfinite(tq / qhq)) alpha = tq / qhq;
  };
  int ep = 0;
  for (; ep < max_epochs; ++ep) {
    mat_vec(H.data(), q, hq.data(), K);  // fresh H q each round (no drift from the updates)
    refit();
    int changed = 0;
    for (int m = 0; m < int(t.size()); ++m) {
      const double p2 = double(1 << m), a = alpha * p2;
      for (int k = 0; k < K; ++k) {
        const double hkk = H[size_t(k) * K + k];
        if (!(hkk > 0)) continue;  // a dead input feature: the output does not depend on it
        // With every other ternary value fixed, the error as a function of this one is
        // a²·H_kk·v² − 2a·g·v + const, g = ⟨X_k, residual without this term⟩.
        const double g = tcv[k] - alpha * (hq[k] - p2 * t[m][k] * hkk);
        auto f = [&](int v) { return a * a * hkk * v * v - 2 * a * g * v; };
        int best = t[m][k];
        for (int v = -1; v <= 1; ++v)
          if (f(v) < f(best) - 1e-12 * std::fabs(f(best))) best = v;
        if (best == t[m][k]) continue;
        const int delta = (best - t[m][k]) << m;
        t[m][k] = int8_t(best);
        q[k] = int16_t(q[k] + delta);
        const double* hk = H.data() + size_t(k) * K;
        for (int j = 0; j < K; ++j) hq[j] += delta * hk[j];
        ++changed;
      }
    }
    if (!changed) {
      ++ep;
      break;
    }
  }
  mat_vec(H.data(), q, hq.data(), K);
  refit();
  return ep;
}

}  // namespace

BitSplitResult bit_split(const float* x, int64_t rows, int K, const float* w, int N, int bits, int max_epochs,
                         const OperandQuant* xq) {
  if (bits < kMinBits || bits > kMaxBits) fail(ErrorKind::Usage, "bit-split: bits must be in [2, 10]");
  const int planes = bits - 1, qm = qmax(bits);
  const size_t NK = size_t(N) * K;
  // The objective per channel is ‖X(w_c − α_c q_c)‖² = (w_c − α_c q_c)ᵀ H (w_c − α_c q_c).
  const std::vector<double> H = input_gram(x, rows, K, xq);
  std::vector<double> T, yy;
  gram_targets(H, w, N, K, T, yy);

  BitSplitResult res;
  res.bits = bits;
  res.codes.assign(NK, 0);
  res.planes.assign(size_t(planes), std::vector<int8_t>(NK, 0));
  res.alpha.assign(size_t(N), 0.0f);
  // Per-channel errors, summed in channel order afterwards (the same bits whatever the threads).
  std::vector<double> e_max(static_cast<size_t>(N)), e_init(static_cast<size_t>(N)), e_final(static_cast<size_t>(N));
  std::vector<int> epochs(static_cast<size_t>(N));

#pragma omp parallel for schedule(dynamic, 1)
  for (int c = 0; c < N; ++c) {
    const float* wc = w + size_t(c) * K;
    const double* tcv = T.data() + size_t(c) * K;
    int16_t* q = res.codes.data() + size_t(c) * K;
    std::vector<double> hq(static_cast<size_t>(K));

    // Plain rounding at the max-based step (the reference the method is measured against).
    const double amax = max_step(max_abs(wc, size_t(K)), qrange(bits));
    round_codes(wc, K, amax, qm, q);
    mat_vec(H.data(), q, hq.data(), K);
    e_max[size_t(c)] = channel_error(yy[size_t(c)], amax, tcv, hq.data(), q, K);

    // Initialisation: the least-squares step of the weights with rounded codes.
    double alpha = weight_lsq_step(wc, K, qm, amax, q);
    round_codes(wc, K, alpha, qm, q);
    mat_vec(H.data(), q, hq.data(), K);
    e_init[size_t(c)] = channel_error(yy[size_t(c)], alpha, tcv, hq.data(), q, K);

    // Split the codes into ternary planes: t_m = sign(q) · bit m of |q|; then optimise them.
    std::vector<int8_t*> t(static_cast<size_t>(planes));
    for (int m = 0; m < planes; ++m) {
      t[size_t(m)] = res.planes[size_t(m)].data() + size_t(c) * K;
      for (int k = 0; k < K; ++k) {
        const int a = std::abs(int(q[k]));
        t[size_t(m)][k] = int8_t(((a >> m) & 1) * (q[k] < 0 ? -1 : 1));
      }
    }
    epochs[size_t(c)] = ternary_sweeps(H, tcv, K, t, max_epochs, q, alpha, hq);
    res.alpha[size_t(c)] = float(alpha);
    e_final[size_t(c)] = channel_error(yy[size_t(c)], double(res.alpha[size_t(c)]), tcv, hq.data(), q, K);
  }
  const double denom = double(rows) * N;
  for (int c = 0; c < N; ++c) {
    res.mse_round_max += e_max[size_t(c)] / denom;
    res.mse_init += e_init[size_t(c)] / denom;
    res.mse_final += e_final[size_t(c)] / denom;
    res.epochs = std::max(res.epochs, epochs[size_t(c)]);
  }
  return res;
}

namespace {

class BitSplit : public Method {
 public:
  BitSplit(const BitSplitOptions& a, const MethodConfig& cfg) : a_(a) {
    if (a.act == "bitsplit" || a.act == "lapq")
      fail(ErrorKind::Usage, "--bitsplit-act must be a per-site method (minmax, percentile, aciq, easyquant, liu2021)");
    if (a.epochs < 1) fail(ErrorKind::Usage, "--bitsplit-epochs must be >= 1");
    act_ = make_method(a.act, cfg);
  }
  std::string name() const override { return "bitsplit"; }
  nlohmann::ordered_json settings(const GridPolicy& g) const override {
    return {{"act_method", act_->name()}, {"act_settings", act_->settings(g)}, {"max_epochs", a_.epochs}};
  }

  SitePlan calibrate(const SiteObservation& obs, Bits bits, SiteNotes& notes) override {
    SiteNotes act;
    SitePlan a = act_->calibrate(obs, bits, act);
    notes.j["act"] = act.j;
    if (obs.attention()) return a;  // no weights: both operands are activations
    SitePlan sp;
    sp.x = a.x;  // the activation method's input step only; its weight choices are dropped
    const SiteShape& s = obs.shape;
    const BitSplitResult r =
        bit_split(obs.x, int64_t(obs.images) * s.M, s.K, obs.w, s.N, bits.w, a_.epochs, &sp.x);
    sp.w.bits = bits.w;
    sp.w.channel_scales = r.alpha;
    for (float& v : sp.w.channel_scales)  // a channel with all-zero codes keeps some positive step
      if (!(v > 0)) v = max_step(0.0f, sp.w.range());
    sp.w.scale = *std::max_element(sp.w.channel_scales.begin(), sp.w.channel_scales.end());
    sp.weight_codes = r.codes;
    notes.j["output_mse_round_max_step"] = r.mse_round_max;
    notes.j["output_mse_init"] = r.mse_init;
    notes.j["output_mse_bitsplit"] = r.mse_final;
    notes.j["epochs"] = r.epochs;
    return sp;
  }

 private:
  BitSplitOptions a_;
  std::unique_ptr<Method> act_;
};

}  // namespace

void BitSplitOptions::declare(OptionDecls& d) {
  d.text("--bitsplit-act", &act, "method of the activation steps (minmax, percentile, aciq, easyquant, liu2021)");
  d.integer("--bitsplit-epochs", &epochs, 1, 10000,
            "alternating rounds (steps, then each bit plane) at most; stops earlier when nothing changes");
}

std::unique_ptr<Method> make_bitsplit(const MethodConfig& cfg) {
  return std::make_unique<BitSplit>(cfg.get<BitSplitOptions>("bitsplit"), cfg);
}

}  // namespace vitq
