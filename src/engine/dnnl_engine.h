// The oneDNN CPU engine shared by every primitive vitq creates.
#pragma once
#include <oneapi/dnnl/dnnl.hpp>

namespace vitq {

const dnnl::engine& cpu_engine();

}  // namespace vitq
