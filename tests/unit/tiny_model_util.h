// Shared by the unit tests that calibrate a whole network: a 2-block ViT on 8x8 RGB inputs with
// seeded random weights (D = 16, 2 heads, MLP 32, 5 classes), small enough for thousands of forwards.
#pragma once
#include <cmath>
#include <random>

#include <omp.h>

#include "model/vit_model.h"

namespace vitq::test {

// One OpenMP thread while in scope: this tiny model runs thousands of very short parallel
// regions, each of which waits for every thread to be scheduled (minutes on a loaded machine).
struct SingleThreadScope {
  int saved = omp_get_max_threads();
  SingleThreadScope() { omp_set_num_threads(1); }
  ~SingleThreadScope() { omp_set_num_threads(saved); }
  SingleThreadScope(const SingleThreadScope&) = delete;
  SingleThreadScope& operator=(const SingleThreadScope&) = delete;
};

inline ViTModel tiny_model(uint64_t seed) {
  ViTModel m;
  ViTConfig& c = m.cfg;
  c.architecture = "test_tiny";
  c.img_size = 8;
  c.patch_size = 4;
  c.in_chans = 3;
  c.embed_dim = 16;
  c.depth = 2;
  c.num_heads = 2;
  c.mlp_hidden = 32;
  c.num_classes = 5;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0, 1);
  auto tensor = [&](Shape s, float scale, float offset = 0) {
    Tensor t(std::move(s));
    for (auto& v : t.data) v = offset + scale * nd(rng);
    return t;
  };
  auto linear = [&](int out, int in) { return LinearWeights{tensor({out, in}, 1.0f / std::sqrt(float(in))), tensor({out}, 0.1f)}; };
  const int D = c.embed_dim;
  m.patch_embed = linear(D, c.patch_dim());
  m.cls_token = tensor({D}, 0.5f);
  m.pos_embed = tensor({c.tokens(), D}, 0.2f);
  m.blocks.resize(size_t(c.depth));
  for (auto& b : m.blocks) {
    b.norm1 = {tensor({D}, 0.1f, 1.0f), tensor({D}, 0.1f)};
    b.norm2 = {tensor({D}, 0.1f, 1.0f), tensor({D}, 0.1f)};
    b.qkv = linear(3 * D, D);
    b.proj = linear(D, D);
    b.fc1 = linear(c.mlp_hidden, D);
    b.fc2 = linear(D, c.mlp_hidden);
  }
  m.norm = {tensor({D}, 0.1f, 1.0f), tensor({D}, 0.1f)};
  m.head = linear(c.num_classes, D);
  m.head.w = tensor({c.num_classes, D}, 1.5f);  // confident outputs: a loss that reacts to the steps
  return m;
}

}  // namespace vitq::test
