// The integer runtime: dense bit packing against a bit-by-bit reference; every kind of site in
// integers against the simulator (quantize-dequantize) and a double-precision reference; the
// fused integer forward against the simulator and the unfused integer sites on random models.
#include <gtest/gtest.h>

#include "numerics/table_lookup.h"
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <vector>

#include "engine/vit_forward.h"
#include "numerics/int8_kernels_avx512.h"
#include "quant/gelu_table.h"
#include "quant/ln_smoothing.h"
#include "quant/plan_transforms.h"
#include "quant/simulate.h"
#include "numerics/int8_kernels.h"
#include "numerics/level_grid.h"
#include "core/error.h"
#include "runtime/int_site_hook.h"
#include "runtime/int_vit_forward.h"
#include "numerics/pack_bits.h"
#include "runtime/quantized_model.h"
#include "runtime_test_util.h"

namespace vitq {
namespace {

// ------------------------------------------------------------------------------ packing

TEST(PackBits, LittleEndianBitStream) {
  std::vector<uint8_t> b(2, 0);
  const int32_t four[] = {1, -2, 7};
  EXPECT_EQ(pack_codes(four, 3, 4, b.data(), 0), 12u);
  EXPECT_EQ(b[0], 0xE1);  // value 0 in the low nibble, −2 = 0b1110 in the high one
  EXPECT_EQ(b[1], 0x07);  // unused high bits zero
  std::vector<uint8_t> s(3, 0);
  const int32_t six[] = {1, 2, 3, 4};  // 1 | 2<<6 | 3<<12 | 4<<18 = 0x103081
  pack_codes(six, 4, 6, s.data(), 0);
  EXPECT_EQ(s, (std::vector<uint8_t>{0x81, 0x30, 0x10}));
}

TEST(PackBits, RoundTripsEveryWidthAgainstTheScalarReference) {
  std::mt19937_64 rng(5);
  for (int bits = 2; bits <= 10; ++bits) {
    const QRange r = qrange(bits);
    std::uniform_int_distribution<int32_t> u(r.lo, r.hi);
    for (size_t n : {size_t(1), size_t(2), size_t(3), size_t(7), size_t(8), size_t(9), size_t(31), size_t(1001)}) {
      for (uint64_t start : {uint64_t(0), uint64_t(3), uint64_t(13)}) {
        std::vector<int32_t> v(n);
        for (auto& x : v) x = u(rng);
        v[0] = r.lo;  // the extremes and the codes around zero
        if (n > 1) v[n - 1] = r.hi;
        if (n > 3) v[1] = -1, v[2] = 0;
        const size_t bytes = packed_bytes_for_bits(start + n * size_t(bits));
        std::vector<uint8_t> fast(bytes, 0), ref(bytes, 0);
        EXPECT_EQ(pack_codes(v.data(), n, bits, fast.data(), start), start + n * bits);
        EXPECT_EQ(pack_codes_ref(v.data(), n, bits, ref.data(), start), start + n * bits);
        ASSERT_EQ(fast, ref) << "bits " << bits << " n " << n << " start " << start;
        std::vector<int32_t> back(n), back_ref(n);
        EXPECT_EQ(unpack_codes(fast.data(), n, bits, back.data(), start), start + n * bits);
        unpack_codes_ref(fast.data(), n, bits, back_ref.data(), start);
        ASSERT_EQ(back, v) << "bits " << bits << " n " << n << " start " << start;
        ASSERT_EQ(back_ref, v);
      }
    }
  }
}

TEST(PackBits, RowsOfDifferentWidthsFollowEachOther) {
  // Per-channel bit-widths: rows of 2..8 bits back to back, as in a packed weight tensor.
  std::mt19937_64 rng(6);
  const int K = 13;
  std::vector<int> widths = {2, 3, 4, 5, 6, 7, 8, 3};
  std::vector<int32_t> all;
  uint64_t total = 0;
  for (int b : widths) total += uint64_t(b) * K;
  std::vector<uint8_t> buf(packed_bytes_for_bits(total), 0), ref(buf.size(), 0);
  uint64_t off = 0, off_ref = 0;
  for (int b : widths) {
    std::uniform_int_distribution<int32_t> u(qmin(b), qmax(b));
    std::vector<int32_t> row(K);
    for (auto& x : row) x = u(rng);
    off = pack_codes(row.data(), K, b, buf.data(), off);
    off_ref = pack_codes_ref(row.data(), K, b, ref.data(), off_ref);
    all.insert(all.end(), row.begin(), row.end());
  }
  EXPECT_EQ(buf, ref);
  off = 0;
  for (size_t i = 0; i < widths.size(); ++i) {
    std::vector<int32_t> row(K);
    off = unpack_codes(buf.data(), K, widths[i], row.data(), off);
    EXPECT_TRUE(std::equal(row.begin(), row.end(), all.begin() + long(i) * K)) << "row " << i;
  }
}

// ------------------------------------------------------------------------------ kernels

// The row sums of A codes and the two-plane combination against plain 64-bit scalar arithmetic.
TEST(Int8Kernels, RowSumsAndPlaneCombinationAreExact) {
  std::mt19937_64 rng(3);
  for (size_t n : {size_t(0), size_t(1), size_t(63), size_t(64), size_t(197), size_t(3072), (size_t(1) << 24) + 5}) {
    std::vector<uint8_t> u(n);
    for (size_t i = 0; i < n; ++i) u[i] = n > 4096 ? uint8_t(255 - (i & 1)) : uint8_t(rng());
    int64_t ref = 0;
    for (uint8_t v : u) ref += v;
    EXPECT_EQ(sum_u8(u.data(), n), ref) << n;
    EXPECT_EQ(sum_u8_portable(u.data(), n), ref) << n;
    if (int8_kernels_use_avx512()) {
      EXPECT_EQ(sum_u8_avx512(u.data(), n), ref) << n;
    }
  }
  const size_t n = 197;
  std::vector<int32_t> a0(n), a1(n), comp(n);
  for (size_t j = 0; j < n; ++j) {
    a0[j] = int32_t(rng() % 2000001) - 1000000;
    a1[j] = int32_t(rng() % 16000001) - 8000000;  // 256·a1 overflows int32: the sum needs 64 bits
    comp[j] = int32_t(rng() % 200001) - 100000;
  }
  std::vector<float> out(n), out_nc(n);
  combine_two_a_planes_row(a0.data(), a1.data(), comp.data(), out.data(), n);
  combine_two_a_planes_row(a0.data(), a1.data(), nullptr, out_nc.data(), n);
  for (size_t j = 0; j < n; ++j) {
    const int64_t t = int64_t(a0[j]) + 256 * int64_t(a1[j]);
    EXPECT_EQ(out[j], float(t - comp[j])) << j;
    EXPECT_EQ(out_nc[j], float(t)) << j;
  }
}

TEST(Int8Kernels, QuantizersMatchTheScalarReference) {
  std::mt19937_64 rng(2);
  std::normal_distribution<float> nd(0, 1);
  for (int bits = 2; bits <= 8; ++bits)
    for (bool uns : {false, true}) {
      const QRange r = qrange(bits, uns ? Grid::Unsigned : Grid::Signed);
      const float delta = 3.0f / float(r.hi);
      const int32_t zp = a_zero_point(bits, uns ? Grid::Unsigned : Grid::Signed);
      for (size_t n : {size_t(0), size_t(1), size_t(15), size_t(16), size_t(17), size_t(64), size_t(197), size_t(1000)}) {
        std::vector<float> x(n);
        for (size_t i = 0; i < n; ++i) {
          const float v = 2.0f * nd(rng);
          // exact ties k + 1/2 (round half to even), values far outside the grid, and zeros
          x[i] = i % 5 == 0 ? (float(int(v * 4)) + 0.5f) * delta : i % 7 == 0 ? 50.0f * v : i % 11 == 0 ? 0.0f : v;
        }
        std::vector<uint8_t> a(n), a_ref(n);
        quantize_a_u8_ref(x.data(), a_ref.data(), n, delta, r, zp);
        quantize_a_u8(x.data(), a.data(), n, delta, r, zp);  // the dispatched variant
        ASSERT_EQ(a, a_ref) << bits << " " << uns << " " << n;
        std::vector<int8_t> b(n), b_ref(n);
        const int32_t s_ref = quantize_b_s8_ref(x.data(), b_ref.data(), n, delta, r);
        if (!uns) {
          ASSERT_EQ(quantize_b_s8(x.data(), b.data(), n, delta, r), s_ref);
          ASSERT_EQ(b, b_ref) << bits << " " << n;
        }
        for (const QuantizerVariant& v : quantizer_variants()) {
          if (!v.available) continue;
          SCOPED_TRACE(v.name);
          std::fill(a.begin(), a.end(), uint8_t(0));
          v.a_u8(x.data(), a.data(), n, delta, r, zp);
          ASSERT_EQ(a, a_ref) << bits << " " << uns << " " << n;
          if (uns) continue;
          std::fill(b.begin(), b.end(), int8_t(0));
          ASSERT_EQ(v.b_s8(x.data(), b.data(), n, delta, r), s_ref);
          ASSERT_EQ(b, b_ref) << bits << " " << n;
        }
      }
    }
  int run = 0;
  for (const QuantizerVariant& v : quantizer_variants()) {
    std::printf("quantizer variant %-8s %s\n", v.name, v.available ? "compared" : "not available on this CPU");
    run += v.available;
  }
  EXPECT_GE(run, 1);
  EXPECT_TRUE(quantizer_variants().back().available) << "the portable variant runs everywhere";
}

// Near every rounding boundary: values within a few ulps of each half-integer multiple of the step
// (the product rounded, and the exact half-integer rounded), for steps of many magnitudes and a
// subnormal one, give the reference's codes in every quantizer variant and every table-lookup
// variant (whose index is the same code), with values far outside the grid and zero.
TEST(Int8Kernels, QuantizersMatchTheReferenceNearEveryRoundingBoundary) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> ue(-12.0f, 4.0f);
  std::vector<float> deltas = {1.0f / 127, 1.0f / 255, 1.0f / 511, 0.00195694f, 3.0f / 127, 1e-39f};
  for (int i = 0; i < 40; ++i) deltas.push_back(std::exp2(ue(rng)));
  for (float delta : deltas)
    for (int bits : {4, 8, 10}) {
      const QRange r = qrange(bits, Grid::Signed);
      std::vector<float> x;
      for (int k = r.lo - 3; k <= r.hi + 3; ++k) {
        const float tie = (float(k) + 0.5f) * delta;                 // the product, rounded
        const float tie2 = float((double(k) + 0.5) * double(delta));  // the exact half-integer, rounded
        for (float c : {tie, tie2, float(k) * delta}) {
          float up = c, down = c;
          x.push_back(c);
          for (int u = 0; u < 4; ++u) {
            up = std::nextafter(up, INFINITY);
            down = std::nextafter(down, -INFINITY);
            x.push_back(up);
            x.push_back(down);
          }
        }
      }
      x.push_back(1e30f);
      x.push_back(-1e30f);
      x.push_back(0.0f);
      const size_t n = x.size();
      const int32_t zp = a_zero_point(bits <= 8 ? bits : 8, Grid::Signed);
      std::vector<uint8_t> a(n), a_ref(n);
      std::vector<int8_t> b(n), b_ref(n);
      if (bits <= 8) {
        quantize_a_u8_ref(x.data(), a_ref.data(), n, delta, r, zp);
        const int32_t s_ref = quantize_b_s8_ref(x.data(), b_ref.data(), n, delta, r);
        for (const QuantizerVariant& v : quantizer_variants()) {
          if (!v.available) continue;
          v.a_u8(x.data(), a.data(), n, delta, r, zp);
          ASSERT_EQ(a, a_ref) << v.name << " delta " << delta << " bits " << bits;
          ASSERT_EQ(v.b_s8(x.data(), b.data(), n, delta, r), s_ref) << v.name << " delta " << delta;
          ASSERT_EQ(b, b_ref) << v.name << " delta " << delta << " bits " << bits;
        }
      }
      // The table lookup's index is the same code: a table of the codes themselves.
      // (u8 tables: the index itself, mod 256.)
      std::vector<float> table(size_t(r.hi - r.lo + 1));
      std::vector<int32_t> table8(table.size());
      for (size_t j = 0; j < table.size(); ++j) table[j] = float(r.lo + int(j)), table8[j] = int32_t(j & 255);
      std::vector<float> got(n);
      std::vector<uint8_t> got8(n);
      for (const TableLookupVariant& v : table_lookup_variants()) {
        if (!v.available) continue;
        v.f32(x.data(), n, delta, r, table.data(), got.data());
        v.u8(x.data(), n, delta, r, table8.data(), got8.data());
        for (size_t j = 0; j < n; ++j) {
          const int32_t code = quantize_one(x[j], delta, r);
          ASSERT_EQ(got[j], float(code)) << v.name << " delta " << delta << " x " << x[j] << " bits " << bits;
          ASSERT_EQ(got8[j], uint8_t((code - r.lo) & 255))
              << v.name << " u8 delta " << delta << " x " << x[j] << " bits " << bits;
        }
      }
    }
}

// ------------------------------------------------------------------------------ sites

struct SiteCase {
  std::string what;
  SiteKind kind;
  SitePlan sp;
  int images = 2, heads = 3, M = 37, N = 24, K = 40;
  bool bias = true;
  bool positive_x = false;  // softmax-like input
};

OperandQuant op(int bits, float scale, bool is_unsigned = false) {
  OperandQuant q;
  q.bits = bits;
  q.scale = scale;
  q.grid = is_unsigned ? Grid::Unsigned : Grid::Signed;
  return q;
}

// Runs a site in integers, in the simulator, and in double precision from the codes.
void check_site(const SiteCase& sc) {
  SCOPED_TRACE(sc.what);
  std::mt19937_64 rng(11);
  std::normal_distribution<float> nd(0, 1);
  std::uniform_real_distribution<float> ud(0, 1);
  const bool attn = sc.kind == SiteKind::MatmulQK || sc.kind == SiteKind::MatmulAV;
  SiteCall c;
  c.site = {sc.kind, attn || sc.kind == SiteKind::Qkv || sc.kind == SiteKind::Proj || sc.kind == SiteKind::Fc1 ||
                             sc.kind == SiteKind::Fc2
                         ? 0
                         : -1};
  c.images = sc.images;
  c.groups = attn ? sc.images * sc.heads : 1;
  c.M = sc.M;
  c.N = sc.N;
  c.K = sc.K;
  std::vector<float> x(size_t(c.groups) * c.M * c.K), w(size_t(attn ? c.groups : 1) * c.N * c.K), b(size_t(c.N));
  for (auto& v : x) v = sc.positive_x ? ud(rng) * ud(rng) : 2.0f * nd(rng);
  for (auto& v : w) v = 0.5f * nd(rng);
  for (auto& v : b) v = nd(rng);
  c.x = x.data();
  c.w = w.data();
  c.w_stride = attn ? int64_t(c.N) * c.K : 0;
  c.bias = sc.bias && !attn ? b.data() : nullptr;
  const size_t ny = size_t(c.groups) * c.M * c.N;
  std::vector<float> yi(ny), ys(ny);
  c.y = yi.data();
  int_site_compute(c, sc.sp);
  c.y = ys.data();
  avector<float> xb, wb;
  simulate_site(c, sc.sp, nullptr, xb, wb);

  // Double-precision reference from the codes (plan.h), with every quantizer written out here
  // from its definition (quantizer.h, level_grid.h): per tensor, per head, per token, levels.
  const SitePlan& sp = sc.sp;
  std::vector<int16_t> wcodes;
  std::vector<int> wbits;
  std::vector<float> wsteps;
  if (!attn) plan_weight_codes(w.data(), c.N, c.K, sp, &wcodes, &wbits, &wsteps);
  const int heads = std::max(1, c.groups / c.images);  // (linear sites: one group)
  auto level_of = [&](float p) {  // nearest level to v = round(p · 2^15), ties to the larger
    const double v = std::clamp(std::nearbyint(double(p) * 32768.0), 0.0, 32768.0);
    int32_t best = 0;
    for (int32_t l : LevelGrid::get(sp.x.grid, sp.x.bits).levels())
      if (std::fabs(l - v) <= std::fabs(best - v)) best = l;
    return best;
  };
  // Row (g, r) of x: its codes q and each code's step st (per token: its channel group's, the
  // whole row when the plan does not group them; clip ratio 1 here).
  auto x_row = [&](int g, int r, std::vector<int32_t>& q, std::vector<double>& st) {
    const float* xr = x.data() + (size_t(g) * c.M + r) * c.K;
    q.resize(size_t(c.K));
    st.resize(size_t(c.K));
    if (is_level_grid(sp.x.grid)) {
      for (int k = 0; k < c.K; ++k) q[size_t(k)] = level_of(xr[k]), st[size_t(k)] = 1.0 / 32768.0;
      return;
    }
    const int span = sp.x.per_token && sp.x.token_group > 0 ? sp.x.token_group : c.K;
    for (int k0 = 0; k0 < c.K; k0 += span) {
      float step = sp.x.head_scale(g % heads);
      int32_t lo = sp.x.range().lo, hi = sp.x.range().hi;
      if (sp.x.per_token && attn) {  // Q per token: symmetric, max|row| / hi, stretched by 1 + 2^-10
        float m = 0;
        for (int k = k0; k < k0 + span; ++k) m = std::max(m, std::fabs(xr[k]));
        step = m / float(hi) * (1.0f + 1.0f / 1024.0f);
      } else if (sp.x.per_token) {
        float mn = 0, mx = 0;
        for (int k = k0; k < k0 + span; ++k) mn = std::min(mn, xr[k]), mx = std::max(mx, xr[k]);
        step = (mx - mn) / float((1 << sp.x.bits) - 1) * (1.0f + 1.0f / 1024.0f);
        lo = int32_t(std::nearbyint(mn / step));
        hi = lo + (1 << sp.x.bits) - 1;
      }
      for (int k = k0; k < k0 + span; ++k) {
        q[size_t(k)] = std::clamp(int32_t(std::nearbyint(xr[k] / step)), lo, hi);
        st[size_t(k)] = double(step);
      }
    }
  };
  size_t exact = 0;
  std::vector<int32_t> qx;
  std::vector<double> xst;
  for (int g = 0; g < c.groups; ++g)
    for (int r = 0; r < c.M; ++r) {
      x_row(g, r, qx, xst);
      for (int n = 0; n < c.N; ++n) {
        float wd = sp.w.head_scale(g % heads);
        if (attn && sp.w.per_token) {  // K per token: row n of the group, symmetric as Q
          float m = 0;
          for (int k = 0; k < c.K; ++k) m = std::max(m, std::fabs(w[(size_t(g) * c.N + n) * c.K + k]));
          wd = m / float(sp.w.range().hi) * (1.0f + 1.0f / 1024.0f);
        }
        double acc = 0, mag = 0, sx = 0;
        for (int k = 0; k < c.K; ++k) {
          const int qw = attn ? std::clamp(int(std::nearbyint(w[(size_t(g) * c.N + n) * c.K + k] / wd)),
                                           sp.w.range().lo, sp.w.range().hi)
                              : wcodes[size_t(n) * c.K + k];
          acc += double(qx[size_t(k)]) * qw * xst[size_t(k)];
          mag += std::fabs(double(qx[size_t(k)]) * qw) * xst[size_t(k)];
          sx += qx[size_t(k)] * xst[size_t(k)];
        }
        const double step = attn ? double(wd) : double(wsteps[size_t(n)]);
        double ref = acc * step;
        mag *= step;
        if (c.bias) ref += b[size_t(n)];
        if (!sp.bias_correction.empty()) ref += sp.bias_correction[(attn ? size_t(g % heads) * c.N : 0) + size_t(n)];
        if (!sp.weight_offset.empty()) ref += double(sp.weight_offset[size_t(n)]) * sx;
        const size_t i = (size_t(g) * c.M + r) * c.N + n;
        ASSERT_NEAR(yi[i], ref, 1e-5 * (mag + std::fabs(ref) + 1e-3)) << g << " " << r << " " << n;
        ASSERT_NEAR(ys[i], yi[i], 1e-5 * (mag + std::fabs(ref) + 1e-3)) << g << " " << r << " " << n;
        exact += ys[i] == yi[i];
      }
    }
  // The simulator multiplies the codes as floats: its sums are exact here (all below 2^24), and
  // it scales and adds with the runtime's kernels, so the two agree bit for bit.
  EXPECT_EQ(exact, ny);
}

SitePlan linear_plan(int xb, int wb, float xs, float ws) {
  SitePlan sp;
  sp.x = op(xb, xs);
  sp.w = op(wb, ws);
  return sp;
}

TEST(IntegerSites, LinearSitesMatchTheSimulator) {
  for (SiteKind k : {SiteKind::PatchEmbed, SiteKind::Qkv, SiteKind::Proj, SiteKind::Fc1, SiteKind::Fc2,
                     SiteKind::Head}) {
    SiteCase sc{"W8A8 per-tensor, bias correction", k, linear_plan(8, 8, 6.0f / 127, 1.5f / 127)};
    sc.sp.bias_correction.assign(size_t(sc.N), 0.25f);
    check_site(sc);
  }
}

TEST(IntegerSites, PerChannelStepsBitsCodesAndOffsets) {
  SiteCase a{"W6A6 per-channel steps", SiteKind::Fc1, linear_plan(6, 6, 6.0f / 31, 0.05f)};
  for (int n = 0; n < a.N; ++n) a.sp.w.channel_scales.push_back(0.02f + 0.004f * float(n));
  check_site(a);
  SiteCase b = a;
  b.what = "per-channel bits 2..8 with offsets";
  for (int n = 0; n < b.N; ++n) b.sp.w.channel_bits.push_back(2 + n % 7);
  for (int n = 0; n < b.N; ++n) b.sp.weight_offset.push_back(0.01f * float(n % 5) - 0.02f);
  check_site(b);
  SiteCase c = a;
  c.what = "explicit weight codes (4-bit grid)";
  c.sp.w.bits = 4;
  std::mt19937 rng(3);
  for (int i = 0; i < c.N * c.K; ++i) c.sp.weight_codes.push_back(int16_t(int(rng() % 16) - 8));
  c.bias = false;
  c.sp.bias_correction.assign(size_t(c.N), -0.5f);
  check_site(c);
  SiteCase d{"unsigned 8-bit input grid", SiteKind::Fc2, linear_plan(8, 8, 2.0f / 255, 1.5f / 127)};
  d.sp.x.grid = Grid::Unsigned;
  d.positive_x = true;
  check_site(d);
}

TEST(IntegerSites, NineAndTenBitSitesAreExact) {
  check_site({"W10A10 linear", SiteKind::Qkv, linear_plan(10, 10, 6.0f / 511, 1.5f / 511)});
  check_site({"W8A10 linear", SiteKind::Proj, linear_plan(10, 8, 6.0f / 511, 1.5f / 127)});
  check_site({"W9A8 linear", SiteKind::Fc2, linear_plan(8, 9, 6.0f / 127, 1.5f / 255)});
  SiteCase pc{"W10A9 per-channel with offsets", SiteKind::Fc1, linear_plan(9, 10, 6.0f / 255, 0.003f)};
  for (int n = 0; n < pc.N; ++n) {
    pc.sp.w.channel_scales.push_back(0.002f + 0.0002f * float(n));
    pc.sp.w.channel_bits.push_back(n % 2 ? 10 : 7);
    pc.sp.weight_offset.push_back(0.001f * float(n));
  }
  check_site(pc);
}

TEST(IntegerSites, AttentionSites) {
  SiteCase qk{"Q·Kᵀ W8A8", SiteKind::MatmulQK, linear_plan(8, 8, 6.0f / 127, 5.0f / 127), 2, 3, 29, 29, 16, false};
  qk.sp.bias_correction.resize(size_t(3 * 29));
  for (size_t i = 0; i < qk.sp.bias_correction.size(); ++i) qk.sp.bias_correction[i] = 0.01f * float(i % 7);
  check_site(qk);
  SiteCase av{"P·V unsigned softmax grid", SiteKind::MatmulAV, linear_plan(8, 8, 1.0f / 255, 5.0f / 127), 2, 3,
              29, 16, 29, false, true};
  av.sp.x.grid = Grid::Unsigned;
  check_site(av);
  SiteCase avs = av;
  avs.what = "P·V signed grid";
  avs.sp.x = op(8, 1.0f / 127);
  check_site(avs);
  SiteCase qk10 = qk;
  qk10.what = "Q·Kᵀ 10-bit";
  qk10.sp.x = op(10, 6.0f / 511);
  qk10.sp.w = op(10, 5.0f / 511);
  check_site(qk10);
  SiteCase av9 = av;
  av9.what = "P·V 9-bit unsigned, 10-bit V";
  av9.sp.x = op(9, 1.0f / 511, true);
  av9.sp.w = op(10, 5.0f / 511);
  check_site(av9);
  SiteCase av4 = av;
  av4.what = "P·V W4A4";
  av4.sp.x = op(4, 1.0f / 15, true);
  av4.sp.w = op(4, 5.0f / 7);
  check_site(av4);
}

TEST(IntegerSites, PerTokenInputs) {
  for (int bits : {8, 6, 4}) {
    SiteCase a{cat("W", bits, "A", bits, " per-token input, per-channel weights with offsets"), SiteKind::Fc2,
               linear_plan(bits, bits, 0.0f, 0.05f)};
    a.sp.x.per_token = true;
    for (int n = 0; n < a.N; ++n) {
      a.sp.w.channel_scales.push_back(0.02f + 0.004f * float(n));
      a.sp.weight_offset.push_back(0.01f * float(n % 5) - 0.02f);
    }
    check_site(a);
    SiteCase p = a;  // one-sided rows (post-GELU-like): the zero point moves to the row's minimum
    p.what += ", positive inputs";
    p.positive_x = true;
    p.kind = SiteKind::Qkv;
    check_site(p);
  }
}

// Per-token inputs in channel groups (plan.h: token_group): K = 40 in groups of 8 and 20, at 8 and
// 4 bits, with per-channel steps and weight offsets; the reference above quantizes each group on
// its own range.
TEST(IntegerSites, PerTokenInputsInChannelGroups) {
  for (int bits : {8, 4})
    for (int group : {8, 20}) {
      SiteCase a{cat("W", bits, "A", bits, " per-token input in groups of ", group), SiteKind::Fc1,
                 linear_plan(bits, bits, 0.0f, 0.05f)};
      a.sp.x.per_token = true;
      a.sp.x.token_group = group;
      for (int n = 0; n < a.N; ++n) {
        a.sp.w.channel_scales.push_back(0.02f + 0.004f * float(n));
        a.sp.weight_offset.push_back(0.01f * float(n % 5) - 0.02f);
      }
      check_site(a);
      SiteCase p = a;
      p.what += ", positive inputs, no offsets";
      p.positive_x = true;
      p.sp.weight_offset.clear();
      check_site(p);
    }
}

// Q and K of matmul_qk per token (plan.h, format 8): each row of a head its own symmetric step;
// Q alone, K alone (the other side per head) and both, at 8, 6 and 4 bits, with bias correction.
TEST(IntegerSites, PerTokenQueryAndKeyRows) {
  for (int bits : {8, 6, 4})
    for (int sides : {1, 2, 3}) {
      const float hi = float((1 << (bits - 1)) - 1);
      SiteCase qk{cat("Q·Kᵀ ", bits, " bits, per token: ", sides == 1 ? "Q" : sides == 2 ? "K" : "Q and K"),
                  SiteKind::MatmulQK, linear_plan(bits, bits, 1.0f, 1.0f), 2, 3, 29, 29, 16, false};
      qk.sp.x.head_scales = {6.0f / hi, 3.0f / hi, 9.0f / hi};
      qk.sp.w.head_scales = {2.0f / hi, 1.5f / hi, 2.5f / hi};
      for (auto [on, o] : {std::pair{sides & 1, &qk.sp.x}, std::pair{sides & 2, &qk.sp.w}})
        if (on) o->per_token = true, o->scale = 0.0f, o->head_scales.clear();
      qk.sp.bias_correction.resize(size_t(3 * 29));
      for (size_t i = 0; i < qk.sp.bias_correction.size(); ++i) qk.sp.bias_correction[i] = 0.01f * float(i % 7);
      check_site(qk);
    }
}

TEST(IntegerSites, PerHeadStepsAndLevelGrids) {
  SiteCase qk{"Q·Kᵀ per-head steps", SiteKind::MatmulQK, linear_plan(6, 6, 1.0f, 1.0f), 2, 3, 29, 29, 16, false};
  qk.sp.x.head_scales = {6.0f / 31, 3.0f / 31, 9.0f / 31};
  qk.sp.w.head_scales = {5.0f / 31, 2.0f / 31, 4.0f / 31};
  check_site(qk);
  for (Grid g : {Grid::Log2, Grid::LogSqrt2, Grid::Float})
    for (int bits : {4, 6, 8}) {
      SiteCase av{cat("P·V ", grid_name(g), " grid at ", bits, " bits, per-head V"), SiteKind::MatmulAV,
                  linear_plan(bits, bits, kLevelStep, 1.0f), 2, 3, 29, 16, 29, false, true};
      av.sp.x.grid = g;
      av.sp.w.head_scales = {5.0f / 127, 3.0f / 127, 4.0f / 127};
      check_site(av);
    }
}

// ------------------------------------------------------------------------------ whole models

std::string tmp_dir(const std::string& name) { return test::tmp_dir("rt_" + name); }

// Logits of the fused integer forward, the unfused integer sites and the simulator.
void check_forward(const std::string& name, const test::TinyDims& dims, const std::function<QuantPlan(const ViTModel&)>& make_plan) {
  SCOPED_TRACE(name);
  const std::string src = tmp_dir(name + "_src"), out = tmp_dir(name + "_q");
  ViTModel m = test::write_tiny_checkpoint(src, dims, 7);
  const QuantPlan plan = make_plan(m);
  write_quantized_model(quantize_model(m, plan), src, out);
  const QuantizedViT q = load_quantized_model(out);
  const ViTModel dq = dequantized_model(q);
  const QuantPlan splan = simulation_plan(q);
  const int B = 3, NC = m.cfg.num_classes;
  const std::vector<float> x = test::random_images(m.cfg, B, 123);
  std::vector<float> fused(size_t(B) * NC), fused2(fused.size()), one(static_cast<size_t>(NC)), unfused(fused.size()),
      sim(fused.size()), sim_src(fused.size());
  IntViTForward f(q);
  f.run(x.data(), B, fused.data());
  f.run(x.data(), B, fused2.data());
  EXPECT_EQ(fused, fused2) << "not deterministic";
  f.run(x.data() + x.size() / B, 1, one.data());  // image 1 alone
  for (int k = 0; k < NC; ++k) EXPECT_NEAR(one[size_t(k)], fused[size_t(NC + k)], 1e-5f);
  ViTForward vf(dq);
  IntegerSiteHook ih(q);
  vf.run(x.data(), B, unfused.data(), &ih);
  PlanSimulator ps(dq, splan);
  vf.run(x.data(), B, sim.data(), &ps);
  // A plan with transforms (rotation, LayerNorm rewrites) is for the rewritten checkpoint.
  std::unique_ptr<ViTModel> holder;
  const ViTModel& ms = apply_plan_transforms(m, plan, holder, "test");
  ViTForward vs(ms);
  PlanSimulator ps_src(ms, plan);
  vs.run(x.data(), B, sim_src.data(), &ps_src);
  float mx = 0;
  for (float v : sim) mx = std::max(mx, std::fabs(v));
  for (size_t i = 0; i < fused.size(); ++i) {
    EXPECT_EQ(fused[i], unfused[i]) << i;                 // same kernels, fused or not
    EXPECT_NEAR(fused[i], sim[i], 1e-5f * mx) << i;       // integer vs quantize-dequantize
    EXPECT_NEAR(sim[i], sim_src[i], 1e-5f * mx) << i;     // the directory reproduces the plan
  }
  std::filesystem::remove_all(src);
  std::filesystem::remove_all(out);
}

// The formats of issue 14 together: rotation (residual, heads, MLP), per-token inputs, a level
// grid for the softmax output, per-head steps and per-channel weights, on a model whose qkv has no
// bias of its own (the rotation makes one).
TEST(IntegerForward, RotatedPerTokenLevelGridPerHead) {
  for (Grid g : {Grid::Log2, Grid::LogSqrt2, Grid::Float})
    for (int bits : {4, 6, 8}) {
      test::TinyDims dims;
      dims.qkv_bias = false;
      check_forward(cat("rot", bits, grid_name(g)), dims, [&](const ViTModel& m) {
        MethodConfig cfg;
        cfg.get<MinmaxOptions>("minmax").per_channel_weights = true;
        cfg.get<MinmaxOptions>("minmax").per_head = true;
        CalibOptions opt;
        opt.bits = {bits, bits};
        opt.grids.softmax = g;
        opt.grids.per_token = true;
        opt.grids.patch_embed_abits = 8;
        opt.quantize_head = bits == 8;
        opt.transforms.rotation = PlanRotation{3, true, true, true};
        QuantPlan p = test::plan_with(m, "minmax", cfg, opt);
        EXPECT_TRUE(p.sites.at("blocks.0.attn.qkv").x.per_token);
        EXPECT_EQ(p.sites.at("blocks.1.attn.matmul_av").x.grid, g);
        EXPECT_EQ(p.sites.at("blocks.1.attn.matmul_qk").w.head_scales.size(), size_t(dims.heads));
        return p;
      });
    }
}

// Block reconstruction's codes and bias corrections, then QwT error compensation (an FP32 map per
// block, added with fc2's residual), on per-token inputs.
TEST(IntegerForward, W4A4ReconstructionAndQwtCompensation) {
  for (bool distilled : {false, true}) {
    test::TinyDims dims;
    dims.distilled = distilled;
    check_forward(cat("qwt", distilled), dims, [&](const ViTModel& m) {
      MethodConfig cfg;
      cfg.get<MinmaxOptions>("minmax").per_channel_weights = true;
      CalibOptions opt;
      opt.bits = {4, 4};
      opt.grids.per_token = true;
      opt.compensation.on = true;
      opt.recon.iters = 20;
      opt.recon.batch = 4;
      QuantPlan p = test::plan_with(m, "minmax", cfg, opt);
      EXPECT_FALSE(p.compensation.empty());
      EXPECT_TRUE(p.sites.at("blocks.1.mlp.fc1").has_weight_codes());
      return p;
    });
  }
}

// Per-token inputs in channel groups of 16 (plan.h: token_group; the patch embedding's 48 inputs
// in 3 groups, qkv/proj/head's 32 in 2, fc2's 64 in 4) at W4A4 and W8A8 with a quantized head,
// GELU tables (a grouped fc2 input takes the looked-up floats) and, at 4 bits, the MLP rotation.
TEST(IntegerForward, PerTokenChannelGroups) {
  for (int bits : {4, 8})
    for (bool distilled : {false, true}) {
      test::TinyDims dims;
      dims.distilled = distilled;
      check_forward(cat("token_groups", bits, distilled), dims, [&](const ViTModel& m) {
        MethodConfig cfg;
        cfg.get<MinmaxOptions>("minmax").per_channel_weights = true;
        CalibOptions opt;
        opt.bits = {bits, bits};
        opt.grids.per_token = true;
        opt.grids.token_group = 16;
        opt.grids.token_clip = bits == 4 ? 0.9f : 1.0f;
        opt.quantize_head = true;
        if (bits == 4) opt.transforms.rotation = PlanRotation{5, true, true, true};
        QuantPlan p = test::plan_with(m, "minmax", cfg, opt);
        EXPECT_EQ(p.sites.at("patch_embed").x.token_groups(48), 3);
        EXPECT_EQ(p.sites.at("blocks.1.mlp.fc2").x.token_groups(64), 4);
        EXPECT_EQ(p.sites.at("head").x.token_groups(32), 2);
        const std::vector<float> images = test::random_images(m.cfg, 8, 5);
        fit_gelu_tables(m, p, images.data(), 8, 8);
        return p;
      });
    }
}

// Per-token Q and K (--per-token-qk) with per-token inputs: W8A8, and W4A4 with the rotation,
// block reconstruction (its backward through the per-token rows) and QwT.
TEST(IntegerForward, PerTokenQueryAndKey) {
  for (int bits : {8, 4}) {
    check_forward(cat("token_qk", bits), {}, [&](const ViTModel& m) {
      MethodConfig cfg;
      cfg.get<MinmaxOptions>("minmax").per_channel_weights = true;
      CalibOptions opt;
      opt.bits = {bits, bits};
      opt.grids.per_token = true;
      opt.grids.per_token_qk = true;
      if (bits == 4) {
        opt.transforms.rotation = PlanRotation{5, true, true, true};
        opt.compensation.on = true;
        opt.recon.iters = 20;
        opt.recon.batch = 4;
        opt.recon.act_lr = 1e-3;
      }
      QuantPlan p = test::plan_with(m, "minmax", cfg, opt);
      const SitePlan& qk = p.sites.at("blocks.1.attn.matmul_qk");
      EXPECT_TRUE(qk.x.per_token && qk.w.per_token);
      EXPECT_FALSE(qk.x.per_head() || qk.w.per_head());
      EXPECT_FALSE(p.sites.at("blocks.1.attn.matmul_av").w.per_token);
      EXPECT_EQ(plan_to_json(p)["format_version"], 8);
      return p;
    });
  }
}

TEST(IntegerForward, W8A8UnsignedSoftmaxQuantizedHead) {
  check_forward("w8", {}, [](const ViTModel& m) { return test::minmax_plan(m, 8, true, true); });
}

// GELU tables (plan.h: GeluTable), fitted on random images: block 0's fc2 input is 10 bits (two
// planes: the table gives floats that are then quantized), block 1's 8 bits per tensor (the table
// gives fc2's codes directly).
TEST(IntegerForward, W8A8GeluTablesDirectAndFloat) {
  check_forward("gelu", {}, [](const ViTModel& m) {
    QuantPlan p = test::minmax_plan(m, 8, true, true, {{8, 8}, {10, 10}, {8, 8}, {8, 8}});
    const std::vector<float> images = test::random_images(m.cfg, 8, 5);
    fit_gelu_tables(m, p, images.data(), 8, 8);
    EXPECT_EQ(p.gelu_tables.size(), size_t(m.cfg.depth));
    return p;
  });
}

// GELU tables with per-token fc2 inputs (the fc1 epilogue quantizes the looked-up values per row
// without writing floats: numerics/table_lookup.h), at 8 and 6 bits, the fc2 inputs clipped (α 0.9).
TEST(IntegerForward, GeluTablesPerTokenFc2Inputs) {
  for (int bits : {8, 6})
    check_forward(cat("gelu_token", bits), {}, [&](const ViTModel& m) {
      CalibOptions opt;
      opt.bits = {bits, bits};
      opt.grids.per_token = true;
      QuantPlan p = test::plan_with(m, "minmax", MethodConfig{}, opt);
      for (int i = 0; i < m.cfg.depth; ++i) p.sites.at(SiteId{SiteKind::Fc2, i}.name()).x.token_clip = 0.9f;
      const std::vector<float> images = test::random_images(m.cfg, 8, 5);
      fit_gelu_tables(m, p, images.data(), 8, 8);
      EXPECT_EQ(p.gelu_tables.size(), size_t(m.cfg.depth));
      EXPECT_TRUE(p.sites.at("blocks.0.mlp.fc2").x.per_token);
      return p;
    });
}

// The softmax exponent table (plan.h: SoftmaxTable) with GELU tables, and at 10 bits with a level
// grid of the softmax output.
TEST(IntegerForward, SoftmaxTableWithGeluTablesAndLevelGrid) {
  check_forward("softmax_table", {}, [](const ViTModel& m) {
    QuantPlan p = test::minmax_plan(m, 8, true, true);
    p.softmax_table = SoftmaxTable{8, 16.0f};
    const std::vector<float> images = test::random_images(m.cfg, 8, 5);
    fit_gelu_tables(m, p, images.data(), 8, 8);
    return p;
  });
  check_forward("softmax_table_levels", {}, [](const ViTModel& m) {
    CalibOptions opt;
    opt.bits = {8, 8};
    opt.grids.softmax = Grid::Float;
    QuantPlan p = test::plan_with(m, "minmax", MethodConfig{}, opt);
    p.softmax_table = SoftmaxTable{10, 12.0f};
    return p;
  });
}

TEST(IntegerForward, W6A6LayerNormSmoothing) {
  check_forward("w6smooth", {}, [](const ViTModel& m) {
    QuantPlan p = test::minmax_plan(m, 6, false, true, {}, false, 0.5);
    EXPECT_EQ(p.ln_smoothing.size(), size_t(2 * m.cfg.depth));
    return p;
  });
}

TEST(IntegerForward, W4A4LayerNormCentringAndSmoothing) {
  check_forward("w4center", {}, [](const ViTModel& m) {
    QuantPlan p = test::minmax_plan(m, 4, false, true, {}, true, 0.5, /*ln_center=*/true);
    EXPECT_EQ(p.ln_shift.size(), size_t(2 * m.cfg.depth));
    return p;
  });
}

TEST(IntegerForward, W4A4PerChannelDistilled) {
  test::TinyDims d;
  d.distilled = true;
  check_forward("w4", d, [](const ViTModel& m) { return test::minmax_plan(m, 4, false, false, {}, true); });
}

TEST(IntegerForward, MixedPrecisionWithTenBitBlocksAndFp32Sites) {
  test::TinyDims d;
  d.depth = 3;
  d.qkv_bias = false;
  check_forward("mp", d, [](const ViTModel& m) {
    QuantPlan p = test::minmax_plan(m, 8, true, true, {{10, 10}, {6, 6}, {9, 9}, {8, 8}, {4, 4}, {10, 10}});
    p.sites.erase("blocks.1.mlp.fc2");        // FP32 sites between integer ones
    p.sites.erase("blocks.2.attn.matmul_av");
    p.sites.erase("blocks.0.attn.matmul_qk");
    SitePlan& fc1 = p.sites.at("blocks.2.mlp.fc1");
    fc1.bias_correction.assign(size_t(m.cfg.mlp_hidden), 0.05f);  // a correction on top of the bias
    SitePlan& qkv = p.sites.at("blocks.1.attn.qkv");
    qkv.bias_correction.assign(size_t(3 * m.cfg.embed_dim), -0.02f);  // qkv without a bias gets one
    return p;
  });
}

TEST(IntegerForward, BatchesOfAnySizeAfterALargerOne) {
  // The workspace is sized by the largest batch so far; smaller batches of every size follow.
  const std::string src = tmp_dir("batches_src");
  test::TinyDims d;
  d.img = 32;  // 65 tokens: tiles of different heights at every batch size
  ViTModel m = test::write_tiny_checkpoint(src, d, 9);
  const QuantizedViT q = quantize_model(m, test::minmax_plan(m, 8, true));
  const int NC = m.cfg.num_classes, big = 9;
  const std::vector<float> x = test::random_images(m.cfg, big, 6);
  IntViTForward f(q);
  std::vector<float> all(size_t(big) * NC), part(all.size());
  f.run(x.data(), big, all.data());
  for (int b = 1; b < big; ++b) {
    f.run(x.data(), b, part.data());
    for (size_t i = 0; i < size_t(b) * NC; ++i) ASSERT_EQ(part[i], all[i]) << "batch " << b;
  }
  std::filesystem::remove_all(src);
}

TEST(IntegerForward, ThreadCountDoesNotChangeTheResult) {
  const std::string src = tmp_dir("thr_src");
  ViTModel m = test::write_tiny_checkpoint(src, {}, 8);
  const QuantizedViT q = quantize_model(m, test::minmax_plan(m, 8, true));
  const int B = 4, NC = m.cfg.num_classes;
  const std::vector<float> x = test::random_images(m.cfg, B, 5);
  std::vector<float> a(size_t(B) * NC), b(a.size());
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  IntViTForward(q).run(x.data(), B, a.data());
  omp_set_num_threads(2);
  IntViTForward(q).run(x.data(), B, b.data());
  omp_set_num_threads(saved);
  EXPECT_EQ(a, b);
  std::filesystem::remove_all(src);
}

}  // namespace
}  // namespace vitq
