#include "engine/dnnl_engine.h"

namespace vitq {

const dnnl::engine& cpu_engine() {
  static const dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

}  // namespace vitq
