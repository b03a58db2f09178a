#include "quant/calib_random.h"

#include <random>

#include "core/error.h"

namespace vitq {

CalibrationSet random_calibration_set(int n, uint64_t seed, const Preprocess& pre) {
  if (n < 1) fail(ErrorKind::Usage, "--random-calibration needs at least one image");
  const size_t per = size_t(pre.channels) * size_t(pre.height) * size_t(pre.width);
  CalibrationSet cs;
  cs.n = n;
  cs.images.resize(per * size_t(n));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& v : cs.images) v = nd(rng);
  for (int i = 0; i < n; ++i) cs.names.push_back(cat("random:", i));
  cs.hash = fnv1a64(cs.images.data(), cs.images.size() * sizeof(float));
  return cs;
}

}  // namespace vitq
