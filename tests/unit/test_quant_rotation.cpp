// Rotations that keep the FP function (quant/rotation.h): the rotated tiny models give the
// original logits, the LayerNorms become plain normalizations, the residual stream is the
// original one centred and rotated by Q, and fc2 reads the GELU output times M.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/vit_forward.h"
#include "numerics/hadamard.h"
#include "quant/rotation.h"
#include "runtime_test_util.h"
#include "tiny_model_util.h"

namespace vitq {
namespace {

// The rotated model is the same function evaluated with other float32 weights and other sums:
// each weight is rounded once after the double arithmetic (relative 2^-24) and every dot product
// (K ≤ 64 terms) rounds differently, about √K·2^-24 ≈ 5e-7 relative per product, compounded over
// 2 blocks of ~6 products each. Measured: ≤ 6e-7·max|logit| (relative_error prints it); the
// bound leaves a factor of about 20.
constexpr double kLogitTol = 1e-5;

std::vector<float> logits(const ViTModel& m, const std::vector<float>& x, int n, SiteHook* hook = nullptr) {
  std::vector<float> out(size_t(n) * size_t(m.cfg.num_classes));
  ViTForward f(m);
  f.run(x.data(), n, out.data(), hook);
  return out;
}

// max |a − b| / max |a|, printed.
double relative_error(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  double mx = 0, err = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    mx = std::max(mx, std::fabs(double(a[i])));
    err = std::max(err, std::fabs(double(a[i]) - b[i]));
  }
  std::printf("  %-40s max|Δlogit| = %.3g, max|logit| = %.3g, ratio %.3g\n", what.c_str(), err, mx, err / mx);
  return err / mx;
}

RotationSpec spec(bool residual, bool heads, bool mlp, uint64_t seed = 0) {
  RotationSpec r;
  r.residual = residual;
  r.heads = heads;
  r.mlp = mlp;
  r.seed = seed;
  return r;
}

TEST(Rotation, TinyModelLogitsUnchanged) {
  test::SingleThreadScope one_thread;
  const ViTModel m = test::tiny_model(3);
  const std::vector<float> x = test::random_images(m.cfg, 6, 4);
  const std::vector<float> ref = logits(m, x, 6);
  const std::pair<const char*, RotationSpec> cases[] = {
      {"residual + heads", spec(true, true, false)},      {"residual + heads + mlp", spec(true, true, true)},
      {"residual", spec(true, false, false)},              {"heads", spec(false, true, false)},
      {"mlp", spec(false, false, true)},                    {"residual + heads + mlp, seed 7", spec(true, true, true, 7)},
  };
  for (const auto& [name, r] : cases) {
    const ViTModel rot = rotate_model(m, r);
    EXPECT_LE(relative_error(ref, logits(rot, x, 6), name), kLogitTol) << name;
    EXPECT_EQ(rot.mlp_rotation_signs.size(), r.mlp ? size_t(m.cfg.mlp_hidden) : 0u) << name;
  }
  // Not a no-op: the weights did change.
  const ViTModel rot = rotate_model(m, spec(true, true, true));
  EXPECT_NE(rot.blocks[0].qkv.w.data, m.blocks[0].qkv.w.data);
  EXPECT_NE(rot.blocks[1].fc2.w.data, m.blocks[1].fc2.w.data);
  EXPECT_NE(rot.head.w.data, m.head.w.data);
}

// Distilled, without qkv bias (the folded β creates one), D = 32, head_dim 16, MLP 64.
TEST(Rotation, DistilledModelWithoutQkvBias) {
  test::SingleThreadScope one_thread;
  const std::string dir = test::tmp_dir("rotation_distilled");
  test::TinyDims d;
  d.distilled = true;
  d.qkv_bias = false;
  const ViTModel m = test::write_tiny_checkpoint(dir, d, 11);
  std::filesystem::remove_all(dir);
  const std::vector<float> x = test::random_images(m.cfg, 4, 5);
  const std::vector<float> ref = logits(m, x, 4);
  for (bool mlp : {false, true}) {
    const ViTModel rot = rotate_model(m, spec(true, true, mlp, 2));
    EXPECT_TRUE(rot.cfg.qkv_bias);
    EXPECT_EQ(rot.blocks[0].qkv.b.numel(), 3 * d.dim);
    EXPECT_LE(relative_error(ref, logits(rot, x, 4), mlp ? "distilled, all" : "distilled, residual + heads"),
              kLogitTol);
  }
  const ViTModel heads_only = rotate_model(m, spec(false, true, false));
  EXPECT_TRUE(heads_only.blocks[0].qkv.b.empty());  // nothing to fold, no bias made
  EXPECT_LE(relative_error(ref, logits(heads_only, x, 4), "distilled, heads"), kLogitTol);
}

TEST(Rotation, LayerNormsBecomePlainNormalization) {
  const ViTModel m = test::tiny_model(5);
  const ViTModel rot = rotate_model(m, spec(true, true, false));
  auto expect_plain = [](const LayerNormWeights& ln, const char* what) {
    for (float g : ln.gamma.data) ASSERT_EQ(g, 1.0f) << what;
    for (float b : ln.beta.data) ASSERT_EQ(b, 0.0f) << what;
  };
  for (const auto& b : rot.blocks) {
    expect_plain(b.norm1, "norm1");
    expect_plain(b.norm2, "norm2");
  }
  expect_plain(rot.norm, "norm");
  // Without the residual rotation the LayerNorms are left alone.
  const ViTModel heads = rotate_model(m, spec(false, true, true));
  EXPECT_EQ(heads.blocks[0].norm1.gamma.data, m.blocks[0].norm1.gamma.data);
  EXPECT_EQ(heads.norm.beta.data, m.norm.beta.data);
}

// Q is orthogonal, symmetric and fixes 1 (so a zero-mean row stays zero-mean).
TEST(Rotation, ResidualRotationFixesOnes) {
  for (int D : {16, 64, 192, 768}) {
    const std::vector<double> q = residual_rotation_matrix(D, 9);
    for (int i = 0; i < D; ++i) {
      double row_sum = 0;
      for (int j = 0; j < D; ++j) {
        row_sum += q[size_t(i * D + j)];
        ASSERT_NEAR(q[size_t(i * D + j)], q[size_t(j * D + i)], 1e-12) << "symmetric, D=" << D;
      }
      ASSERT_NEAR(row_sum, 1.0, 1e-12) << "Q·1 = 1, D=" << D;
    }
    for (int i = 0; i < D; i += 7)
      for (int j = 0; j < D; ++j) {
        double dot = 0;
        for (int k = 0; k < D; ++k) dot += q[size_t(i * D + k)] * q[size_t(j * D + k)];
        ASSERT_NEAR(dot, i == j ? 1.0 : 0.0, 1e-12) << "orthogonal, D=" << D;
      }
    // Not the identity (the signs do something).
    EXPECT_LT(q[0], 0.99);
  }
}

// The rotated stream is the original one centred and rotated, token by token, after the
// embedding and after each block; hence zero-mean per token.
TEST(Rotation, StreamIsCentredAndRotated) {
  test::SingleThreadScope one_thread;
  const ViTModel m = test::tiny_model(6);
  const uint64_t seed = 4;
  const ViTModel rot = rotate_model(m, spec(true, true, true, seed));
  const int D = m.cfg.embed_dim, T = m.cfg.tokens(), n = 3;
  const std::vector<double> q = residual_rotation_matrix(D, seed);
  const std::vector<float> images = test::random_images(m.cfg, n, 8);
  std::vector<float> x(size_t(n * T * D)), y(x.size());
  ViTForward f(m), g(rot);
  f.embed(images.data(), n, x.data());
  g.embed(images.data(), n, y.data());
  for (int stage = 0; stage <= m.cfg.depth; ++stage) {
    if (stage > 0) {
      f.block(stage - 1, x.data(), n);
      g.block(stage - 1, y.data(), n);
    }
    for (int t = 0; t < n * T; ++t) {
      const float* xr = x.data() + size_t(t * D);
      const float* yr = y.data() + size_t(t * D);
      double mean = 0, norm = 0, ymean = 0;
      for (int j = 0; j < D; ++j) mean += xr[j] / D;
      for (int j = 0; j < D; ++j) norm += (xr[j] - mean) * (xr[j] - mean);
      norm = std::sqrt(norm);
      for (int j = 0; j < D; ++j) {
        double e = 0;  // ((x − mean)·Q)_j
        for (int k = 0; k < D; ++k) e += (xr[k] - mean) * q[size_t(k * D + j)];
        ASSERT_NEAR(yr[j], e, 1e-5 * norm) << "stage " << stage << " row " << t << " channel " << j;
        ymean += yr[j] / D;
      }
      ASSERT_NEAR(ymean, 0.0, 1e-6 * norm) << "zero-mean, stage " << stage << " row " << t;
    }
  }
}

// fc2 reads the GELU output times M = H_F·diag(s)/√F (captured through a SiteHook).
struct Fc2Input : SiteHook {
  std::vector<float> x;
  void observe(const SiteCall& c) override {
    if (c.site == SiteId{SiteKind::Fc2, 0}) x.assign(c.x, c.x + size_t(c.M) * size_t(c.K));
  }
};

TEST(Rotation, OnlineMlpRotationAtFc2Input) {
  test::SingleThreadScope one_thread;
  const ViTModel m = test::tiny_model(7);
  const ViTModel rot = rotate_model(m, spec(true, true, true, 1));
  const int F = m.cfg.mlp_hidden;
  EXPECT_EQ(rot.mlp_rotation_signs, rotation_signs(RotationKind::Mlp, F, 1));
  const std::vector<float> images = test::random_images(m.cfg, 2, 3);
  Fc2Input a, b;
  logits(m, images, 2, &a);
  logits(rot, images, 2, &b);
  ASSERT_EQ(a.x.size(), b.x.size());
  const std::vector<float> h = hadamard_matrix_f32(F);
  const double scale = 1.0 / std::sqrt(double(F));
  for (size_t r = 0; r < a.x.size() / size_t(F); ++r)
    for (int j = 0; j < F; ++j) {
      double e = 0;  // (h·H)_j · s_j / √F
      for (int k = 0; k < F; ++k) e += double(a.x[r * size_t(F) + size_t(k)]) * h[size_t(k * F + j)];
      e *= rot.mlp_rotation_signs[size_t(j)] * scale;
      ASSERT_NEAR(b.x[r * size_t(F) + size_t(j)], e, 1e-5) << "row " << r << " unit " << j;
    }
}

TEST(Rotation, UnsupportedSizesRefused) {
  const ViTModel m = test::tiny_model(1);
  auto expect_usage = [](const ViTModel& mm, const RotationSpec& r, const std::string& needle) {
    try {
      rotate_model(mm, r);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Usage);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  ViTModel bad = m;
  bad.cfg.embed_dim = 20;  // checked before any weight is read
  expect_usage(bad, spec(true, false, false), "embed_dim = 20");
  bad = m;
  bad.cfg.embed_dim = 48;
  bad.cfg.num_heads = 8;  // head_dim 6
  expect_usage(bad, spec(false, true, false), "head_dim = 6");
  bad = m;
  bad.cfg.mlp_hidden = 100;
  expect_usage(bad, spec(false, false, true), "mlp_hidden = 100");
  expect_usage(rotate_model(m, spec(false, false, true)), spec(false, false, true), "already has");
  // A model whose signs do not fit its MLP is refused by the forward.
  ViTModel wrong = rotate_model(m, spec(false, false, true));
  wrong.mlp_rotation_signs.pop_back();
  EXPECT_THROW(ViTForward f(wrong), Error);
}

}  // namespace
}  // namespace vitq
