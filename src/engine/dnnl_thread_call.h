// One oneDNN primitive run from many threads at once. A oneDNN stream is not thread-safe, and a
// primitive made with a user scratchpad (scratchpad_mode::user) runs concurrently when each
// thread brings its own scratch memory: every calling thread has its own stream and scratch
// (shared by all primitives it runs, one call at a time), and per primitive its own argument
// memories, made on its first call and only re-pointed afterwards (making them per call costs
// as much as a small GEMM's tail).
#pragma once
#include <cstddef>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace vitq {

class DnnlThreadCall {
 public:
  // prim needs scratch_bytes of user scratchpad; per_call: the arguments (DNNL_ARG_*, desc) whose
  // data run() passes, in that order; fixed: arguments bound once (e.g. reordered weights).
  DnnlThreadCall(dnnl::primitive prim, size_t scratch_bytes, std::vector<std::pair<int, dnnl::memory::desc>> per_call,
                 std::vector<std::pair<int, dnnl::memory>> fixed = {});
  DnnlThreadCall(const DnnlThreadCall&) = delete;
  DnnlThreadCall& operator=(const DnnlThreadCall&) = delete;

  // Executes on the calling thread's stream with data[i] the data of per_call[i], and waits.
  // Throws dnnl::error as oneDNN does.
  void run(std::initializer_list<const void*> data) const;

 private:
  struct Bound {
    std::vector<dnnl::memory> mem;  // as per_call_
    dnnl::memory scratch;
    std::unordered_map<int, dnnl::memory> args;
  };
  Bound& bound(const std::initializer_list<const void*>& data) const;

  dnnl::primitive prim_;
  size_t scratch_ = 0;
  std::vector<std::pair<int, dnnl::memory::desc>> per_call_;
  std::vector<std::pair<int, dnnl::memory>> fixed_;
  mutable std::mutex mu_;
  mutable std::map<std::thread::id, std::unique_ptr<Bound>> bound_;
};

}  // namespace vitq
