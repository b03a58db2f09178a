#include "engine/vit_forward.h"

#include <omp.h>

#include <cmath>

#include "core/error.h"
#include "engine/gemm_f32.h"
#include "engine/kernels.h"
#include "numerics/hadamard.h"

namespace vitq {
namespace {

// A linear site's call: y (M × N) = x (M × K) · Wᵀ + b with the layer's weights (N × K) and its
// bias, if it has one.
SiteCall linear_call(SiteId site, int images, int M, const float* x, const LinearWeights& lw, float* y) {
  SiteCall c;
  c.site = site;
  c.images = images;
  c.M = M;
  c.N = lw.out();
  c.K = lw.in();
  c.x = x;
  c.w = lw.w.ptr();
  c.bias = lw.b.empty() ? nullptr : lw.b.ptr();
  c.y = y;
  return c;
}

// An attention site's call: groups = images · heads, each with its own M × K input and N × K
// second operand (packed one after the other), no bias.
SiteCall attention_call(SiteId site, int images, int heads, int M, int N, int K, const float* x, const float* w,
                        float* y) {
  SiteCall c;
  c.site = site;
  c.images = images;
  c.groups = images * heads;
  c.M = M;
  c.N = N;
  c.K = K;
  c.x = x;
  c.w = w;
  c.w_stride = int64_t(N) * K;
  c.y = y;
  return c;
}

}  // namespace

ViTForward::ViTForward(const ViTModel& model, FpGemm gemm) : m_(model), gemm_(gemm) {
  const int F = m_.cfg.mlp_hidden;
  if (!m_.mlp_rotation_signs.empty() && (m_.mlp_rotation_signs.size() != size_t(F) || !hadamard_supported(F)))
    fail(ErrorKind::Model, "MLP rotation: ", m_.mlp_rotation_signs.size(), " signs for mlp_hidden = ", F,
         " (needs one per hidden unit and a Hadamard order: 2^k or 12·2^k)");
  if (gemm == FpGemm::Packed) {  // shapes fixed by the config; primitives come on first use
    const int T = m_.cfg.tokens(), d = m_.cfg.head_dim();
    qk_mm_ = std::make_unique<BatchedMatmulF32>(T, T, d);
    av_mm_ = std::make_unique<BatchedMatmulF32>(T, d, T);
  }
}

void ViTForward::reserve(int batch) {
  if (batch <= capacity_) return;
  const ViTConfig& c = m_.cfg;
  const size_t B = size_t(batch), T = size_t(c.tokens()), D = size_t(c.embed_dim), H = size_t(c.num_heads);
  const size_t P = size_t(c.num_patches());
  patches_.resize(B * P * size_t(c.patch_dim()));
  pe_out_.resize(B * P * D);
  x_.resize(B * T * D);
  ln_.resize(B * T * D);
  qkv_.resize(B * T * 3 * D);
  q_.resize(B * T * D);
  k_.resize(B * T * D);
  vt_.resize(B * T * D);
  s_.resize(B * H * T * T);
  o_.resize(B * T * D);
  ctx_.resize(B * T * D);
  proj_.resize(B * T * D);
  hidden_.resize(B * T * size_t(c.mlp_hidden));
  fc2_.resize(B * T * D);
  comp_.resize(B * T * D);
  tok_.resize(B * 2 * D);
  logits2_.resize(B * size_t(c.num_classes));
  capacity_ = batch;
}

size_t ViTForward::workspace_bytes() const {
  size_t n = 0;
  for (const auto* v : {&patches_, &pe_out_, &x_, &ln_, &qkv_, &q_, &k_, &vt_, &s_, &o_, &ctx_, &proj_, &hidden_,
                        &fc2_, &comp_, &tok_, &logits2_})
    n += v->capacity();
  return n * sizeof(float);
}

void ViTForward::run_site(const SiteCall& call, SiteHook* hook) {
  if (!hook && gemm_ == FpGemm::Packed && call.groups == 1) {  // plain FP32 inference
    auto& p = packed_[{call.w, call.bias}];
    if (!p) p = std::make_unique<PackedLinearF32>(call.N, call.K, call.w, call.bias);
    // One GEMM per image (site.h: image_rows): an image's logits do not depend on the batch.
    for_row_chunks(call.M, image_rows(call),
                   [&](int r0, int rows) { p->run(rows, call.x + int64_t(r0) * call.K, call.y + int64_t(r0) * call.N); });
    return;
  }
  if (!hook || !hook->compute(call)) site_gemm_f32(call);
  if (hook) hook->observe(call);
}

void ViTForward::run(const float* images, int batch, float* logits, SiteHook* hook) {
  reserve(batch);
  embed(images, batch, x_.data(), hook);
  for (int i = 0; i < m_.cfg.depth; ++i) block(i, x_.data(), batch, hook);
  head(x_.data(), batch, logits, hook);
}

void ViTForward::embed(const float* images, int batch, float* x, SiteHook* hook) {
  reserve(batch);
  const ViTConfig& c = m_.cfg;
  const int C = c.in_chans, S = c.img_size, P = c.patch_size, G = c.grid(), NP = c.num_patches();
  const int D = c.embed_dim, T = c.tokens(), npre = c.num_prefix_tokens(), PD = c.patch_dim();

  // im2col: one row per patch, columns in the conv weight's (channel, ky, kx) order.
#pragma omp parallel for schedule(static)
  for (int bp = 0; bp < batch * NP; ++bp) {
    const int b = bp / NP, p = bp % NP, gy = p / G, gx = p % G;
    float* row = patches_.data() + size_t(bp) * size_t(PD);
    const float* img = images + size_t(b) * size_t(C) * S * S;
    for (int ch = 0; ch < C; ++ch)
      for (int ky = 0; ky < P; ++ky) {
        const float* src = img + (size_t(ch) * S + size_t(gy * P + ky)) * S + size_t(gx * P);
        std::copy(src, src + P, row + (ch * P + ky) * P);
      }
  }
  const SiteCall pe =
      linear_call({SiteKind::PatchEmbed, -1}, batch, batch * NP, patches_.data(), m_.patch_embed, pe_out_.data());
  run_site(pe, hook);

  const float* pos = m_.pos_embed.ptr();
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < batch * T; ++bt) {
    const int b = bt / T, t = bt % T;
    float* dst = x + size_t(bt) * D;
    const float* src = t == 0 ? m_.cls_token.ptr()
                       : t < npre ? m_.dist_token.ptr()
                                  : pe_out_.data() + (size_t(b) * NP + size_t(t - npre)) * D;
    const float* pr = pos + size_t(t) * D;
    for (int j = 0; j < D; ++j) dst[j] = src[j] + pr[j];
  }
}

void ViTForward::block(int index, float* x, int batch, SiteHook* hook) {
  reserve(batch);
  const BlockWeights& w = m_.blocks[size_t(index)];
  const int rows = batch * m_.cfg.tokens(), D = m_.cfg.embed_dim;
  // Error compensation (ViTModel: BlockWeights::compensation): x·Wᵀ + b of the block's input,
  // added to its output at the end.
  if (w.has_compensation()) compensate(w.compensation, x, rows, comp_.data());
  attention(index, x, batch, hook);
  mlp(index, batch, hook);
  const float* comp = w.has_compensation() ? comp_.data() : nullptr;
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r) {
    float* xr = x + size_t(r) * D;
    add_bias_residual_rows(xr, fc2_.data() + size_t(r) * D, 1, size_t(D), nullptr);
    if (comp) add_bias_residual_rows(xr, comp + size_t(r) * D, 1, size_t(D), nullptr);
  }
}

void ViTForward::split_heads(int batch, bool plain) {
  const ViTConfig& c = m_.cfg;
  const int T = c.tokens(), D = c.embed_dim, H = c.num_heads, d = c.head_dim();
  const size_t TD = size_t(T) * d;
#pragma omp parallel for schedule(static)
  for (int bh = 0; bh < batch * H; ++bh) {
    const int b = bh / H, h = bh % H;
    float* q = q_.data() + size_t(bh) * TD;
    float* k = k_.data() + size_t(bh) * TD;
    float* v = vt_.data() + size_t(bh) * TD;
    for (int t = 0; t < T; ++t) {
      const float* src = qkv_.data() + (size_t(b) * T + size_t(t)) * 3 * D + size_t(h) * d;
      std::copy(src, src + d, q + size_t(t) * d);
      if (plain) {
        for (int j = 0; j < d; ++j) k[size_t(j) * T + t] = src[D + j];
        std::copy(src + 2 * D, src + 2 * D + d, v + size_t(t) * d);
      } else {
        std::copy(src + D, src + D + d, k + size_t(t) * d);
        for (int j = 0; j < d; ++j) v[size_t(j) * T + t] = src[2 * D + j];
      }
    }
  }
}

void ViTForward::attention(int index, float* x, int batch, SiteHook* hook) {
  const ViTConfig& c = m_.cfg;
  const BlockWeights& w = m_.blocks[size_t(index)];
  const int T = c.tokens(), D = c.embed_dim, H = c.num_heads, d = c.head_dim();
  const int rows = batch * T;
  const size_t TD = size_t(T) * d;
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r)
    layernorm_rows(x + size_t(r) * D, ln_.data() + size_t(r) * D, 1, size_t(D), w.norm1.gamma.ptr(),
                   w.norm1.beta.ptr(), c.ln_eps);

  const SiteCall qkv = linear_call({SiteKind::Qkv, index}, batch, rows, ln_.data(), w.qkv, qkv_.data());
  run_site(qkv, hook);

  // Split into per-(image, head) Q [T x d], K [T x d] and Vᵀ [d x T] (the sites' N x K
  // operands); without a hook and with enough heads to spread over the threads (measured: at
  // 3–12 heads on 2 threads the row-blocked sgemms are faster), into Q, Kᵀ [d x T] and V [T x d]
  // for the batched products.
  const bool plain = !hook && gemm_ == FpGemm::Packed && batch * H >= 8 * omp_get_max_threads();
  split_heads(batch, plain);

  const SiteCall qk = attention_call({SiteKind::MatmulQK, index}, batch, H, T, T, d, q_.data(), k_.data(), s_.data());
  if (plain) qk_mm_->run(qk.groups, q_.data(), k_.data(), s_.data());
  else run_site(qk, hook);

  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int srows = batch * H * T;
  if (!hook || !hook->softmax(index, s_.data(), srows, T, scale)) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < srows; ++r) softmax_rows(s_.data() + size_t(r) * T, 1, size_t(T), scale);
  }

  const SiteCall av = attention_call({SiteKind::MatmulAV, index}, batch, H, T, d, T, s_.data(), vt_.data(), o_.data());
  if (plain) av_mm_->run(av.groups, s_.data(), vt_.data(), o_.data());
  else run_site(av, hook);

  // Merge heads: ctx[b][t][h*d + j] = o[b][h][t][j].
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < rows; ++bt) {
    const int b = bt / T, t = bt % T;
    for (int h = 0; h < H; ++h) {
      const float* src = o_.data() + (size_t(b) * H + size_t(h)) * TD + size_t(t) * d;
      std::copy(src, src + d, ctx_.data() + size_t(bt) * D + size_t(h) * d);
    }
  }

  const SiteCall proj = linear_call({SiteKind::Proj, index}, batch, rows, ctx_.data(), w.proj, proj_.data());
  run_site(proj, hook);

#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r) {
    float* xr = x + size_t(r) * D;
    add_bias_residual_rows(xr, proj_.data() + size_t(r) * D, 1, size_t(D), nullptr);
    layernorm_rows(xr, ln_.data() + size_t(r) * D, 1, size_t(D), w.norm2.gamma.ptr(), w.norm2.beta.ptr(), c.ln_eps);
  }
}

void ViTForward::mlp(int index, int batch, SiteHook* hook) {
  const BlockWeights& w = m_.blocks[size_t(index)];
  const int rows = batch * m_.cfg.tokens(), F = m_.cfg.mlp_hidden;
  const SiteCall fc1 = linear_call({SiteKind::Fc1, index}, batch, rows, ln_.data(), w.fc1, hidden_.data());
  run_site(fc1, hook);

  // GELU, then (a rotated model) fc2's input h ← h·H_F·diag(s)/√F.
  const float* mlp_signs = m_.mlp_rotation_signs.empty() ? nullptr : m_.mlp_rotation_signs.data();
  const float mlp_scale = 1.0f / std::sqrt(static_cast<float>(F));
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r) {
    float* h = hidden_.data() + size_t(r) * F;
    bias_gelu_rows(h, 1, size_t(F), nullptr);
    if (mlp_signs) hadamard_sign_rows(h, 1, F, mlp_signs, mlp_scale);
  }

  const SiteCall fc2 = linear_call({SiteKind::Fc2, index}, batch, rows, hidden_.data(), w.fc2, fc2_.data());
  run_site(fc2, hook);
}

void ViTForward::compensate(const LinearWeights& c, const float* x, int rows, float* y) {
  const int D = m_.cfg.embed_dim, T = m_.cfg.tokens();
  if (c.out() != D || c.in() != D || c.b.numel() != D)
    fail(ErrorKind::Model, "error compensation: weight ", c.w.dim(0), "x", c.w.dim(1), ", bias ", c.b.numel(),
         " for embed_dim ", D, " (needs ", D, "x", D, " and ", D, ")");
  if (gemm_ == FpGemm::Packed) {
    auto& p = packed_[{c.w.ptr(), c.b.ptr()}];
    if (!p) p = std::make_unique<PackedLinearF32>(D, D, c.w.ptr(), c.b.ptr());
    // Image by image, as the linear sites (site.h: image_rows).
    for_row_chunks(rows, T, [&](int r0, int n) { p->run(n, x + int64_t(r0) * D, y + int64_t(r0) * D); });
    return;
  }
  for_row_chunks(rows, T, [&](int r0, int n) { gemm_nt_f32(n, D, D, x + int64_t(r0) * D, c.w.ptr(), y + int64_t(r0) * D); });
  const float* b = c.b.ptr();
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < D; ++j) y[size_t(r) * D + size_t(j)] += b[j];
}

void ViTForward::head(const float* x, int batch, float* logits, SiteHook* hook) {
  reserve(batch);
  const ViTConfig& c = m_.cfg;
  const int T = c.tokens(), D = c.embed_dim, NC = c.num_classes;
  const int ntok = c.distilled ? 2 : 1;
  // Final LayerNorm of the class (and distillation) token rows: tok_[t][b] for t < ntok.
  for (int t = 0; t < ntok; ++t)
    for (int b = 0; b < batch; ++b)
      layernorm_rows(x + (size_t(b) * T + size_t(t)) * D, tok_.data() + (size_t(t) * batch + size_t(b)) * D, 1,
                     size_t(D), m_.norm.gamma.ptr(), m_.norm.beta.ptr(), c.ln_eps);
  const SiteCall h = linear_call({SiteKind::Head, -1}, batch, batch, tok_.data(), m_.head, logits);
  run_site(h, hook);
  if (!c.distilled) return;
  run_site(linear_call({SiteKind::HeadDist, -1}, batch, batch, tok_.data() + size_t(batch) * D, m_.head_dist,
                       logits2_.data()),
           hook);
  for (size_t i = 0; i < size_t(batch) * NC; ++i) logits[i] = 0.5f * (logits[i] + logits2_[i]);
}

}  // namespace vitq
