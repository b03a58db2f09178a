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

// The one list of methods: adding one is a file with its make_* function and a line here.
const std::vector<MethodEntry>& registered_methods() {
  static const std::vector<MethodEntry> k = {
      {"minmax", make_minmax, "max-based steps (the baseline)"},
      {"percentile", make_percentile, "activation steps from a percentile of |x|"},
      {"easyquant", make_easyquant, "EasyQuant: alternating cosine-similarity search of the steps"},
      {"liu2021", make_liu2021, "Liu et al. 2021: Pearson search, ranking loss, bias correction"},
      {"aciq", make_aciq, "ACIQ: analytical clipping, per-channel bit allocation, bias correction"},
      {"lapq", make_lapq, "LAPQ: Lp-norm initialisation, then joint steps on the network loss"},
      {"bitsplit", make_bitsplit, "Bit-Split: weights as optimised bit planes"},
  };
  return k;
}

std::string method_names() {
  std::string s;
  for (const MethodEntry& e : registered_methods()) s += (s.empty() ? "" : ", ") + std::string(e.name);
  return s;
}

std::unique_ptr<Method> make_method(const std::string& name, const MethodArgs& a) {
  for (const MethodEntry& e : registered_methods())
    if (name == e.name) return e.make(a);
  fail(ErrorKind::Usage, "unknown --method '", name, "' (available: ", method_names(), ")");
}

}  // namespace vitq
