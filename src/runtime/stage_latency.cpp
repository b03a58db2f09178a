#include "runtime/stage_latency.h"

#include <omp.h>

#include <random>

#include "core/aligned.h"
#include "core/error.h"
#include "runtime/int_vit_forward.h"

namespace vitq {

int uniform_block_width(const QuantPlan& plan, int depth, const std::string& what) {
  int width = 0;
  for (const auto& [name, sp] : plan.sites) {
    SiteId id;
    if (!parse_site_name(name, &id) || id.block < 0 || id.block >= depth) continue;
    for (int b : {sp.x.bits, sp.w.bits}) {
      if (b == 0) fail(ErrorKind::Usage, what, ": site ", name, " is not quantized (a latency table needs every block site quantized)");
      if (width && b != width)
        fail(ErrorKind::Usage, what, ": the transformer blocks are not at one width (", width, " and ", b, " bits at ", name,
             "); a latency table entry is measured on a model of uniform width");
      width = b;
    }
  }
  if (!width) fail(ErrorKind::Usage, what, ": no quantized site in the transformer blocks");
  return width;
}

avector<float> bench_images(const ViTConfig& cfg, int batch) {
  avector<float> x(size_t(cfg.in_chans) * cfg.img_size * cfg.img_size * size_t(batch));
  std::mt19937 rng(0);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& v : x) v = nd(rng);
  return x;
}

LatencyEntry measure_stage_latency(const QuantizedViT& q, int batch, int warmup, int iters, const std::string& what) {
  const ViTConfig& c = q.cfg;
  LatencyEntry e;
  e.bits = uniform_block_width(q.plan, c.depth, what);
  IntViTForward f(q);
  const avector<float> x = bench_images(c, batch);
  std::vector<float> logits(size_t(batch) * size_t(c.num_classes));
  for (int i = 0; i < warmup; ++i) f.run(x.data(), batch, logits.data());
  f.set_profiling(true);
  for (int i = 0; i < iters; ++i) f.run(x.data(), batch, logits.data());
  const double per_image = 1e3 / double(iters) / double(batch);  // s summed over runs → ms per image
  for (const auto& [name, s] : f.profile_seconds()) {
    const double ms = s * per_image, per_block = ms / c.depth;
    if (name == "qkv") e.qkv = per_block;
    else if (name == "attention") e.attention = per_block;
    else if (name == "proj") e.proj = per_block;
    else if (name == "fc1") e.fc1 = per_block;
    else if (name == "fc2") e.fc2 = per_block;
    else e.rest += ms;  // embed, head, compensation
  }
  return e;
}

LatencyTable latency_table_for(const ViTConfig& cfg, int batch) {
  LatencyTable t;
  t.architecture = cfg.architecture;
  t.depth = cfg.depth;
  t.embed_dim = cfg.embed_dim;
  t.mlp_dim = cfg.mlp_hidden;
  t.heads = cfg.num_heads;
  t.tokens = cfg.tokens();
  t.batch = batch;
  t.threads = omp_get_max_threads();
  t.cpu = cpu_model_name();
  return t;
}

void check_latency_table_model(const LatencyTable& t, const ViTConfig& cfg, const std::string& path) {
  auto mismatch = [&](const char* f, long long table, long long model) {
    if (table != model)
      fail(ErrorKind::Usage, path, ": latency table field '", f, "' is ", table, " but the model has ", model,
           " (the table was made for another model: ", t.architecture, ")");
  };
  mismatch("depth", t.depth, cfg.depth);
  mismatch("embed_dim", t.embed_dim, cfg.embed_dim);
  mismatch("mlp_dim", t.mlp_dim, cfg.mlp_hidden);
  mismatch("heads", t.heads, cfg.num_heads);
  mismatch("tokens", t.tokens, cfg.tokens());
}

}  // namespace vitq
