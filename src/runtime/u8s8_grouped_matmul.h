// The integer GEMMs of a linear site whose input is quantized per token in G channel groups
// (plan.h: token_group), as one batched oneDNN matmul: for each group g,
//   C_g (s32, M x N) = A[:, g·Kg, (g+1)·Kg) (u8, M x Kg, rows lda apart) · B_g (s8, Kg x N),
// B_g the columns [g·Kg, (g+1)·Kg) of the weight W (N x K, PyTorch's [out, in]), reordered once
// into oneDNN's layout; C_g at c + g·M·N (rows N apart), the layout IntLinear's epilogue reads.
// One call instead of G: a group's GEMM (K/G = 64 for ViT-Ti) is small enough that the per-call
// cost of G separate matmuls shows (runtime/int_linear.h).
//
// Only where oneDNN's u8 x s8 kernels are exact for these weights (u8s8_matmul.h): on CPUs whose
// kernels do not saturate pairwise int16 sums, or where 2·255·max|w| ≤ 32767 (weights of at most
// 7 bits' magnitude 64). Elsewhere IntLinear runs one U8S8Matmul per group (vitq's AVX2 kernel).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <utility>

#include "engine/dnnl_thread_call.h"

namespace vitq {

class U8S8GroupedMatmul {
 public:
  // True if the batched oneDNN GEMM is exact for weights of magnitude at most b_abs_max here.
  static bool exact_for(int b_abs_max);
  // w_nk: N x K row-major, K = groups · Kg (reordered here and not kept).
  U8S8GroupedMatmul(int N, int K, int groups, const int8_t* w_nk);
  U8S8GroupedMatmul(const U8S8GroupedMatmul&) = delete;
  U8S8GroupedMatmul& operator=(const U8S8GroupedMatmul&) = delete;

  // c (groups x M x N) = the per-group products of a's M rows (lda apart) as above. Thread-safe;
  // inside an OpenMP parallel region it runs on the calling thread.
  void run(int M, const uint8_t* a, int lda, int32_t* c) const;
  size_t packed_bytes() const { return packed_md_.get_size(); }

 private:
  const DnnlThreadCall& prim(int M, int lda) const;  // one per (M, lda), made on first use

  int N_, K_, G_, Kg_;
  dnnl::memory::desc packed_md_;
  dnnl::memory packed_;
  mutable std::mutex mu_;
  mutable std::map<std::pair<int, int>, std::unique_ptr<DnnlThreadCall>> cache_;
};

}  // namespace vitq
