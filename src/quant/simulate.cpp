#include "quant/simulate.h"

#include "core/error.h"
#include "engine/gemm_f32.h"
#include "engine/kernels.h"
#include "numerics/quantizer.h"
#include "quant/weight_codes.h"
#include "numerics/int8_kernels.h"

namespace vitq {

void add_weight_offset(const SiteCall& c, const std::vector<float>& off) {
  if (off.empty()) return;
  const int64_t rows = int64_t(c.groups) * c.M;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = c.x + r * c.K;
    double s = 0;
    for (int k = 0; k < c.K; ++k) s += double(x[k]);
    float* y = c.y + r * c.N;
    for (int n = 0; n < c.N; ++n) y[n] += off[size_t(n)] * float(s);
  }
}

void add_bias_correction(const SiteCall& c, const std::vector<float>& corr) {
  if (corr.empty()) return;
  const int heads = c.groups / std::max(1, c.images);
  const int64_t rows = int64_t(c.groups) * c.M;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t g = r / c.M;
    const float* b = corr.data() + (c.site.is_attention() ? size_t(g % heads) * size_t(c.N) : 0);
    add_bias_rows(c.y + r * c.N, 1, size_t(c.N), b);
  }
}

void simulate_site(const SiteCall& call, const SitePlan& sp, const float* wq, avector<float>& xbuf,
                   avector<float>& wbuf) {
  if (!sp.x.quantized() || !sp.w.quantized()) {  // (a valid plan quantizes both operands or neither)
    site_gemm_f32(call);
    if (!call.site.is_attention()) add_weight_offset(call, sp.weight_offset);
    add_bias_correction(call, sp.bias_correction);
    return;
  }
  SiteCall q = call;
  q.bias = nullptr;  // added in the epilogue, after the scaling
  const int64_t nx = int64_t(call.groups) * call.x_stride();
  if (xbuf.size() < size_t(nx)) xbuf.resize(size_t(nx));
  const int64_t chunk = 4096;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < nx; i += chunk)
    quantize_to_f32_codes(call.x + i, xbuf.data() + i, size_t(std::min(chunk, nx - i)), sp.x.scale, sp.x.range());
  q.x = xbuf.data();
  if (wq) {
    q.w = wq;
  } else if (call.site.is_attention()) {
    const int64_t n = int64_t(call.groups) * call.w_stride;
    if (wbuf.size() < size_t(n)) wbuf.resize(size_t(n));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i += chunk)
      quantize_to_f32_codes(call.w + i, wbuf.data() + i, size_t(std::min(chunk, n - i)), sp.w.scale, sp.w.range());
    q.w = wbuf.data();
  } else {
    const size_t n = size_t(call.N) * size_t(call.K);
    if (wbuf.size() < n) wbuf.resize(n);
    site_weight_codes_f32(call.w, call.N, call.K, sp, wbuf.data());
    q.w = wbuf.data();
  }
  site_gemm_f32(q);  // Σ_k qx·qw

  // Epilogue, as the integer runtime's: y = Σ·(Δx·Δw_c) + (bias + bias_correction) + (o_c·Δx)·Σ_k qx.
  const int N = call.N;
  const std::vector<float>& corr = sp.bias_correction;
  if (call.site.is_attention()) {
    const int heads = call.groups / std::max(1, call.images);
    const float s = sp.x.scale * sp.w.scale;
    const int64_t rows = int64_t(call.groups) * call.M;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* b = corr.empty() ? nullptr : corr.data() + size_t((r / call.M) % heads) * size_t(N);
      scale_bias_row_scalar(call.y + r * N, s, b, size_t(N));
    }
    return;
  }
  std::vector<float> scale(static_cast<size_t>(N)), bias, offset;
  for (int n = 0; n < N; ++n)
    scale[size_t(n)] = sp.x.scale * (sp.w.per_channel() ? sp.w.channel_scales[size_t(n)] : sp.w.scale);
  if (call.bias || !corr.empty()) {
    bias.assign(size_t(N), 0.0f);
    for (int n = 0; n < N; ++n) {
      if (call.bias) bias[size_t(n)] = call.bias[n];
      if (!corr.empty()) bias[size_t(n)] += corr[size_t(n)];
    }
  }
  if (!sp.weight_offset.empty()) {
    offset.resize(size_t(N));
    for (int n = 0; n < N; ++n) offset[size_t(n)] = sp.weight_offset[size_t(n)] * sp.x.scale;
  }
  const int64_t rows = int64_t(call.groups) * call.M;  // a linear site's groups share its weight
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* y = call.y + r * N;
    scale_bias_row(y, scale.data(), bias.empty() ? nullptr : bias.data(), size_t(N));
    if (!offset.empty()) {
      double sx = 0;  // Σ_k qx: integers, exact
      for (int k = 0; k < call.K; ++k) sx += double(xbuf[size_t(r) * size_t(call.K) + size_t(k)]);
      add_scaled_row(y, offset.data(), float(sx), size_t(N));
    }
  }
}

PlanSimulator::PlanSimulator(const ViTModel& model, const QuantPlan& plan) : m_(model), plan_(plan) {}

bool PlanSimulator::compute(const SiteCall& call) {
  const SitePlan* sp = plan_.find(call.site);
  if (!sp) return false;
  const float* wq = nullptr;
  if (sp->w.quantized() && !call.site.is_attention()) {
    auto it = wq_.find(call.site);
    if (it == wq_.end()) {
      const LinearWeights* lw = site_weights(m_, call.site);
      if (!lw) fail(ErrorKind::Internal, "no weight for site ", call.site.name());
      avector<float>& dst = wq_[call.site];
      dst.resize(size_t(lw->w.numel()));
      site_weight_codes_f32(lw->w.ptr(), lw->out(), lw->in(), *sp, dst.data());
      it = wq_.find(call.site);
    }
    wq = it->second.data();
  }
  simulate_site(call, *sp, wq, xbuf_, wbuf_);
  return true;
}

}  // namespace vitq
