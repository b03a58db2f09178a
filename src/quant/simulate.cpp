#include "quant/simulate.h"

#include <algorithm>

#include "core/error.h"
#include "engine/gemm_f32.h"
#include "engine/kernels.h"
#include "numerics/quantizer.h"
#include "quant/weight_codes.h"
#include "numerics/int8_kernels.h"
#include "numerics/level_grid.h"

namespace vitq {

void add_weight_offset(const SiteCall& c, const std::vector<float>& off) {
  if (off.empty()) return;
  const int64_t rows = int64_t(c.groups) * c.M;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = c.x + r * c.K;
    double s = 0;
    for (int k = 0; k < c.K; ++k) s += double(x[k]);
    float* y = c.y + r * c.N;
    for (int n = 0; n < c.N; ++n) y[n] += off[size_t(n)] * float(s);
  }
}

void add_bias_correction(const SiteCall& c, const std::vector<float>& corr) {
  if (corr.empty()) return;
  const int heads = c.groups / std::max(1, c.images);
  const int64_t rows = int64_t(c.groups) * c.M;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t g = r / c.M;
    const float* b = corr.data() + (c.site.is_attention() ? size_t(g % heads) * size_t(c.N) : 0);
    add_bias_rows(c.y + r * c.N, 1, size_t(c.N), b);
  }
}

namespace {

constexpr int64_t kChunk = 4096;

int heads_of(const SiteCall& c) { return c.groups / std::max(1, c.images); }

// Per-token Q or K (plan.h): each of `rows` rows of K values its own symmetric step steps[r]
// (token_step_symmetric), its codes as floats into codes.
void symmetric_row_codes(const float* v, int64_t rows, int K, QRange range, float* codes, std::vector<float>& steps) {
  steps.resize(size_t(rows));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    steps[size_t(r)] = token_step_symmetric(v + r * K, size_t(K), range);
    quantize_to_f32_codes(v + r * K, codes + r * K, size_t(K), steps[size_t(r)], range);
  }
}

// The codes of the input operand as floats into xbuf (integer-valued): per tensor, per head
// (attention: group g is head g % heads) or per token (row_delta[r] = row r's step). A level grid
// writes two planes, lo = level & 255 at xbuf[0, n) and hi = level >> 8 at xbuf[n, 2n).
void input_codes(const SiteCall& c, const OperandQuant& x, avector<float>& xbuf, std::vector<float>& row_delta) {
  const int64_t n = int64_t(c.groups) * c.x_stride();
  const bool levels = is_level_grid(x.grid);
  if (xbuf.size() < size_t(levels ? 2 * n : n)) xbuf.resize(size_t(levels ? 2 * n : n));
  if (levels) {
    const LevelGrid& g = LevelGrid::get(x.grid, x.bits);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i += kChunk) {
      const size_t m = size_t(std::min(kChunk, n - i));
      for (size_t j = 0; j < m; ++j) {
        const uint16_t l = g.of(c.x[size_t(i) + j]);
        xbuf[size_t(i) + j] = float(l & 255);
        xbuf[size_t(n + i) + j] = float(l >> 8);
      }
    }
  } else if (x.per_token && c.site.is_attention()) {  // Q per token: row_delta[r], symmetric
    symmetric_row_codes(c.x, int64_t(c.groups) * c.M, c.K, x.range(), xbuf.data(), row_delta);
  } else if (x.per_token) {  // row_delta[r·G + g]: row r's step in channel group g (G = 1: the row)
    const int64_t rows = int64_t(c.groups) * c.M;
    const int G = x.token_groups(c.K), Kg = c.K / G;
    row_delta.resize(size_t(rows) * size_t(G));
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r)
      for (int g = 0; g < G; ++g) {
        const float* xr = c.x + r * c.K + g * Kg;
        const TokenQuant t = token_quant(xr, size_t(Kg), x.bits, x.token_clip);
        row_delta[size_t(r * G + g)] = t.delta;
        quantize_to_f32_codes(xr, xbuf.data() + r * c.K + g * Kg, size_t(Kg), t.delta, t.range(x.bits));
      }
  } else if (x.per_head()) {
    const int heads = heads_of(c);
#pragma omp parallel for schedule(static)
    for (int g = 0; g < c.groups; ++g)
      quantize_to_f32_codes(c.x + g * c.x_stride(), xbuf.data() + g * c.x_stride(), size_t(c.x_stride()),
                            x.head_scale(g % heads), x.range());
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i += kChunk)
      quantize_to_f32_codes(c.x + i, xbuf.data() + i, size_t(std::min(kChunk, n - i)), x.scale, x.range());
  }
}

// The second operand's codes of an attention call (K or Vᵀ, per group) into wbuf; K per token:
// row j of group g (key token j) with its own step col_delta[g·N + j] (symmetric).
void attention_w_codes(const SiteCall& c, const OperandQuant& w, avector<float>& wbuf, std::vector<float>& col_delta) {
  const int heads = heads_of(c);
  const int64_t n = int64_t(c.groups) * c.w_stride;
  if (wbuf.size() < size_t(n)) wbuf.resize(size_t(n));
  if (w.per_token) {
    symmetric_row_codes(c.w, int64_t(c.groups) * c.N, c.K, w.range(), wbuf.data(), col_delta);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int g = 0; g < c.groups; ++g)
    quantize_to_f32_codes(c.w + g * c.w_stride, wbuf.data() + g * c.w_stride, size_t(c.w_stride),
                          w.head_scale(g % heads), w.range());
}

// y = (lo-plane sum) + 256 · (hi-plane sum), both integer-valued floats, combined exactly.
void combine_level_planes(float* y, const float* y_hi, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = float(int64_t(y[i]) + 256 * int64_t(y_hi[i]));
}

// Attention epilogue: y = Σ · (Δx_h · Δw_h) + bias_correction[h], group g in head h = g % heads.
// Q or K per token (matmul_qk): y[r][j] = Σ · (Δq_r · Δk_j) + bias_correction[h][j] with the row's
// and the key's steps (or the head's where that side has one), as the runtime does on its int32 sums.
void attention_epilogue(const SiteCall& call, const SitePlan& sp, const std::vector<float>& row_delta,
                        const std::vector<float>& col_delta) {
  const int heads = heads_of(call);
  const std::vector<float>& corr = sp.bias_correction;
  const int64_t rows = int64_t(call.groups) * call.M;
  if (sp.x.per_token || sp.w.per_token) {
#pragma omp parallel
    {
      std::vector<float> head_cols(size_t(call.N));
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t g = r / call.M;
        const int h = int(g % heads);
        const float* b = corr.empty() ? nullptr : corr.data() + size_t(h) * size_t(call.N);
        const float rs = sp.x.per_token ? row_delta[size_t(r)] : sp.x.head_scale(h);
        const float* cs = head_cols.data();  // (col_delta is empty when K has head steps)
        if (sp.w.per_token) cs = col_delta.data() + size_t(g) * size_t(call.N);
        else std::fill(head_cols.begin(), head_cols.end(), sp.w.head_scale(h));
        scale_bias_row_token(call.y + r * call.N, cs, rs, b, size_t(call.N));
      }
    }
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int h = int((r / call.M) % heads);
    const float* b = corr.empty() ? nullptr : corr.data() + size_t(h) * size_t(call.N);
    scale_bias_row_scalar(call.y + r * call.N, sp.x.head_scale(h) * sp.w.head_scale(h), b, size_t(call.N));
  }
}

// A linear site's per-channel weight steps Δw_c (the tensor step repeated if it has one).
std::vector<float> weight_steps(const SitePlan& sp, int N) {
  if (sp.w.per_channel()) return std::vector<float>(sp.w.channel_scales.begin(), sp.w.channel_scales.begin() + N);
  return std::vector<float>(size_t(N), sp.w.scale);
}

// The epilogue's bias: the layer's bias + the plan's bias correction (empty if neither).
std::vector<float> epilogue_bias(const SiteCall& call, const SitePlan& sp) {
  std::vector<float> bias;
  if (!call.bias && sp.bias_correction.empty()) return bias;
  bias.assign(size_t(call.N), 0.0f);
  for (int n = 0; n < call.N; ++n) {
    if (call.bias) bias[size_t(n)] = call.bias[n];
    if (!sp.bias_correction.empty()) bias[size_t(n)] += sp.bias_correction[size_t(n)];
  }
  return bias;
}

// Linear epilogue, as the integer runtime's: y = Σ·(Δx·Δw_c) + (bias + bias_correction) + o_c·Δx·Σ_k qx,
// with Δx the row's own step for per-token inputs.
void linear_epilogue(const SiteCall& call, const SitePlan& sp, const avector<float>& xbuf,
                     const std::vector<float>& row_delta) {
  const int N = call.N;
  const std::vector<float> wscale = weight_steps(sp, N), bias = epilogue_bias(call, sp);
  std::vector<float> scale(static_cast<size_t>(N)), offset;
  for (int n = 0; n < N; ++n) scale[size_t(n)] = sp.x.scale * wscale[size_t(n)];
  if (!sp.weight_offset.empty() && !sp.x.per_token) {
    offset.resize(size_t(N));
    for (int n = 0; n < N; ++n) offset[size_t(n)] = sp.weight_offset[size_t(n)] * sp.x.scale;
  }
  const float* b = bias.empty() ? nullptr : bias.data();
  const int64_t rows = int64_t(call.groups) * call.M;  // a linear site's groups share its weight
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* y = call.y + r * N;
    if (sp.x.per_token) scale_bias_row_token(y, wscale.data(), row_delta[size_t(r)], b, size_t(N));
    else scale_bias_row(y, scale.data(), b, size_t(N));
    if (sp.weight_offset.empty()) continue;
    double sx = 0;  // Σ_k qx: integers, exact
    for (int k = 0; k < call.K; ++k) sx += double(xbuf[size_t(r) * size_t(call.K) + size_t(k)]);
    if (sp.x.per_token) add_scaled_row(y, sp.weight_offset.data(), row_delta[size_t(r)] * float(sx), size_t(N));
    else add_scaled_row(y, offset.data(), float(sx), size_t(N));
  }
}

// A linear site with per-token inputs in G > 1 channel groups, as the integer runtime computes it
// (int_linear.h): per group the exact sums Σ_{k∈g} qx·qw (integer-valued floats, exact: at most
// 2^b·128·K/G < 2^24), then accumulate_token_group over the groups in order, scale_bias_row by Δw_c
// with the bias, and the weight offset o_c · Σ_g Δ_g·Σ_{k∈g} qx.
void linear_token_groups(const SiteCall& call, const SitePlan& sp, const float* wcodes, const avector<float>& xbuf,
                         const std::vector<float>& row_delta) {
  const int N = call.N, K = call.K, G = sp.x.token_groups(K), Kg = K / G;
  const int64_t rows = int64_t(call.groups) * call.M;
  const std::vector<float> wscale = weight_steps(sp, N), bias = epilogue_bias(call, sp);
  const float* b = bias.empty() ? nullptr : bias.data();
  constexpr int64_t kRows = 64;  // rows per task: G sums of 64 x N floats stay in cache
  const int64_t tasks = (rows + kRows - 1) / kRows;
#pragma omp parallel
  {
    avector<float> sums(size_t(G) * size_t(kRows) * size_t(N));
    std::vector<int32_t> acc(static_cast<size_t>(N));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t r0 = t * kRows, m = std::min(kRows, rows - r0);
      for (int g = 0; g < G; ++g)  // (single-threaded inside the parallel region)
        sgemm_f32('N', 'T', m, N, Kg, xbuf.data() + r0 * K + g * Kg, K, wcodes + g * Kg, K, 0.0f,
                  sums.data() + size_t(g) * size_t(m) * size_t(N), N);
      for (int64_t i = 0; i < m; ++i) {
        const int64_t r = r0 + i;
        float* y = call.y + r * N;
        for (int g = 0; g < G; ++g) {
          const float* sg = sums.data() + (size_t(g) * size_t(m) + size_t(i)) * size_t(N);
          for (int n = 0; n < N; ++n) acc[size_t(n)] = int32_t(sg[n]);
          accumulate_token_group(y, acc.data(), 0, nullptr, row_delta[size_t(r * G + g)], g == 0, size_t(N));
        }
        scale_bias_row(y, wscale.data(), b, size_t(N));
        if (sp.weight_offset.empty()) continue;
        float s = 0;  // Σ_g Δ_g · Σ_{k∈g} qx (the group sums are integers, exact)
        for (int g = 0; g < G; ++g) {
          double sx = 0;
          for (int k = 0; k < Kg; ++k) sx += double(xbuf[size_t(r) * size_t(K) + size_t(g * Kg + k)]);
          s += row_delta[size_t(r * G + g)] * float(sx);
        }
        add_scaled_row(y, sp.weight_offset.data(), s, size_t(N));
      }
    }
  }
}

}  // namespace

void simulate_site(const SiteCall& call, const SitePlan& sp, const float* wq, avector<float>& xbuf,
                   avector<float>& wbuf) {
  if (!sp.x.quantized() || !sp.w.quantized()) {  // (a valid plan quantizes both operands or neither)
    site_gemm_f32(call);
    if (!call.site.is_attention()) add_weight_offset(call, sp.weight_offset);
    add_bias_correction(call, sp.bias_correction);
    return;
  }
  SiteCall q = call;
  q.bias = nullptr;  // added in the epilogue, after the scaling
  std::vector<float> row_delta, col_delta;
  input_codes(call, sp.x, xbuf, row_delta);
  q.x = xbuf.data();
  if (wq) {
    q.w = wq;
  } else if (call.site.is_attention()) {
    attention_w_codes(call, sp.w, wbuf, col_delta);
    q.w = wbuf.data();
  } else {
    const size_t n = size_t(call.N) * size_t(call.K);
    if (wbuf.size() < n) wbuf.resize(n);
    site_weight_codes_f32(call.w, call.N, call.K, sp, wbuf.data());
    q.w = wbuf.data();
  }
  if (!call.site.is_attention() && sp.x.token_groups(call.K) > 1) {
    linear_token_groups(call, sp, q.w, xbuf, row_delta);
    return;
  }
  site_gemm_f32(q);  // Σ_k qx·qw (exact while the sums stay below 2^24)
  if (is_level_grid(sp.x.grid)) {  // the hi plane of the levels, then the exact combination
    const int64_t ny = int64_t(call.groups) * call.y_stride();
    avector<float> y_hi(static_cast<size_t>(ny));
    q.x = xbuf.data() + int64_t(call.groups) * call.x_stride();
    q.y = y_hi.data();
    site_gemm_f32(q);
    combine_level_planes(call.y, y_hi.data(), ny);
  }
  if (call.site.is_attention()) attention_epilogue(call, sp, row_delta, col_delta);
  else linear_epilogue(call, sp, xbuf, row_delta);
}

void put_on_gelu_grid(const QuantPlan& plan, const SiteCall& call) {
  if (call.site.kind != SiteKind::Fc1 || plan.gelu_tables.empty()) return;
  auto t = plan.gelu_tables.find(call.site.name());
  if (t != plan.gelu_tables.end())
    fake_quantize(call.y, call.y, size_t(call.M) * size_t(call.N), t->second.scale, t->second.range());
}

std::unique_ptr<SoftmaxExpTable> plan_softmax_table(const QuantPlan& plan) {
  if (!plan.softmax_table) return nullptr;
  return std::make_unique<SoftmaxExpTable>(plan.softmax_table->bits, plan.softmax_table->range);
}

bool softmax_with_table(const SoftmaxExpTable* t, float* s, int rows, int n, float scale) {
  if (!t) return false;
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r) softmax_table_rows(s + size_t(r) * size_t(n), 1, size_t(n), scale, *t);
  return true;
}

PlanSimulator::PlanSimulator(const ViTModel& model, const QuantPlan& plan)
    : m_(model), plan_(plan), softmax_(plan_softmax_table(plan)) {}

bool PlanSimulator::softmax(int /*block*/, float* s, int rows, int n, float scale) {
  return softmax_with_table(softmax_.get(), s, rows, n, scale);
}

bool PlanSimulator::compute(const SiteCall& call) {
  const SitePlan* sp = plan_.find(call.site);
  if (!sp) return false;
  const float* wq = nullptr;
  if (sp->w.quantized() && !call.site.is_attention()) {
    auto it = wq_.find(call.site);
    if (it == wq_.end()) {
      const LinearWeights* lw = site_weights(m_, call.site);
      if (!lw) fail(ErrorKind::Internal, "no weight for site ", call.site.name());
      avector<float>& dst = wq_[call.site];
      dst.resize(size_t(lw->w.numel()));
      site_weight_codes_f32(lw->w.ptr(), lw->out(), lw->in(), *sp, dst.data());
      it = wq_.find(call.site);
    }
    wq = it->second.data();
  }
  simulate_site(call, *sp, wq, xbuf_, wbuf_);
  put_on_gelu_grid(plan_, call);  // the GELU the forward applies next then computes the table's entry
  return true;
}

}  // namespace vitq
