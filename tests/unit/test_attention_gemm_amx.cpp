// The AMX attention GEMMs (numerics/attention_gemm_amx.h) against their scalar definitions, after
// packing, for head widths 16/32/64, token counts around the tile sizes (1 to 198) and the extreme
// products (255 · −128 over every k). Skipped with the reason where the CPU or OS has no AMX.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "numerics/attention_gemm_amx.h"

namespace vitq {
namespace {

TEST(AttentionGemmAmx, ScoresAndContextEqualTheScalarSums) {
  if (!amx_int8_available()) GTEST_SKIP() << "no AMX-INT8 on this CPU (or the OS refuses its tile state)";
  std::mt19937 rng(9);
  for (int d : {16, 32, 64})
    for (int T : {1, 5, 16, 17, 33, 64, 65, 197, 198})
      for (bool extreme : {false, true}) {
        SCOPED_TRACE(testing::Message() << "d " << d << " T " << T << (extreme ? " extreme" : ""));
        const int mp = amx_pad16(T), np = amx_pad16(T), kp = n_pad_k(T);
        // Q with the 15 rows past T the kernel may read; P rows kp bytes apart, zero past T.
        std::vector<uint8_t> q(size_t(mp + 16) * size_t(d)), p(size_t(mp + 16) * size_t(kp), 0);
        std::vector<int8_t> k(size_t(T) * size_t(d)), v(size_t(T) * size_t(d));
        for (auto& e : q) e = extreme ? 255 : uint8_t(rng());
        for (auto& e : k) e = extreme ? int8_t(-128) : int8_t(rng());
        for (auto& e : v) e = extreme ? int8_t(-128) : int8_t(rng());
        for (int i = 0; i < mp + 16; ++i)
          for (int j = 0; j < T; ++j) p[size_t(i) * size_t(kp) + size_t(j)] = extreme ? 255 : uint8_t(rng());
        std::vector<int32_t> kt(size_t(d / 4) * size_t(np), 7);
        std::vector<int8_t> vp(size_t(kp) * size_t(d), 7);
        pack_kt_vnni(k.data(), T, d, kt.data());
        pack_v_vnni(v.data(), T, d, vp.data());
        const int ldc = np + 3;  // an output stride past the padded width
        std::vector<int32_t> s(size_t(mp) * size_t(ldc)), s_ref(size_t(T) * size_t(T));
        qk_u8s8_amx(T, T, d, q.data(), d, kt.data(), s.data(), ldc);
        qk_u8s8_ref(T, T, d, q.data(), d, k.data(), s_ref.data(), T);
        for (int i = 0; i < T; ++i)
          for (int n = 0; n < T; ++n)
            ASSERT_EQ(s[size_t(i) * size_t(ldc) + size_t(n)], s_ref[size_t(i) * size_t(T) + size_t(n)]) << i << " " << n;
        std::vector<int32_t> o(size_t(mp) * size_t(d)), o_ref(size_t(T) * size_t(d));
        pv_u8s8_amx(T, T, d, p.data(), vp.data(), o.data(), d);
        pv_u8s8_ref(T, T, d, p.data(), kp, v.data(), o_ref.data(), d);
        for (int i = 0; i < T; ++i)
          for (int n = 0; n < d; ++n)
            ASSERT_EQ(o[size_t(i) * size_t(d) + size_t(n)], o_ref[size_t(i) * size_t(d) + size_t(n)]) << i << " " << n;
        if (extreme) {
          EXPECT_EQ(s_ref[0], 255 * -128 * d);
          EXPECT_EQ(o_ref[0], 255 * -128 * T);
        }
      }
}

}  // namespace
}  // namespace vitq
