#include "synth/vit_input_grad.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "engine/gemm_f32.h"
#include "engine/kernels.h"
#include "engine/site.h"
#include "numerics/hadamard.h"

namespace vitq {

// What one block's backward reads besides its layer inputs: per (image, head) Q and K (T × d), Vᵀ
// (d × T) and the softmax probabilities P (T × T); fc1's output (GELU's input).
struct ViTInputGrad::Records {
  avector<float> q, k, vt, p, h;
};

namespace {

// Copies what the backward reads, and forms LayerNorm 2's input x_i + proj's output (the
// forward's own sum: proj's output has its bias, the residual add none) when proj is seen.
class Recorder : public SiteHook {
 public:
  Recorder(std::vector<ViTInputGrad::Records>* rec, std::vector<avector<float>>* xs) : rec_(rec), xs_(xs) {}
  void observe(const SiteCall& c) override {
    if (c.site.block < 0) return;
    const int i = c.site.block;
    auto& r = (*rec_)[size_t(i)];
    const size_t nx = size_t(c.groups) * size_t(c.x_stride()), ny = size_t(c.groups) * size_t(c.y_stride());
    switch (c.site.kind) {
      case SiteKind::MatmulQK:
        r.q.assign(c.x, c.x + nx);
        r.k.assign(c.w, c.w + size_t(c.groups) * size_t(c.w_stride));
        break;
      case SiteKind::MatmulAV:
        r.p.assign(c.x, c.x + nx);
        r.vt.assign(c.w, c.w + size_t(c.groups) * size_t(c.w_stride));
        break;
      case SiteKind::Proj: {
        const avector<float>& xin = (*xs_)[size_t(2 * i)];
        avector<float>& x1 = (*xs_)[size_t(2 * i + 1)];
        x1.resize(ny);
        for (size_t e = 0; e < ny; ++e) x1[e] = xin[e] + c.y[e];
        break;
      }
      case SiteKind::Fc1: r.h.assign(c.y, c.y + ny); break;
      default: break;
    }
  }

 private:
  std::vector<ViTInputGrad::Records>* rec_;
  std::vector<avector<float>>* xs_;
};

}  // namespace

void layernorm_backward_row(const float* x, const float* dy, const float* gamma, int n, float eps, float* dx) {
  double mu = 0, var = 0;
  for (int j = 0; j < n; ++j) mu += x[j];
  mu /= n;
  for (int j = 0; j < n; ++j) var += (double(x[j]) - mu) * (double(x[j]) - mu);
  var /= n;
  const double rstd = 1.0 / std::sqrt(var + double(eps));
  double m1 = 0, m2 = 0;
  for (int j = 0; j < n; ++j) {
    const double g = double(dy[j]) * gamma[j];
    m1 += g;
    m2 += g * (double(x[j]) - mu) * rstd;
  }
  m1 /= n;
  m2 /= n;
  for (int j = 0; j < n; ++j) {
    const double xh = (double(x[j]) - mu) * rstd, g = double(dy[j]) * gamma[j];
    dx[j] = float(double(dx[j]) + rstd * (g - m1 - xh * m2));
  }
}

ViTInputGrad::ViTInputGrad(const ViTModel& model) : m_(model), fwd_(model, FpGemm::PerCall) {
  for (const BlockWeights& b : model.blocks)
    if (b.has_compensation())
      fail(ErrorKind::Usage, "image gradients: the model has error compensation (use the plain checkpoint)");
  xs_.resize(size_t(layers()));
  rec_.resize(size_t(model.cfg.depth));
}

ViTInputGrad::~ViTInputGrad() = default;

void ViTInputGrad::forward(const float* images, int batch, float* logits) {
  const ViTConfig& c = m_.cfg;
  const size_t n = size_t(batch) * size_t(c.tokens()) * size_t(c.embed_dim);
  batch_ = batch;
  Recorder rec(&rec_, &xs_);
  x_last_.resize(n);
  fwd_.embed(images, batch, x_last_.data(), &rec);
  for (int i = 0; i < c.depth; ++i) {
    xs_[size_t(2 * i)].assign(x_last_.begin(), x_last_.end());
    fwd_.block(i, x_last_.data(), batch, &rec);
  }
  fwd_.head(x_last_.data(), batch, logits, &rec);
}

void ViTInputGrad::attention_backward(int i, const float* dctx, float* dqkv) {
  const ViTConfig& c = m_.cfg;
  const int T = c.tokens(), D = c.embed_dim, H = c.num_heads, d = c.head_dim();
  const Records& r = rec_[size_t(i)];
  const float scale = 1.0f / std::sqrt(float(d));
  const size_t TT = size_t(T) * T, TD = size_t(T) * d;
#pragma omp parallel
  {
    std::vector<float> dO(TD), dP(TT), dVt(TD), dQ(TD), dK(TD);
#pragma omp for schedule(static)
    for (int g = 0; g < batch_ * H; ++g) {
      const int b = g / H, h = g % H;
      const float *P = r.p.data() + size_t(g) * TT, *Vt = r.vt.data() + size_t(g) * TD;
      const float *Q = r.q.data() + size_t(g) * TD, *K = r.k.data() + size_t(g) * TD;
      for (int t = 0; t < T; ++t)
        std::copy_n(dctx + (size_t(b) * T + size_t(t)) * D + size_t(h) * d, d, dO.data() + size_t(t) * d);
      sgemm_f32('N', 'N', T, T, d, dO.data(), d, Vt, T, 0.0f, dP.data(), T);   // dP = dO · V
      sgemm_f32('T', 'N', d, T, T, dO.data(), d, P, T, 0.0f, dVt.data(), T);   // dVᵀ = dOᵀ · P
      for (int t = 0; t < T; ++t) {  // softmax: dS = scale · P ∘ (dP − Σ_j dP_j P_j)
        float* dr = dP.data() + size_t(t) * T;
        const float* pr = P + size_t(t) * T;
        double dot = 0;
        for (int j = 0; j < T; ++j) dot += double(dr[j]) * pr[j];
        for (int j = 0; j < T; ++j) dr[j] = float(scale * double(pr[j]) * (double(dr[j]) - dot));
      }
      sgemm_f32('N', 'N', T, d, T, dP.data(), T, K, d, 0.0f, dQ.data(), d);  // dQ = dS · K
      sgemm_f32('T', 'N', T, d, T, dP.data(), T, Q, d, 0.0f, dK.data(), d);  // dK = dSᵀ · Q
      for (int t = 0; t < T; ++t) {
        float* row = dqkv + (size_t(b) * T + size_t(t)) * 3 * D + size_t(h) * d;
        for (int j = 0; j < d; ++j) {
          row[j] = dQ[size_t(t) * d + size_t(j)];
          row[D + j] = dK[size_t(t) * d + size_t(j)];
          row[2 * D + j] = dVt[size_t(j) * T + size_t(t)];
        }
      }
    }
  }
}

// g: ∂L/∂(block i's output) in, ∂L/∂(its input x_i) out; dln1_in / dln2_in: the loss's direct
// gradients of layers 2i and 2i+1 (or null).
void ViTInputGrad::block_backward(int i, float* g, const float* dln1_in, const float* dln2_in) {
  const ViTConfig& c = m_.cfg;
  const BlockWeights& w = m_.blocks[size_t(i)];
  const int D = c.embed_dim, F = c.mlp_hidden;
  const int64_t rows = int64_t(batch_) * c.tokens();
  const Records& r = rec_[size_t(i)];
  // MLP: out = x1 + fc2(GELU(fc1(LN2(x1)))).
  // Work buffers kept across calls (resize keeps the pages of the previous step).
  avector<float>&dh = ws_.dh, &dln = ws_.dln, &dx1 = ws_.dx1, &dctx = ws_.dctx, &dqkv = ws_.dqkv;
  dh.resize(size_t(rows) * F);
  dln.resize(size_t(rows) * D);
  dx1.assign(g, g + size_t(rows) * D);
  dctx.resize(size_t(rows) * D);
  dqkv.resize(size_t(rows) * 3 * D);
  sgemm_f32('N', 'N', rows, F, D, g, D, w.fc2.w.ptr(), F, 0.0f, dh.data(), F);
  if (!m_.mlp_rotation_signs.empty())  // fc2 reads (a·H_F)∘s/√F: da = ((dr∘s)·H_Fᵀ)/√F
    hadamard_sign_rows_transposed(dh.data(), rows, F, m_.mlp_rotation_signs.data(), 1.0 / std::sqrt(double(F)));
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < rows; ++t) gelu_grad_mul(dh.data() + t * F, r.h.data() + t * F, size_t(F));
  sgemm_f32('N', 'N', rows, D, F, dh.data(), F, w.fc1.w.ptr(), D, 0.0f, dln.data(), D);
  const avector<float>& x1 = xs_[size_t(2 * i + 1)];
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < rows; ++t) {
    float* o = dx1.data() + t * D;
    layernorm_backward_row(x1.data() + t * D, dln.data() + t * D, w.norm2.gamma.ptr(), D, c.ln_eps, o);
    if (dln2_in)
      for (int j = 0; j < D; ++j) o[j] += dln2_in[t * D + j];
  }
  // Attention: x1 = x_i + proj(attention(qkv(LN1(x_i)))).
  sgemm_f32('N', 'N', rows, D, D, dx1.data(), D, w.proj.w.ptr(), D, 0.0f, dctx.data(), D);
  attention_backward(i, dctx.data(), dqkv.data());
  sgemm_f32('N', 'N', rows, D, 3 * D, dqkv.data(), 3 * D, w.qkv.w.ptr(), D, 0.0f, dln.data(), D);
  const avector<float>& x0 = xs_[size_t(2 * i)];
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < rows; ++t) {
    float* o = g + t * D;
    std::copy_n(dx1.data() + t * D, D, o);
    layernorm_backward_row(x0.data() + t * D, dln.data() + t * D, w.norm1.gamma.ptr(), D, c.ln_eps, o);
    if (dln1_in)
      for (int j = 0; j < D; ++j) o[j] += dln1_in[t * D + j];
  }
}

void ViTInputGrad::backward(const float* dlogits, const std::vector<const float*>& dlayer, float* dimages,
                           const std::function<void(int, const float*)>& at_block_output) {
  const ViTConfig& c = m_.cfg;
  if (batch_ <= 0) fail(ErrorKind::Internal, "ViTInputGrad::backward before forward");
  if (dlayer.size() != size_t(layers())) fail(ErrorKind::Internal, "ViTInputGrad::backward: ", dlayer.size(), " layer gradients for ", layers());
  const int T = c.tokens(), D = c.embed_dim, NC = c.num_classes, B = batch_;
  avector<float> g(size_t(B) * T * D, 0.0f);
  // Head: logits = head(LN(x_cls)) (DeiT: the mean of head(LN(x_cls)) and head_dist(LN(x_dist))).
  if (dlogits) {
    const int ntok = c.distilled ? 2 : 1;
    std::vector<float> dtok(size_t(B) * D);
    for (int t = 0; t < ntok; ++t) {
      const LinearWeights& hw = t == 0 ? m_.head : m_.head_dist;
      sgemm_f32('N', 'N', B, D, NC, dlogits, NC, hw.w.ptr(), D, 0.0f, dtok.data(), D);
      if (c.distilled)
        for (float& v : dtok) v *= 0.5f;
      for (int b = 0; b < B; ++b) {
        const size_t row = (size_t(b) * T + size_t(t)) * D;
        layernorm_backward_row(x_last_.data() + row, dtok.data() + size_t(b) * D, m_.norm.gamma.ptr(), D, c.ln_eps,
                               g.data() + row);
      }
    }
  }
  for (int i = c.depth - 1; i >= 0; --i) {
    if (at_block_output) at_block_output(i, g.data());
    if (i == 0 && !dimages) return;
    block_backward(i, g.data(), dlayer[size_t(2 * i)], dlayer[size_t(2 * i + 1)]);
  }
  // Embedding: x_0 = [prefix tokens; patches · W_peᵀ + b] + pos, the patches im2col rows of the image.
  const int C = c.in_chans, S = c.img_size, P = c.patch_size, G = c.grid(), NP = c.num_patches(), npre = c.num_prefix_tokens();
  const int PD = c.patch_dim();
  avector<float> gp(size_t(B) * NP * D), dpatch(size_t(B) * NP * PD);
  for (int b = 0; b < B; ++b)
    std::copy_n(g.data() + (size_t(b) * T + size_t(npre)) * D, size_t(NP) * D, gp.data() + size_t(b) * NP * D);
  sgemm_f32('N', 'N', int64_t(B) * NP, PD, D, gp.data(), D, m_.patch_embed.w.ptr(), PD, 0.0f, dpatch.data(), PD);
  std::fill_n(dimages, size_t(B) * C * S * S, 0.0f);
#pragma omp parallel for schedule(static)
  for (int bp = 0; bp < B * NP; ++bp) {
    const int b = bp / NP, p = bp % NP, gy = p / G, gx = p % G;
    const float* row = dpatch.data() + size_t(bp) * PD;
    float* img = dimages + size_t(b) * C * S * S;
    for (int ch = 0; ch < C; ++ch)
      for (int ky = 0; ky < P; ++ky)
        std::copy_n(row + (ch * P + ky) * P, P, img + (size_t(ch) * S + size_t(gy * P + ky)) * S + size_t(gx * P));
  }
}

}  // namespace vitq
