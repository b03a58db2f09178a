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
  uint64_t hash = 0;  // FNV-1a 64 of the preprocessed pixels (what the method really saw)
  nlohmann::ordered_json identity(const std::string& source, uint64_t seed) const;
};

// Loads `count` images (0 = all) of `data`, chosen by select_subset(size, count, seed).
// Unreadable images are an error naming the file.
CalibrationSet load_calibration_set(const Dataset& data, size_t count, uint64_t seed, const Preprocess& pre);

uint64_t fnv1a64(const void* data, size_t bytes, uint64_t h = 0xcbf29ce484222325ull);

}  // namespace vitq
