#include "runtime/int_vit_forward.h"

#include <dnnl.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>

#include "core/error.h"
#include "engine/gemm_f32.h"
#include "engine/kernels.h"
#include "engine/packed_linear_f32.h"
#include "engine/site.h"
#include "numerics/attention_gemm_amx.h"
#include "numerics/hadamard.h"
#include "numerics/int8_kernels.h"
#include "numerics/quantizer.h"
#include "numerics/softmax_table.h"
#include "numerics/table_lookup.h"
#include "quant/gelu_table.h"
#include "quant/simulate.h"

namespace vitq {
namespace {

// The input of a linear site: u8 code planes (quantized site; per-token inputs also the step and
// zero point of every row, or of every channel group of a row: its consumer's token_groups() per
// row) or floats (FP32 site).
struct ActBuf {
  avector<uint8_t> u8;
  avector<float> f32;
  std::vector<RowQuant> rq;
  size_t plane_stride = 0;

  void reserve(size_t elems, size_t rows, bool codes, bool floats, size_t groups = 1) {
    plane_stride = elems;
    if (codes) {
      u8.resize(2 * elems);
      rq.resize(rows * groups);
    }
    if (floats) f32.resize(elems);
  }
};

// The B-side (K or V) encoding of an attention site.
struct BQuant {
  QRange range{0, 0};
  int planes = 1;
};

// An attention site: per head h, the A side's step a_delta[h], the B side's b_delta[h] and the
// output scale[h] = Δa·Δb; matmul_qk with Q (a_token) or K (b_token) per token instead: each row
// of Q / K of a head its own symmetric step (plan.h), kept in qstep / kstep beside the codes.
struct AttnSite {
  bool on = false;
  bool a_token = false, b_token = false;
  ActQuant a;                   // Q (matmul_qk) or P (matmul_av)
  BQuant b;                     // K or V
  std::vector<float> a_delta, b_delta, scale;
  const float* bias = nullptr;  // heads x N (bias correction), or null
  ActQuant a_of(int h) const {
    ActQuant q = a;
    q.delta = a_delta[size_t(h)];
    return q;
  }
};

// A block's GELU table (plan.h: GeluTable): the GELU outputs of the table's grid, and — when
// fc2's input is one per-tensor u8 plane and nothing comes between (no MLP rotation) — fc2's A
// codes of those outputs, so that the fc1 epilogue writes fc2's input directly; when fc2's input
// is per token (one plane, no rotation), `token`: the epilogue quantizes the looked-up values per
// row without writing them as floats (numerics/table_lookup.h: table_lookup_token_u8).
struct GeluLut {
  bool on = false, direct = false, token = false;
  int valley = -1;  // table_valley of the values
  float delta = 1.0f;
  QRange range{0, 0};
  std::vector<float> values;
  std::vector<int32_t> codes;
};

struct Block {
  std::unique_ptr<IntLinear> qkv, proj, fc1, fc2;
  GeluLut gelu;
  AttnSite qk, av;
  bool amx = false;  // both attention GEMMs on AMX (numerics/attention_gemm_amx.h): 8-bit operands, one plane each
  std::unique_ptr<PackedLinearF32> comp;  // error compensation (plan.h: BlockCompensation), FP32; or null
};

struct Scratch {
  avector<int32_t> acc;     // linear tile accumulators
  avector<float> row;       // one output row
  avector<int32_t> sacc;    // attention scores, int32 (plane products)
  avector<float> srows;     // attention scores / probabilities, float
  avector<uint8_t> pcodes;  // probabilities as A codes (2 planes)
  avector<int32_t> oacc;    // P·V int32
  avector<float> otile;     // P·V rows of a task, before their per-tensor codes (proj input)
  avector<float> kcols;     // K's step per key (T): a head's step repeated when only Q is per token
  // The AMX path: Kᵀ and V of one head packed, the scores' int32 tile grid, P's codes (rows
  // n_pad_k(T) bytes apart, zero past T) and P·V's int32 rows.
  avector<int32_t> amx_kt, amx_s, amx_o;
  avector<int8_t> amx_v;
  avector<uint8_t> amx_p;
};

// Row r (y, n floats) of a linear input buffer as its consumer reads it: its A codes (and, if
// per-token, the steps and zero points of its G channel groups at buf.rq[r·G]) if it is
// quantized, else the floats.
void emit_row(const ActQuant& aq, const float* y, size_t n, ActBuf& buf, size_t r) {
  // Only the buffer the consumer reads is allocated (offsetting the other's null data() is UB).
  if (aq.on) emit_a_codes(aq, y, n, buf.u8.data() + r * n, buf.plane_stride, buf.rq.data() + r * size_t(aq.groups(n)));
  else std::copy(y, y + n, buf.f32.data() + r * n);
}

int32_t emit_b(const BQuant& bq, float delta, const float* y, size_t n, int8_t* s8, size_t plane_stride) {
  return bq.planes == 1 ? quantize_b_s8(y, s8, n, delta, bq.range)
                        : quantize_b_s8_split(y, s8, s8 + plane_stride, n, delta, bq.range);
}

AttnSite attention_site(const QuantizedViT& q, const SiteId& id) {
  AttnSite s;
  const SitePlan* sp = q.plan.find(id);
  if (!sp || !sp->x.quantized()) return s;
  s.on = true;
  s.a = ActQuant::of(sp->x);
  s.a_token = sp->x.per_token;  // the symmetric rows of Q: the u8 shift of a signed grid, no TokenQuant
  s.b_token = sp->w.per_token;
  if (s.a_token) s.a.per_token = false, s.a.zp = a_zero_point(sp->x.bits, sp->x.grid);
  s.b = {sp->w.range(), operand_planes(sp->w.bits)};
  for (int h = 0; h < q.cfg.num_heads; ++h) {
    s.a_delta.push_back(sp->x.head_scale(h));
    s.b_delta.push_back(sp->w.head_scale(h));
    s.scale.push_back(s.a_delta.back() * s.b_delta.back());
  }
  if (const std::vector<float>* b = q.attention_bias_of(id)) s.bias = b->data();
  return s;
}

std::unique_ptr<IntLinear> make_linear(const QuantizedViT& q, const SiteId& id) {
  const SitePlan* sp = q.plan.find(id);
  return std::make_unique<IntLinear>(q.linear(id), sp ? sp->x : OperandQuant{});
}

}  // namespace

struct IntViTForward::Impl {
  const QuantizedViT& q;
  std::unique_ptr<IntLinear> patch, head, head_dist;
  std::vector<Block> blocks;
  std::unique_ptr<U8S8Matmul> qk_mm, av_mm;  // shared by all blocks (same shapes)
  std::unique_ptr<SoftmaxExpTable> softmax_table;  // the plan's (plan.h: SoftmaxTable), or null
  bool any_fp_attention = false, any_int_attention = false, any_amx_attention = false;

  int capacity = 0, threads = 0;
  avector<float> x, comp_out, tok, logits2, fp_out;
  ActBuf patches, buf_a, buf_b, head_in;
  avector<uint8_t> qc;
  avector<int8_t> kc, vc;
  avector<int32_t> compk;
  avector<float> qstep, kstep;  // per-token Q / K steps of matmul_qk, per (image, head, token)
  avector<float> qf, kf, vf;
  size_t attn_ps = 0;
  std::vector<Scratch> scratch;

  int batch_now = 0;  // images of the forward being run
  enum Stage { kEmbed, kQkv, kAttention, kProj, kFc1, kFc2, kHead, kCompensation, kStages };
  bool profiling = false;
  std::array<double, kStages> stage_s{};
  std::chrono::steady_clock::time_point t_last;
  void mark(Stage s) {
    if (!profiling) return;
    const auto now = std::chrono::steady_clock::now();
    stage_s[s] += std::chrono::duration<double>(now - t_last).count();
    t_last = now;
  }

  explicit Impl(const QuantizedViT& qm) : q(qm) {
    const ViTConfig& c = q.cfg;
    softmax_table = plan_softmax_table(q.plan);
    patch = make_linear(q, {SiteKind::PatchEmbed, -1});
    head = make_linear(q, {SiteKind::Head, -1});
    if (c.distilled) head_dist = make_linear(q, {SiteKind::HeadDist, -1});
    for (int i = 0; i < c.depth; ++i) {
      Block b;
      b.qkv = make_linear(q, {SiteKind::Qkv, i});
      b.proj = make_linear(q, {SiteKind::Proj, i});
      b.fc1 = make_linear(q, {SiteKind::Fc1, i});
      b.fc2 = make_linear(q, {SiteKind::Fc2, i});
      b.qk = attention_site(q, {SiteKind::MatmulQK, i});
      b.av = attention_site(q, {SiteKind::MatmulAV, i});
      b.av.a.zp = 0;  // softmax probabilities are >= 0: their codes need no shift to be u8
      for (const AttnSite* s : {&b.qk, &b.av}) (s->on ? any_int_attention : any_fp_attention) = true;
      b.amx = amx_int8_available() && amx_attention_head(c.head_dim()) && b.qk.on && b.av.on && !b.qk.a_token &&
              !b.qk.b_token && b.qk.a.planes == 1 &&
              b.qk.b.planes == 1 && b.av.a.planes == 1 && b.av.b.planes == 1;
      any_amx_attention = any_amx_attention || b.amx;
      auto gt = q.plan.gelu_tables.find(SiteId{SiteKind::Fc1, i}.name());
      if (gt != q.plan.gelu_tables.end()) {
        GeluLut& g = b.gelu;
        g.on = true;
        g.delta = gt->second.scale;
        g.range = gt->second.range();
        g.values = gelu_table_values(gt->second);
        const ActQuant& f2 = b.fc2->input();
        g.direct = f2.on && !f2.per_token && !f2.levels && f2.planes == 1 && q.mlp_rotation_signs.empty();
        g.token = f2.on && f2.per_token && f2.groups(size_t(c.mlp_hidden)) == 1 && !f2.levels && f2.planes == 1 &&
                  q.mlp_rotation_signs.empty();
        g.valley = table_valley(g.values.data(), g.values.size());
        if (g.direct) {
          std::vector<uint8_t> u(g.values.size());
          emit_a_codes(f2, g.values.data(), u.size(), u.data(), u.size(), nullptr);
          g.codes.assign(u.begin(), u.end());
        }
      }
      auto ci = q.plan.compensation.find(i);
      if (ci != q.plan.compensation.end())
        b.comp = std::make_unique<PackedLinearF32>(c.embed_dim, c.embed_dim, ci->second.w.data(), ci->second.b.data());
      blocks.push_back(std::move(b));
    }
    const int T = c.tokens(), d = c.head_dim();
    if (any_int_attention) {
      qk_mm = std::make_unique<U8S8Matmul>(T, d, BLayout::NK);
      av_mm = std::make_unique<U8S8Matmul>(d, T, BLayout::KN);
    }
  }

  // Rows per tile of a linear site with M rows: at least four tiles per thread (dynamic
  // scheduling balances them), at most kMaxTileRows rows (their int32 results stay in L2), and a
  // multiple of 16 rows — oneDNN's AMX int8 kernels run a row count with a remainder modulo 16
  // up to 4x slower than the next multiple of 16 (measured: 61 x 768 x 192 94 µs, 64 rows 22 µs
  // on one core of a Xeon with amx_int8), and the AVX-512 VNNI kernels do not mind.
  static constexpr int kMaxTileRows = 64, kTileRowAlign = 16;
  int tile_rows(int M) const {
    const int tiles = std::max(4 * threads, (M + kMaxTileRows - 1) / kMaxTileRows);
    const int rows = (M + tiles - 1) / tiles;
    return std::min(M, (rows + kTileRowAlign - 1) / kTileRowAlign * kTileRowAlign);
  }
  // Row blocks per (image, head) of attention: enough tasks to balance the threads.
  int attn_row_blocks(int batch) const {
    const int gh = batch * q.cfg.num_heads;
    return std::max(1, (2 * threads + gh - 1) / gh);
  }

  void reserve(int batch) {
    const int t = omp_get_max_threads();
    if (batch <= capacity && t == threads) return;
    threads = t;
    capacity = std::max(batch, capacity);
    const ViTConfig& c = q.cfg;
    const size_t B = size_t(capacity), T = size_t(c.tokens()), D = size_t(c.embed_dim), F = size_t(c.mlp_hidden);
    const size_t NP = size_t(c.num_patches()), PD = size_t(c.patch_dim()), H = size_t(c.num_heads);
    const size_t d = size_t(c.head_dim()), NC = size_t(c.num_classes);
    x.resize(B * T * D);
    comp_out.resize(B * T * D);
    patches.reserve(B * NP * PD, B * NP, patch->quantized(), !patch->quantized(), size_t(patch->token_groups()));
    bool a_codes = false, a_f32 = false, b_codes = false, b_f32 = false;
    for (const Block& b : blocks) {
      for (const IntLinear* l : {b.qkv.get(), b.fc1.get()}) (l->quantized() ? a_codes : a_f32) = true;
      for (const IntLinear* l : {b.proj.get(), b.fc2.get()}) (l->quantized() ? b_codes : b_f32) = true;
    }
    // A per-token proj input is quantized once a row is whole (all heads): the float rows first.
    for (const Block& b : blocks) b_f32 = b_f32 || (b.proj->quantized() && b.proj->input().per_token);
    size_t ga = 1, gb = 1;  // channel groups per row of the per-token inputs
    for (const Block& b : blocks) {
      ga = std::max({ga, size_t(b.qkv->token_groups()), size_t(b.fc1->token_groups())});
      gb = std::max({gb, size_t(b.proj->token_groups()), size_t(b.fc2->token_groups())});
    }
    buf_a.reserve(B * T * D, B * T, a_codes, a_f32, ga);
    buf_b.reserve(B * T * std::max(D, F), B * T, b_codes, b_f32, gb);
    const bool hq = head->quantized() || (head_dist && head_dist->quantized());
    const bool hf = !head->quantized() || (head_dist && !head_dist->quantized());
    head_in.reserve(2 * B * D, 2 * B, hq, hf,
                    size_t(std::max(head->token_groups(), head_dist ? head_dist->token_groups() : 1)));
    tok.resize(2 * B * D);
    logits2.resize(B * NC);
    attn_ps = B * H * T * d;
    if (any_int_attention) {
      qc.resize(2 * attn_ps);
      kc.resize(2 * attn_ps);
      vc.resize(2 * attn_ps);
      compk.resize(B * H * T);
      qstep.resize(B * H * T);
      kstep.resize(B * H * T);
    }
    if (any_fp_attention) {
      qf.resize(attn_ps);
      kf.resize(attn_ps);
      vf.resize(attn_ps);
    }
    // Per-thread scratch for the largest tile of any site at any batch up to the capacity (a
    // tile never has more than kMaxTileRows rows, whatever M).
    size_t acc = 0, fp = 0, row = std::max({3 * D, F, NC, D, PD});
    for (int M : {int(B * T), int(B * NP), int(B)}) {
      const int mb = std::min(M, kMaxTileRows);
      auto need = [&](const IntLinear* l) {
        if (!l) return;
        if (l->quantized()) acc = std::max(acc, l->acc_elems(mb));
        else fp = std::max(fp, size_t(M) * size_t(l->N()));
      };
      need(patch.get());
      need(head.get());
      need(head_dist.get());
      for (const Block& b : blocks)
        for (const IntLinear* l : {b.qkv.get(), b.proj.get(), b.fc1.get(), b.fc2.get()}) need(l);
    }
    const size_t rows = (T + size_t(attn_row_blocks(int(B))) - 1) / size_t(attn_row_blocks(int(B)));
    const size_t arows = std::max(rows, T);  // (a row block is at most T rows)
    fp_out.resize(fp);
    scratch.assign(size_t(threads), Scratch{});
    for (Scratch& s : scratch) {
      s.acc.resize(acc);
      s.row.resize(row);
      s.sacc.resize(4 * arows * T);
      s.srows.resize(arows * T);
      s.pcodes.resize(2 * arows * T);
      s.oacc.resize(4 * arows * d);
      s.otile.resize(arows * d);
      s.kcols.resize(T);
      if (any_amx_attention) {
        const size_t tp = size_t(amx_pad16(int(T))), mp = size_t(amx_pad16(int(arows))), kp = size_t(n_pad_k(int(T)));
        s.amx_kt.resize(d / 4 * tp);
        s.amx_v.resize(kp * d);
        s.amx_s.resize(mp * tp);
        s.amx_o.resize(mp * d);
        s.amx_p.assign(mp * kp, 0);
      }
    }
  }

  // Runs linear site L on rows [row0, row0 + M) of `in`; consume(row, y) gets each output row (N
  // floats, with the bias; y may be modified; row counted from row0).
  template <class Consume>
  void linear(const IntLinear& L, int M, const ActBuf& in, size_t row0, Consume&& consume) {
    const int K = L.K(), N = L.N();
    const size_t plane_stride = in.plane_stride;
    // One of the two is allocated (offsetting the other's null data() would be UB).
    const uint8_t* in_u8 = in.u8.empty() ? nullptr : in.u8.data() + row0 * size_t(K);
    const float* in_f32 = in.f32.empty() ? nullptr : in.f32.data() + row0 * size_t(K);
    const size_t G = size_t(L.token_groups());
    const RowQuant* in_rq = in.rq.empty() ? nullptr : in.rq.data() + row0 * G;
    if (!L.quantized()) {
      // FP32 site: oneDNN GEMMs image by image, as the FP32 forward does it (engine/site.h:
      // image_rows; a float GEMM's rounding may depend on its row count), then the row epilogues.
      for_row_chunks(M, rows_per_image(M, batch_now), [&](int r0, int rows) {
        L.gemm_tile_f32(rows, in_f32 + size_t(r0) * size_t(K), fp_out.data() + size_t(r0) * size_t(N));
      });
#pragma omp parallel for schedule(static)
      for (int r = 0; r < M; ++r) {
        float* y = fp_out.data() + size_t(r) * size_t(N);
        L.epilogue_row_f32(y);
        consume(r, y);
      }
      return;
    }
    const int mb = tile_rows(M), tiles = (M + mb - 1) / mb;
    // Dynamic: a thread slowed down (another process on its core) takes fewer tiles. Which thread
    // computes a tile does not change its result.
#pragma omp parallel for schedule(dynamic, 1)
    for (int t = 0; t < tiles; ++t) {
      Scratch& s = scratch[size_t(omp_get_thread_num())];
      const int r0 = t * mb, rows = std::min(mb, M - r0);
      const uint8_t* a = in_u8 + size_t(r0) * size_t(K);
      L.gemm_tile(rows, a, plane_stride, s.acc.data());
      for (int r = 0; r < rows; ++r) {
        L.epilogue_row(s.acc.data(), rows, r, a, plane_stride, s.row.data(), in_rq ? in_rq + size_t(r0 + r) * G : nullptr);
        consume(r0 + r, s.row.data());
      }
    }
  }

  // LayerNorm of residual row r (of x), then the input of `next` (row r of buf).
  void ln_emit(const LayerNormWeights& ln, const float* xr, const IntLinear& next, ActBuf& buf, size_t r,
               float* tmp) const {
    const size_t D = size_t(q.cfg.embed_dim);
    layernorm_rows(xr, tmp, 1, D, ln.gamma.ptr(), ln.beta.ptr(), q.cfg.ln_eps);
    emit_row(next.input(), tmp, D, buf, r);
  }

  void embed(const float* images, int batch) {
    const ViTConfig& c = q.cfg;
    const int C = c.in_chans, S = c.img_size, P = c.patch_size, G = c.grid(), NP = c.num_patches();
    const int D = c.embed_dim, T = c.tokens(), npre = c.num_prefix_tokens(), PD = c.patch_dim();
    const ActQuant& pa = patch->input();
#pragma omp parallel for schedule(static)
    for (int bp = 0; bp < batch * NP; ++bp) {
      float* row = scratch[size_t(omp_get_thread_num())].row.data();
      const int b = bp / NP, p = bp % NP, gy = p / G, gx = p % G;
      const float* img = images + size_t(b) * size_t(C) * S * S;
      for (int ch = 0; ch < C; ++ch)
        for (int ky = 0; ky < P; ++ky) {
          const float* src = img + (size_t(ch) * S + size_t(gy * P + ky)) * S + size_t(gx * P);
          std::copy(src, src + P, row + (ch * P + ky) * P);
        }
      emit_row(pa, row, size_t(PD), patches, size_t(bp));
    }
    const float* pos = q.pos_embed.ptr();
    const IntLinear& qkv0 = *blocks[0].qkv;
    linear(*patch, batch * NP, patches, 0, [&](int r, float* y) {
      const int b = r / NP, t = npre + r % NP;
      const size_t xr = size_t(b) * T + size_t(t);
      float* dst = x.data() + xr * D;
      const float* pr = pos + size_t(t) * D;
      for (int j = 0; j < D; ++j) dst[j] = y[j] + pr[j];
      ln_emit(q.norm1[0], dst, qkv0, buf_a, xr, y);
    });
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < batch * npre; ++bt) {
      const int b = bt / npre, t = bt % npre;
      const size_t xr = size_t(b) * T + size_t(t);
      float* dst = x.data() + xr * D;
      const float* src = t == 0 ? q.cls_token.ptr() : q.dist_token.ptr();
      const float* pr = pos + size_t(t) * D;
      for (int j = 0; j < D; ++j) dst[j] = src[j] + pr[j];
      ln_emit(q.norm1[0], dst, qkv0, buf_a, xr, scratch[size_t(omp_get_thread_num())].row.data());
    }
  }

  // Σ_p Σ_q acc_pq << (8p + 7q) of one row of a product split into P × Q code planes (blk: the
  // distance between planes' accumulators), minus comp (if given), in float.
  static void combine_planes_row(const int32_t* acc, int P, int Q, size_t blk, int n_cols, const int32_t* comp,
                                 float* out) {
    if (P == 2 && Q == 1) {  // 16-bit A codes (level grids of the softmax output) by 8-bit B: vectorised
      combine_two_a_planes_row(acc, acc + blk, comp, out, size_t(n_cols));
      return;
    }
    for (int n = 0; n < n_cols; ++n) {
      int64_t v = 0;
      for (int p = 0; p < P; ++p)
        for (int qq = 0; qq < Q; ++qq) v += int64_t(acc[size_t(p * Q + qq) * blk + size_t(n)]) << (8 * p + 7 * qq);
      out[n] = float(v - (comp ? comp[n] : 0));
    }
  }

  // Scores S = Q·Kᵀ of rows [t0, t0 + rows) of head group g (head h) into s.srows (rows x T):
  // integer GEMMs dequantized, or an FP32 GEMM.
  void attention_scores(const AttnSite& qk, Scratch& s, int g, int h, int t0, int rows) {
    const int T = q.cfg.tokens(), d = q.cfg.head_dim();
    const size_t TD = size_t(T) * d;
    const size_t qoff = size_t(g) * TD + size_t(t0) * d;  // first Q row of the block
    if (!qk.on) {
      dnnl_sgemm('N', 'T', rows, T, d, 1.0f, qf.data() + qoff, d, kf.data() + size_t(g) * TD, d, 0.0f,
                 s.srows.data(), T);
      return;
    }
    const int P = qk.a.planes, Q = qk.b.planes;
    const size_t blk = size_t(rows) * T;
    for (int p = 0; p < P; ++p)
      for (int qq = 0; qq < Q; ++qq)
        qk_mm->run(rows, qc.data() + size_t(p) * attn_ps + qoff, d, s.sacc.data() + size_t(p * Q + qq) * blk, T,
                   kc.data() + size_t(qq) * attn_ps + size_t(g) * TD);
    const int32_t* comp = compk.data() + size_t(g) * T;
    const float* bias = qk.bias ? qk.bias + size_t(h) * T : nullptr;
    if (qk.a_token || qk.b_token) {  // y[j] = float(Σ − comp[j]) · (Δq_row · Δk_j) + bias[j], as the simulator
      const float* ks = qk.b_token ? kstep.data() + size_t(g) * T : nullptr;
      if (!ks) {
        std::fill(s.kcols.begin(), s.kcols.begin() + T, qk.b_delta[size_t(h)]);
        ks = s.kcols.data();
      }
      for (int r = 0; r < rows; ++r) {
        float* sr = s.srows.data() + size_t(r) * T;
        const float rs = qk.a_token ? qstep[size_t(g) * T + size_t(t0 + r)] : qk.a_delta[size_t(h)];
        if (P == 1 && Q == 1) {
          dequantize_row_token(s.sacc.data() + size_t(r) * T, 1, comp, ks, rs, bias, sr, size_t(T));
        } else {
          combine_planes_row(s.sacc.data() + size_t(r) * T, P, Q, blk, T, comp, sr);
          scale_bias_row_token(sr, ks, rs, bias, size_t(T));
        }
      }
      return;
    }
    for (int r = 0; r < rows; ++r) {
      float* sr = s.srows.data() + size_t(r) * T;
      const int32_t* acc = s.sacc.data() + size_t(r) * T;
      if (P == 1 && Q == 1) {
        dequantize_row_scalar(acc, qk.a.zp ? comp : nullptr, qk.scale[size_t(h)], bias, sr, size_t(T));
      } else {
        combine_planes_row(acc, P, Q, blk, T, comp, sr);
        scale_bias_row_scalar(sr, qk.scale[size_t(h)], bias, size_t(T));
      }
    }
  }

  // P·V of those rows into out (rows x d, rows ld apart): from P's codes in s.pcodes (pblk apart
  // per plane) by integer GEMMs, or from the float P in s.srows.
  void attention_context(const AttnSite& av, Scratch& s, int g, int h, int rows, size_t pblk, float* out, size_t ld) {
    const int T = q.cfg.tokens(), d = q.cfg.head_dim();
    const size_t TD = size_t(T) * d;
    if (!av.on) {
      dnnl_sgemm('N', 'N', rows, d, T, 1.0f, s.srows.data(), T, vf.data() + size_t(g) * TD, d, 0.0f, out, dnnl_dim_t(ld));
      return;
    }
    const int P = av.a.planes, Q = av.b.planes;
    const size_t blk = size_t(rows) * d;
    for (int p = 0; p < P; ++p)
      for (int qq = 0; qq < Q; ++qq)
        av_mm->run(rows, s.pcodes.data() + size_t(p) * pblk, T, s.oacc.data() + size_t(p * Q + qq) * blk, d,
                   vc.data() + size_t(qq) * attn_ps + size_t(g) * TD);
    const float* bias = av.bias ? av.bias + size_t(h) * d : nullptr;
    for (int r = 0; r < rows; ++r) {
      const int32_t* acc = s.oacc.data() + size_t(r) * d;
      float* o = out + size_t(r) * ld;
      if (P == 1 && Q == 1) {
        dequantize_row_scalar(acc, nullptr, av.scale[size_t(h)], bias, o, size_t(d));
      } else {
        combine_planes_row(acc, P, Q, blk, d, nullptr, o);
        scale_bias_row_scalar(o, av.scale[size_t(h)], bias, size_t(d));
      }
    }
  }

  void attention(int i, int batch) {
    const ViTConfig& c = q.cfg;
    const Block& bl = blocks[size_t(i)];
    const int T = c.tokens(), D = c.embed_dim, H = c.num_heads, d = c.head_dim();
    const IntLinear& proj = *bl.proj;
    const ActQuant& pa = proj.input();
    const float sm_scale = 1.0f / std::sqrt(static_cast<float>(d));
    const int nrb = attn_row_blocks(batch), rpb = (T + nrb - 1) / nrb;
    const int tasks = batch * H * nrb;
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < tasks; ++task) {
      Scratch& s = scratch[size_t(omp_get_thread_num())];
      const int g = task / nrb, t0 = (task % nrb) * rpb, rows = std::min(rpb, T - t0);
      if (rows <= 0) continue;
      const int b = g / H, h = g % H;
      // The context rows go to the proj input (heads merged): as floats straight into it, or —
      // per-tensor codes — through s.otile.
      const bool codes = pa.on && !pa.per_token;
      const size_t off0 = (size_t(b) * T + size_t(t0)) * D + size_t(h) * d;
      float* out = codes ? s.otile.data() : buf_b.f32.data() + off0;
      const size_t ld = codes ? size_t(d) : size_t(D);
      if (bl.amx) {
        attention_amx(bl, s, g, h, t0, rows, sm_scale, out, ld);
      } else {
        attention_task(bl, s, g, h, t0, rows, sm_scale, out, ld);
      }
      if (codes)
        for (int r = 0; r < rows; ++r)
          emit_a_codes(pa, s.otile.data() + size_t(r) * d, size_t(d), buf_b.u8.data() + off0 + size_t(r) * D,
                       buf_b.plane_stride, nullptr);
    }
    if (pa.on && pa.per_token) {  // the proj input's rows are whole now: one step per row
#pragma omp parallel for schedule(static)
      for (int r = 0; r < batch * T; ++r) emit_row(pa, buf_b.f32.data() + size_t(r) * D, size_t(D), buf_b, size_t(r));
    }
  }

  // One (image, head, row block) task of the attention: its context rows into out (rows × d, ld apart).
  void attention_task(const Block& bl, Scratch& s, int g, int h, int t0, int rows, float sm_scale, float* out,
                      size_t ld) {
    const AttnSite &qk = bl.qk, &av = bl.av;
    const int T = q.cfg.tokens();
    attention_scores(qk, s, g, h, t0, rows);
    // Softmax, then the probabilities as A codes of P·V (or kept in float).
    const size_t pblk = size_t(rows) * T;
    const ActQuant pq = av.on ? av.a_of(h) : ActQuant{};
    for (int r = 0; r < rows; ++r)
      probabilities(pq, s.srows.data() + size_t(r) * T, sm_scale, s.pcodes.data() + size_t(r) * T, pblk);
    attention_context(av, s, g, h, rows, pblk, out, ld);
  }

  // Softmax of one row of scores (T) in place, and the probabilities as P's A codes (planes
  // plane_stride apart) if P·V is quantized — a table softmax on one uniform plane straight to the
  // codes, one pass less.
  void probabilities(const ActQuant& pq, float* sr, float sm_scale, uint8_t* codes, size_t plane_stride) const {
    const size_t T = size_t(q.cfg.tokens());
    if (softmax_table && pq.on && !pq.levels && !pq.per_token && pq.planes == 1) {
      softmax_table_codes_row(sr, T, sm_scale, *softmax_table, pq.delta, pq.range, pq.zp, codes);
      return;
    }
    if (softmax_table) softmax_table_rows(sr, 1, T, sm_scale, *softmax_table);
    else softmax_rows(sr, 1, T, sm_scale);
    if (pq.on) emit_a_codes(pq, sr, T, codes, plane_stride, nullptr);
  }

  // The same task on AMX: the head's Kᵀ and V packed, the scores of the row block's 16-row tiles,
  // the softmax and P's codes per row (as attention_task), then P·V.
  void attention_amx(const Block& bl, Scratch& s, int g, int h, int t0, int rows, float sm_scale, float* out,
                     size_t ld) {
    const AttnSite &qk = bl.qk, &av = bl.av;
    const int T = q.cfg.tokens(), d = q.cfg.head_dim();
    const size_t TD = size_t(T) * d, tp = size_t(amx_pad16(T)), kp = size_t(n_pad_k(T));
    pack_kt_vnni(kc.data() + size_t(g) * TD, T, d, s.amx_kt.data());
    pack_v_vnni(vc.data() + size_t(g) * TD, T, d, s.amx_v.data());
    qk_u8s8_amx(rows, T, d, qc.data() + size_t(g) * TD + size_t(t0) * d, d, s.amx_kt.data(), s.amx_s.data(), int(tp));
    const int32_t* comp = compk.data() + size_t(g) * T;
    const float* qbias = qk.bias ? qk.bias + size_t(h) * T : nullptr;
    const ActQuant pq = av.a_of(h);
    for (int r = 0; r < rows; ++r) {
      float* sr = s.srows.data() + size_t(r) * T;
      dequantize_row_scalar(s.amx_s.data() + size_t(r) * tp, qk.a.zp ? comp : nullptr, qk.scale[size_t(h)], qbias, sr,
                            size_t(T));
      probabilities(pq, sr, sm_scale, s.amx_p.data() + size_t(r) * kp, 0);  // one plane
    }
    pv_u8s8_amx(rows, T, d, s.amx_p.data(), s.amx_v.data(), s.amx_o.data(), d);
    const float* vbias = av.bias ? av.bias + size_t(h) * d : nullptr;
    for (int r = 0; r < rows; ++r)
      dequantize_row_scalar(s.amx_o.data() + size_t(r) * d, nullptr, av.scale[size_t(h)], vbias, out + size_t(r) * ld,
                            size_t(d));
  }

  void block(int i, int batch) {
    const ViTConfig& c = q.cfg;
    const Block& bl = blocks[size_t(i)];
    const int T = c.tokens(), D = c.embed_dim, H = c.num_heads, d = c.head_dim(), F = c.mlp_hidden;
    const int rows = batch * T;
    const size_t TD = size_t(T) * d;
    mark(kFc2);  // the previous block's fc2 (nothing before block 0)
    // Error compensation of the block's input, added to its output with fc2's residual.
    if (bl.comp) {
      for_row_chunks(rows, T, [&](int r0, int n) {  // image by image, as the FP32 forward (engine/site.h)
        bl.comp->run(n, x.data() + size_t(r0) * D, comp_out.data() + size_t(r0) * D);
      });
      mark(kCompensation);
    }
    const float* comp = bl.comp ? comp_out.data() : nullptr;
    // qkv: Q/K/V of every (image, head), as the codes (or floats) the attention sites take.
    linear(*bl.qkv, rows, buf_a, 0, [&](int r, float* y) {
      const int b = r / T, t = r % T;
      for (int h = 0; h < H; ++h) {
        const size_t g = size_t(b) * H + size_t(h), off = g * TD + size_t(t) * d;
        const float *yq = y + size_t(h) * d, *yk = yq + D, *yv = yk + D;
        if (bl.qk.on) {
          ActQuant aq = bl.qk.a_of(h);
          if (bl.qk.a_token) aq.delta = qstep[g * T + size_t(t)] = token_step_symmetric(yq, size_t(d), aq.range);
          emit_a_codes(aq, yq, size_t(d), qc.data() + off, attn_ps, nullptr);
          float kd = bl.qk.b_delta[size_t(h)];
          if (bl.qk.b_token) kd = kstep[g * T + size_t(t)] = token_step_symmetric(yk, size_t(d), bl.qk.b.range);
          const int32_t sum = emit_b(bl.qk.b, kd, yk, size_t(d), kc.data() + off, attn_ps);
          compk[g * T + size_t(t)] = bl.qk.a.zp * sum;
        } else {
          std::copy(yq, yq + d, qf.data() + off);
          std::copy(yk, yk + d, kf.data() + off);
        }
        if (bl.av.on) emit_b(bl.av.b, bl.av.b_delta[size_t(h)], yv, size_t(d), vc.data() + off, attn_ps);
        else std::copy(yv, yv + d, vf.data() + off);
      }
    });
    mark(kQkv);
    attention(i, batch);
    mark(kAttention);
    // proj + residual, LayerNorm 2 -> fc1 input.
    linear(*bl.proj, rows, buf_b, 0, [&](int r, float* y) {
      float* xr = x.data() + size_t(r) * D;
      add_bias_residual_rows(xr, y, 1, size_t(D), nullptr);
      ln_emit(q.norm2[size_t(i)], xr, *bl.fc1, buf_a, size_t(r), y);
    });
    mark(kProj);
    // fc1 + GELU -> fc2 input.
    const ActQuant& f2 = bl.fc2->input();
    const float* mlp_signs = q.mlp_rotation_signs.empty() ? nullptr : q.mlp_rotation_signs.data();
    const float mlp_scale = 1.0f / std::sqrt(static_cast<float>(F));
    const GeluLut& gl = bl.gelu;
    linear(*bl.fc1, rows, buf_a, 0, [&](int r, float* y) {
      if (gl.direct) {  // the table holds fc2's codes
        table_lookup_u8(y, size_t(F), gl.delta, gl.range, gl.codes.data(), buf_b.u8.data() + size_t(r) * size_t(F));
        return;
      }
      if (gl.token) {  // fc2's per-token codes of the looked-up values
        const TokenQuant t = table_lookup_token_u8(y, size_t(F), gl.delta, gl.range, gl.values.data(), gl.valley,
                                                   f2.bits, f2.token_clip, buf_b.u8.data() + size_t(r) * size_t(F));
        buf_b.rq[size_t(r)] = {t.delta, -t.lo};
        return;
      }
      if (gl.on) table_lookup_f32(y, size_t(F), gl.delta, gl.range, gl.values.data(), y);
      else bias_gelu_rows(y, 1, size_t(F), nullptr);
      if (mlp_signs) hadamard_sign_rows(y, 1, F, mlp_signs, mlp_scale);  // a rotated model's fc2 input
      emit_row(f2, y, size_t(F), buf_b, size_t(r));
    });
    mark(kFc1);
    // fc2 + residual, then the next block's LayerNorm 1 -> its qkv input.
    const bool last = i + 1 == c.depth;
    linear(*bl.fc2, rows, buf_b, 0, [&](int r, float* y) {
      float* xr = x.data() + size_t(r) * D;
      add_bias_residual_rows(xr, y, 1, size_t(D), nullptr);
      if (comp) add_bias_residual_rows(xr, comp + size_t(r) * D, 1, size_t(D), nullptr);
      if (!last) ln_emit(q.norm1[size_t(i) + 1], xr, *blocks[size_t(i) + 1].qkv, buf_a, size_t(r), y);
    });
  }

  void run_head(int batch, float* logits) {
    const ViTConfig& c = q.cfg;
    const int T = c.tokens(), D = c.embed_dim, NC = c.num_classes;
    const int ntok = c.distilled ? 2 : 1;
    // Final LayerNorm of the class (and distillation) token rows -> head inputs (row t·B + b).
    for (int t = 0; t < ntok; ++t) {
      const IntLinear& L = t == 0 ? *head : *head_dist;
      for (int b = 0; b < batch; ++b) {
        const size_t r = size_t(t) * batch + size_t(b);
        float* tr = tok.data() + r * D;
        layernorm_rows(x.data() + (size_t(b) * T + size_t(t)) * D, tr, 1, size_t(D), q.norm.gamma.ptr(),
                       q.norm.beta.ptr(), c.ln_eps);
        emit_row(L.input(), tr, size_t(D), head_in, r);
      }
    }
    linear(*head, batch, head_in, 0, [&](int r, float* y) { std::copy(y, y + NC, logits + size_t(r) * NC); });
    if (!c.distilled) return;
    linear(*head_dist, batch, head_in, size_t(batch),
           [&](int r, float* y) { std::copy(y, y + NC, logits2.data() + size_t(r) * NC); });
    for (size_t k = 0; k < size_t(batch) * NC; ++k) logits[k] = 0.5f * (logits[k] + logits2[k]);
  }
};

IntViTForward::IntViTForward(const QuantizedViT& q) : q_(q), impl_(std::make_unique<Impl>(q)) {}
IntViTForward::~IntViTForward() = default;

void IntViTForward::run(const float* images, int batch, float* logits) {
  if (batch < 1) return;
  Impl& m = *impl_;
  m.reserve(batch);
  m.batch_now = batch;
  m.t_last = std::chrono::steady_clock::now();
  m.embed(images, batch);
  m.mark(Impl::kEmbed);
  m.t_last = std::chrono::steady_clock::now();
  for (int i = 0; i < q_.cfg.depth; ++i) m.block(i, batch);
  m.mark(Impl::kFc2);
  m.run_head(batch, logits);
  m.mark(Impl::kHead);
}

void IntViTForward::set_profiling(bool on) {
  impl_->profiling = on;
  impl_->stage_s.fill(0.0);
}

std::vector<std::pair<std::string, double>> IntViTForward::profile_seconds() const {
  static const char* names[] = {"embed", "qkv", "attention", "proj", "fc1", "fc2", "head", "compensation"};
  std::vector<std::pair<std::string, double>> out;
  for (int s = 0; s < Impl::kStages; ++s) out.emplace_back(names[s], impl_->stage_s[size_t(s)]);
  return out;
}

size_t IntViTForward::weight_bytes() const {
  size_t n = impl_->patch->weight_bytes() + impl_->head->weight_bytes() +
             (impl_->head_dist ? impl_->head_dist->weight_bytes() : 0);
  for (const auto& b : impl_->blocks) {
    for (const IntLinear* l : {b.qkv.get(), b.proj.get(), b.fc1.get(), b.fc2.get()}) n += l->weight_bytes();
    if (b.comp) n += b.comp->packed_bytes();
  }
  return n;
}

int IntViTForward::amx_attention_blocks() const {
  int n = 0;
  for (const auto& b : impl_->blocks) n += b.amx;
  return n;
}

size_t IntViTForward::workspace_bytes() const {
  const Impl& m = *impl_;
  size_t n = (m.x.capacity() + m.comp_out.capacity() + m.fp_out.capacity() + m.tok.capacity() + m.logits2.capacity() + m.qf.capacity() +
              m.kf.capacity() + m.vf.capacity()) * 4 +
             m.qc.capacity() + m.kc.capacity() + m.vc.capacity() + (m.compk.capacity() + m.qstep.capacity() + m.kstep.capacity()) * 4;
  for (const ActBuf* b : {&m.patches, &m.buf_a, &m.buf_b, &m.head_in})
    n += b->f32.capacity() * 4 + b->u8.capacity() + b->rq.capacity() * sizeof(RowQuant);
  for (const Scratch& s : m.scratch)
    n += (s.acc.capacity() + s.row.capacity() + s.sacc.capacity() + s.srows.capacity() +
          s.oacc.capacity() + s.otile.capacity() + s.kcols.capacity()) * 4 + s.pcodes.capacity();
  return n;
}

}  // namespace vitq
