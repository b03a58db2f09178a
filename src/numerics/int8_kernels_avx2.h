// AVX2 versions of the table kernels (numerics/table_lookup.h, numerics/softmax_table.h) for CPUs
// without AVX-512, same contracts and bits (the portable loops divide and look up one value at a
// time: GELU tables were 20 % of a W8A8 ViT-Ti forward on an AVX2 EPYC). Codes eight at a time by
// the true quotient (vdivps, rounded to nearest even: code_f's expression), then plain loads of
// the table entries (no vpgatherdd: slow on several AVX2 CPUs). Call only where the CPU has AVX2
// (int8_kernels_avx2_available()); the tests compare every variant with the `_ref` functions.
#pragma once
#include <cstddef>
#include <cstdint>

#include "numerics/quantizer.h"

namespace vitq {

bool int8_kernels_avx2_available();

// numerics/softmax_table.h: the two 32-entry tables in registers (four permutes and three blends a
// lookup), the sums in the portable loop's 16 lanes.
struct SoftmaxExpTable;
void softmax_table_rows_avx2(float* s, size_t rows, size_t n, float scale, const SoftmaxExpTable& t);
void softmax_table_codes_row_avx2(float* s, size_t n, float scale, const SoftmaxExpTable& t, float delta, QRange r,
                                  int32_t zp, uint8_t* u);

// numerics/table_lookup.h
void table_lookup_u8_avx2(const float* x, size_t n, float delta, QRange r, const int32_t* table, uint8_t* out);
void table_lookup_f32_avx2(const float* x, size_t n, float delta, QRange r, const float* table, float* out);
// table_lookup_token_u8 for tables of at most 256 entries that are valleys (table_valley ≥ 0) and
// bits ≤ 8: pass 1 writes each value's table index into out and finds the least and greatest
// index and the nearest present on each side of the valley (from which the row's minimum and
// maximum follow), pass 2 replaces each index by its entry's per-token code. Other tables: the
// portable loop.
TokenQuant table_lookup_token_u8_avx2(const float* x, size_t n, float delta, QRange r, const float* table,
                                      int valley, int bits, float clip, uint8_t* out);

}  // namespace vitq
