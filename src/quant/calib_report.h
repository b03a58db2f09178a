// report.json, written beside plan.json by `vitq quantize`: what ran (method, settings,
// calibration set, threads, time, memory), then per site the chosen steps, the similarity of
// the site's output to the FP32 one before (max-based steps) and after the method, and the
// method's own notes; the block-level and network-level steps' notes if the method has them.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "quant/calibrate.h"

namespace vitq {

struct CalibRunInfo {
  std::string model;         // the checkpoint as the user gave it
  std::string architecture;
  int threads = 1;
  double seconds = 0;        // all of the calibration (with mixed precision: every pass)
  double peak_rss_mb = 0;
  nlohmann::ordered_json mixed_precision;  // the allocation's report, null without mixed precision
};

nlohmann::ordered_json calibration_report(const CalibrationResult& r, const CalibRunInfo& run);

}  // namespace vitq
