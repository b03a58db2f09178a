// The two integer GEMMs of one attention head on Intel AMX (Sapphire Rapids and later), for the
// shapes oneDNN's AMX kernels handle slowly (measured on ViT-Ti's heads, 197 tokens × 64: Q·Kᵀ
// 16 µs and P·V 13 µs per head through oneDNN, 6 and 7 µs here):
//   scores   S (M × N, s32) = Q (M × d, u8) · Kᵀ,  K (N × d, s8) packed by pack_kt_vnni
//   context  O (M × d, s32) = P (M × N, u8) · V,   V (N × d, s8) packed by pack_v_vnni
// with d a multiple of 16 up to 64 (the head width) and any M, N. Exact integer sums, as oneDNN's.
// The kernels work on 16-row tiles: they read up to 15 rows past M of their A operand and write up
// to 15 rows past M of their output (the caller's buffers allow for it); P's rows are n_pad_k(N)
// bytes apart, their columns N..n_pad_k(N) − 1 zero. The `_ref` functions are the scalar
// definitions the tests compare with (unpacked operands).
#pragma once
#include <cstddef>
#include <cstdint>

namespace vitq {

// True if the CPU has AMX-TILE and AMX-INT8 and the OS lets this process use the tile data.
bool amx_int8_available();
// Whether these kernels take a head of width d.
inline bool amx_attention_head(int d) { return d > 0 && d % 16 == 0 && d <= 64; }

inline int amx_pad16(int n) { return (n + 15) / 16 * 16; }  // rows of a tile grid
inline int n_pad_k(int n) { return (n + 63) / 64 * 64; }    // P's row length (K steps of 64 bytes)

// Kᵀ in AMX's B layout: out[kk][n] = the four bytes K[n][4kk..4kk+3] as one int32, kk < d/4,
// n < amx_pad16(N) (zero past N): d/4 × amx_pad16(N) int32.
void pack_kt_vnni(const int8_t* k, int N, int d, int32_t* out);
// V in AMX's B layout: out[(t/4)·d·4 + n·4 + t%4] = V[t][n], t < n_pad_k(N) (zero past N):
// n_pad_k(N) × d bytes.
void pack_v_vnni(const int8_t* v, int N, int d, int8_t* out);

// S rows [0, M) (ldc ≥ amx_pad16(N) int32 apart) from Q (rows lda bytes apart) and packed Kᵀ.
void qk_u8s8_amx(int M, int N, int d, const uint8_t* q, int lda, const int32_t* kt_packed, int32_t* s, int ldc);
// O rows [0, M) (ldc ≥ d int32 apart) from P (rows n_pad_k(N) bytes apart) and packed V.
void pv_u8s8_amx(int M, int N, int d, const uint8_t* p, const int8_t* v_packed, int32_t* o, int ldc);

void qk_u8s8_ref(int M, int N, int d, const uint8_t* q, int lda, const int8_t* k, int32_t* s, int ldc);
void pv_u8s8_ref(int M, int N, int d, const uint8_t* p, int ldp, const int8_t* v, int32_t* o, int ldc);

}  // namespace vitq
