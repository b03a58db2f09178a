// The calibration set: images loaded and preprocessed into memory once, plus its identity
// (source, sample names, content hash) for the plan and the report.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/aligned.h"
#include "data/dataset.h"

namespace vitq {

struct CalibrationSet {
  avector<float> images;  // n × C × H × W
  int n = 0;
  std::vector<std::string> names;
  std::vector<std::string> skipped;  // "name: reason" of unreadable images left out (skip_bad)
  uint64_t hash = 0;  // FNV-1a 64 of the preprocessed pixels (what the method really saw)
  bool mirrored = false;  // the second half of `images` are the first half mirrored (add_mirrored_views)
  nlohmann::ordered_json identity(const std::string& source, uint64_t seed) const;
};

// Loads `count` images (0 = all) of `data`, chosen by select_subset(size, count, seed).
// Unreadable images are an Error(Data) naming the file, or with skip_bad left out and listed
// in `skipped` (the set then has fewer images; none left is an Error(Data) naming the first).
CalibrationSet load_calibration_set(const Dataset& data, size_t count, uint64_t seed, const Preprocess& pre,
                                    bool skip_bad = false);

// Appends each image mirrored left to right (its width reversed, every channel) as a further
// calibration sample: n images become 2n, the names of the copies end in " (mirrored)", and the
// hash covers all. A mirrored photograph is as likely an input as the original, so it doubles the
// data that block reconstruction and the error compensation fit to without more images
// (--calib-mirror; docs/RESULTS.md has the held-out measurement). Once only.
void add_mirrored_views(CalibrationSet& cs, int channels, int height, int width);

uint64_t fnv1a64(const void* data, size_t bytes, uint64_t h = 0xcbf29ce484222325ull);

}  // namespace vitq
