// Row kernels of the integer runtime: quantize float rows into the operand codes of an int8
// GEMM, and turn its int32 accumulators back into floats. Every quantizing kernel computes
// exactly numerics/quantizer.h's expression clip(nearbyint(x / Δ), lo, hi) (a true division), so
// the codes equal the simulator's for the same float input. Single-threaded over the values
// they are given; compiled for several x86-64 levels, the best chosen at run time.
//
// Operand encodings (see int_linear.h for how a GEMM uses them):
//   A side (u8), bits <= 8:   u = code + zp, zp = 128 for a signed grid, 0 for an unsigned one
//   A side (u8), bits 9..10:  u = code + zp (zp = 512 signed, 0 unsigned) in [0, 1023], stored as
//                             two planes lo = u & 255 and hi = u >> 8, so u = lo + 256·hi
//   B side (s8), bits <= 8:   the code itself
//   B side (s8), bits 9..10:  two planes lo = code & 127 in [0, 127] and hi = code >> 7 in
//                             [−4, 3], so code = lo + 128·hi
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "numerics/quantizer.h"

namespace vitq {

// Zero point of the A-side encoding of a grid.
inline int32_t a_zero_point(int bits, Grid g) { return g == Grid::Unsigned ? 0 : (bits <= 8 ? 128 : 512); }
// Planes of an operand of `bits` bits: 1 up to 8 bits, 2 for 9..10.
inline int operand_planes(int bits) { return bits <= 8 ? 1 : 2; }

// A side: u = clip(nearbyint(x / Δ), lo, hi) + zp into u8 (bits <= 8). AVX-512 when the CPU has
// it (numerics/int8_kernels_avx512.cpp), else the portable loop; `_ref` is the scalar reference
// (quantize_one per value) the tests compare both with.
void quantize_a_u8(const float* x, uint8_t* u, size_t n, float delta, QRange r, int32_t zp);
void quantize_a_u8_ref(const float* x, uint8_t* u, size_t n, float delta, QRange r, int32_t zp);
// A side, 9..10 bits: planes lo/hi of u = code + zp. Returns Σ codes.
int32_t quantize_a_u8_split(const float* x, uint8_t* lo, uint8_t* hi, size_t n, float delta, QRange r, int32_t zp);
// B side: the code into s8 (bits <= 8). Returns Σ codes. Dispatch and reference as above.
int32_t quantize_b_s8(const float* x, int8_t* q, size_t n, float delta, QRange r);
int32_t quantize_b_s8_ref(const float* x, int8_t* q, size_t n, float delta, QRange r);

// Every implementation of the two quantizers, the dispatched one first among those the CPU can
// run (XNNPACK-style: tests run each available variant against the `_ref` functions, so the
// portable loop is checked on AVX-512 machines too).
struct QuantizerVariant {
  const char* name;  // "avx512", "portable"
  bool available;    // the CPU can run it
  void (*a_u8)(const float* x, uint8_t* u, size_t n, float delta, QRange r, int32_t zp);
  int32_t (*b_s8)(const float* x, int8_t* q, size_t n, float delta, QRange r);
};
const std::vector<QuantizerVariant>& quantizer_variants();

// Whether the AVX-512 kernels are used on this CPU.
bool int8_kernels_use_avx512();
// B side, 9..10 bits: planes lo = code & 127, hi = code >> 7. Returns Σ codes.
int32_t quantize_b_s8_split(const float* x, int8_t* lo, int8_t* hi, size_t n, float delta, QRange r);

// y[j] = float(acc[j] − comp[j]) · scale[j] + bias[j]   (comp, bias may be null)
void dequantize_row(const int32_t* acc, const int32_t* comp, const float* scale, const float* bias, float* y,
                    size_t n);
// y[j] = float(acc[j] − comp[j]) · scale + bias[j]        (one scale; comp, bias may be null)
void dequantize_row_scalar(const int32_t* acc, const int32_t* comp, float scale, const float* bias, float* y,
                           size_t n);

// Per-token rows (quantizer.h: TokenQuant): y[j] = float(acc[j] − zp·colsum[j]) · (delta · wscale[j]) + bias[j]
// (bias may be null); the row's step `delta` times each channel's weight step, then as above.
void dequantize_row_token(const int32_t* acc, int32_t zp, const int32_t* colsum, const float* wscale, float delta,
                          const float* bias, float* y, size_t n);
// Per-token rows in channel groups (plan.h: token_group), one group at a time in group order:
// t[j] = (first ? 0 : t[j]) + float(acc[j] − zp·colsum[j]) · delta with the group's int32 sums acc,
// its step and zero point, and its weight column sums colsum (null: no zero-point term, zp 0);
// after the last group scale_bias_row(t, wscale, bias) gives the output row. The simulator passes
// its exact float sums as int32 and the runtime its GEMM's: the same float operations.
void accumulate_token_group(float* t, const int32_t* acc, int32_t zp, const int32_t* colsum, float delta, bool first,
                            size_t n);
// The same on a sum already in float: y[j] = y[j] · (delta · wscale[j]) + bias[j].
void scale_bias_row_token(float* y, const float* wscale, float delta, const float* bias, size_t n);

// In place y[j] = y[j] · scale[j] + bias[j] (bias may be null): the same float operations as
// dequantize_row on the int32 sum, for a sum already in float (the simulator's GEMM of codes,
// exact below 2^24, and the 9..10-bit combinations).
void scale_bias_row(float* y, const float* scale, const float* bias, size_t n);
void scale_bias_row_scalar(float* y, float scale, const float* bias, size_t n);
// y[j] += v[j] · s (the weight-offset term o_j·Δx · Σ_k qx).
void add_scaled_row(float* y, const float* v, float s, size_t n);

// This file is compiled without floating-point contraction (no FMA): a·b + c is two roundings
// in every clone, so that the integer runtime and the simulator, which both call these
// kernels, get the same floats from the same integers.

// out[j] = float(acc0[j] + 256·acc1[j] − comp[j]) with the sum in 64 bits (comp may be null): the
// two A-plane products of a 9..16-bit A operand by an 8-bit B, combined exactly, then rounded once.
void combine_two_a_planes_row(const int32_t* acc0, const int32_t* acc1, const int32_t* comp, float* out, size_t n);

// Sum of n u8 values (row sums of A codes for a weight offset); AVX-512 (vpsadbw) where the CPU
// has it, else sum_u8_portable.
int64_t sum_u8(const uint8_t* u, size_t n);
int64_t sum_u8_portable(const uint8_t* u, size_t n);

// The exact u8 x s8 GEMM on CPUs whose int8 kernels add adjacent products into saturating int16
// (runtime/u8s8_matmul.h): the largest code of `rows` rows of `cols` values, `lda` apart; the
// largest |b| of n values; the split of each code u into lo = u & 127 (rows 0..rows−1 of `lo_hi`,
// `cols` apart) and hi = u >> 7 (the next `rows` rows); and c[i][j] += c_hi[i][j] << 7.
uint8_t max_u8_rows(const uint8_t* a, size_t rows, size_t cols, size_t lda);
int max_abs_s8(const int8_t* b, size_t n);
void split_u8_lo7_hi1_rows(const uint8_t* a, size_t rows, size_t cols, size_t lda, uint8_t* lo_hi);
void add_shl7_i32_rows(int32_t* c, size_t ldc, const int32_t* c_hi, size_t ld_hi, size_t rows, size_t cols);

}  // namespace vitq
