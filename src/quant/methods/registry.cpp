// The registry of PTQ methods: the built-in ones in one table, plus any registered at run time.

#include "core/error.h"
#include "quant/methods/aciq.h"
#include "quant/methods/bitsplit.h"
#include "quant/methods/lapq.h"
#include "quant/methods/methods.h"
#include "numerics/quantizer.h"

namespace vitq {

void set_channel_max_scales(const SiteObservation& obs, OperandQuant& w) {
  const int N = obs.shape.N, K = obs.shape.K;
  w.channel_scales.resize(size_t(N));
  for (int n = 0; n < N; ++n)
    w.channel_scales[size_t(n)] = max_step(max_abs(obs.w + size_t(n) * K, size_t(K)), w.range());
}

namespace {

template <class T>
std::unique_ptr<MethodOptions> options() {
  return std::make_unique<T>();
}

std::vector<MethodEntry>& entries() {
  // The built-in methods: adding one is a file with its options, its make_* function and a line here.
  static std::vector<MethodEntry> k = {
      {"minmax", "max-based steps (the baseline)", options<MinmaxOptions>, make_minmax},
      {"percentile", "activation steps from a percentile of |x|", options<PercentileOptions>, make_percentile},
      {"easyquant", "EasyQuant: alternating cosine-similarity search of the steps", options<SearchMethodOptions>,
       make_easyquant},
      {"liu2021", "Liu et al. 2021: Pearson search, ranking loss, bias correction", options<Liu2021Options>,
       make_liu2021},
      {"aciq", "ACIQ: analytical clipping, per-channel bit allocation, bias correction", options<AciqOptions>,
       make_aciq},
      {"lapq", "LAPQ: Lp-norm initialisation, then joint steps on the network loss", options<LapqOptions>, make_lapq},
      {"bitsplit", "Bit-Split: weights as optimised bit planes", options<BitSplitOptions>, make_bitsplit},
  };
  return k;
}

const MethodEntry* find_entry(const std::string& name) {
  for (const MethodEntry& e : entries())
    if (name == e.name) return &e;
  return nullptr;
}

const MethodEntry& entry_or_fail(const std::string& name) {
  const MethodEntry* e = find_entry(name);
  if (!e) fail(ErrorKind::Usage, "unknown --method '", name, "' (available: ", method_names(), ")");
  return *e;
}

// The names of the registered methods that pass `keep`, comma-separated.
template <class F>
std::string names_where(F keep) {
  std::string s;
  for (const MethodEntry& e : entries())
    if (keep(e)) s += (s.empty() ? "" : ", ") + std::string(e.name);
  return s;
}

}  // namespace

const std::vector<MethodEntry>& registered_methods() { return entries(); }

void register_method(const MethodEntry& e) {
  if (find_entry(e.name)) fail(ErrorKind::Internal, "method ", e.name, " is registered twice");
  entries().push_back(e);
}

MethodOptions& MethodConfig::of(const std::string& method) const {
  auto it = opts_.find(method);
  if (it != opts_.end()) return *it->second;
  return *(opts_[method] = entry_or_fail(method).make_options());
}

std::string method_names() {
  return names_where([](const MethodEntry&) { return true; });
}

std::string fast_method_names() {
  return names_where([](const MethodEntry& e) { return e.make_options()->apply_fast(); });
}

std::unique_ptr<Method> make_method(const std::string& name, const MethodConfig& cfg) {
  return entry_or_fail(name).make(cfg);
}

}  // namespace vitq
