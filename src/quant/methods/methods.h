// Constructors of the PTQ methods (one file each) and helpers they share.
#pragma once
#include <memory>

#include "quant/method.h"

namespace vitq {

std::unique_ptr<Method> make_minmax(const MethodArgs& a);
std::unique_ptr<Method> make_percentile(const MethodArgs& a);
std::unique_ptr<Method> make_easyquant(const MethodArgs& a);
std::unique_ptr<Method> make_liu2021(const MethodArgs& a);
std::unique_ptr<Method> make_aciq(const MethodArgs& a);
std::unique_ptr<Method> make_lapq(const MethodArgs& a);
std::unique_ptr<Method> make_bitsplit(const MethodArgs& a);

// Per-output-channel max-based weight steps (the per-channel option).
void set_channel_max_scales(const SiteObservation& obs, OperandQuant& w);

}  // namespace vitq
