#include "quant/simulate.h"

#include "core/error.h"
#include "engine/gemm_f32.h"
#include "engine/kernels.h"
#include "quant/quantizer.h"

namespace vitq {

void fake_quantize_weight(const float* w, float* out, int rows, int cols, const OperandQuant& q) {
  if (!q.per_channel()) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; ++r)
      fake_quantize(w + size_t(r) * cols, out + size_t(r) * cols, size_t(cols), q.scale, q.range());
    return;
  }
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r) {
    fake_quantize(w + size_t(r) * cols, out + size_t(r) * cols, size_t(cols), q.channel_scales[size_t(r)],
                  q.channel_range(size_t(r)));
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
  SiteCall q = call;
  if (sp.x.quantized()) {
    const int64_t n = int64_t(call.groups) * call.x_stride();
    if (xbuf.size() < size_t(n)) xbuf.resize(size_t(n));
    const int64_t chunk = 4096;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i += chunk)
      fake_quantize(call.x + i, xbuf.data() + i, size_t(std::min(chunk, n - i)), sp.x.scale, sp.x.range());
    q.x = xbuf.data();
  }
  if (sp.w.quantized()) {
    if (wq) {
      q.w = wq;
    } else if (call.site.is_attention()) {
      const int64_t n = int64_t(call.groups) * call.w_stride;
      if (wbuf.size() < size_t(n)) wbuf.resize(size_t(n));
      const int64_t chunk = 4096;
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; i += chunk)
        fake_quantize(call.w + i, wbuf.data() + i, size_t(std::min(chunk, n - i)), sp.w.scale, sp.w.range());
      q.w = wbuf.data();
    } else {
      const size_t n = size_t(call.N) * size_t(call.K);
      if (wbuf.size() < n) wbuf.resize(n);
      fake_quantize_weight(call.w, wbuf.data(), call.N, call.K, sp.w);
      q.w = wbuf.data();
    }
  }
  site_gemm_f32(q);
  add_bias_correction(call, sp.bias_correction);
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
      fake_quantize_weight(lw->w.ptr(), dst.data(), lw->out(), lw->in(), sp->w);
      it = wq_.find(call.site);
    }
    wq = it->second.data();
  }
  simulate_site(call, *sp, wq, xbuf_, wbuf_);
  return true;
}

}  // namespace vitq
