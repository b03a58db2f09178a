#include "quant/weight_rounding.h"

#include <omp.h>

#include <algorithm>

#include "core/aligned.h"
#include "core/error.h"
#include "engine/gemm_f32.h"
#include "numerics/quantizer.h"
#include "quant/weight_codes.h"

namespace vitq {

void dequantize_input_row(const float* x, int K, const OperandQuant& q, float* out, float* mask) {
  if (!q.quantized()) {
    std::copy(x, x + K, out);
    if (mask) std::fill(mask, mask + K, 1.0f);
  } else if (q.per_token) {  // each channel group (the whole row if not grouped) on its own range
    const int G = q.token_groups(K), Kg = K / G;
    for (int g = 0; g < G; ++g) {
      const float* xg = x + g * Kg;
      const TokenQuant t = token_quant(xg, size_t(Kg), q.bits, q.token_clip);
      fake_quantize(xg, out + g * Kg, size_t(Kg), t.delta, t.range(q.bits));
      if (mask)
        for (int k = 0; k < Kg; ++k) mask[g * Kg + k] = (xg[k] >= t.mn && xg[k] <= t.mx) ? 1.0f : 0.0f;
    }
  } else {
    const QRange rg = q.range();
    fake_quantize(x, out, size_t(K), q.scale, rg);
    if (mask)
      for (int k = 0; k < K; ++k) {
        const float c = round_half_even(x[k] / q.scale);
        mask[k] = (c >= float(rg.lo) && c <= float(rg.hi)) ? 1.0f : 0.0f;
      }
  }
}

void dequantized_rows(const SiteObservation& obs, const OperandQuant& x, int64_t r0, int64_t n, float* out) {
  const int K = obs.shape.K;
  for (int64_t r = 0; r < n; ++r) dequantize_input_row(obs.x + (r0 + r) * K, K, x, out + r * K);
}

void for_quantized_row_chunks(const SiteObservation& obs, const OperandQuant& x, const RowChunkFn& chunk,
                              const std::function<void(int)>& merge) {
  const int K = obs.shape.K;
  const int64_t rows = int64_t(obs.images) * obs.rows_per_image();
  const int64_t chunks = (rows + kRowChunk - 1) / kRowChunk;
  const int T = std::max(1, omp_get_max_threads());
  std::vector<avector<float>> xs(static_cast<size_t>(T));
  // Rounds of T chunks: each thread one chunk (single-threaded GEMMs inside the parallel region),
  // then the chunks merged in chunk order.
  for (int64_t c0 = 0; c0 < chunks; c0 += T) {
    const int nt = int(std::min<int64_t>(T, chunks - c0));
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int t = 0; t < nt; ++t) {
      const int64_t r0 = (c0 + t) * kRowChunk, n = std::min(kRowChunk, rows - r0);
      xs[size_t(t)].resize(size_t(n) * size_t(K));
      dequantized_rows(obs, x, r0, n, xs[size_t(t)].data());
      chunk(t, r0, n, xs[size_t(t)].data());
    }
    for (int t = 0; t < nt; ++t) merge(t);
  }
}

std::vector<double> quantized_input_gram(const SiteObservation& obs, const OperandQuant& x) {
  const int K = obs.shape.K;
  std::vector<double> H(size_t(K) * size_t(K), 0.0);
  std::vector<avector<float>> gs(static_cast<size_t>(std::max(1, omp_get_max_threads())));
  for_quantized_row_chunks(
      obs, x,
      [&](int t, int64_t, int64_t n, const float* xs) {
        gs[size_t(t)].resize(size_t(K) * size_t(K));
        gemm_tn_f32(K, K, n, xs, xs, gs[size_t(t)].data());
      },
      [&](int t) {
        for (size_t i = 0; i < H.size(); ++i) H[i] += double(gs[size_t(t)][i]);
      });
  return H;
}

bool plan_channel_grid(const SitePlan& sp, int N, ChannelGrid* g) {
  const OperandQuant& w = sp.w;
  if (!w.channel_bits.empty()) return false;
  g->bits = w.bits;
  g->step.resize(size_t(N));
  g->offset.assign(size_t(N), 0.0f);
  g->ratio.assign(size_t(N), 1.0f);
  for (int c = 0; c < N; ++c) {
    g->step[size_t(c)] = w.per_channel() ? w.channel_scales[size_t(c)] : w.scale;
    if (!sp.weight_offset.empty()) g->offset[size_t(c)] = sp.weight_offset[size_t(c)];
  }
  return true;
}

bool gptq_weight_step(const SiteObservation& obs, SitePlan& sp, const GptqOptions& opt, nlohmann::ordered_json& notes,
                      const float* W, const std::vector<double>* H_given) {
  const int N = obs.shape.N, K = obs.shape.K;
  ChannelGrid g;
  if (obs.attention() || !sp.w.quantized() || !plan_channel_grid(sp, N, &g)) return false;
  if (!W) W = obs.w;
  std::vector<double> H_own;
  if (!H_given) H_own = quantized_input_gram(obs, sp.x);
  const std::vector<double>& H = H_given ? *H_given : H_own;
  std::vector<int16_t> rtn(size_t(N) * size_t(K)), codes(rtn.size());
  if (W == obs.w) site_weight_codes(W, N, K, sp, rtn.data());  // the method's own codes
  else round_to_grid(W, N, K, g, rtn.data());                  // other weights: nearest on the method's grid
  GptqInfo info;
  gptq_round(W, N, K, H.data(), g, opt, codes.data(), &info);
  double ref = 0;  // Σ_c wᵀHw: the output's expected energy, to make the errors relative
  for (int c = 0; c < N; ++c) {
    const float* w = W + size_t(c) * size_t(K);
    for (int i = 0; i < K; ++i) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += H[size_t(i) * size_t(K) + size_t(k)] * double(w[k]);
      ref += double(w[i]) * s;
    }
  }
  const double e_rtn = weighted_output_error(W, rtn.data(), g, N, K, H.data());
  const double e_gptq = weighted_output_error(W, codes.data(), g, N, K, H.data());
  notes["gptq"] = {{"error_method", ref > 0 ? e_rtn / ref : e_rtn},
                   {"error_gptq", ref > 0 ? e_gptq / ref : e_gptq},
                   {"damp", info.damp},
                   {"retries", info.retries},
                   {"dead_inputs", info.dead}};
  set_plan_weight_codes(sp, g, std::move(codes));
  return true;
}

void set_plan_weight_codes(SitePlan& sp, const ChannelGrid& g, std::vector<int16_t> codes) {
  sp.w.channel_scales = g.step;
  sp.w.scale = *std::max_element(g.step.begin(), g.step.end());
  if (std::any_of(g.offset.begin(), g.offset.end(), [](float o) { return o != 0.0f; })) sp.weight_offset = g.offset;
  sp.weight_codes = std::move(codes);
}

}  // namespace vitq
