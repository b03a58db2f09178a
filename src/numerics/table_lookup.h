// Table lookup on a quantized input — the integer runtime's GELU (plan.h: GeluTable): for each
// value x, its code c = clip(nearbyint(x / Δ), r.lo, r.hi) (numerics/quantizer.h's expression),
// then the table entry at c − r.lo (the table has r.hi − r.lo + 1 entries).
//   table_lookup_u8    into u8 (the entries are the consumer's A codes, 0..255, held as int32)
//   table_lookup_f32   into floats
// AVX-512 VBMI byte permutes (u8, tables of at most 256 entries) or AVX-512 gathers where the CPU
// has them, else the portable loop; `_ref` is the scalar reference
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

struct TableLookupVariant {
  const char* name;  // "avx512-vbmi", "avx512", "portable"
  bool available;
  void (*u8)(const float* x, size_t n, float delta, QRange r, const int32_t* table, uint8_t* out);
  void (*f32)(const float* x, size_t n, float delta, QRange r, const float* table, float* out);
};
const std::vector<TableLookupVariant>& table_lookup_variants();

}  // namespace vitq
