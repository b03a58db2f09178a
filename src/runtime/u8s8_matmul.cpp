#include "runtime/u8s8_matmul.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "core/aligned.h"
#include "core/error.h"
#include "engine/dnnl_thread_call.h"
#include "numerics/int8_kernels.h"

namespace vitq {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using dims = dnnl::memory::dims;

}  // namespace

U8S8Matmul::U8S8Matmul(int N, int K, BLayout layout, const int8_t* b_nk) : N_(N), K_(K), layout_(layout) {
  if (N < 1 || K < 1) fail(ErrorKind::Internal, "U8S8Matmul: bad shape N=", N, " K=", K);
  if (layout != BLayout::Packed) return;
  if (!b_nk) fail(ErrorKind::Internal, "U8S8Matmul: packed layout needs the weights");
  packed_abs_max_ = 0;
  for (size_t i = 0; i < size_t(N) * size_t(K); ++i) packed_abs_max_ = std::max(packed_abs_max_, std::abs(int(b_nk[i])));
  // oneDNN's kernels would need the two-GEMM split for any activations beyond 7 bits: vitq's exact
  // AVX2 kernel instead (unless the codes −128, each k of them an extra step of its tiles, are many).
  if (!probing && 2 * 255 * packed_abs_max_ > 32767 && gemm_u8s8_avx2_available() && pairs_saturate()) {
    auto p = std::make_unique<PackedS8Avx2>(pack_s8_avx2(b_nk, N, K));
    if (p->minus128 * 64 <= size_t(N) * size_t(K)) {
      avx2_ = std::move(p);
      return;
    }
  }
  try {
    // Let oneDNN choose the weights layout for a typical row count, then reorder once.
    const int64_t M = 64;
    dnnl::memory::desc src({M, K}, dt::u8, tag::ab), dst({M, N}, dt::s32, tag::ab);
    dnnl::memory::desc any({K, N}, dt::s8, tag::any);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, any, dst), attr, cpu_engine());
    packed_md_ = pd.weights_desc();
    // The N x K row-major weights are B (K x N) with strides (1, K).
    dnnl::memory::desc user_md({K, N}, dt::s8, dims{1, K});
    dnnl::memory user(user_md, cpu_engine(), const_cast<int8_t*>(b_nk));
    packed_ = dnnl::memory(packed_md_, cpu_engine());
    dnnl::stream s(cpu_engine());
    dnnl::reorder(user, packed_).execute(s, user, packed_);
    s.wait();
  } catch (const dnnl::error& e) {
    fail(ErrorKind::Internal, "oneDNN: cannot prepare int8 weights ", N, " x ", K, ": ", e.what());
  }
}

thread_local bool U8S8Matmul::probing = false;

const U8S8Matmul::Prim& U8S8Matmul::prim(int M, int lda, int ldc) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto key = std::make_tuple(M, lda, ldc);
  auto it = cache_.find(key);
  if (it != cache_.end()) return *it->second;
  std::unique_ptr<Prim> p;
  try {
    const dnnl::memory::desc src({M, K_}, dt::u8, dims{lda, 1}), dst({M, N_}, dt::s32, dims{ldc, 1});
    dnnl::memory::desc wei;
    switch (layout_) {
      case BLayout::Packed: wei = packed_md_; break;
      case BLayout::NK: wei = dnnl::memory::desc({K_, N_}, dt::s8, dims{1, K_}); break;
      case BLayout::KN: wei = dnnl::memory::desc({K_, N_}, dt::s8, tag::ab); break;
    }
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wei, dst), attr, cpu_engine());
    std::vector<std::pair<int, dnnl::memory::desc>> per_call{{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}};
    std::vector<std::pair<int, dnnl::memory>> fixed;
    if (layout_ == BLayout::Packed) fixed.emplace_back(DNNL_ARG_WEIGHTS, packed_);
    else per_call.emplace_back(DNNL_ARG_WEIGHTS, wei);
    p = std::make_unique<Prim>(dnnl::matmul(pd), pd.scratchpad_desc().get_size(), std::move(per_call),
                               std::move(fixed), pd.impl_info_str());
  } catch (const dnnl::error& e) {
    fail(ErrorKind::Internal, "oneDNN: no u8 x s8 matmul for M=", M, " N=", N_, " K=", K_, ": ", e.what());
  }
  return *cache_.emplace(key, std::move(p)).first->second;
}

std::string U8S8Matmul::impl(int M) const {
  return avx2_ ? "vitq:gemm_u8s8s32_4x16_avx2" : prim(M, K_, N_).impl;
}

size_t U8S8Matmul::packed_bytes() const { return avx2_ ? avx2_->data.size() : packed_md_.get_size(); }

bool U8S8Matmul::pairs_saturate() {
  static const bool saturate = [] {
    // Worst case of a pair: 255 · (−128) twice = −65280, beyond int16. Probed through both the
    // per-call and the packed weight layouts, as the kernels differ.
    probing = true;  // the probe's own packed weights must not ask for the answer being computed
    const int M = 8, N = 16, K = 64;
    std::vector<uint8_t> a(size_t(M) * K, 255);
    std::vector<int8_t> b(size_t(N) * K, -128);
    std::vector<int32_t> c(size_t(M) * N);
    for (BLayout layout : {BLayout::NK, BLayout::Packed}) {
      U8S8Matmul mm(N, K, layout, b.data());
      mm.run_direct(M, a.data(), K, c.data(), N, b.data());
      for (int32_t v : c)
        if (v != 255 * -128 * K) return probing = false, true;
    }
    return probing = false, false;
  }();
  return saturate;
}

void U8S8Matmul::run(int M, const uint8_t* a, int lda, int32_t* c, int ldc, const int8_t* b) const {
  if (M <= 0) return;
  if (avx2_) {
    // On the calling thread inside a parallel region (the runtime's row tiles); else the column
    // blocks spread over the threads.
    const int NB = (N_ + 15) / 16;
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && NB > 1)
    for (int nb = 0; nb < NB; ++nb) gemm_u8s8s32_4x16_avx2(M, a, size_t(lda), *avx2_, c, size_t(ldc), nb, nb + 1);
    return;
  }
  if (!pairs_saturate()) return run_direct(M, a, lda, c, ldc, b);
  if (layout_ != BLayout::Packed && gemm_u8s8_avx2_available()) {
    // A per-call B (attention): packed for the AVX2 kernel on this thread, unless many of its
    // codes are −128 (each k of them an extra step of the tiles).
    thread_local PackedS8Avx2 pb;
    if (layout_ == BLayout::NK) pack_s8_avx2_into(pb, b, N_, K_, size_t(K_), 1);
    else pack_s8_avx2_into(pb, b, N_, K_, 1, size_t(N_));
    if (pb.minus128 * 64 <= size_t(N_) * size_t(K_)) {
      gemm_u8s8s32_4x16_avx2(M, a, size_t(lda), pb, c, size_t(ldc), 0, (N_ + 15) / 16);
      return;
    }
  }
  const int bmax = layout_ == BLayout::Packed ? packed_abs_max_ : max_abs_s8(b, size_t(N_) * size_t(K_));
  const int amax = max_u8_rows(a, size_t(M), size_t(K_), size_t(lda));
  if (2 * amax * bmax <= 32767) return run_direct(M, a, lda, c, ldc, b);
  // a = lo + 128·hi: lo ≤ 127 and hi ≤ 1 keep every pair within int16 for |b| ≤ 128. Both halves
  // are GEMMs of their own (lo into c, hi into c2), then c += 128·c2.
  thread_local avector<uint8_t> lo_hi;
  thread_local avector<int32_t> c2;
  lo_hi.resize(2 * size_t(M) * size_t(K_));
  c2.resize(size_t(M) * size_t(N_));
  split_u8_lo7_hi1_rows(a, size_t(M), size_t(K_), size_t(lda), lo_hi.data());
  run_direct(M, lo_hi.data(), K_, c, ldc, b);
  run_direct(M, lo_hi.data() + size_t(M) * size_t(K_), K_, c2.data(), N_, b);
  add_shl7_i32_rows(c, size_t(ldc), c2.data(), size_t(N_), size_t(M), size_t(N_));
}

void U8S8Matmul::run_direct(int M, const uint8_t* a, int lda, int32_t* c, int ldc, const int8_t* b) const {
  const Prim& p = prim(M, lda, ldc);
  try {
    if (layout_ == BLayout::Packed) p.call.run({a, c});
    else p.call.run({a, c, b});
  } catch (const dnnl::error& e) {
    fail(ErrorKind::Internal, "oneDNN: u8 x s8 matmul failed (M=", M, " N=", N_, " K=", K_, "): ", e.what());
  }
}

}  // namespace vitq
