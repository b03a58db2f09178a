// Integer GEMM through oneDNN's matmul primitive: C (s32, M x N) = A (u8, M x K) · B (s8, K x N).
// u8 x s8 is the native operand pair of x86 VNNI (vpdpbusd); signed activation codes reach it
// shifted by a zero point (see int_linear.h), which the caller's epilogue removes exactly.
//
// B is either a constant weight matrix given once as N x K (PyTorch [out, in]) and reordered at
// construction into the blocked layout oneDNN's kernel wants, or an activation passed with every
// call as N x K (the keys of a head, for Q·Kᵀ) or K x N (the values of a head, for P·V).
// Primitives are created per M on first use and cached. run() is thread-safe; called outside an
// OpenMP parallel region it uses oneDNN's threads, inside one it runs on the calling thread.
//
// Exactness without VNNI: on x86 CPUs without VNNI (AVX2, AVX-512 before Cascade Lake) oneDNN's
// int8 kernels add the u8·s8 products of adjacent k pairwise into int16 with saturation
// (vpmaddubsw), so a·b is wrong when a pair of products exceeds 32767 (e.g. 255·(−128)·2).
// Whether this happens is probed once at run time (a worst-case product through oneDNN); where
// it does, run() checks the pair bound 2·max(a)·max|b| ≤ 32767 per call and, when it does not
// hold, computes a·B = lo·B + 128·(hi·B) with a = 128·hi + lo (lo ≤ 127, hi ≤ 1), both exact.
// Constant weights (Packed) on such a CPU with AVX2 go to vitq's own exact kernel instead
// (numerics/gemm_u8s8_avx2.h: one pass at vpmaddubsw speed instead of two oneDNN GEMMs).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "engine/dnnl_engine.h"
#include "engine/dnnl_thread_call.h"
#include "numerics/gemm_u8s8_avx2.h"

namespace vitq {

enum class BLayout : uint8_t { Packed, NK, KN };

class U8S8Matmul {
 public:
  // For Packed, `b_nk` (N x K row-major) is reordered here and not kept.
  U8S8Matmul(int N, int K, BLayout layout, const int8_t* b_nk = nullptr);
  U8S8Matmul(const U8S8Matmul&) = delete;
  U8S8Matmul& operator=(const U8S8Matmul&) = delete;

  int N() const { return N_; }
  int K() const { return K_; }
  // c (M x ldc, row-major, ldc >= N) = a (M x K, rows lda >= K apart) · B. `b` is the per-call
  // B for the NK / KN layouts (ignored for Packed).
  void run(int M, const uint8_t* a, int lda, int32_t* c, int ldc, const int8_t* b = nullptr) const;
  // oneDNN's implementation name for M rows (e.g. "brg:avx512_core_vnni"), for reports.
  std::string impl(int M) const;
  size_t packed_bytes() const;
  // True if oneDNN's u8 x s8 kernels saturate pairwise sums on this CPU (see above).
  static bool pairs_saturate();

 private:
  // A primitive for one (M, lda, ldc), run from any thread (engine/dnnl_thread_call.h).
  struct Prim {
    Prim(dnnl::primitive prim, size_t scratch, std::vector<std::pair<int, dnnl::memory::desc>> per_call,
         std::vector<std::pair<int, dnnl::memory>> fixed, std::string impl_name)
        : call(std::move(prim), scratch, std::move(per_call), std::move(fixed)), impl(std::move(impl_name)) {}
    DnnlThreadCall call;
    std::string impl;
  };
  const Prim& prim(int M, int lda, int ldc) const;
  static thread_local bool probing;  // pairs_saturate() is running its probe on this thread
  // One oneDNN call, exact only where the pair bound holds or the CPU has VNNI.
  void run_direct(int M, const uint8_t* a, int lda, int32_t* c, int ldc, const int8_t* b) const;

  int N_, K_;
  BLayout layout_;
  int packed_abs_max_ = 128;  // max |b| of the packed weights
  std::unique_ptr<PackedS8Avx2> avx2_;  // the weights for gemm_u8s8s32_4x16_avx2, or null
  dnnl::memory::desc packed_md_;
  dnnl::memory packed_;
  mutable std::mutex mu_;
  mutable std::map<std::tuple<int, int, int>, std::unique_ptr<Prim>> cache_;
};

}  // namespace vitq
