// Named matmul sites of a ViT and the hook through which calibration observes them and
// quantized execution replaces how they compute.
//
// Every matmul of the network is one site; every site computes, for g in [0, groups):
//     y[g] (M x N) = x[g] (M x K) · w[g]ᵀ + bias          (w[g] is N x K, row-major)
// Linear sites (patch_embed, qkv, proj, fc1, fc2, head, head_dist) have groups = 1,
// M = images·tokens (images for the heads), w = the layer's weight [out, in].
// Attention sites have groups = images·heads (image-major) and no bias:
//     matmul_qk: x = Q [T x d], w = K [T x d]   -> y = Q·Kᵀ [T x T]   (unscaled scores)
//     matmul_av: x = P [T x T], w = Vᵀ [d x T]  -> y = P·V  [T x d]   (P = softmax probabilities)
// so both operands of an attention site are activations.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace vitq {

struct ViTConfig;
struct ViTModel;
struct LinearWeights;

enum class SiteKind : uint8_t { PatchEmbed, Qkv, MatmulQK, MatmulAV, Proj, Fc1, Fc2, Head, HeadDist };

struct SiteId {
  SiteKind kind = SiteKind::PatchEmbed;
  int block = -1;  // -1 for patch_embed, head, head_dist

  std::string name() const;  // "patch_embed", "blocks.3.attn.qkv", "blocks.3.attn.matmul_qk", ...
  bool is_attention() const { return kind == SiteKind::MatmulQK || kind == SiteKind::MatmulAV; }
  // qkv, matmul_qk, matmul_av, proj: the sites of a block's attention module (the rest: its MLP).
  bool in_attention_module() const { return is_attention() || kind == SiteKind::Qkv || kind == SiteKind::Proj; }
  bool operator==(const SiteId&) const = default;
  auto operator<=>(const SiteId&) const = default;
};

// Parses a site name; returns false if it is not one.
bool parse_site_name(const std::string& name, SiteId* out);

// The sites of a model in execution order, with their GEMM shape for one image.
struct SiteShape {
  SiteId id;
  int groups_per_image;  // 1, or heads for attention sites
  int M, N, K;           // per image and group
};
std::vector<SiteShape> model_sites(const ViTConfig& cfg);

// The weights of a linear site; null for the attention sites (no parameters).
const LinearWeights* site_weights(const ViTModel& model, const SiteId& id);

// One invocation of a site over a batch of `images` images.
struct SiteCall {
  SiteId site;
  int images = 0;
  int groups = 1, M = 0, N = 0, K = 0;
  const float* x = nullptr;  // groups x M x K
  const float* w = nullptr;  // groups x N x K, or one N x K shared by all groups (w_stride 0)
  int64_t w_stride = 0;
  const float* bias = nullptr;  // N, or null
  float* y = nullptr;           // groups x M x N

  int64_t x_stride() const { return int64_t(M) * K; }
  int64_t y_stride() const { return int64_t(M) * N; }
};

// Rows of one image in M rows of `images` images (M itself if the images do not divide it). The
// FP32 GEMMs of a linear site run image by image (for_row_chunks): oneDNN's float kernels may round
// a row differently with the row count of the call (seen with its AVX2 sgemm: 1e-7 relative,
// batch 1 against 40), and an image's logits must not depend on which images share its batch.
inline int rows_per_image(int M, int images) { return images > 0 && M % images == 0 ? M / images : M; }
inline int image_rows(const SiteCall& c) { return rows_per_image(c.M, c.images); }
// f(r0, rows) for the chunks [r0, r0 + rows) of `chunk` rows (the last one shorter) of M rows.
template <class F>
void for_row_chunks(int M, int chunk, F&& f) {
  for (int r0 = 0; r0 < M; r0 += chunk) f(r0, chunk < M - r0 ? chunk : M - r0);
}

// Observes and/or replaces site computations during a forward pass. Calls come from the
// forward's calling thread, one per site, in execution order.
class SiteHook {
 public:
  virtual ~SiteHook() = default;
  // Computes call.y itself and returns true, or returns false to let the FP32 GEMM do it.
  virtual bool compute(const SiteCall& /*call*/) { return false; }
  // Sees the inputs and the output once call.y is computed.
  virtual void observe(const SiteCall& /*call*/) {}
  // Computes block `block`'s softmax in place itself — each of `rows` rows of n scores (Q·Kᵀ,
  // unscaled) becomes softmax(scale · row) — and returns true, or returns false to let the
  // forward's float softmax do it (a plan's softmax table, plan.h: SoftmaxTable).
  virtual bool softmax(int /*block*/, float* /*s*/, int /*rows*/, int /*n*/, float /*scale*/) { return false; }
};

}  // namespace vitq
