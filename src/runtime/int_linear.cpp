#include "runtime/int_linear.h"

#include <algorithm>
#include <cstdlib>

#include "core/error.h"
#include "engine/gemm_f32.h"
#include "engine/kernels.h"
#include "numerics/int8_kernels.h"
#include "runtime/quantized_model.h"

namespace vitq {

ActQuant ActQuant::of(const OperandQuant& q) {
  ActQuant a;
  if (!q.quantized()) return a;
  a.on = true;
  a.bits = q.bits;
  a.delta = q.scale;
  a.per_token = q.per_token;
  a.token_clip = q.token_clip;
  a.token_group = q.groups_tokens() ? q.token_group : 0;
  if (is_level_grid(q.grid)) {
    a.levels = &LevelGrid::get(q.grid, q.bits);
    a.range = {0, kLevelOne};
    a.zp = 0;
    a.planes = 2;
    return a;
  }
  a.range = q.range();
  a.zp = q.per_token ? 0 : a_zero_point(q.bits, q.grid);  // per token: the row's own
  a.planes = operand_planes(q.bits);
  return a;
}

void emit_a_codes(const ActQuant& aq, const float* x, size_t n, uint8_t* u8, size_t plane_stride, RowQuant* rq) {
  if (aq.levels) {
    quantize_levels_u8_split(x, u8, u8 + plane_stride, n, *aq.levels);
  } else if (aq.per_token) {  // (at most 8 bits: one plane)
    const int G = aq.groups(n);
    const size_t ng = n / size_t(G);
    for (int g = 0; g < G; ++g) {
      const size_t o = size_t(g) * ng;
      const TokenQuant t = token_quant(x + o, ng, aq.bits, aq.token_clip);
      quantize_a_u8(x + o, u8 + o, ng, t.delta, t.range(aq.bits), -t.lo);
      rq[g] = {t.delta, -t.lo};
    }
  } else if (aq.planes == 1) {
    quantize_a_u8(x, u8, n, aq.delta, aq.range, aq.zp);
  } else {
    quantize_a_u8_split(x, u8, u8 + plane_stride, n, aq.delta, aq.range, aq.zp);
  }
}

IntLinear::IntLinear(const StoredLinear& s, const OperandQuant& x) : id_(s.id), N_(s.N), K_(s.K) {
  quantized_ = s.quantized;
  if (!s.bias.empty()) bias_.assign(s.bias.begin(), s.bias.end());
  if (!quantized_) {
    w_.assign(s.w.data.begin(), s.w.data.end());
    return;
  }
  if (!x.quantized()) fail(ErrorKind::Model, "site ", s.id.name(), ": quantized weights need a quantized input");
  x_ = ActQuant::of(x);
  const size_t NK = size_t(N_) * size_t(K_);
  const int max_bits = *std::max_element(s.bits.begin(), s.bits.end());
  colsum_.assign(size_t(N_), 0);
  for (int n = 0; n < N_; ++n) {
    int64_t t = 0;
    for (int k = 0; k < K_; ++k) t += s.codes[size_t(n) * size_t(K_) + size_t(k)];
    colsum_[size_t(n)] = t;
  }
  // (plan validation checks this too; a plan built in code reaches here without it)
  if (x_.per_token && x_.token_group > 0 && (max_bits > 8 || K_ % x_.token_group != 0))
    fail(ErrorKind::Model, "site ", s.id.name(), ": per-token channel groups of ", x_.token_group,
         " need weights of at most 8 bits and a divisor of K = ", K_);
  groups_ = x_.groups(size_t(K_));
  if (groups_ > 1) {  // one GEMM per channel group: its columns of W as an N x K/G matrix
    const int Kg = K_ / groups_;
    colsum32_.assign(size_t(groups_) * size_t(N_), 0);
    int wmax = 0;
    for (int n = 0; n < N_; ++n)
      for (int k = 0; k < K_; ++k) {
        const int16_t c = s.codes[size_t(n) * size_t(K_) + size_t(k)];
        colsum32_[size_t(k / Kg) * size_t(N_) + size_t(n)] += c;
        wmax = std::max(wmax, std::abs(int(c)));
      }
    if (U8S8GroupedMatmul::exact_for(wmax)) {
      std::vector<int8_t> w8(NK);
      for (size_t i = 0; i < NK; ++i) w8[i] = int8_t(s.codes[i]);
      grouped_ = std::make_unique<U8S8GroupedMatmul>(N_, K_, groups_, w8.data());
    } else {
      std::vector<int8_t> wg(size_t(N_) * size_t(Kg));
      for (int g = 0; g < groups_; ++g) {
        for (int n = 0; n < N_; ++n) {
          const int16_t* src = s.codes.data() + size_t(n) * size_t(K_) + size_t(g) * size_t(Kg);
          for (int k = 0; k < Kg; ++k) wg[size_t(n) * size_t(Kg) + size_t(k)] = int8_t(src[k]);
        }
        mm_.push_back(std::make_unique<U8S8Matmul>(N_, Kg, BLayout::Packed, wg.data()));
      }
    }
  } else if (max_bits <= 8) {
    std::vector<int8_t> w8(NK);
    for (size_t i = 0; i < NK; ++i) w8[i] = int8_t(s.codes[i]);
    mm_.push_back(std::make_unique<U8S8Matmul>(N_, K_, BLayout::Packed, w8.data()));
  } else {
    std::vector<int8_t> lo(NK), hi(NK);
    for (size_t i = 0; i < NK; ++i) {
      lo[i] = int8_t(s.codes[i] & 127);
      hi[i] = int8_t(s.codes[i] >> 7);
    }
    mm_.push_back(std::make_unique<U8S8Matmul>(N_, K_, BLayout::Packed, lo.data()));
    mm_.push_back(std::make_unique<U8S8Matmul>(N_, K_, BLayout::Packed, hi.data()));
  }
  comp_.resize(size_t(N_));
  for (int n = 0; n < N_; ++n) comp_[size_t(n)] = int32_t(int64_t(x_.zp) * colsum_[size_t(n)]);
  if (groups_ == 1) colsum32_.assign(colsum_.begin(), colsum_.end());
  wscale_.assign(s.scale.begin(), s.scale.end());
  scale_.resize(size_t(N_));
  for (int n = 0; n < N_; ++n) scale_[size_t(n)] = x_.delta * s.scale[size_t(n)];
  if (!s.weight_offset.empty() && x_.per_token) woffset_.assign(s.weight_offset.begin(), s.weight_offset.end());
  if (!s.weight_offset.empty() && !x_.per_token) {
    offset_.resize(size_t(N_));
    for (int n = 0; n < N_; ++n) offset_[size_t(n)] = s.weight_offset[size_t(n)] * x_.delta;
  }
}

size_t IntLinear::weight_bytes() const {
  size_t b = w_.size() * sizeof(float);
  for (const auto& m : mm_) b += m->packed_bytes();
  if (grouped_) b += grouped_->packed_bytes();
  return b;
}

void IntLinear::gemm_tile(int rows, const uint8_t* a, size_t plane_stride, int32_t* acc) const {
  const int P = a_planes(), Q = b_planes();
  const size_t blk = size_t(rows) * size_t(N_);
  if (grouped_) return grouped_->run(rows, a, K_, acc);
  if (groups_ > 1) {  // (one A plane, one B plane)
    const int Kg = K_ / groups_;
    for (int g = 0; g < groups_; ++g) mm_[size_t(g)]->run(rows, a + size_t(g) * size_t(Kg), K_, acc + size_t(g) * blk, N_);
    return;
  }
  for (int p = 0; p < P; ++p)
    for (int q = 0; q < Q; ++q)
      mm_[size_t(q)]->run(rows, a + size_t(p) * plane_stride, K_, acc + size_t(p * Q + q) * blk, N_);
}

void IntLinear::epilogue_row(const int32_t* acc, int rows, int r, const uint8_t* a, size_t plane_stride, float* y,
                             const RowQuant* rq) const {
  const int P = a_planes(), Q = b_planes();
  const size_t blk = size_t(rows) * size_t(N_);
  const int32_t* row = acc + size_t(r) * size_t(N_);
  const float* bias = bias_.empty() ? nullptr : bias_.data();
  if (x_.per_token && !rq) fail(ErrorKind::Internal, "site ", id_.name(), ": per-token rows need their steps");
  if (groups_ > 1) {
    const int Kg = K_ / groups_;
    for (int g = 0; g < groups_; ++g)
      accumulate_token_group(y, row + size_t(g) * blk, rq[g].zp, colsum32_.data() + size_t(g) * size_t(N_),
                             rq[g].delta, g == 0, size_t(N_));
    scale_bias_row(y, wscale_.data(), bias, size_t(N_));
    if (woffset_.empty()) return;
    float s = 0;  // Σ_g Δ_g · Σ_{k∈g} qx, Σ_{k∈g} qx = Σ_{k∈g} u − K/G·zp_g
    for (int g = 0; g < groups_; ++g) {
      const int64_t su = sum_u8(a + size_t(r) * size_t(K_) + size_t(g) * size_t(Kg), size_t(Kg));
      s += rq[g].delta * float(su - int64_t(Kg) * rq[g].zp);
    }
    add_scaled_row(y, woffset_.data(), s, size_t(N_));
    return;
  }
  const int32_t zp = x_.per_token ? rq->zp : x_.zp;
  const float rdelta = x_.per_token ? rq->delta : 1.0f;
  if (x_.per_token && Q == 1) {
    dequantize_row_token(row, zp, colsum32_.data(), wscale_.data(), rdelta, bias, y, size_t(N_));
  } else if (P == 1 && Q == 1) {
    dequantize_row(row, x_.zp ? comp_.data() : nullptr, scale_.data(), bias, y, size_t(N_));
  } else {
    // Exact combination of the plane products: Σ u·qw = Σ_p Σ_q 256^p · 128^q · (plane p · plane q).
    for (int n = 0; n < N_; ++n) {
      int64_t t = 0;
      for (int p = 0; p < P; ++p)
        for (int q = 0; q < Q; ++q)
          t += (int64_t(row[size_t(p * Q + q) * blk + size_t(n)]) << (8 * p + 7 * q));
      y[n] = float(t - int64_t(zp) * colsum_[size_t(n)]);
    }
    if (x_.per_token) scale_bias_row_token(y, wscale_.data(), rdelta, bias, size_t(N_));
    else scale_bias_row(y, scale_.data(), bias, size_t(N_));
  }
  if (!offset_.empty() || (x_.per_token && !woffset_.empty())) {
    // Σ_k qx[r][k] = Σ_k u − K·zp, u = lo + 256·hi.
    int64_t s = 0;
    for (int p = 0; p < P; ++p)
      s += sum_u8(a + size_t(p) * plane_stride + size_t(r) * size_t(K_), size_t(K_)) << (8 * p);
    const float sx = float(s - int64_t(K_) * zp);
    if (x_.per_token) add_scaled_row(y, woffset_.data(), rdelta * sx, size_t(N_));
    else add_scaled_row(y, offset_.data(), sx, size_t(N_));
  }
}

void IntLinear::gemm_tile_f32(int rows, const float* x, float* y) const {
  gemm_nt_f32(rows, N_, K_, x, w_.data(), y);
}

void IntLinear::epilogue_row_f32(float* y) const {
  if (!bias_.empty()) add_bias_rows(y, 1, size_t(N_), bias_.data());
}

}  // namespace vitq
