#include "engine/batched_matmul_f32.h"

#include "core/error.h"
#include "engine/dnnl_engine.h"

namespace vitq {

BatchedMatmulF32::BatchedMatmulF32(int M, int N, int K) : M_(M), N_(N), K_(K), stream_(cpu_engine()) {
  if (M < 1 || N < 1 || K < 1) fail(ErrorKind::Internal, "BatchedMatmulF32: bad shape ", M, " x ", N, " x ", K);
}

void BatchedMatmulF32::run(int groups, const float* a, const float* b, float* y) {
  if (groups <= 0) return;
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  try {
    auto it = cache_.find(groups);
    if (it == cache_.end()) {
      const int64_t G = groups;
      const dnnl::memory::desc ad({G, M_, K_}, dt::f32, tag::abc), bd({G, K_, N_}, dt::f32, tag::abc),
          yd({G, M_, N_}, dt::f32, tag::abc);
      const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(ad, bd, yd), cpu_engine());
      auto p = std::make_unique<Prim>();
      p->prim = dnnl::matmul(pd);
      p->a = dnnl::memory(ad, cpu_engine(), DNNL_MEMORY_NONE);
      p->b = dnnl::memory(bd, cpu_engine(), DNNL_MEMORY_NONE);
      p->y = dnnl::memory(yd, cpu_engine(), DNNL_MEMORY_NONE);
      p->args = {{DNNL_ARG_SRC, p->a}, {DNNL_ARG_WEIGHTS, p->b}, {DNNL_ARG_DST, p->y}};
      it = cache_.emplace(groups, std::move(p)).first;
    }
    Prim& p = *it->second;
    p.a.set_data_handle(const_cast<float*>(a));
    p.b.set_data_handle(const_cast<float*>(b));
    p.y.set_data_handle(y);
    p.prim.execute(stream_, p.args);
    stream_.wait();
  } catch (const dnnl::error& e) {
    fail(ErrorKind::Internal, "oneDNN: batched FP32 matmul failed (", groups, " x ", M_, " x ", N_, " x ", K_,
         "): ", e.what());
  }
}

}  // namespace vitq
