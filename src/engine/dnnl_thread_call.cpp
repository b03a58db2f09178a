#include "engine/dnnl_thread_call.h"

#include "core/aligned.h"
#include "core/error.h"
#include "engine/dnnl_engine.h"

namespace vitq {
namespace {

struct ThreadState {
  dnnl::stream stream{cpu_engine()};
  avector<uint8_t> scratch;
};
ThreadState& thread_state() {
  thread_local ThreadState s;
  return s;
}

}  // namespace

DnnlThreadCall::DnnlThreadCall(dnnl::primitive prim, size_t scratch_bytes,
                               std::vector<std::pair<int, dnnl::memory::desc>> per_call,
                               std::vector<std::pair<int, dnnl::memory>> fixed)
    : prim_(std::move(prim)), scratch_(scratch_bytes), per_call_(std::move(per_call)), fixed_(std::move(fixed)) {}

DnnlThreadCall::Bound& DnnlThreadCall::bound(const std::initializer_list<const void*>& data) const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = bound_.find(std::this_thread::get_id());
    if (it != bound_.end()) return *it->second;
  }
  const dnnl::engine& eng = cpu_engine();
  auto bd = std::make_unique<Bound>();
  const void* const* d = data.begin();
  for (size_t i = 0; i < per_call_.size(); ++i) {
    bd->mem.emplace_back(per_call_[i].second, eng, const_cast<void*>(d[i]));
    bd->args[per_call_[i].first] = bd->mem.back();
  }
  for (const auto& [id, m] : fixed_) bd->args[id] = m;
  if (scratch_) {
    bd->scratch = dnnl::memory(dnnl::memory::desc({int64_t(scratch_)}, dnnl::memory::data_type::u8,
                                                  dnnl::memory::format_tag::a),
                               eng, thread_state().scratch.data());
    bd->args[DNNL_ARG_SCRATCHPAD] = bd->scratch;
  }
  std::lock_guard<std::mutex> lock(mu_);
  return *bound_.emplace(std::this_thread::get_id(), std::move(bd)).first->second;
}

void DnnlThreadCall::run(std::initializer_list<const void*> data) const {
  if (data.size() != per_call_.size())
    fail(ErrorKind::Internal, "DnnlThreadCall: ", data.size(), " data pointers for ", per_call_.size(), " arguments");
  ThreadState& ts = thread_state();
  if (ts.scratch.size() < scratch_) ts.scratch.resize(scratch_);
  Bound& bd = bound(data);
  const void* const* d = data.begin();
  for (size_t i = 0; i < bd.mem.size(); ++i) bd.mem[i].set_data_handle(const_cast<void*>(d[i]));
  if (scratch_) bd.scratch.set_data_handle(ts.scratch.data());
  prim_.execute(ts.stream, bd.args);
  ts.stream.wait();
}

}  // namespace vitq
