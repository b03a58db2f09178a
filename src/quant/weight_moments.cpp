#include "quant/weight_moments.h"

#include <dnnl.h>
#include <omp.h>

#include <algorithm>

#include "core/error.h"
#include "quant/scale_search.h"

namespace vitq {
namespace {

void check(dnnl_status_t st, const char* what) {
  if (st != dnnl_success) fail(ErrorKind::Internal, "oneDNN ", what, " failed in the weight-moment search (status ", int(st), ")");
}

}  // namespace

size_t WeightMoments::bytes_needed(const SiteObservation& obs) {
  const size_t K = size_t(obs.shape.K), N = size_t(obs.shape.N), I = size_t(obs.images);
  return I * (K * K + N * K + K + N) * sizeof(float) + I * size_t(obs.shape.M) * K;
}

WeightMoments::WeightMoments(const SiteObservation& obs, QRange xr, QRange wr, bool int8_codes,
                             std::vector<float> ratios)
    : obs_(obs), xr_(xr), wr_(wr), int8_(int8_codes), ratios_(std::move(ratios)) {
  if (int8_ && !ratios_.empty()) fail(ErrorKind::Internal, "per-channel weight codes are scaled, not int8");
  if (obs.attention()) fail(ErrorKind::Internal, "weight moments are for linear sites");
  images_ = obs.images;
  M_ = obs.shape.M;
  N_ = obs.shape.N;
  K_ = obs.shape.K;
  const size_t I = size_t(images_), K = size_t(K_), N = size_t(N_);
  H_.resize(I * K * K);
  G_.resize(I * N * K);
  U_.resize(I * K);
  colO_.assign(I * N, 0.0f);
  so_.assign(I, 0.0);
  so2_.assign(I, 0.0);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < images_; ++i) {
    const float* o = obs.target + size_t(i) * M_ * N;
    double s = 0, s2 = 0;
    std::vector<double> col(N, 0.0);
    for (int r = 0; r < M_; ++r)
      for (size_t n = 0; n < N; ++n) {
        const double v = o[size_t(r) * N + n];
        s += v;
        s2 += v * v;
        col[n] += v;
      }
    so_[size_t(i)] = s;
    so2_[size_t(i)] = s2;
    for (size_t n = 0; n < N; ++n) colO_[size_t(i) * N + n] = float(col[n]);
  }
}

void WeightMoments::set_x(float dx) {
  dx_ = dx;
  const size_t K = size_t(K_), N = size_t(N_), MK = size_t(M_) * K;
  const size_t nts = static_cast<size_t>(omp_get_max_threads());
  if (qi_.size() < nts) {
    qi_.resize(nts);
    qf_.resize(nts);
    h32_.resize(nts);
  }
  auto& qi = qi_;
  auto& qf = qf_;
  auto& h32 = h32_;
#pragma omp parallel for schedule(static)
  for (int i = 0; i < images_; ++i) {
    const int t = omp_get_thread_num();
    const float* x = obs_.x + size_t(i) * MK;
    auto& f = qf[size_t(t)];
    f.resize(MK);
    quantize_to_f32_codes(x, f.data(), MK, dx, xr_);
    float* H = H_.data() + size_t(i) * K * K;
    if (int8_) {  // H = X̂ᵀX̂ exactly in int32
      auto& q = qi[size_t(t)];
      auto& h = h32[size_t(t)];
      q.resize(MK);
      h.resize(K * K);
      quantize_to_i8(x, q.data(), MK, dx, xr_);
      const int32_t zero = 0;
      check(dnnl_gemm_s8s8s32('T', 'N', 'F', K_, K_, M_, 1.0f, q.data(), K_, 0, q.data(), K_, 0, 0.0f, h.data(), K_, &zero),
            "s8s8 gemm");
      for (size_t k = 0; k < K * K; ++k) H[k] = float(h[k]);
    } else {
      check(dnnl_sgemm('T', 'N', K_, K_, M_, 1.0f, f.data(), K_, f.data(), K_, 0.0f, H, K_), "sgemm");
    }
    // G = Oᵀ X̂ (N×K), u = Σ_r X̂_r.
    const float* o = obs_.target + size_t(i) * size_t(M_) * N;
    check(dnnl_sgemm('T', 'N', N_, K_, M_, 1.0f, o, N_, f.data(), K_, 0.0f, G_.data() + size_t(i) * N * K, K_), "sgemm");
    float* u = U_.data() + size_t(i) * K;
    std::fill(u, u + K, 0.0f);
    for (int r = 0; r < M_; ++r)
      for (size_t k = 0; k < K; ++k) u[k] += f[size_t(r) * K + k];  // integers: exact in float up to 2^24
  }
}

void WeightMoments::weight_codes(float dw, float* out_f, int8_t* out_i8) {
  const size_t NK = size_t(N_) * K_;
  if (!ratios_.empty()) {
    scaled_channel_codes(obs_.w, N_, K_, dw, ratios_, wr_, out_f);
    return;
  }
  quantize_to_f32_codes(obs_.w, out_f, NK, dw, wr_);
  if (out_i8) quantize_to_i8(obs_.w, out_i8, NK, dw, wr_);
}

void WeightMoments::candidate_products(const float* dws, size_t C, const std::vector<double>& b) {
  const size_t K = size_t(K_), N = size_t(N_), NK = N * K, KK = K * K;
  avector<float>&Af = Af_, &Wf = Wf_, &ws = ws_, &wb = wb_;
  Af.resize(C * KK);
  Wf.resize(C * NK);
  ws.assign(C * K, 0.0f);
  wb.assign(C * K, 0.0f);
  const size_t nts = static_cast<size_t>(omp_get_max_threads());
  if (wi_.size() < nts) {
    wi_.resize(nts);
    a32_.resize(nts);
  }
#pragma omp parallel for schedule(static)
  for (size_t c = 0; c < C; ++c) {
    float* wf = Wf.data() + c * NK;
    auto& wi = wi_[size_t(omp_get_thread_num())];
    wi.resize(int8_ ? NK : 0);
    weight_codes(dws[c], wf, int8_ ? wi.data() : nullptr);
    float* A = Af.data() + c * KK;
    if (int8_) {  // ŴᵀŴ exactly in int32
      auto& a32 = a32_[size_t(omp_get_thread_num())];
      a32.resize(KK);
      const int32_t zero = 0;
      check(dnnl_gemm_s8s8s32('T', 'N', 'F', K_, K_, N_, 1.0f, wi.data(), K_, 0, wi.data(), K_, 0, 0.0f, a32.data(),
                              K_, &zero),
            "s8s8 gemm");
      for (size_t k = 0; k < KK; ++k) A[k] = float(a32[k]);
    } else {
      check(dnnl_sgemm('T', 'N', K_, K_, N_, 1.0f, wf, K_, wf, K_, 0.0f, A, K_), "sgemm");
    }
    for (size_t n = 0; n < N; ++n)
      for (size_t k = 0; k < K; ++k) {
        ws[c * K + k] += wf[n * K + k];
        wb[c * K + k] += float(b[n]) * wf[n * K + k];
      }
  }
}

std::vector<double> WeightMoments::objectives(const std::vector<float>& dws, const std::vector<float>& corr,
                                              Similarity sim) {
  const size_t K = size_t(K_), N = size_t(N_), NK = N * K, KK = K * K, I = size_t(images_);
  // b′ = bias + correction and the per-image terms that do not depend on the candidate.
  std::vector<double> b(N, 0.0);
  for (size_t n = 0; n < N; ++n) b[n] = (obs_.bias ? obs_.bias[n] : 0.0) + (corr.empty() ? 0.0 : corr[n]);
  double B1 = 0, B2 = 0;
  for (double v : b) {
    B1 += v;
    B2 += v * v;
  }
  std::vector<double> Bo(I, 0.0);
  for (size_t i = 0; i < I; ++i)
    for (size_t n = 0; n < N; ++n) Bo[i] += b[n] * colO_[i * N + n];

  const size_t chunk = std::max<size_t>(1, std::min<size_t>(dws.size(), (size_t(256) << 20) / (KK * 4)));
  std::vector<double> out(dws.size(), 0.0);
  // Scratch kept across calls: a block this size is mapped fresh on every allocation, and the
  // page faults of re-mapping it every round cost more than the products computed in it.
  avector<float>&Q = Q_, &R = R_, &Uw = Uw_, &Ub = Ub_;
  for (size_t c0 = 0; c0 < dws.size(); c0 += chunk) {
    const size_t C = std::min(chunk, dws.size() - c0);
    candidate_products(dws.data() + c0, C, b);
    Q.resize(I * C);
    R.resize(I * C);
    Uw.resize(I * C);
    Ub.resize(I * C);
    check(dnnl_sgemm('N', 'T', images_, C, KK, 1.0f, H_.data(), KK, Af_.data(), KK, 0.0f, Q.data(), C), "sgemm");
    check(dnnl_sgemm('N', 'T', images_, C, NK, 1.0f, G_.data(), NK, Wf_.data(), NK, 0.0f, R.data(), C), "sgemm");
    check(dnnl_sgemm('N', 'T', images_, C, K_, 1.0f, U_.data(), K_, ws_.data(), K_, 0.0f, Uw.data(), C), "sgemm");
    check(dnnl_sgemm('N', 'T', images_, C, K_, 1.0f, U_.data(), K_, wb_.data(), K_, 0.0f, Ub.data(), C), "sgemm");
    for (size_t c = 0; c < C; ++c) {
      const double s = double(dx_) * double(dws[c0 + c]);
      double total = 0;
      for (size_t i = 0; i < I; ++i) {
        PairStats st;
        st.n = double(M_) * double(N_);
        st.so = so_[i];
        st.so2 = so2_[i];
        st.sq = s * Uw[i * C + c] + M_ * B1;
        st.soq = s * R[i * C + c] + Bo[i];
        st.sq2 = s * s * Q[i * C + c] + 2 * s * Ub[i * C + c] + M_ * B2;
        total += st.value(sim);
      }
      out[c0 + c] = total / double(I);
    }
  }
  return out;
}

std::vector<double> WeightMoments::channel_error(float dw, const std::vector<float>& corr) {
  const size_t K = size_t(K_), N = size_t(N_), I = size_t(images_);
  avector<float> wf(N * K);
  weight_codes(dw, wf.data(), nullptr);
  std::vector<double> usum(K, 0.0), err(N, 0.0);
  for (size_t i = 0; i < I; ++i)
    for (size_t k = 0; k < K; ++k) usum[k] += U_[i * K + k];
  const double s = double(dx_) * double(dw), rows = double(I) * M_;
  for (size_t n = 0; n < N; ++n) {
    double y = 0, o = 0;
    for (size_t k = 0; k < K; ++k) y += double(wf[n * K + k]) * usum[k];
    for (size_t i = 0; i < I; ++i) o += colO_[i * N + n];
    const double b = (obs_.bias ? obs_.bias[n] : 0.0) + (corr.empty() ? 0.0 : corr[n]);
    err[n] = (s * y + rows * b - o) / rows;
  }
  return err;
}

}  // namespace vitq
