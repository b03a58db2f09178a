#include "quant/reconstruct.h"

#include <dnnl.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <numeric>
#include <random>

#include "core/aligned.h"
#include "core/error.h"
#include "engine/gemm_f32.h"
#include "engine/site.h"
#include "engine/vit_forward.h"
#include "numerics/hadamard.h"
#include "numerics/level_grid.h"
#include "numerics/quantizer.h"
#include "quant/simulate.h"
#include "quant/staged_forward.h"
#include "quant/weight_codes.h"
#include "quant/weight_rounding.h"

namespace vitq {
namespace {

constexpr SiteKind kLinearKinds[] = {SiteKind::Qkv, SiteKind::Proj, SiteKind::Fc1, SiteKind::Fc2};

// Row-major C (M × N) = op(A) · op(B) (engine/gemm_f32.h).
void sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
           float* C, int64_t ldc) {
  sgemm_f32(ta, tb, M, N, K, A, lda, B, ldb, 0.0f, C, ldc);
}

// QDrop's random dropping of activation quantization: during a training step each element of a
// quantized activation operand keeps its float value with probability p. The choice is a hash
// of (step seed, site, operand, element index), so the backward recomputes it without storing it.
struct Drop {
  uint64_t seed = 0;
  double p = 0;  // 0: off
  bool on() const { return p > 0; }
  bool dropped(SiteKind k, int operand, uint64_t i) const {
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * (i + 1 + (uint64_t(int(k) * 2 + operand) << 40));
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return double(z >> 11) * 0x1.0p-53 < p;
  }
};

// Elements [first, first + n) of operand `operand` of site k: dropped ones take their float value
// back (x̂ = x), pass the gradient (mask 1) and do not depend on the step (dd 0, if given).
void apply_drop(const Drop* drop, SiteKind k, int operand, uint64_t first, const float* x, size_t n, float* xh,
                float* mask, float* dd = nullptr) {
  if (!drop || !drop->on()) return;
  for (size_t i = 0; i < n; ++i)
    if (drop->dropped(k, operand, first + i)) {
      xh[i] = x[i];
      mask[i] = 1.0f;
      if (dd) dd[i] = 0.0f;
    }
}

// One value on a uniform grid, x = u·Δ (u = x/Δ): its code clipped to the grid, whether the
// unclipped code lies inside (the straight-through mask), and LSQ's ∂x̂/∂Δ for x̂ = Δ·code:
// round(u) − u inside the grid, the end code outside.
struct StraightThroughCode {
  float code;
  bool inside;
  float dstep;
};
inline StraightThroughCode straight_through_code(float u, QRange rg) {
  const float c = round_half_even(u);
  const bool inside = c >= float(rg.lo) && c <= float(rg.hi);
  const float cc = std::min(std::max(c, float(rg.lo)), float(rg.hi));
  return {cc, inside, inside ? c - u : cc};
}

// The tensors of one site call of the block, copied as the simulator saw them.
struct Rec {
  SiteCall call;
  avector<float> x, w, y;
};

// The dequantized values x̂ of a linear site's input rows (rows × K) under format q and the
// straight-through mask (dequantize_input_row), with QDrop's dropped elements left in float.
void dequantize_linear_input(const float* x, int64_t rows, int K, const OperandQuant& q, float* xh, float* mask,
                             SiteKind kind = SiteKind::Qkv, const Drop* drop = nullptr) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_input_row(x + r * K, K, q, xh + r * K, mask + r * K);
    if (q.quantized()) apply_drop(drop, kind, 0, uint64_t(r) * uint64_t(K), x + r * K, size_t(K), xh + r * K, mask + r * K);
  }
}

// The same for one group of an attention operand (head h): a uniform grid with the head's step,
// per-token Q or K rows of row_len values each with its own symmetric step (plan.h; not trained),
// or a level grid (values level · 2^−15, never clipped). dd (optional): ∂x̂/∂Δ per element, LSQ's
// round(x/Δ) − x/Δ inside a uniform grid with a head step and the end code outside; 0 otherwise.
void dequantize_attention_operand(const float* x, size_t n, const OperandQuant& q, int h, float* xh, float* mask,
                                  SiteKind kind = SiteKind::MatmulQK, int operand = 0, uint64_t first = 0,
                                  const Drop* drop = nullptr, float* dd = nullptr, size_t row_len = 0) {
  if (!q.quantized() || is_level_grid(q.grid)) {
    if (dd) std::fill(dd, dd + n, 0.0f);
    if (!q.quantized()) {
      std::copy(x, x + n, xh);
      std::fill(mask, mask + n, 1.0f);
      return;
    }
    const LevelGrid& g = LevelGrid::get(q.grid, q.bits);
    for (size_t i = 0; i < n; ++i) {
      xh[i] = float(g.of(x[i])) * kLevelStep;
      mask[i] = 1.0f;
    }
  } else if (q.per_token) {
    if (row_len == 0 || n % row_len != 0) fail(ErrorKind::Internal, "per-token attention operand without its row length");
    const QRange rg = q.range();
    for (size_t r0 = 0; r0 < n; r0 += row_len) {
      const float d = token_step_symmetric(x + r0, row_len, rg);
      for (size_t i = r0; i < r0 + row_len; ++i) {
        const StraightThroughCode st = straight_through_code(x[i] / d, rg);
        mask[i] = st.inside ? 1.0f : 0.0f;
        xh[i] = st.code * d;
        if (dd) dd[i] = 0.0f;
      }
    }
  } else {
    const QRange rg = q.range();
    const float d = q.head_scale(h);
    for (size_t i = 0; i < n; ++i) {
      const StraightThroughCode st = straight_through_code(x[i] / d, rg);
      mask[i] = st.inside ? 1.0f : 0.0f;
      xh[i] = st.code * d;
      if (dd) dd[i] = st.dstep;
    }
  }
  apply_drop(drop, kind, operand, first, x, n, xh, mask, dd);
}

// Σ_r Δ_r Σ_k dxh_rk·(round(x/Δ_r) − x/Δ_r inside the row's grid, its end code outside) over the
// rows (rows × K) of a per-token input: ∂L/∂log α of its clip ratio (BlockGrads::dlog_clip).
// Dropped elements (QDrop) do not depend on α. Summed per row, then in row order (deterministic).
double token_clip_grad(const float* x, const float* dxh, int64_t rows, int K, const OperandQuant& q, SiteKind kind,
                       const Drop* drop) {
  std::vector<double> per_row(size_t(rows), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int G = q.token_groups(K), Kg = K / G;
    double row = 0;
    for (int g = 0; g < G; ++g) {  // each channel group has its own range, clipped by the same α
      const float* xr = x + r * K + g * Kg;
      const TokenQuant t = token_quant(xr, size_t(Kg), q.bits, q.token_clip);
      const QRange rg = t.range(q.bits);
      double s = 0;
      for (int k = 0; k < Kg; ++k) {
        const int64_t i = r * K + g * Kg + k;
        if (drop && drop->on() && drop->dropped(kind, 0, uint64_t(i))) continue;
        s += double(dxh[i]) * straight_through_code(xr[k] / t.delta, rg).dstep;
      }
      row += s * t.delta;
    }
    per_row[size_t(r)] = row;
  }
  double total = 0;
  for (double v : per_row) total += v;
  return total;
}

// Runs the block's sites through the simulator and keeps a copy of every site's operands and
// output. With a Drop on, a planned site is computed in float from its dequantized operands with
// the dropped elements left unquantized (training steps only; the losses are the simulator's).
class Recorder : public SiteHook {
 public:
  Recorder(PlanSimulator& sim, const ViTModel& model, const QuantPlan& plan) : sim_(sim), m_(model), plan_(plan) {}
  std::map<SiteKind, Rec> rec;
  const Drop* drop = nullptr;
  bool compute(const SiteCall& c) override {
    const SitePlan* sp = plan_.find(c.site);
    if (!drop || !drop->on() || !sp || !sp->x.quantized() || !sp->w.quantized()) return sim_.compute(c);
    const int64_t xs = c.x_stride(), nx = int64_t(c.groups) * xs;
    xh_.resize(size_t(nx));
    mask_.resize(size_t(nx));
    SiteCall q = c;
    if (c.site.is_attention()) {
      const int heads = c.groups / std::max(1, c.images);
      const int64_t ws = c.w_stride;
      wh_.resize(size_t(int64_t(c.groups) * ws));
      wmask_.resize(wh_.size());
#pragma omp parallel for schedule(static)
      for (int g = 0; g < c.groups; ++g) {
        dequantize_attention_operand(c.x + g * xs, size_t(xs), sp->x, g % heads, xh_.data() + g * xs,
                                     mask_.data() + g * xs, c.site.kind, 0, uint64_t(g * xs), drop, nullptr, size_t(c.K));
        dequantize_attention_operand(c.w + g * ws, size_t(ws), sp->w, g % heads, wh_.data() + g * ws,
                                     wmask_.data() + g * ws, c.site.kind, 1, uint64_t(g * ws), drop, nullptr, size_t(c.K));
      }
      q.w = wh_.data();
    } else {
      dequantize_linear_input(c.x, int64_t(c.groups) * c.M, c.K, sp->x, xh_.data(), mask_.data(), c.site.kind, drop);
      dequantized_weight(*site_weights(m_, c.site), sp, wd_);
      q.w = wd_.data();
    }
    q.x = xh_.data();
    site_gemm_f32(q);
    add_bias_correction(c, sp->bias_correction);
    return true;
  }
  void observe(const SiteCall& c) override {
    Rec& r = rec[c.site.kind];
    r.call = c;
    const size_t nx = size_t(c.groups) * size_t(c.x_stride()), ny = size_t(c.groups) * size_t(c.y_stride());
    r.x.assign(c.x, c.x + nx);
    r.y.assign(c.y, c.y + ny);
    if (c.site.is_attention()) r.w.assign(c.w, c.w + size_t(c.groups) * size_t(c.w_stride));
  }

 private:
  PlanSimulator& sim_;
  const ViTModel& m_;
  const QuantPlan& plan_;
  avector<float> xh_, mask_, wh_, wmask_;
  std::vector<float> wd_;
};

double gelu_grad(double h) {
  constexpr double kInvSqrt2 = 0.70710678118654752440, kInvSqrt2Pi = 0.39894228040143267794;
  return 0.5 * (1.0 + std::erf(h * kInvSqrt2)) + h * kInvSqrt2Pi * std::exp(-0.5 * h * h);
}

// The forward and backward of one block on a batch, reusing its buffers.
class BlockTrainer {
 public:
  BlockTrainer(const ViTModel& model, PlanSimulator& sim, const QuantPlan& plan, int block)
      : m_(model), plan_(plan), block_(block), fwd_(model, FpGemm::PerCall), rec_(sim, model, plan) {}

  // Also compute BlockGrads::dlog_clip (one more GEMM for the block's first site; else zeros).
  bool clip_grads = false;
  // The share of the loss given to the prefix tokens (ReconOptions::head_share; 0: a plain mean).
  double head_share = 0;
  // The share λ of the Fisher token weights in each token's weight (ReconOptions::fisher).
  double fisher = 0;

  // drop: QDrop's dropping for this call (null: every quantizer as planned); token_w: the batch's
  // Fisher token weights (b × tokens; read only with fisher > 0).
  double run(const float* x_in, const float* target, int b, BlockGrads* grads, const Drop* drop = nullptr,
             const float* token_w = nullptr) {
    rec_.drop = drop;
    const ViTConfig& c = m_.cfg;
    const int T = c.tokens(), D = c.embed_dim;
    const int64_t rows = int64_t(b) * T;
    out_.assign(x_in, x_in + size_t(rows) * D);
    fwd_.block(block_, out_.data(), b, &rec_);
    g_.resize(out_.size());
    double loss = 0;
    const double inv = 1.0 / double(out_.size());
    // Each element's weight: (1 − s) + s·T/P on the prefix tokens, i.e. (1 − s)·the mean over every
    // element + s·the mean over the prefix tokens' elements (head_share s; 1 everywhere at s = 0);
    // with the Fisher token weights f (fisher λ > 0): (1 − λ)·that + λ·f of the element's token.
    const int P = c.num_prefix_tokens();
    const double prefix_gain = head_share * double(T) / double(P);
    const double lambda = fisher > 0 && token_w ? fisher : 0.0;
    if (fisher > 0 && !token_w) fail(ErrorKind::Internal, "reconstruction: Fisher share without token weights");
#pragma omp parallel for schedule(static) reduction(+ : loss)
    for (int64_t i = 0; i < int64_t(out_.size()); ++i) {
      const double d = double(out_[size_t(i)]) - double(target[size_t(i)]);
      const double u = (1.0 - head_share) + ((i / D) % T < P ? prefix_gain : 0.0);
      const double w = lambda > 0 ? (1.0 - lambda) * u + lambda * double(token_w[i / D]) : u;
      loss += w * d * d;
      g_[size_t(i)] = float(2.0 * d * w * inv);
    }
    loss *= inv;
    if (grads) backward(x_in, b, *grads);
    return loss;
  }

 private:
  const SitePlan* plan_of(SiteKind k) const { return plan_.find({k, block_}); }
  const LinearWeights& weights_of(SiteKind k) const { return *site_weights(m_, {k, block_}); }

  // dy (rows × N) → ∂L/∂ŵ, ∂L/∂b into the grads, and the input gradient dx (rows × K), straight
  // through the site's input quantizer.
  void linear_backward(SiteKind k, const float* dy, float* dx, BlockGrads& grads) {
    const Rec& r = rec_.rec.at(k);
    const int N = r.call.N, K = r.call.K;
    const int64_t rows = int64_t(r.call.groups) * r.call.M;
    xh_.resize(size_t(rows) * K);
    mask_.resize(xh_.size());
    const SitePlan* sp = plan_of(k);
    dequantize_linear_input(r.x.data(), rows, K, sp ? sp->x : OperandQuant{}, xh_.data(), mask_.data(), k, rec_.drop);
    const std::string name = SiteId{k, block_}.name();
    grads.sites.push_back(name);
    grads.dw.emplace_back(size_t(N) * K);
    grads.db.emplace_back(size_t(N), 0.0f);
    gemm_tn_f32(N, K, rows, dy, xh_.data(), grads.dw.back().data());
    std::vector<double> db(size_t(N), 0.0);
    for (int64_t i = 0; i < rows; ++i)
      for (int n = 0; n < N; ++n) db[size_t(n)] += dy[size_t(i) * N + size_t(n)];
    for (int n = 0; n < N; ++n) grads.db.back()[size_t(n)] = float(db[size_t(n)]);
    const bool token_input = clip_grads && sp && sp->x.quantized() && sp->x.per_token;
    grads.dlog_clip.push_back(0.0f);
    if (!dx && !token_input) return;
    // ∂L/∂x̂ (into dx, or a scratch buffer for the block's first site), then through the quantizer.
    float* dxh = dx;
    if (!dx) {
      dxh_.resize(size_t(rows) * K);
      dxh = dxh_.data();
    }
    dequantized_weight(weights_of(k), sp, w_);
    sgemm('N', 'N', rows, K, N, dy, N, w_.data(), K, dxh, K);
    if (token_input) grads.dlog_clip.back() = float(token_clip_grad(r.x.data(), dxh, rows, K, sp->x, k, rec_.drop));
    if (!dx) return;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows * K; ++i) dx[i] *= mask_[size_t(i)];
  }

  // The gradient of the block's loss (g_, of the block output) down to the codes, biases and steps
  // of its sites (`grads`), from the forward's records of the batch whose input is x_in.
  void backward(const float* x_in, int b, BlockGrads& grads) {
    grads = {};
    const ViTConfig& c = m_.cfg;
    const int64_t rows = int64_t(b) * c.tokens();
    const size_t D = size_t(c.embed_dim);
    avector<float> dln(size_t(rows) * D), dx1(size_t(rows) * D), dctx(size_t(rows) * D), dqkv(size_t(rows) * 3 * D);
    mlp_backward(rows, dln.data(), grads);
    ln2_backward(x_in, rows, dln.data(), dx1.data());
    linear_backward(SiteKind::Proj, dx1.data(), dctx.data(), grads);
    attention_backward(b, dctx.data(), dqkv.data(), grads);
    linear_backward(SiteKind::Qkv, dqkv.data(), nullptr, grads);  // the block's input is data
  }

  // fc2, GELU and fc1: the gradient of LayerNorm 2's output into dln.
  void mlp_backward(int64_t rows, float* dln, BlockGrads& grads) {
    const int F = m_.cfg.mlp_hidden;
    // fc2 (its input: GELU output, rotated if the model has the MLP rotation).
    avector<float> dh(size_t(rows) * F);
    linear_backward(SiteKind::Fc2, g_.data(), dh.data(), grads);
    if (!m_.mlp_rotation_signs.empty())  // r = (a·H)∘s/√F  →  da = ((dr∘s)·Hᵀ)/√F
      hadamard_sign_rows_transposed(dh.data(), rows, F, m_.mlp_rotation_signs.data(), 1.0 / std::sqrt(double(F)));
    const avector<float>& h = rec_.rec.at(SiteKind::Fc1).y;  // fc1's output: GELU's input
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows * F; ++i) dh[size_t(i)] = float(double(dh[size_t(i)]) * gelu_grad(h[size_t(i)]));
    linear_backward(SiteKind::Fc1, dh.data(), dln, grads);
  }

  // LayerNorm 2 on x1 = x_in + proj's output: dx1 = g + LN2's input gradient of dln.
  void ln2_backward(const float* x_in, int64_t rows, const float* dln, float* dx1) const {
    const ViTConfig& c = m_.cfg;
    const int D = c.embed_dim;
    const avector<float>& proj_y = rec_.rec.at(SiteKind::Proj).y;
    const float* gamma = m_.blocks[size_t(block_)].norm2.gamma.ptr();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xi = x_in + r * D;
      const float* py = proj_y.data() + r * D;
      double mu = 0, var = 0;
      for (int j = 0; j < D; ++j) mu += double(xi[j] + py[j]);
      mu /= D;
      for (int j = 0; j < D; ++j) {
        const double v = double(xi[j] + py[j]) - mu;
        var += v * v;
      }
      var /= D;
      const double rstd = 1.0 / std::sqrt(var + double(c.ln_eps));
      double m1 = 0, m2 = 0;
      for (int j = 0; j < D; ++j) {
        const double xh = (double(xi[j] + py[j]) - mu) * rstd, g = double(dln[size_t(r) * D + size_t(j)]) * gamma[j];
        m1 += g;
        m2 += g * xh;
      }
      m1 /= D;
      m2 /= D;
      for (int j = 0; j < D; ++j) {
        const double xh = (double(xi[j] + py[j]) - mu) * rstd, g = double(dln[size_t(r) * D + size_t(j)]) * gamma[j];
        dx1[size_t(r) * D + size_t(j)] = float(double(g_[size_t(r) * D + size_t(j)]) + rstd * (g - m1 - xh * m2));
      }
    }
  }

  // Attention, per (image, head): O = P̂·V̂, S = Q̂·K̂ᵀ, P = softmax(scale·S). From the gradient of
  // the heads' output (dctx) to that of qkv's output (dqkv) and of the per-head steps of Q, K, V.
  void attention_backward(int b, const float* dctx, float* dqkv, BlockGrads& grads) {
    const ViTConfig& c = m_.cfg;
    const int T = c.tokens(), D = c.embed_dim, H = c.num_heads, d = c.head_dim();
    const Rec& qk = rec_.rec.at(SiteKind::MatmulQK);
    const Rec& av = rec_.rec.at(SiteKind::MatmulAV);
    const SitePlan* pqk = plan_of(SiteKind::MatmulQK);
    const SitePlan* pav = plan_of(SiteKind::MatmulAV);
    const OperandQuant none;
    const float scale = 1.0f / std::sqrt(float(d));
    const size_t TT = size_t(T) * T, TD = size_t(T) * d;
    // ∂L/∂Δ_h of Q, K, V per head, summed over the batch (per thread, then reduced in order).
    const int threads = omp_get_max_threads();
    std::vector<double> dstep(size_t(threads) * 3 * H, 0.0);
#pragma omp parallel
    {
      std::vector<float> ph(TT), pm(TT), vh(TD), vm(TD), qh(TD), qm(TD), kh(TD), km(TD), dO(TD), dP(TT), dVt(TD),
          dQ(TD), dK(TD), qd(TD), kd(TD), vd(TD);
      double* my_dstep = dstep.data() + size_t(omp_get_thread_num()) * 3 * H;
#pragma omp for schedule(static)
      for (int g = 0; g < b * H; ++g) {
        const int bi = g / H, hh = g % H;
        const float* P = av.x.data() + size_t(g) * TT;
        const Drop* drp = rec_.drop;
        const uint64_t gTT = uint64_t(g) * TT, gTD = uint64_t(g) * TD;
        dequantize_attention_operand(P, TT, pav ? pav->x : none, hh, ph.data(), pm.data(), SiteKind::MatmulAV, 0, gTT, drp);
        dequantize_attention_operand(av.w.data() + gTD, TD, pav ? pav->w : none, hh, vh.data(), vm.data(),
                                     SiteKind::MatmulAV, 1, gTD, drp, vd.data());
        dequantize_attention_operand(qk.x.data() + gTD, TD, pqk ? pqk->x : none, hh, qh.data(), qm.data(),
                                     SiteKind::MatmulQK, 0, gTD, drp, qd.data(), size_t(d));
        dequantize_attention_operand(qk.w.data() + gTD, TD, pqk ? pqk->w : none, hh, kh.data(), km.data(),
                                     SiteKind::MatmulQK, 1, gTD, drp, kd.data(), size_t(d));
        for (int t = 0; t < T; ++t)
          for (int j = 0; j < d; ++j)
            dO[size_t(t) * d + size_t(j)] = dctx[(size_t(bi) * T + size_t(t)) * D + size_t(hh) * d + size_t(j)];
        sgemm('N', 'N', T, T, d, dO.data(), d, vh.data(), T, dP.data(), T);   // dP̂ = dO · V̂ᵀ (vh: d × T)
        sgemm('T', 'N', d, T, T, dO.data(), d, ph.data(), T, dVt.data(), T);  // dV̂ᵀ = dOᵀ · P̂
        for (int t = 0; t < T; ++t) {  // through the softmax: dS = scale · P ∘ (dP − Σ_j dP_j P_j)
          float* dr = dP.data() + size_t(t) * T;
          const float* pr = P + size_t(t) * T;
          const float* mr = pm.data() + size_t(t) * T;
          double dot = 0;
          for (int j = 0; j < T; ++j) dot += double(dr[j] * mr[j]) * pr[j];
          for (int j = 0; j < T; ++j) dr[j] = float(scale * double(pr[j]) * (double(dr[j] * mr[j]) - dot));
        }
        sgemm('N', 'N', T, d, T, dP.data(), T, kh.data(), d, dQ.data(), d);  // dQ̂ = dS · K̂
        sgemm('T', 'N', T, d, T, dP.data(), T, qh.data(), d, dK.data(), d);  // dK̂ = dSᵀ · Q̂
        double sq = 0, sk = 0, sv = 0;
        for (int t = 0; t < T; ++t) {
          float* row = dqkv + (size_t(bi) * T + size_t(t)) * 3 * D + size_t(hh) * d;
          for (int j = 0; j < d; ++j) {
            const size_t i = size_t(t) * d + size_t(j), iv = size_t(j) * T + size_t(t);
            row[j] = dQ[i] * qm[i];
            row[D + j] = dK[i] * km[i];
            row[2 * D + j] = dVt[iv] * vm[iv];
            sq += double(dQ[i]) * qd[i];
            sk += double(dK[i]) * kd[i];
            sv += double(dVt[iv]) * vd[iv];
          }
        }
        my_dstep[hh] += sq;
        my_dstep[H + hh] += sk;
        my_dstep[2 * H + hh] += sv;
      }
    }
    for (auto* v : {&grads.dq_step, &grads.dk_step, &grads.dv_step}) v->assign(size_t(H), 0.0f);
    for (int hd = 0; hd < H; ++hd) {
      double s[3] = {0, 0, 0};
      for (int t = 0; t < threads; ++t)
        for (int o = 0; o < 3; ++o) s[o] += dstep[(size_t(t) * 3 + size_t(o)) * H + size_t(hd)];
      grads.dq_step[size_t(hd)] = float(s[0]);
      grads.dk_step[size_t(hd)] = float(s[1]);
      grads.dv_step[size_t(hd)] = float(s[2]);
    }
  }

  const ViTModel& m_;
  const QuantPlan& plan_;
  int block_;
  ViTForward fwd_;
  Recorder rec_;
  avector<float> out_, g_, xh_, mask_, dxh_;
  std::vector<float> w_;
};

// One linear site's trainable state: latent codes u (N × K) on its channel grid, Adam moments.
struct Param {
  SiteId id;
  int N = 0, K = 0;
  ChannelGrid grid;  // the grid in use (steps and offsets updated when they are trained)
  QRange range{0, 0};
  std::vector<float> u, mu, vu;
  std::vector<float> bias0, mb, vb;  // the bias correction at the start, its moments
  std::vector<int16_t> codes0;
  ChannelGrid grid0;                 // the method's grid
  bool has_offset = false;
  std::vector<float> ls, ms, vs;     // log step gain s_c, its moments
  std::vector<float> to, mo, vo;     // offset shift in units of Δ⁰_c, its moments
  bool train_clip = false;           // the input's per-token clip ratio α (--recon-act-lr)
  float clip0 = 1.0f, lc = 0, mc = 0, vc = 0;  // α at the start, log gain, its moments
};

// One Adam update of x with gradient g (bias-corrected by c1, c2).
constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8;
inline void adam(float& x, float& m, float& v, double g, double lr, double c1, double c2) {
  m = float(kBeta1 * m + (1 - kBeta1) * g);
  v = float(kBeta2 * v + (1 - kBeta2) * g * g);
  x -= float(lr * (m / c1) / (std::sqrt(v / c2) + kEps));
}

// Writes grid g of p's site (steps, and offsets if the site has them) into its plan entry.
void write_grid(const Param& p, const ChannelGrid& g, SitePlan& sp) {
  sp.w.channel_scales = g.step;
  sp.w.scale = *std::max_element(g.step.begin(), g.step.end());
  if (p.has_offset) sp.weight_offset = g.offset;
}

// Trains the channel grid of p (--recon-step-lr) from ∂L/∂ŵ and writes it into the plan entry.
void update_grid(Param& p, const std::vector<float>& dw, const std::vector<int16_t>& q, double lr, double c1,
                 double c2, SitePlan& sp) {
  for (int ch = 0; ch < p.N; ++ch) {
    const size_t c = size_t(ch);
    double gq = 0, g1 = 0;
    for (int k = 0; k < p.K; ++k) {
      const size_t i = c * p.K + size_t(k);
      gq += double(dw[i]) * q[i];
      g1 += double(dw[i]);
    }
    adam(p.ls[c], p.ms[c], p.vs[c], gq * p.grid.step[c], lr, c1, c2);
    p.grid.step[c] = float(double(p.grid0.step[c]) * std::exp(double(p.ls[c])));
    if (p.has_offset) {
      adam(p.to[c], p.mo[c], p.vo[c], g1 * p.grid0.step[c], lr, c1, c2);
      p.grid.offset[c] = float(double(p.grid0.offset[c]) + double(p.to[c]) * p.grid0.step[c]);
    }
  }
  write_grid(p, p.grid, sp);
}

// The steps of one attention operand (Q, K or V) trained with --recon-act-lr: a log gain per head
// (one in all if the operand has a per-tensor step), Adam moments.
struct HeadSteps {
  SiteId id;
  bool is_w = false;              // the operand: x (Q) or w (K of matmul_qk, V of matmul_av)
  const std::vector<float> BlockGrads::*grad = nullptr;
  OperandQuant q0;                // the method's steps
  std::vector<float> ls, m, v;
};

OperandQuant& operand_of(QuantPlan& plan, const HeadSteps& hs) {
  SitePlan& sp = plan.sites.at(hs.id.name());
  return hs.is_w ? sp.w : sp.x;
}

// One Adam step of the log gains from ∂L/∂Δ_h; writes the steps into the plan entry.
void update_head_steps(HeadSteps& hs, const BlockGrads& g, double lr, double c1, double c2, QuantPlan& plan) {
  const std::vector<float>& dstep = g.*hs.grad;
  OperandQuant& q = operand_of(plan, hs);
  if (hs.q0.per_head()) {
    for (size_t h = 0; h < hs.ls.size(); ++h) {
      adam(hs.ls[h], hs.m[h], hs.v[h], double(dstep[h]) * q.head_scales[h], lr, c1, c2);
      q.head_scales[h] = float(double(hs.q0.head_scales[h]) * std::exp(double(hs.ls[h])));
    }
    q.scale = *std::max_element(q.head_scales.begin(), q.head_scales.end());
  } else {
    double sum = 0;
    for (float x : dstep) sum += x;
    adam(hs.ls[0], hs.m[0], hs.v[0], sum * q.scale, lr, c1, c2);
    q.scale = float(double(hs.q0.scale) * std::exp(double(hs.ls[0])));
  }
}

void set_codes(const Param& p, SitePlan& sp) {
  std::vector<int16_t> q(p.u.size());
  for (size_t i = 0; i < q.size(); ++i)
    q[i] = int16_t(std::min(std::max(round_half_even(p.u[i]), float(p.range.lo)), float(p.range.hi)));
  sp.weight_codes = std::move(q);
}

// mean((block(x) − y)²) over all images, in batches of `batch`.
double full_loss(BlockTrainer& tr, const float* x, const float* y, const float* token_w, int tokens, int n,
                 size_t per_image, int batch) {
  double s = 0;
  for (int i0 = 0; i0 < n; i0 += batch) {
    const int b = std::min(batch, n - i0);
    s += tr.run(x + size_t(i0) * per_image, y + size_t(i0) * per_image, b, nullptr, nullptr,
                token_w ? token_w + size_t(i0) * size_t(tokens) : nullptr) *
         b;
  }
  return s / n;
}

// The linear sites of the block whose per-channel codes the reconstruction trains, each switched
// to explicit codes in the plan, with its Adam state and what a revert restores.
std::vector<Param> trainable_sites(const ViTModel& model, PlanSimulator& sim, int block, QuantPlan& plan,
                                   const ReconOptions& opt) {
  std::vector<Param> params;
  for (SiteKind k : kLinearKinds) {
    const SiteId id{k, block};
    auto it = plan.sites.find(id.name());
    if (it == plan.sites.end() || !it->second.w.quantized() || !it->second.w.channel_bits.empty()) continue;
    SitePlan& sp = it->second;
    const LinearWeights& lw = *site_weights(model, id);
    Param p;
    p.id = id;
    p.N = lw.out();
    p.K = lw.in();
    if (!plan_channel_grid(sp, p.N, &p.grid)) continue;
    p.codes0.resize(size_t(p.N) * p.K);
    site_weight_codes(lw.w.ptr(), p.N, p.K, sp, p.codes0.data());
    p.range = qrange(p.grid.bits);
    set_plan_weight_codes(sp, p.grid, p.codes0);  // per-channel form, explicit codes
    p.grid0 = p.grid;
    p.has_offset = !sp.weight_offset.empty();
    for (auto* v : {&p.ls, &p.ms, &p.vs, &p.to, &p.mo, &p.vo}) v->assign(size_t(p.N), 0.0f);
    sim.forget(id);
    p.u.assign(p.codes0.begin(), p.codes0.end());
    p.mu.assign(p.u.size(), 0.0f);
    p.vu.assign(p.u.size(), 0.0f);
    p.bias0 = sp.bias_correction;
    if (sp.bias_correction.empty()) sp.bias_correction.assign(size_t(p.N), 0.0f);
    p.mb.assign(size_t(p.N), 0.0f);
    p.vb.assign(size_t(p.N), 0.0f);
    p.train_clip = opt.act_lr > 0 && sp.x.quantized() && sp.x.per_token;
    p.clip0 = sp.x.token_clip;
    params.push_back(std::move(p));
  }
  return params;
}

// With --recon-act-lr: the per-head (or per-tensor) steps of Q, K and V the reconstruction trains.
std::vector<HeadSteps> trainable_head_steps(int block, const QuantPlan& plan, const ReconOptions& opt) {
  std::vector<HeadSteps> heads;
  if (opt.act_lr <= 0) return heads;
  for (auto [kind, is_w, grad] : {std::tuple{SiteKind::MatmulQK, false, &BlockGrads::dq_step},
                                  {SiteKind::MatmulQK, true, &BlockGrads::dk_step},
                                  {SiteKind::MatmulAV, true, &BlockGrads::dv_step}}) {
    const SiteId id{kind, block};
    const auto it = plan.sites.find(id.name());
    if (it == plan.sites.end()) continue;
    const OperandQuant& q = is_w ? it->second.w : it->second.x;
    if (!q.quantized() || is_level_grid(q.grid) || !(q.scale > 0)) continue;
    HeadSteps hs{id, is_w, grad, q, {}, {}, {}};
    const size_t count = q.per_head() ? q.head_scales.size() : 1;
    for (auto* v : {&hs.ls, &hs.m, &hs.v}) v->assign(count, 0.0f);
    heads.push_back(std::move(hs));
  }
  return heads;
}

// One Adam step of a site's latent codes (straight through the rounding), and with their options
// its grid, input clip ratio and bias correction; the plan gets the new codes.
void update_site(Param& p, const BlockGrads& grads, const ReconOptions& opt, double cosine, double c1, double c2,
                 QuantPlan& plan, PlanSimulator& sim) {
  const std::string name = p.id.name();
  const size_t gi = size_t(std::find(grads.sites.begin(), grads.sites.end(), name) - grads.sites.begin());
  if (gi >= grads.sites.size()) fail(ErrorKind::Internal, "reconstruction: no gradient for ", name);
  const std::vector<float>& dw = grads.dw[gi];
  const double lr = opt.lr * cosine;
  for (int ch = 0; ch < p.N; ++ch) {
    const float step = p.grid.step[size_t(ch)];
    for (int k = 0; k < p.K; ++k) {
      const size_t i = size_t(ch) * p.K + size_t(k);
      // Straight through the rounding, not past the grid's ends.
      const bool clipped = (p.u[i] <= float(p.range.lo) && dw[i] > 0) || (p.u[i] >= float(p.range.hi) && dw[i] < 0);
      adam(p.u[i], p.mu[i], p.vu[i], clipped ? 0.0 : double(dw[i]) * step, lr, c1, c2);
    }
  }
  SitePlan& sp = plan.sites.at(name);
  // The grid's gradient is taken at the codes this step's forward used.
  if (opt.step_lr > 0) update_grid(p, dw, sp.weight_codes, opt.step_lr * cosine, c1, c2, sp);
  set_codes(p, sp);
  sim.forget(p.id);
  if (p.train_clip) {  // α = α⁰·e^{l} ≤ 1
    adam(p.lc, p.mc, p.vc, grads.dlog_clip[gi], opt.act_lr * cosine, c1, c2);
    p.lc = std::min(p.lc, -std::log(p.clip0));
    sp.x.token_clip = std::min(1.0f, float(double(p.clip0) * std::exp(double(p.lc))));
  }
  if (opt.bias_lr > 0) {
    const std::vector<float>& db = grads.db[gi];
    const double blr = opt.bias_lr * cosine;
    for (int ch = 0; ch < p.N; ++ch)
      adam(sp.bias_correction[size_t(ch)], p.mb[size_t(ch)], p.vb[size_t(ch)], db[size_t(ch)], blr, c1, c2);
  }
}

// The block's plan as it was before the reconstruction.
void restore_sites(const std::vector<Param>& params, const std::vector<HeadSteps>& heads, QuantPlan& plan,
                   PlanSimulator& sim) {
  for (const Param& p : params) {
    SitePlan& sp = plan.sites.at(p.id.name());
    write_grid(p, p.grid0, sp);
    sp.weight_codes = p.codes0;
    sp.bias_correction = p.bias0;
    sp.x.token_clip = p.clip0;
    sim.forget(p.id);
  }
  for (const HeadSteps& hs : heads) operand_of(plan, hs) = hs.q0;
}

// The share of the trained sites' codes that differ from where they started.
double codes_changed(const std::vector<Param>& params, const QuantPlan& plan) {
  size_t changed = 0, total = 0;
  for (const Param& p : params) {
    const std::vector<int16_t>& q = plan.sites.at(p.id.name()).weight_codes;
    for (size_t i = 0; i < q.size(); ++i) changed += q[i] != p.codes0[i];
    total += q.size();
  }
  return total ? double(changed) / double(total) : 0.0;
}

}  // namespace

void dequantized_weight(const LinearWeights& lw, const SitePlan* sp, std::vector<float>& w) {
  const int N = lw.out(), K = lw.in();
  w.resize(size_t(N) * K);
  if (!sp || !sp->w.quantized()) {
    std::copy(lw.w.data.begin(), lw.w.data.end(), w.begin());
    return;
  }
  std::vector<int16_t> codes(size_t(N) * K);
  site_weight_codes(lw.w.ptr(), N, K, *sp, codes.data());
  for (int c = 0; c < N; ++c) {
    const float d = sp->w.per_channel() ? sp->w.channel_scales[size_t(c)] : sp->w.scale;
    const float o = sp->weight_offset.empty() ? 0.0f : sp->weight_offset[size_t(c)];
    for (int k = 0; k < K; ++k) w[size_t(c) * K + size_t(k)] = d * float(codes[size_t(c) * K + size_t(k)]) + o;
  }
}

double block_loss_and_grads(const ViTModel& model, PlanSimulator& sim, const QuantPlan& plan, int block,
                            const float* x, const float* target, int b, BlockGrads* grads, double drop,
                            double head_share, const float* token_weight, double fisher) {
  BlockTrainer tr(model, sim, plan, block);
  tr.clip_grads = true;
  tr.head_share = head_share;
  tr.fisher = fisher;
  const Drop d{1, drop};
  return tr.run(x, target, b, grads, &d, token_weight);
}

nlohmann::ordered_json reconstruct_block(StagedForward& fwd, PlanSimulator& sim, int block, const float* x_in,
                                         const float* y_target, QuantPlan& plan, const ReconOptions& opt,
                                         const std::function<void(const ReconProgress&)>& progress,
                                         const float* token_weight) {
  const auto t0 = std::chrono::steady_clock::now();
  const ViTModel& model = fwd.model();
  const int n = fwd.images();
  const size_t per = fwd.stream_floats();
  std::vector<Param> params = trainable_sites(model, sim, block, plan, opt);
  if (params.empty()) return {{"skipped", "no linear site of the block has per-channel codes to train"}};
  std::vector<HeadSteps> heads = trainable_head_steps(block, plan, opt);

  BlockTrainer tr(model, sim, plan, block);
  tr.clip_grads = opt.act_lr > 0;
  if (block == model.cfg.depth - 1) tr.head_share = opt.head_share;
  if (opt.fisher > 0) {
    if (!token_weight) fail(ErrorKind::Internal, "reconstruction: --recon-fisher without token weights");
    tr.fisher = opt.fisher;
  }
  const int T = model.cfg.tokens();
  const float* tw = opt.fisher > 0 ? token_weight : nullptr;
  const int eval_batch = std::max(1, fwd.batch());
  const double before = full_loss(tr, x_in, y_target, tw, T, n, per, eval_batch);
  std::mt19937_64 rng(opt.seed * 1000003ull + uint64_t(block));
  std::vector<int> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  const int b = std::max(1, std::min(opt.batch, n));
  avector<float> xb(size_t(b) * per), yb(size_t(b) * per), twb(tw ? size_t(b) * T : 0);
  BlockGrads grads;
  double running = 0;
  size_t cursor = size_t(n);
  for (int it = 0; it < opt.iters; ++it) {
    if (cursor + size_t(b) > size_t(n)) {  // a new pass over the images in a new random order
      std::shuffle(order.begin(), order.end(), rng);
      cursor = 0;
    }
    for (int i = 0; i < b; ++i) {
      const size_t src = size_t(order[cursor + size_t(i)]) * per;
      std::copy_n(x_in + src, per, xb.data() + size_t(i) * per);
      std::copy_n(y_target + src, per, yb.data() + size_t(i) * per);
      if (tw) std::copy_n(tw + size_t(order[cursor + size_t(i)]) * T, T, twb.data() + size_t(i) * T);
    }
    cursor += size_t(b);
    const Drop drop{rng(), opt.drop};
    const double loss = tr.run(xb.data(), yb.data(), b, &grads, &drop, tw ? twb.data() : nullptr);
    running = it == 0 ? loss : 0.95 * running + 0.05 * loss;
    const double cosine = 0.5 * (1.0 + std::cos(M_PI * double(it) / double(opt.iters)));
    const double c1 = 1.0 - std::pow(kBeta1, it + 1), c2 = 1.0 - std::pow(kBeta2, it + 1);
    for (Param& p : params) update_site(p, grads, opt, cosine, c1, c2, plan, sim);
    for (HeadSteps& hs : heads) update_head_steps(hs, grads, opt.act_lr * cosine, c1, c2, plan);
    if (progress && ((it + 1) % 10 == 0 || it + 1 == opt.iters)) progress({block, it + 1, opt.iters, running});
  }
  double after = full_loss(tr, x_in, y_target, tw, T, n, per, eval_batch);
  double changed = codes_changed(params, plan);
  const bool revert = !(after < before);  // never leave the block worse on its own images
  if (revert) {
    restore_sites(params, heads, plan, sim);
    after = before;
    changed = 0;
  }
  nlohmann::ordered_json notes;
  notes["loss_before"] = before;
  notes["loss_after"] = after;
  notes["reverted"] = revert;
  notes["codes_changed"] = changed;
  notes["iters"] = opt.iters;
  notes["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return notes;
}

}  // namespace vitq
