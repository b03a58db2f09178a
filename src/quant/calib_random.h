// A calibration set of random images, for speed benchmarks of random-weight models (where the
// steps do not matter, only that a plan exists): standard normal values in the preprocessed
// space, seeded.
#pragma once
#include <cstdint>

#include "quant/calib_data.h"

namespace vitq {

CalibrationSet random_calibration_set(int n, uint64_t seed, const Preprocess& pre);

}  // namespace vitq
