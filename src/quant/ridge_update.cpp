#include "quant/ridge_update.h"

#include <omp.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>

#include "core/aligned.h"
#include "core/error.h"
#include "engine/gemm_f32.h"
#include "quant/gptq.h"
#include "quant/weight_rounding.h"

namespace vitq {

namespace {

// Σ_r x̂_r x̂_rᵀ (K × K, as quantized_input_gram), Σ_r x̂_r y_rᵀ (K × N), Σ_r x̂_r (K), Σ_r y_r (N) and
// Σ_r ‖y_r‖², y the FP model's output or (local) the site's own FP32 output of its unquantized input
// x·Wᵀ + b; float within chunks of rows, double across chunks in chunk order: independent of the
// thread count. One pass over the rows.
struct Moments {
  std::vector<double> xx, xy, sx, sy;
  double yy = 0;
};

Moments moments(const SiteObservation& obs, const OperandQuant& x, bool local) {
  const int K = obs.shape.K, N = obs.shape.N;
  struct Slot {
    avector<float> g, c, y;
    std::vector<double> sx, sy;
    double yy = 0;
  };
  std::vector<Slot> slots(static_cast<size_t>(std::max(1, omp_get_max_threads())));
  Moments m;
  m.xx.assign(size_t(K) * size_t(K), 0.0);
  m.xy.assign(size_t(K) * size_t(N), 0.0);
  m.sx.assign(size_t(K), 0.0);
  m.sy.assign(size_t(N), 0.0);
  auto chunk = [&](int t, int64_t r0, int64_t n, const float* xs) {
    Slot& sl = slots[size_t(t)];
    sl.g.resize(size_t(K) * size_t(K));
    sl.c.resize(size_t(K) * size_t(N));
    gemm_tn_f32(K, K, n, xs, xs, sl.g.data());
    const float* y = obs.target + r0 * N;
    if (local) {  // the site's own FP32 output of its unquantized input: x·Wᵀ + b
      sl.y.resize(size_t(n) * size_t(N));
      gemm_nt_f32(n, N, K, obs.x + r0 * K, obs.w, sl.y.data());
      if (obs.bias)
        for (int64_t r = 0; r < n; ++r)
          for (int c = 0; c < N; ++c) sl.y[size_t(r * N + c)] += obs.bias[c];
      y = sl.y.data();
    }
    gemm_tn_f32(K, N, n, xs, y, sl.c.data());
    sl.sx.assign(size_t(K), 0.0);
    sl.sy.assign(size_t(N), 0.0);
    sl.yy = 0;
    for (int64_t r = 0; r < n; ++r) {
      for (int k = 0; k < K; ++k) sl.sx[size_t(k)] += double(xs[r * K + k]);
      for (int c = 0; c < N; ++c) {
        const double v = double(y[r * N + c]);
        sl.sy[size_t(c)] += v;
        sl.yy += v * v;
      }
    }
  };
  auto merge = [&](int t) {
    const Slot& sl = slots[size_t(t)];
    for (size_t i = 0; i < m.xx.size(); ++i) m.xx[i] += double(sl.g[i]);
    for (size_t i = 0; i < m.xy.size(); ++i) m.xy[i] += double(sl.c[i]);
    for (int k = 0; k < K; ++k) m.sx[size_t(k)] += sl.sx[size_t(k)];
    for (int c = 0; c < N; ++c) m.sy[size_t(c)] += sl.sy[size_t(c)];
    m.yy += sl.yy;
  };
  for_quantized_row_chunks(obs, x, chunk, merge);
  return m;
}

}  // namespace

RidgeFit ridge_fit(const SiteObservation& obs, const OperandQuant& x, const RidgeOptions& opt) {
  const int K = obs.shape.K, N = obs.shape.N;
  if (obs.attention()) fail(ErrorKind::Internal, "ridge_fit: ", obs.shape.id.name(), " has no weights");
  if (!(opt.damp > 0) || !std::isfinite(opt.damp))
    fail(ErrorKind::Usage, "--ridge-damp must be a positive number (got ", opt.damp, ")");
  const double R = double(obs.images) * double(obs.rows_per_image());
  Moments m = moments(obs, x, opt.target == RidgeTarget::Local);
  const std::vector<double>& H = m.xx;

  // A = X̃ᵀX̃ + λI ((K+1) × (K+1)), B = X̃ᵀY + λ[W b]ᵀ ((K+1) × N).
  using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic>;
  Mat A(K + 1, K + 1), B(K + 1, N), W0(K + 1, N);
  double mean_diag = 0;
  for (int i = 0; i < K; ++i) mean_diag += H[size_t(i) * size_t(K) + size_t(i)];
  mean_diag = (mean_diag + R) / double(K + 1);
  const double lambda = opt.damp * mean_diag;
  for (int i = 0; i < K; ++i) {
    for (int j = 0; j < K; ++j) A(i, j) = H[size_t(i) * size_t(K) + size_t(j)];
    A(i, K) = A(K, i) = m.sx[size_t(i)];
  }
  A(K, K) = R;
  for (int c = 0; c < N; ++c) {
    for (int k = 0; k < K; ++k) W0(k, c) = double(obs.w[size_t(c) * size_t(K) + size_t(k)]);
    W0(K, c) = obs.bias ? double(obs.bias[c]) : 0.0;
    for (int k = 0; k < K; ++k) B(k, c) = m.xy[size_t(k) * size_t(N) + size_t(c)];
    B(K, c) = m.sy[size_t(c)];
  }
  if (!A.allFinite() || !B.allFinite())
    fail(ErrorKind::Model, "site ", obs.shape.id.name(), ": non-finite input moments for the ridge update");
  // Error Σ‖y − Θᵀx̃‖² = Σ‖y‖² − 2 tr(ΘᵀB₀) + tr(ΘᵀAΘ), B₀ = X̃ᵀY, A without λ.
  auto error = [&](const Mat& Th) {
    return m.yy - 2.0 * (Th.cwiseProduct(B)).sum() + (Th.cwiseProduct(A * Th)).sum();
  };
  RidgeFit f;
  f.rel_error_before = m.yy > 0 ? error(W0) / m.yy : 0;
  Mat Areg = A;
  Areg.diagonal().array() += lambda;
  const Mat rhs = B + lambda * W0;
  Eigen::LLT<Mat> llt(Areg);
  if (llt.info() != Eigen::Success)
    fail(ErrorKind::Model, "site ", obs.shape.id.name(), ": the ridge system is not positive definite (damp ",
         opt.damp, ")");
  const Mat Th = llt.solve(rhs);
  f.rel_error_after = m.yy > 0 ? error(Th) / m.yy : 0;
  f.w.resize(size_t(N) * size_t(K));
  f.b.resize(size_t(N));
  for (int c = 0; c < N; ++c) {
    for (int k = 0; k < K; ++k) f.w[size_t(c) * size_t(K) + size_t(k)] = float(Th(k, c));
    f.b[size_t(c)] = float(Th(K, c));
  }
  f.H = std::move(m.xx);
  f.mean_x.resize(size_t(K));
  for (int k = 0; k < K; ++k) f.mean_x[size_t(k)] = R > 0 ? m.sx[size_t(k)] / R : 0.0;
  if (std::any_of(f.w.begin(), f.w.end(), [](float v) { return !std::isfinite(v); }))
    fail(ErrorKind::Model, "site ", obs.shape.id.name(), ": the ridge update gave non-finite weights");
  return f;
}

bool ridge_weight_step(const SiteObservation& obs, SitePlan& sp, const RidgeOptions& opt, const GptqOptions* gptq,
                       nlohmann::ordered_json& notes) {
  const int N = obs.shape.N, K = obs.shape.K;
  ChannelGrid g;
  if (obs.attention() || !sp.w.quantized() || !plan_channel_grid(sp, N, &g)) return false;
  const RidgeFit f = ridge_fit(obs, sp.x, opt);
  notes["ridge"] = {{"damp", opt.damp}, {"error_before", f.rel_error_before}, {"error_after", f.rel_error_after}};
  if (gptq) {
    gptq_weight_step(obs, sp, *gptq, notes, f.w.data(), &f.H);  // on the same grid g
  } else {
    std::vector<int16_t> rtn(size_t(N) * size_t(K));
    round_to_grid(f.w.data(), N, K, g, rtn.data());
    set_plan_weight_codes(sp, g, std::move(rtn));
  }
  const std::vector<int16_t>& codes = sp.weight_codes;
  // b'' = b' + (W' − Ŵ)·mean x̂, as a correction of the site's own bias.
  sp.bias_correction.assign(size_t(N), 0.0f);
  for (int c = 0; c < N; ++c) {
    double d = 0;
    for (int k = 0; k < K; ++k) {
      const size_t i = size_t(c) * size_t(K) + size_t(k);
      d += (double(f.w[i]) - grid_value(codes[i], g.step[size_t(c)], g.offset[size_t(c)])) * f.mean_x[size_t(k)];
    }
    const double b_old = obs.bias ? double(obs.bias[c]) : 0.0;
    sp.bias_correction[size_t(c)] = float(double(f.b[size_t(c)]) + d - b_old);
  }
  return true;
}

}  // namespace vitq
