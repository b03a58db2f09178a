// AVX-512 versions of the hot quantizing kernels of int8_kernels.h (same contracts). Call only
// when the CPU has AVX-512 F/BW/VL (int8_kernels.cpp dispatches).
#pragma once
#include <cstddef>
#include <cstdint>

#include "numerics/quantizer.h"

namespace vitq {

void quantize_a_u8_avx512(const float* x, uint8_t* u, size_t n, float delta, QRange r, int32_t zp);
int32_t quantize_b_s8_avx512(const float* x, int8_t* q, size_t n, float delta, QRange r);
// sum_u8 (int8_kernels.h): 64 bytes per step, summed in eight 64-bit lanes by vpsadbw against zero.
int64_t sum_u8_avx512(const uint8_t* u, size_t n);
// numerics/softmax_table.h
struct SoftmaxExpTable;
void softmax_table_rows_avx512(float* s, size_t rows, size_t n, float scale, const SoftmaxExpTable& t);
void softmax_table_codes_row_avx512(float* s, size_t n, float scale, const SoftmaxExpTable& t, float delta, QRange r,
                                    int32_t zp, uint8_t* u);
// numerics/table_lookup.h
void table_lookup_u8_avx512(const float* x, size_t n, float delta, QRange r, const int32_t* table, uint8_t* out);
// The same with AVX-512 VBMI byte permutes (tables of at most 256 entries; larger ones: the gather).
void table_lookup_u8_avx512_vbmi(const float* x, size_t n, float delta, QRange r, const int32_t* table, uint8_t* out);
// table_lookup_token_u8 (table_lookup.h) with AVX-512 VBMI: pass 1 writes each value's table index
// as a byte and finds the least and greatest index and, around the table's valley, the nearest
// indices on either side (the row's minimum and maximum value are at those); the row's codes of the
// at most 256 entries are quantized once; pass 2 looks the indices up by byte permutes.
TokenQuant table_lookup_token_u8_avx512_vbmi(const float* x, size_t n, float delta, QRange r, const float* table,
                                             int valley, int bits, float clip, uint8_t* out);
void table_lookup_f32_avx512(const float* x, size_t n, float delta, QRange r, const float* table, float* out);

}  // namespace vitq
