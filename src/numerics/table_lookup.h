// Table lookup on a quantized input — the integer runtime's GELU (plan.h: GeluTable): for each
// value x, its code c = clip(nearbyint(x / Δ), r.lo, r.hi) (numerics/quantizer.h's expression),
// then the table entry at c − r.lo (the table has r.hi − r.lo + 1 entries).
//   table_lookup_u8    into u8 (the entries are the consumer's A codes, 0..255, held as int32)
//   table_lookup_f32   into floats
// AVX-512 VBMI byte permutes (u8, tables of at most 256 entries) or AVX-512 gathers where the CPU
// has them, else AVX2 (numerics/int8_kernels_avx2.h), else the portable loop; `_ref` is the scalar reference
// the tests compare every variant with.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "numerics/quantizer.h"

namespace vitq {

void table_lookup_u8(const float* x, size_t n, float delta, QRange r, const int32_t* table, uint8_t* out);
void table_lookup_f32(const float* x, size_t n, float delta, QRange r, const float* table, float* out);
void table_lookup_u8_ref(const float* x, size_t n, float delta, QRange r, const int32_t* table, uint8_t* out);
void table_lookup_f32_ref(const float* x, size_t n, float delta, QRange r, const float* table, float* out);

// A table lookup whose results are quantized per token (quantizer.h: token_quant at `bits` and
// clip ratio `clip`) into u8 codes u = code − lo — exactly table_lookup_f32 followed by token_quant
// and quantize_a_u8, without the floats: the integer runtime's GELU when fc2's input is per token.
// `valley` is table_valley(table) (≥ 0), which the fast variant needs (it finds the row's minimum
// and maximum from the indices present); tables of more than 256 entries take the plain path.
TokenQuant table_lookup_token_u8(const float* x, size_t n, float delta, QRange r, const float* table, int valley,
                                 int bits, float clip, uint8_t* out);
// The portable loop (any table; the fast variant's fallback).
TokenQuant table_lookup_token_u8_portable(const float* x, size_t n, float delta, QRange r, const float* table,
                                          int valley, int bits, float clip, uint8_t* out);
// The scalar parts shared by the byte-index variants of table_lookup_token_u8 (AVX-512 VBMI,
// AVX2): pass 1 writes each value's table index and keeps the least and greatest index and the
// nearest indices on either side of the table's valley; for a valley table the row's least value
// is at one of those two and its greatest at the least or greatest index.
struct ValleyScan {
  // The byte-index variants apply: at most 256 entries, a valley table, codes of at most 8 bits.
  static bool applies(QRange r, int valley, int bits) {
    const int64_t entries = int64_t(r.hi) - int64_t(r.lo) + 1;
    return entries <= 256 && valley >= 0 && valley < entries && bits <= 8;
  }
  int imin = 255, imax = 0;  // least and greatest index present
  int il = 0, ir = 255;      // greatest index at or below the valley (L), least at or above it (R)
  bool any_l = false, any_r = false;
  // Folds in per-lane results of a vector pass (lanes never set: 255, 0, 0, 255).
  void fold_lanes(const uint8_t* mn, const uint8_t* mx, const uint8_t* l, const uint8_t* r, int lanes);
  // Pass 1 for x[i, n) one value at a time (a vector pass's tail).
  void scan_tail(const float* x, size_t i, size_t n, float delta, QRange r, int valley, uint8_t* out);
  // token_quant of the n > 0 looked-up values scanned (table: the valley table).
  TokenQuant token_quant(const float* table, size_t n, int bits, float clip) const;
};

// The index of the least entry of a table that falls to it and rises after it (non-increasing, then
// non-decreasing: GELU on a grid), or −1 if the table is not such a valley.
int table_valley(const float* table, size_t entries);

struct TableLookupVariant {
  const char* name;  // "avx512-vbmi", "avx512", "avx2", "portable"
  bool available;
  void (*u8)(const float* x, size_t n, float delta, QRange r, const int32_t* table, uint8_t* out);
  void (*f32)(const float* x, size_t n, float delta, QRange r, const float* table, float* out);
  TokenQuant (*token_u8)(const float* x, size_t n, float delta, QRange r, const float* table, int valley, int bits,
                         float clip, uint8_t* out);
};
const std::vector<TableLookupVariant>& table_lookup_variants();

}  // namespace vitq
