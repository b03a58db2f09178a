#include "quant/weight_codes.h"

#include <vector>

#include "core/error.h"
#include "numerics/quantizer.h"

namespace vitq {

void site_weight_codes(const float* w, int N, int K, const SitePlan& sp, int16_t* codes) {
  const OperandQuant& q = sp.w;
  const size_t n = size_t(N) * size_t(K);
  if ((q.per_channel() && q.channel_scales.size() != size_t(N)) ||
      (!q.channel_bits.empty() && q.channel_bits.size() != size_t(N)) ||
      (sp.has_weight_codes() && (sp.weight_codes.size() != n || !q.per_channel())))
    fail(ErrorKind::Internal, "the weight plan (", sp.weight_codes.size(), " codes, ", q.channel_scales.size(),
         " channel steps, ", q.channel_bits.size(), " channel widths) does not fit a ", N, " x ", K, " weight");
  if (sp.has_weight_codes()) {
    std::copy(sp.weight_codes.begin(), sp.weight_codes.end(), codes);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int c = 0; c < N; ++c) {
    const QRange r = q.channel_range(size_t(c));
    const float d = q.per_channel() ? q.channel_scales[size_t(c)] : q.scale;
    const float* wc = w + size_t(c) * size_t(K);
    int16_t* o = codes + size_t(c) * size_t(K);
    for (int k = 0; k < K; ++k) o[k] = int16_t(quantize_one(wc[k], d, r));
  }
}

void site_weight_codes_f32(const float* w, int N, int K, const SitePlan& sp, float* codes) {
  std::vector<int16_t> q(size_t(N) * size_t(K));
  site_weight_codes(w, N, K, sp, q.data());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < int64_t(q.size()); ++i) codes[i] = float(q[size_t(i)]);
}

}  // namespace vitq
