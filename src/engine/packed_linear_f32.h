// An FP32 linear layer y = x · wᵀ + b through oneDNN's matmul primitive with the weights
// reordered once, at construction, into the blocked layout its kernel reads.
//
// dnnl_sgemm packs the weights on every call; at one image (197 rows) that repacking is a large
// share of a ViT's time (ViT-B fc2: 3.5 ms per call with sgemm, 1.9 ms prepacked). This is what
// the plain FP32 forward uses for its linear sites. Primitives are made per row count on first
// use and cached. run() must be called outside an OpenMP parallel region (it uses oneDNN's
// threads); it is not meant to be called from several threads at once.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <unordered_map>

namespace vitq {

class PackedLinearF32 {
 public:
  // w: N x K row-major (PyTorch [out, in]); bias: N values or null. Both are copied (packed).
  PackedLinearF32(int N, int K, const float* w, const float* bias);
  PackedLinearF32(const PackedLinearF32&) = delete;
  PackedLinearF32& operator=(const PackedLinearF32&) = delete;

  // y (M x N, row-major) = x (M x K, row-major) · wᵀ + bias.
  void run(int M, const float* x, float* y);
  size_t packed_bytes() const { return weights_.get_desc().get_size(); }

 private:
  struct Prim {
    dnnl::matmul prim;
    dnnl::memory src, dst;
    std::unordered_map<int, dnnl::memory> args;  // made once; src/dst get new data pointers
  };
  Prim& prim(int M);

  int N_, K_;
  dnnl::memory weights_, bias_;
  dnnl::memory::desc bias_md_;
  dnnl::stream stream_;
  std::map<int, std::unique_ptr<Prim>> cache_;
};

}  // namespace vitq
