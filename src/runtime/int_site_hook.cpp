#include "runtime/int_site_hook.h"

#include <omp.h>

#include <algorithm>

#include "core/error.h"
#include "numerics/int8_kernels.h"
#include "numerics/quantizer.h"
#include "quant/simulate.h"

namespace vitq {
namespace {

// Linear site: quantize the M input rows, then tiles of rows through the prepared weights.
void run_linear(const IntLinear& L, const SiteCall& c) {
  const int M = c.M, K = c.K, N = c.N;
  if (!L.quantized()) fail(ErrorKind::Internal, "run_linear on an FP32 site");
  const ActQuant& aq = L.input();
  const size_t ps = size_t(M) * size_t(K);
  avector<uint8_t> a(size_t(aq.planes) * ps);
  const size_t G = size_t(L.token_groups());
  std::vector<RowQuant> rq(size_t(M) * G);
#pragma omp parallel for schedule(static)
  for (int r = 0; r < M; ++r) emit_a_codes(aq, c.x + size_t(r) * K, size_t(K), a.data() + size_t(r) * K, ps, &rq[size_t(r) * G]);
  const int mb = 64, tiles = (M + mb - 1) / mb;
#pragma omp parallel
  {
    avector<int32_t> acc(L.acc_elems(mb));
#pragma omp for schedule(static)
    for (int t = 0; t < tiles; ++t) {
      const int r0 = t * mb, rows = std::min(mb, M - r0);
      const uint8_t* at = a.data() + size_t(r0) * K;
      L.gemm_tile(rows, at, ps, acc.data());
      for (int r = 0; r < rows; ++r)
        L.epilogue_row(acc.data(), rows, r, at, ps, c.y + size_t(r0 + r) * N, &rq[size_t(r0 + r) * G]);
    }
  }
}

// Attention site: both operands quantized per group (with the group's head's steps, or per-token
// Q / K rows with their own symmetric steps); A as u8 planes (levels for a level grid), B (call.w,
// N x K per group) as s8 planes.
void run_attention(const SiteCall& c, const SitePlan& sp, const std::vector<float>* corr) {
  const int G = c.groups, M = c.M, N = c.N, K = c.K;
  const int heads = G / std::max(1, c.images);
  ActQuant aq0 = ActQuant::of(sp.x);
  if (sp.x.per_token) aq0.per_token = false, aq0.zp = a_zero_point(sp.x.bits, sp.x.grid);  // Q: symmetric rows
  const bool tokens = sp.x.per_token || sp.w.per_token;
  const int P = aq0.planes, Q = operand_planes(sp.w.bits);
  const QRange wr = sp.w.range();
  U8S8Matmul mm(N, K, BLayout::NK);
#pragma omp parallel
  {
    const size_t aps = size_t(M) * K, bps = size_t(N) * K, blk = size_t(M) * N;
    avector<uint8_t> a(2 * aps);
    avector<int8_t> b(2 * bps);
    avector<int32_t> comp(static_cast<size_t>(N)), acc(4 * blk);
    std::vector<float> rstep(static_cast<size_t>(M)), cstep(static_cast<size_t>(N));
#pragma omp for schedule(static)
    for (int g = 0; g < G; ++g) {
      const int h = g % heads;
      ActQuant aq = aq0;
      aq.delta = sp.x.head_scale(h);
      const float wd = sp.w.head_scale(h), scale = aq.delta * wd;
      const float* x = c.x + size_t(g) * size_t(c.x_stride());
      const float* w = c.w + size_t(g) * size_t(c.w_stride);
      RowQuant unused;
      for (int r = 0; r < M; ++r) {
        const float* xr = x + size_t(r) * K;
        if (sp.x.per_token) aq.delta = token_step_symmetric(xr, size_t(K), aq.range);
        rstep[size_t(r)] = aq.delta;
        emit_a_codes(aq, xr, size_t(K), a.data() + size_t(r) * K, aps, &unused);
      }
      for (int n = 0; n < N; ++n) {
        int8_t* q = b.data() + size_t(n) * K;
        const float* wn = w + size_t(n) * K;
        const float d = sp.w.per_token ? token_step_symmetric(wn, size_t(K), wr) : wd;
        cstep[size_t(n)] = d;
        const int32_t s = Q == 1 ? quantize_b_s8(wn, q, size_t(K), d, wr) : quantize_b_s8_split(wn, q, q + bps, size_t(K), d, wr);
        comp[size_t(n)] = aq.zp * s;
      }
      for (int p = 0; p < P; ++p)
        for (int q = 0; q < Q; ++q)
          mm.run(M, a.data() + size_t(p) * aps, K, acc.data() + size_t(p * Q + q) * blk, N, b.data() + size_t(q) * bps);
      const float* bias = corr && !corr->empty() ? corr->data() + size_t(h) * size_t(N) : nullptr;
      float* y = c.y + size_t(g) * size_t(c.y_stride());
      for (int r = 0; r < M; ++r) {
        for (int n = 0; n < N; ++n) {
          int64_t v = 0;
          for (int p = 0; p < P; ++p)
            for (int q = 0; q < Q; ++q)
              v += int64_t(acc[size_t(p * Q + q) * blk + size_t(r) * N + size_t(n)]) << (8 * p + 7 * q);
          y[size_t(r) * N + size_t(n)] = float(v - comp[size_t(n)]);
        }
        if (tokens) scale_bias_row_token(y + size_t(r) * N, cstep.data(), rstep[size_t(r)], bias, size_t(N));
        else scale_bias_row_scalar(y + size_t(r) * N, scale, bias, size_t(N));
      }
    }
  }
}

}  // namespace

std::unique_ptr<IntLinear> make_int_linear(const SiteCall& c, const SitePlan& sp) {
  StoredLinear s;
  s.id = c.site;
  s.N = c.N;
  s.K = c.K;
  s.quantized = true;
  plan_weight_codes(c.w, c.N, c.K, sp, &s.codes, &s.bits, &s.scale);
  s.per_channel = sp.w.per_channel();
  s.weight_offset = sp.weight_offset;
  if (c.bias || !sp.bias_correction.empty()) {
    s.bias.assign(size_t(c.N), 0.0f);
    for (int n = 0; n < c.N; ++n)
      s.bias[size_t(n)] = (c.bias ? c.bias[n] : 0.0f) + (sp.bias_correction.empty() ? 0.0f : sp.bias_correction[size_t(n)]);
  }
  return std::make_unique<IntLinear>(s, sp.x);
}

void int_site_compute(const SiteCall& call, const SitePlan& sp) {
  if (!sp.x.quantized()) fail(ErrorKind::Internal, "int_site_compute on an FP32 site");
  if (call.site.is_attention()) {
    run_attention(call, sp, &sp.bias_correction);
  } else {
    run_linear(*make_int_linear(call, sp), call);
  }
}

bool IntegerSiteHook::softmax(int /*block*/, float* s, int rows, int n, float scale) {
  return softmax_with_table(softmax_.get(), s, rows, n, scale);
}

IntegerSiteHook::IntegerSiteHook(const QuantizedViT& q) : q_(q), softmax_(plan_softmax_table(q.plan)) {
  for (const auto& [id, s] : q.linears) {
    if (!s.quantized) continue;
    const SitePlan* sp = q.plan.find(id);
    linear_[id] = std::make_unique<IntLinear>(s, sp->x);
  }
}

bool IntegerSiteHook::compute(const SiteCall& call) {
  const SitePlan* sp = q_.plan.find(call.site);
  if (!sp || !sp->x.quantized()) return false;
  if (call.site.is_attention()) {
    run_attention(call, *sp, q_.attention_bias_of(call.site));
    return true;
  }
  auto it = linear_.find(call.site);
  if (it == linear_.end()) fail(ErrorKind::Internal, "no integer weights for site ", call.site.name());
  run_linear(*it->second, call);
  put_on_gelu_grid(q_.plan, call);  // as the simulator: the forward's GELU then gives the table's entries
  return true;
}

}  // namespace vitq
