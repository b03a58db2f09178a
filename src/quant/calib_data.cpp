#include "quant/calib_data.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"

namespace vitq {

uint64_t fnv1a64(const void* data, size_t bytes, uint64_t h) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

CalibrationSet load_calibration_set(const Dataset& data, size_t count, uint64_t seed, const Preprocess& pre,
                                    bool skip_bad) {
  std::vector<size_t> idx = select_subset(data.size(), count, seed);
  const size_t per = size_t(pre.channels) * size_t(pre.height) * size_t(pre.width);
  CalibrationSet cs;
  cs.images.resize(per * idx.size());
  std::vector<std::string> errors(idx.size());
#pragma omp parallel for schedule(dynamic, 4)
  for (size_t i = 0; i < idx.size(); ++i) {
    try {
      data.load(idx[i], pre, cs.images.data() + i * per);
    } catch (const std::exception& e) {
      errors[i] = e.what();
    }
  }
  // Compact over the images that loaded, in subset order.
  size_t n = 0;
  for (size_t i = 0; i < idx.size(); ++i) {
    if (!errors[i].empty()) {
      if (!skip_bad)
        fail(ErrorKind::Data, "calibration image: ", errors[i], " (use --skip-bad-images to skip unreadable images)");
      cs.skipped.push_back(errors[i]);
      continue;
    }
    if (n != i) std::copy_n(cs.images.data() + i * per, per, cs.images.data() + n * per);
    cs.names.push_back(data.name(idx[i]));
    ++n;
  }
  if (n == 0 && !cs.skipped.empty())
    fail(ErrorKind::Data, "no calibration image could be read: all ", cs.skipped.size(),
         " images were skipped as unreadable; the first: ", cs.skipped.front());
  cs.images.resize(n * per);
  cs.n = int(n);
  cs.hash = fnv1a64(cs.images.data(), cs.images.size() * sizeof(float));
  return cs;
}

void add_mirrored_views(CalibrationSet& cs, int channels, int height, int width) {
  if (cs.mirrored) fail(ErrorKind::Internal, "add_mirrored_views: the calibration set is already mirrored");
  const size_t per = size_t(channels) * size_t(height) * size_t(width), n = size_t(cs.n);
  if (cs.images.size() != per * n)
    fail(ErrorKind::Internal, "add_mirrored_views: ", cs.images.size(), " floats for ", n, " images of ", channels,
         "x", height, "x", width);
  cs.images.resize(2 * per * n);
  for (size_t i = 0; i < n; ++i) {
    const float* src = cs.images.data() + i * per;
    float* dst = cs.images.data() + (n + i) * per;
    for (size_t row = 0; row < size_t(channels) * size_t(height); ++row)
      std::reverse_copy(src + row * size_t(width), src + (row + 1) * size_t(width), dst + row * size_t(width));
  }
  for (size_t i = 0; i < n; ++i) cs.names.push_back(cs.names[i] + " (mirrored)");
  cs.n = int(2 * n);
  cs.mirrored = true;
  cs.hash = fnv1a64(cs.images.data(), cs.images.size() * sizeof(float));
}

nlohmann::ordered_json CalibrationSet::identity(const std::string& source, uint64_t seed) const {
  char hex[32];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
  nlohmann::ordered_json j;
  j["source"] = source;
  j["images"] = n;
  if (mirrored) j["mirrored"] = true;  // n counts the mirrored copies; `samples` names them
  j["seed"] = seed;
  j["pixels_fnv1a64"] = hex;
  j["samples"] = names;
  if (!skipped.empty()) j["skipped"] = skipped;
  return j;
}

}  // namespace vitq
