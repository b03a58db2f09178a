#include "numerics/attention_gemm_amx.h"

#include <cstring>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace vitq {
namespace {

#define VITQ_AMX __attribute__((target("amx-tile,amx-int8")))

// The 64-byte tile configuration (palette 1): bytes per row and rows of each of the 8 tiles.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64, "ldtilecfg reads 64 bytes");

bool probe_amx() {
#if defined(__x86_64__)
  unsigned a, b, c, d;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
  const bool tile = (d >> 24) & 1, int8 = (d >> 25) & 1;
  if (!tile || !int8) return false;
  // Linux: ask for the tile data state (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); oneDNN asks too.
  constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
#else
  return false;
#endif
}

}  // namespace

bool amx_int8_available() {
  static const bool ok = probe_amx();
  return ok;
}

void pack_kt_vnni(const int8_t* k, int N, int d, int32_t* out) {
  const int np = amx_pad16(N), kk_n = d / 4;
  for (int kk = 0; kk < kk_n; ++kk) {
    int32_t* row = out + size_t(kk) * size_t(np);
    for (int n = 0; n < N; ++n) std::memcpy(row + n, k + size_t(n) * size_t(d) + size_t(4 * kk), 4);
    for (int n = N; n < np; ++n) row[n] = 0;
  }
}

void pack_v_vnni(const int8_t* v, int N, int d, int8_t* out) {
  const int kp = n_pad_k(N);
  for (int t = 0; t < kp; t += 4)
    for (int n = 0; n < d; ++n)
      for (int j = 0; j < 4; ++j)
        out[(size_t(t) * size_t(d)) + size_t(n) * 4 + size_t(j)] = t + j < N ? v[size_t(t + j) * size_t(d) + size_t(n)] : 0;
}

// Tiles: C 0–3 (16 × 16 s32), A 4–5 (16 rows × d or 64 bytes), B 6–7 (d/4 or 16 rows × 64 bytes).
// Q·Kᵀ: two row tiles × two column tiles per step (each A and B tile used twice).
VITQ_AMX
void qk_u8s8_amx(int M, int N, int d, const uint8_t* q, int lda, const int32_t* kt, int32_t* s, int ldc) {
  const int np = amx_pad16(N), mp = amx_pad16(M);
  TileConfig cfg;
  for (int t = 0; t < 4; ++t) cfg.colsb[t] = 64, cfg.rows[t] = 16;
  for (int t = 4; t < 6; ++t) cfg.colsb[t] = uint16_t(d), cfg.rows[t] = 16;
  for (int t = 6; t < 8; ++t) cfg.colsb[t] = 64, cfg.rows[t] = uint8_t(d / 4);
  _tile_loadconfig(&cfg);
  const size_t bs = size_t(np) * 4, cs = size_t(ldc) * 4;
  int i = 0;
  for (; i + 32 <= mp; i += 32) {
    _tile_loadd(4, q + size_t(i) * size_t(lda), lda);
    _tile_loadd(5, q + size_t(i + 16) * size_t(lda), lda);
    int32_t *c0 = s + size_t(i) * size_t(ldc), *c1 = c0 + 16 * size_t(ldc);
    int j = 0;
    for (; j + 32 <= np; j += 32) {
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      _tile_loadd(6, kt + j, bs);
      _tile_loadd(7, kt + j + 16, bs);
      _tile_dpbusd(0, 4, 6);
      _tile_dpbusd(1, 4, 7);
      _tile_dpbusd(2, 5, 6);
      _tile_dpbusd(3, 5, 7);
      _tile_stored(0, c0 + j, cs);
      _tile_stored(1, c0 + j + 16, cs);
      _tile_stored(2, c1 + j, cs);
      _tile_stored(3, c1 + j + 16, cs);
    }
    if (j < np) {
      _tile_zero(0);
      _tile_zero(2);
      _tile_loadd(6, kt + j, bs);
      _tile_dpbusd(0, 4, 6);
      _tile_dpbusd(2, 5, 6);
      _tile_stored(0, c0 + j, cs);
      _tile_stored(2, c1 + j, cs);
    }
  }
  if (i < mp) {
    _tile_loadd(4, q + size_t(i) * size_t(lda), lda);
    int32_t* c0 = s + size_t(i) * size_t(ldc);
    for (int j = 0; j < np; j += 16) {
      _tile_zero(0);
      _tile_loadd(6, kt + j, bs);
      _tile_dpbusd(0, 4, 6);
      _tile_stored(0, c0 + j, cs);
    }
  }
  _tile_release();
}

// P·V: a row tile's d/16 output tiles accumulate over K steps of 64.
VITQ_AMX
void pv_u8s8_amx(int M, int N, int d, const uint8_t* p, const int8_t* v, int32_t* o, int ldc) {
  const int kp = n_pad_k(N), mp = amx_pad16(M), nt = d / 16;
  TileConfig cfg;
  for (int t = 0; t < 4; ++t) cfg.colsb[t] = 64, cfg.rows[t] = 16;
  for (int t = 4; t < 8; ++t) cfg.colsb[t] = 64, cfg.rows[t] = 16;
  _tile_loadconfig(&cfg);
  const size_t bs = size_t(d) * 4, cs = size_t(ldc) * 4;
  for (int i = 0; i < mp; i += 16) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int k = 0; k < kp; k += 64) {
      _tile_loadd(4, p + size_t(i) * size_t(kp) + size_t(k), kp);
      const int8_t* b = v + size_t(k) * size_t(d);  // K rows k..k+63 = B rows k/4..k/4+15
      _tile_loadd(6, b, bs);
      _tile_dpbusd(0, 4, 6);
      if (nt > 1) {
        _tile_loadd(7, b + 64, bs);
        _tile_dpbusd(1, 4, 7);
      }
      if (nt > 2) {
        _tile_loadd(5, b + 128, bs);
        _tile_dpbusd(2, 4, 5);
      }
      if (nt > 3) {
        _tile_loadd(6, b + 192, bs);
        _tile_dpbusd(3, 4, 6);
      }
    }
    int32_t* c = o + size_t(i) * size_t(ldc);
    _tile_stored(0, c, cs);
    if (nt > 1) _tile_stored(1, c + 16, cs);
    if (nt > 2) _tile_stored(2, c + 32, cs);
    if (nt > 3) _tile_stored(3, c + 48, cs);
  }
  _tile_release();
}

void qk_u8s8_ref(int M, int N, int d, const uint8_t* q, int lda, const int8_t* k, int32_t* s, int ldc) {
  for (int i = 0; i < M; ++i)
    for (int n = 0; n < N; ++n) {
      int32_t t = 0;
      for (int j = 0; j < d; ++j) t += int32_t(q[size_t(i) * size_t(lda) + size_t(j)]) * int32_t(k[size_t(n) * size_t(d) + size_t(j)]);
      s[size_t(i) * size_t(ldc) + size_t(n)] = t;
    }
}

void pv_u8s8_ref(int M, int N, int d, const uint8_t* p, int ldp, const int8_t* v, int32_t* o, int ldc) {
  for (int i = 0; i < M; ++i)
    for (int n = 0; n < d; ++n) {
      int32_t t = 0;
      for (int j = 0; j < N; ++j) t += int32_t(p[size_t(i) * size_t(ldp) + size_t(j)]) * int32_t(v[size_t(j) * size_t(d) + size_t(n)]);
      o[size_t(i) * size_t(ldc) + size_t(n)] = t;
    }
}

}  // namespace vitq
