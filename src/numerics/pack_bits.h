// Dense packing of b-bit integer codes (b = 2..8) into a byte stream, for the weights of a
// quantized model file (docs/FORMAT.md).
//
// Bit order: one little-endian bit stream. Value i of a run of b-bit values that starts at
// stream bit s occupies stream bits [s + i·b, s + (i+1)·b), least significant bit first;
// stream bit j is bit (j mod 8) of byte ⌊j / 8⌋. A value is stored as its b-bit two's
// complement (code & (2^b − 1)) and read back sign-extended. So 4-bit codes go two per byte
// (the first in the low nibble), 6-bit codes four per three bytes, 8-bit codes one per byte.
// Runs of different widths follow each other without padding (rows of per-channel bit-widths);
// the unused high bits of the last byte are zero.
#pragma once
#include <cstddef>
#include <cstdint>

namespace vitq {

// Bytes holding `bits_total` stream bits.
inline size_t packed_bytes_for_bits(uint64_t bits_total) { return static_cast<size_t>((bits_total + 7) / 8); }

// Writes n codes of `bits` bits (each must lie in the signed b-bit range [−2^(b−1), 2^(b−1)−1])
// at stream bit `bit_offset` of `out`; the bytes it touches beyond earlier writes must be zero
// (the caller zero-fills the buffer first). Returns the stream bit after the last value.
uint64_t pack_codes(const int32_t* codes, size_t n, int bits, uint8_t* out, uint64_t bit_offset);
// Reads n sign-extended codes of `bits` bits from stream bit `bit_offset`; returns the next bit.
uint64_t unpack_codes(const uint8_t* in, size_t n, int bits, int32_t* codes, uint64_t bit_offset);

// Bit-by-bit scalar references of the two (for the tests).
uint64_t pack_codes_ref(const int32_t* codes, size_t n, int bits, uint8_t* out, uint64_t bit_offset);
uint64_t unpack_codes_ref(const uint8_t* in, size_t n, int bits, int32_t* codes, uint64_t bit_offset);

}  // namespace vitq
