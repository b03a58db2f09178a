// Softmax with a table exponent (plan.h: SoftmaxTable; --softmax-table BITS) — the integer-style
// softmax of I-ViT / HAGO lowering, as a plan option the simulator and the integer runtime share.
// For a row s (scores before the 1/√d scale) with maximum m, each entry's exponent argument
// x = (m − s_j)·scale ≥ 0 is put on a grid of 2^bits points over [0, range]:
//     i_j = min(round(x · (2^bits − 1) / range), 2^bits − 1),
// its exponential read from two 32-entry tables, e_j = hi[i_j >> 5] · lo[i_j & 31] with
// hi[a] = e^(−32·a·Δe), lo[b] = e^(−b·Δe), Δe = range / (2^bits − 1) (each entry rounded to float
// once; their product within 1 ulp of e^(−i·Δe)), and p_j = e_j · (1 / Σ_k e_k) with the sum taken
// in 16 fixed lanes, so every ISA clone gives the same bits. No transcendental function per value.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "numerics/quantizer.h"

namespace vitq {

struct SoftmaxExpTable {
  int bits = 10;
  float range = 16.0f;
  float inv_step = 0.0f;  // (2^bits − 1) / range
  float hi[32] = {}, lo[32] = {};
  SoftmaxExpTable(int bits, float range);
  // The index of exponent argument x from xk = x·(scale·inv_step) ≥ 0 (NaN: the last index), and
  // the exponential at an index: every variant's scalar steps.
  __attribute__((always_inline)) int32_t index(float xk) const {
    const float q = std::nearbyint(xk), last = float((1 << bits) - 1);
    return int32_t(q < last ? q : last);
  }
  __attribute__((always_inline)) float exp_at(int32_t i) const { return hi[i >> 5] * lo[i & 31]; }
};

// In place over `rows` rows of n values.
void softmax_table_rows(float* s, size_t rows, size_t n, float scale, const SoftmaxExpTable& t);
// One row's probabilities straight to u8 codes on a uniform grid, u = clip(round(p / Δ), r) + zp —
// the bits of softmax_table_rows then quantize_a_u8 (numerics/int8_kernels.h), in one pass less
// (the probabilities are not stored; s is left holding the exponentials): the integer runtime's
// attention when P·V takes P per tensor or per head.
void softmax_table_codes_row(float* s, size_t n, float scale, const SoftmaxExpTable& t, float delta, QRange r,
                             int32_t zp, uint8_t* u);
// The implementations (AVX-512 or AVX2 permutes of the tables; the portable loop), all giving the same bits.
struct SoftmaxTableVariant {
  const char* name;
  bool available;
  void (*rows)(float* s, size_t rows, size_t n, float scale, const SoftmaxExpTable& t);
  void (*codes_row)(float* s, size_t n, float scale, const SoftmaxExpTable& t, float delta, QRange r, int32_t zp,
                    uint8_t* u);
};
const std::vector<SoftmaxTableVariant>& softmax_table_variants();
void softmax_table_rows_portable(float* s, size_t rows, size_t n, float scale, const SoftmaxExpTable& t);
// Scalar reference: the same definition in double where it is exact, for tests (bound in the test).
void softmax_table_rows_ref(float* s, size_t rows, size_t n, float scale, const SoftmaxExpTable& t);

}  // namespace vitq
