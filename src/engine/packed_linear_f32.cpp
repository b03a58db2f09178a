#include "engine/packed_linear_f32.h"

#include <cstring>

#include "core/error.h"
#include "engine/dnnl_engine.h"

namespace vitq {
namespace {
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using dims = dnnl::memory::dims;

dnnl::matmul::primitive_desc matmul_pd(int64_t M, int64_t N, int64_t K, const dnnl::memory::desc& wei,
                                       const dnnl::memory::desc& bias) {
  const dnnl::memory::desc src({M, K}, dt::f32, tag::ab), dst({M, N}, dt::f32, tag::ab);
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, bias, dst), cpu_engine());
}
}  // namespace

PackedLinearF32::PackedLinearF32(int N, int K, const float* w, const float* bias)
    : N_(N), K_(K), stream_(cpu_engine()) {
  if (N < 1 || K < 1 || !w) fail(ErrorKind::Internal, "PackedLinearF32: bad shape N=", N, " K=", K);
  try {
    if (bias) bias_md_ = dnnl::memory::desc({1, N}, dt::f32, tag::ab);
    // The layout oneDNN chooses for a typical row count (one image's tokens); every row count
    // then runs on these packed weights.
    const dnnl::memory::desc any({K, N}, dt::f32, tag::any);
    const auto pd = matmul_pd(197, N, K, any, bias_md_);
    // The N x K row-major weights are B (K x N) with strides (1, K).
    dnnl::memory user(dnnl::memory::desc({K, N}, dt::f32, dims{1, K}), cpu_engine(), const_cast<float*>(w));
    weights_ = dnnl::memory(pd.weights_desc(), cpu_engine());
    dnnl::reorder(user, weights_).execute(stream_, user, weights_);
    if (bias) {
      bias_ = dnnl::memory(bias_md_, cpu_engine());
      std::memcpy(bias_.get_data_handle(), bias, size_t(N) * sizeof(float));
    }
    stream_.wait();
  } catch (const dnnl::error& e) {
    fail(ErrorKind::Internal, "oneDNN: cannot pack FP32 weights ", N, " x ", K, ": ", e.what());
  }
}

PackedLinearF32::Prim& PackedLinearF32::prim(int M) {
  auto it = cache_.find(M);
  if (it != cache_.end()) return *it->second;
  auto p = std::make_unique<Prim>();
  try {
    const auto pd = matmul_pd(M, N_, K_, weights_.get_desc(), bias_md_);
    p->prim = dnnl::matmul(pd);
    p->src = dnnl::memory(pd.src_desc(), cpu_engine(), DNNL_MEMORY_NONE);
    p->dst = dnnl::memory(pd.dst_desc(), cpu_engine(), DNNL_MEMORY_NONE);
    p->args = {{DNNL_ARG_SRC, p->src}, {DNNL_ARG_WEIGHTS, weights_}, {DNNL_ARG_DST, p->dst}};
    if (bias_) p->args[DNNL_ARG_BIAS] = bias_;
  } catch (const dnnl::error& e) {
    fail(ErrorKind::Internal, "oneDNN: no FP32 matmul for M=", M, " N=", N_, " K=", K_, ": ", e.what());
  }
  return *cache_.emplace(M, std::move(p)).first->second;
}

void PackedLinearF32::run(int M, const float* x, float* y) {
  if (M <= 0) return;
  Prim& p = prim(M);
  try {
    p.src.set_data_handle(const_cast<float*>(x));
    p.dst.set_data_handle(y);
    p.prim.execute(stream_, p.args);
    stream_.wait();
  } catch (const dnnl::error& e) {
    fail(ErrorKind::Internal, "oneDNN: FP32 matmul failed (M=", M, " N=", N_, " K=", K_, "): ", e.what());
  }
}

}  // namespace vitq
