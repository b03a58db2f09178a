// Method names → constructors.
#include "core/error.h"
#include "quant/methods/methods.h"
#include "quant/quantizer.h"

namespace vitq {

void set_channel_max_scales(const SiteObservation& obs, OperandQuant& w) {
  const int N = obs.shape.N, K = obs.shape.K;
  w.channel_scales.resize(size_t(N));
  for (int n = 0; n < N; ++n)
    w.channel_scales[size_t(n)] = max_step(max_abs(obs.w + size_t(n) * K, size_t(K)), w.range());
}

std::string method_names() { return "minmax, percentile, easyquant, liu2021, aciq, lapq, bitsplit"; }

std::unique_ptr<Method> make_method(const std::string& name, const MethodArgs& a) {
  if (name == "minmax") return make_minmax(a);
  if (name == "percentile") return make_percentile(a);
  if (name == "easyquant") return make_easyquant(a);
  if (name == "liu2021") return make_liu2021(a);
  if (name == "aciq") return make_aciq(a);
  if (name == "lapq") return make_lapq(a);
  if (name == "bitsplit") return make_bitsplit(a);
  fail(ErrorKind::Usage, "unknown --method '", name, "' (available: ", method_names(), ")");
}

}  // namespace vitq
