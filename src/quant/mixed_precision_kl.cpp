#include "quant/mixed_precision_kl.h"

#include "core/error.h"

namespace vitq {

namespace {

constexpr SiteKind kBlockKinds[] = {SiteKind::Qkv, SiteKind::MatmulQK, SiteKind::MatmulAV,
                                    SiteKind::Proj, SiteKind::Fc1, SiteKind::Fc2};

}  // namespace

bool site_in_module(const SiteId& id, int module) {
  return id.block >= 0 && id.block == module / 2 && id.in_attention_module() == (module % 2 == 0);
}

QuantPlan compose_module_plans(const QuantPlan& base, const std::vector<const QuantPlan*>& module_plans,
                               const std::vector<int>& module_bits) {
  if (module_plans.size() != module_bits.size() || module_plans.size() % 2)
    fail(ErrorKind::Internal, "compose_module_plans: ", module_plans.size(), " plans for ", module_bits.size(),
         " modules");
  QuantPlan p = base;
  for (size_t m = 0; m < module_plans.size(); ++m)
    for (SiteKind kind : kBlockKinds) {
      const SiteId id{kind, int(m / 2)};
      if (!site_in_module(id, int(m))) continue;
      const std::string name = id.name();
      const auto it = module_plans[m]->sites.find(name);
      if (it != module_plans[m]->sites.end()) p.sites[name] = it->second;
      else p.sites.erase(name);
    }
  for (size_t blk = 0; blk < module_plans.size() / 2; ++blk) {
    const size_t attn = 2 * blk, mlp = attn + 1;
    const QuantPlan& src = *module_plans[module_bits[mlp] < module_bits[attn] ? mlp : attn];
    const auto it = src.compensation.find(int(blk));
    if (it != src.compensation.end()) p.compensation[int(blk)] = it->second;
    else p.compensation.erase(int(blk));
  }
  return p;
}

std::vector<std::vector<double>> module_kl_costs(NetworkKl& kl, const std::vector<QuantPlan>& plans, int base_k,
                                                 const std::vector<int>& bits,
                                                 const std::function<void(const std::string&)>& note) {
  const QuantPlan& base = plans.at(size_t(base_k));
  const int depth = kl.model().cfg.depth;
  const size_t modules = size_t(2 * depth), C = plans.size();
  std::vector<std::vector<double>> cost(modules, std::vector<double>(C, 0.0));
  const double base_kl = kl.of(base);
  std::vector<const QuantPlan*> per_module(modules, &base);
  std::vector<int> module_bits(modules, bits.at(size_t(base_k)));
  avector<float> x = kl.new_stream();  // the input of block blk under the base plan
  kl.advance(base, 0, x.data());
  for (int blk = 0; blk < depth; ++blk) {
    for (size_t m = size_t(2 * blk); m < size_t(2 * blk + 2); ++m)
      for (size_t k = 0; k < C; ++k) {
        if (int(k) == base_k) {
          cost[m][k] = base_kl;
          continue;
        }
        per_module[m] = &plans[k];
        module_bits[m] = bits[k];
        cost[m][k] = kl.of_from(compose_module_plans(base, per_module, module_bits), blk + 1, x.data());
        per_module[m] = &base;
        module_bits[m] = bits[size_t(base_k)];
      }
    if (note) note(cat("blocks.", blk, ": end-to-end KL of each module at each width measured"));
    kl.advance(base, blk + 1, x.data());
  }
  return cost;
}

}  // namespace vitq
