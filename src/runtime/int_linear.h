// A linear site prepared for execution: for a quantized site its integer weights, split into s8
// planes and reordered once into oneDNN's layout, with everything the epilogue needs; for an
// FP32 site its float weights.
//
// Integer form of a quantized site (plan.h), for input row r and output channel n:
//   y[r][n] = Δx·Δw_n · Σ_k qx[r][k]·qw[n][k]  +  o_n·Δx·Σ_k qx[r][k]  +  bias_n
// The GEMM sees u = qx + zp (u8, int8_kernels.h) and computes Σ_k u·qw; the epilogue subtracts
// zp·Σ_k qw[n][k] (precomputed here) in integers, so the integer part is exact. Per-token inputs
// in G channel groups (plan.h: token_group): one GEMM per group over its K/G columns, and
//   y[r][n] = Δw_n · Σ_g Δ[r][g] · float(Σ_{k∈g} u·qw − zp[r][g]·Σ_{k∈g} qw[n][k])  + bias_n
// (numerics/int8_kernels.h: accumulate_token_group; the simulator does the same). 9..10-bit
// operands are split into two planes each (A: u = lo + 256·hi; B: qw = lo + 128·hi) and the
// 2 or 4 plane products are combined exactly in 64-bit integers before the conversion to float.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "core/aligned.h"
#include "engine/site.h"
#include "quant/plan.h"
#include "numerics/level_grid.h"
#include "runtime/u8s8_grouped_matmul.h"
#include "runtime/u8s8_matmul.h"

namespace vitq {

struct StoredLinear;

// The A-side (activation) encoding of a quantized operand.
struct ActQuant {
  bool on = false;  // false: the consumer takes FP32
  int bits = 0;
  float delta = 1.0f;
  QRange range{0, 0};
  int32_t zp = 0;
  int planes = 1;
  bool per_token = false;             // each row: its own step and zero point (TokenQuant)
  float token_clip = 1.0f;            // per token: the clip ratio of the row's range
  int token_group = 0;                // per token: channels per group (0: the whole row is one)
  const LevelGrid* levels = nullptr;  // a level grid: the A codes are levels (two planes, zp 0)
  static ActQuant of(const OperandQuant& q);  // the encoding of the plan's operand
  // The per-token channel groups of a row of n values (1 unless per token in groups).
  int groups(size_t n) const { return OperandQuant::token_group_count(per_token, token_group, int64_t(n)); }
};

// The A codes of one row of n values (planes `plane_stride` apart); for a per-token operand the
// step and zero point (TokenQuant) of each of the row's aq.groups(n) channel groups go to rq[g].
struct RowQuant {
  float delta = 1.0f;
  int32_t zp = 0;
};
void emit_a_codes(const ActQuant& aq, const float* x, size_t n, uint8_t* u8, size_t plane_stride, RowQuant* rq);

class IntLinear {
 public:
  // x: the plan's input quantization (ignored for an FP32 site).
  IntLinear(const StoredLinear& s, const OperandQuant& x);

  const SiteId& id() const { return id_; }
  bool quantized() const { return quantized_; }
  int N() const { return N_; }
  int K() const { return K_; }
  const ActQuant& input() const { return x_; }
  int a_planes() const { return x_.planes; }
  int b_planes() const { return grouped_ ? 1 : int(mm_.size()) / groups_; }
  // Per-token channel groups of an input row (1 unless the plan groups them): RowQuants per row.
  int token_groups() const { return groups_; }
  // int32 accumulators a tile of `rows` needs.
  size_t acc_elems(int rows) const {
    return size_t(rows) * size_t(N_) * size_t(a_planes() * b_planes()) * size_t(groups_);
  }

  // Quantized: the GEMMs of rows [0, rows) of the A planes (plane p at a + p·plane_stride, rows
  // K apart) into acc (per channel group for grouped per-token inputs); then output row r of that
  // tile into y (N floats). rq: row r's token_groups() steps and zero points for a per-token input
  // (ignored otherwise).
  void gemm_tile(int rows, const uint8_t* a, size_t plane_stride, int32_t* acc) const;
  void epilogue_row(const int32_t* acc, int rows, int r, const uint8_t* a, size_t plane_stride, float* y,
                    const RowQuant* rq = nullptr) const;

  // FP32: y (rows x N) = x (rows x K) · Wᵀ; epilogue_row_f32 adds the bias.
  void gemm_tile_f32(int rows, const float* x, float* y) const;
  void epilogue_row_f32(float* y) const;

  size_t weight_bytes() const;

 private:
  SiteId id_;
  int N_ = 0, K_ = 0;
  bool quantized_ = false;
  ActQuant x_;
  int groups_ = 1;                               // per-token channel groups (ActQuant::groups(K))
  std::vector<std::unique_ptr<U8S8Matmul>> mm_;  // one per B plane, or per channel group (one plane)
  std::unique_ptr<U8S8GroupedMatmul> grouped_;   // or all channel groups in one oneDNN call
  std::vector<int64_t> colsum_;                  // Σ_k qw[n][k]
  avector<int32_t> colsum32_;                    // the same as int32 (per-token epilogue); per group g at g·N
  avector<float> wscale_;                        // Δw_n
  avector<int32_t> comp_;                        // zp·colsum (single-plane case)
  avector<float> scale_;                         // Δx·Δw_n
  avector<float> bias_;                          // N or empty
  avector<float> offset_;                        // o_n·Δx, or empty
  avector<float> woffset_;                       // o_n (per-token input), or empty
  avector<float> w_;                             // FP32 weights N x K
};

}  // namespace vitq
