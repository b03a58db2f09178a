#include "numerics/pack_bits.h"

namespace vitq {

// The fast versions keep a 64-bit window of the stream: values are shifted into (pack) or
// out of (unpack) the window, whole bytes move between window and memory.

uint64_t pack_codes(const int32_t* codes, size_t n, int bits, uint8_t* out, uint64_t bit_offset) {
  const uint64_t mask = (uint64_t(1) << bits) - 1;
  uint8_t* p = out + bit_offset / 8;
  unsigned fill = unsigned(bit_offset % 8);
  uint64_t window = fill ? (*p & ((1u << fill) - 1)) : 0;  // bits already in the first byte
  for (size_t i = 0; i < n; ++i) {
    window |= (uint64_t(uint32_t(codes[i])) & mask) << fill;
    fill += unsigned(bits);
    while (fill >= 8) {
      *p++ = uint8_t(window);
      window >>= 8;
      fill -= 8;
    }
  }
  if (fill) *p = uint8_t(window);  // partial last byte (its high bits stay zero)
  return bit_offset + uint64_t(n) * uint64_t(bits);
}

uint64_t unpack_codes(const uint8_t* in, size_t n, int bits, int32_t* codes, uint64_t bit_offset) {
  const uint64_t mask = (uint64_t(1) << bits) - 1;
  const unsigned sign_shift = 32u - unsigned(bits);
  const uint8_t* p = in + bit_offset / 8;
  unsigned skip = unsigned(bit_offset % 8);
  uint64_t window = 0;
  unsigned have = 0;
  if (n && skip) {
    window = uint64_t(*p++) >> skip;
    have = 8 - skip;
  }
  for (size_t i = 0; i < n; ++i) {
    while (have < unsigned(bits)) {
      window |= uint64_t(*p++) << have;
      have += 8;
    }
    const uint32_t v = uint32_t(window & mask);
    window >>= bits;
    have -= unsigned(bits);
    codes[i] = static_cast<int32_t>(v << sign_shift) >> sign_shift;  // sign-extend b bits
  }
  return bit_offset + uint64_t(n) * uint64_t(bits);
}

uint64_t pack_codes_ref(const int32_t* codes, size_t n, int bits, uint8_t* out, uint64_t bit_offset) {
  uint64_t j = bit_offset;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t v = uint32_t(codes[i]);
    for (int b = 0; b < bits; ++b, ++j) {
      const uint8_t bit = uint8_t((v >> b) & 1u);
      out[j / 8] = uint8_t((out[j / 8] & ~(1u << (j % 8))) | (unsigned(bit) << (j % 8)));
    }
  }
  return j;
}

uint64_t unpack_codes_ref(const uint8_t* in, size_t n, int bits, int32_t* codes, uint64_t bit_offset) {
  uint64_t j = bit_offset;
  for (size_t i = 0; i < n; ++i) {
    int64_t v = 0;
    for (int b = 0; b < bits; ++b, ++j) v |= int64_t((in[j / 8] >> (j % 8)) & 1u) << b;
    if (v >= (int64_t(1) << (bits - 1))) v -= int64_t(1) << bits;  // two's complement
    codes[i] = int32_t(v);
  }
  return j;
}

}  // namespace vitq
