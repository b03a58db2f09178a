#include "quant/weight_codes.h"

#include <algorithm>

#include "core/error.h"
#include "numerics/quantizer.h"

namespace vitq {

namespace {

// The codes into int16 or float storage, without an intermediate copy.
template <class T>
void weight_codes_into(const float* w, int N, int K, const SitePlan& sp, T* codes) {
  const OperandQuant& q = sp.w;
  const size_t n = size_t(N) * size_t(K);
  if ((q.per_channel() && q.channel_scales.size() != size_t(N)) ||
      (!q.channel_bits.empty() && q.channel_bits.size() != size_t(N)) ||
      (sp.has_weight_codes() && (sp.weight_codes.size() != n || !q.per_channel())))
    fail(ErrorKind::Internal, "the weight plan (", sp.weight_codes.size(), " codes, ", q.channel_scales.size(),
         " channel steps, ", q.channel_bits.size(), " channel widths) does not fit a ", N, " x ", K, " weight");
  if (sp.has_weight_codes()) {
    std::transform(sp.weight_codes.begin(), sp.weight_codes.end(), codes, [](int16_t v) { return T(v); });
    return;
  }
#pragma omp parallel for schedule(static)
  for (int c = 0; c < N; ++c) {
    const QRange r = q.channel_range(size_t(c));
    const float d = q.per_channel() ? q.channel_scales[size_t(c)] : q.scale;
    const float* wc = w + size_t(c) * size_t(K);
    T* o = codes + size_t(c) * size_t(K);
    for (int k = 0; k < K; ++k) o[k] = T(quantize_one(wc[k], d, r));
  }
}

}  // namespace

void site_weight_codes(const float* w, int N, int K, const SitePlan& sp, int16_t* codes) {
  weight_codes_into(w, N, K, sp, codes);
}

void site_weight_codes_f32(const float* w, int N, int K, const SitePlan& sp, float* codes) {
  weight_codes_into(w, N, K, sp, codes);
}

}  // namespace vitq
