#include "runtime/u8s8_grouped_matmul.h"

#include "core/error.h"
#include "engine/dnnl_engine.h"
#include "runtime/u8s8_matmul.h"

namespace vitq {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using dims = dnnl::memory::dims;

bool U8S8GroupedMatmul::exact_for(int b_abs_max) {
  return 2 * 255 * b_abs_max <= 32767 || !U8S8Matmul::pairs_saturate();
}

U8S8GroupedMatmul::U8S8GroupedMatmul(int N, int K, int groups, const int8_t* w_nk)
    : N_(N), K_(K), G_(groups), Kg_(groups > 0 ? K / groups : 0) {
  if (N < 1 || groups < 1 || Kg_ < 1 || Kg_ * groups != K)
    fail(ErrorKind::Internal, "U8S8GroupedMatmul: bad shape N=", N, " K=", K, " groups=", groups);
  try {
    const int64_t M = 64;  // a typical row count for oneDNN's choice of the weights layout
    dnnl::memory::desc src({G_, M, Kg_}, dt::u8, dims{Kg_, K_, 1}), dst({G_, M, N_}, dt::s32, tag::abc);
    dnnl::memory::desc any({G_, Kg_, N_}, dt::s8, tag::any);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, any, dst), attr, cpu_engine());
    packed_md_ = pd.weights_desc();
    // Element (g, k, n) of the batched B is W[n][g·Kg + k]: strides (Kg, 1, K).
    dnnl::memory::desc user_md({G_, Kg_, N_}, dt::s8, dims{Kg_, 1, K_});
    dnnl::memory user(user_md, cpu_engine(), const_cast<int8_t*>(w_nk));
    packed_ = dnnl::memory(packed_md_, cpu_engine());
    dnnl::stream s(cpu_engine());
    dnnl::reorder(user, packed_).execute(s, user, packed_);
    s.wait();
  } catch (const dnnl::error& e) {
    fail(ErrorKind::Internal, "oneDNN: cannot prepare grouped int8 weights ", N, " x ", K, " in ", groups,
         " groups: ", e.what());
  }
}

const DnnlThreadCall& U8S8GroupedMatmul::prim(int M, int lda) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = cache_.find({M, lda});
  if (it != cache_.end()) return *it->second;
  std::unique_ptr<DnnlThreadCall> p;
  try {
    const dnnl::memory::desc src({G_, M, Kg_}, dt::u8, dims{Kg_, lda, 1}), dst({G_, M, N_}, dt::s32, tag::abc);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, packed_md_, dst), attr, cpu_engine());
    p = std::make_unique<DnnlThreadCall>(dnnl::matmul(pd), pd.scratchpad_desc().get_size(),
                                         std::vector<std::pair<int, dnnl::memory::desc>>{{DNNL_ARG_SRC, src},
                                                                                        {DNNL_ARG_DST, dst}},
                                         std::vector<std::pair<int, dnnl::memory>>{{DNNL_ARG_WEIGHTS, packed_}});
  } catch (const dnnl::error& e) {
    fail(ErrorKind::Internal, "oneDNN: no grouped u8 x s8 matmul for M=", M, " N=", N_, " K=", K_, " groups=", G_,
         ": ", e.what());
  }
  return *cache_.emplace(std::make_pair(M, lda), std::move(p)).first->second;
}

void U8S8GroupedMatmul::run(int M, const uint8_t* a, int lda, int32_t* c) const {
  if (M <= 0) return;
  const DnnlThreadCall& p = prim(M, lda);
  try {
    p.run({a, c});
  } catch (const dnnl::error& e) {
    fail(ErrorKind::Internal, "oneDNN: grouped u8 x s8 matmul failed (M=", M, " N=", N_, " K=", K_, "): ", e.what());
  }
}

}  // namespace vitq
