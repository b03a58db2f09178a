// The registry of PTQ methods: the built-in ones in one table, plus any registered at run time.

#include <algorithm>
#include <tuple>

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

std::vector<float> head_values(const float* v, int images, int heads, size_t per_group, int h) {
  std::vector<float> out;
  out.reserve(size_t(images) * per_group);
  for (int i = 0; i < images; ++i) {
    const float* g = v + (size_t(i) * size_t(heads) + size_t(h)) * per_group;
    out.insert(out.end(), g, g + per_group);
  }
  return out;
}

void set_head_scales(const SiteObservation& obs, SitePlan& sp,
                     const std::function<float(const std::vector<float>&, QRange)>& extent) {
  const int H = obs.shape.groups_per_image;
  const size_t px = size_t(obs.shape.M) * size_t(obs.shape.K), pw = size_t(obs.shape.N) * size_t(obs.shape.K);
  for (auto [q, v, per] : {std::tuple{&sp.x, obs.x, px}, std::tuple{&sp.w, obs.w, pw}}) {
    if (is_level_grid(q->grid)) continue;
    q->head_scales.resize(size_t(H));
    for (int h = 0; h < H; ++h) q->head_scales[size_t(h)] = max_step(extent(head_values(v, obs.images, H, per, h), q->range()), q->range());
    q->scale = *std::max_element(q->head_scales.begin(), q->head_scales.end());
  }
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
      {"vitq", "vitq's recipe: per-channel asymmetric MSE weights + GPTQ, per-token inputs, small-float softmax, "
               "per-head steps, rotations at <= 6 bits (docs/RESULTS.md)", options<VitqOptions>, make_vitq},
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
