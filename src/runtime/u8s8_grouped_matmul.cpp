#include "runtime/u8s8_grouped_matmul.h"

#include <algorithm>

#include "core/aligned.h"
#include "core/error.h"
#include "engine/dnnl_engine.h"
#include "runtime/u8s8_matmul.h"

namespace vitq {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using dims = dnnl::memory::dims;

// A oneDNN stream is not thread-safe: one per calling thread, with its scratchpad.
struct GroupedThreadState {
  dnnl::stream stream{cpu_engine()};
  avector<uint8_t> scratch;
};
GroupedThreadState& thread_state() {
  thread_local GroupedThreadState s;
  return s;
}

}  // namespace

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

const U8S8GroupedMatmul::Prim& U8S8GroupedMatmul::prim(int M, int lda) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = cache_.find({M, lda});
  if (it != cache_.end()) return *it->second;
  auto p = std::make_unique<Prim>();
  try {
    p->src = dnnl::memory::desc({G_, M, Kg_}, dt::u8, dims{Kg_, lda, 1});
    p->dst = dnnl::memory::desc({G_, M, N_}, dt::s32, tag::abc);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(p->src, packed_md_, p->dst), attr, cpu_engine());
    p->prim = dnnl::matmul(pd);
    p->scratch = pd.scratchpad_desc().get_size();
  } catch (const dnnl::error& e) {
    fail(ErrorKind::Internal, "oneDNN: no grouped u8 x s8 matmul for M=", M, " N=", N_, " K=", K_, " groups=", G_,
         ": ", e.what());
  }
  return *cache_.emplace(std::make_pair(M, lda), std::move(p)).first->second;
}

void U8S8GroupedMatmul::run(int M, const uint8_t* a, int lda, int32_t* c) const {
  if (M <= 0) return;
  const Prim& p = prim(M, lda);
  GroupedThreadState& ts = thread_state();
  if (ts.scratch.size() < p.scratch) ts.scratch.resize(p.scratch);
  const dnnl::engine& eng = cpu_engine();
  try {
    Prim::Bound* found = nullptr;
    {
      std::lock_guard<std::mutex> lock(p.mu);
      auto it = p.bound.find(std::this_thread::get_id());
      if (it != p.bound.end()) found = it->second.get();
    }
    if (!found) {  // the argument memories of this thread, made once, re-pointed per call
      auto bd = std::make_unique<Prim::Bound>();
      bd->src = dnnl::memory(p.src, eng, const_cast<uint8_t*>(a));
      bd->dst = dnnl::memory(p.dst, eng, c);
      bd->args = {{DNNL_ARG_SRC, bd->src}, {DNNL_ARG_DST, bd->dst}, {DNNL_ARG_WEIGHTS, packed_}};
      if (p.scratch) {
        bd->scratch = dnnl::memory(dnnl::memory::desc({int64_t(p.scratch)}, dt::u8, tag::a), eng, ts.scratch.data());
        bd->args[DNNL_ARG_SCRATCHPAD] = bd->scratch;
      }
      std::lock_guard<std::mutex> lock(p.mu);
      found = p.bound.emplace(std::this_thread::get_id(), std::move(bd)).first->second.get();
    }
    found->src.set_data_handle(const_cast<uint8_t*>(a));
    found->dst.set_data_handle(c);
    if (p.scratch) found->scratch.set_data_handle(ts.scratch.data());
    p.prim.execute(ts.stream, found->args);
    ts.stream.wait();
  } catch (const dnnl::error& e) {
    fail(ErrorKind::Internal, "oneDNN: grouped u8 x s8 matmul failed (M=", M, " N=", N_, " K=", K_, "): ", e.what());
  }
}

}  // namespace vitq
