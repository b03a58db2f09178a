#include "quant/calib_report.h"

namespace vitq {

nlohmann::ordered_json calibration_report(const CalibrationResult& r, const CalibRunInfo& run) {
  const bool mixed = !run.mixed_precision.is_null();
  nlohmann::ordered_json rep;
  rep["tool_version"] = VITQ_VERSION;
  rep["model"] = run.model;
  rep["architecture"] = run.architecture;
  rep["method"] = r.plan.method;
  rep["settings"] = r.plan.settings;
  rep["calibration"] = r.plan.calibration;
  rep["threads"] = run.threads;
  rep["seconds"] = run.seconds;
  if (mixed) rep["final_calibration_seconds"] = r.seconds;
  rep["peak_rss_mb"] = run.peak_rss_mb;
  nlohmann::ordered_json sites = nlohmann::ordered_json::array();
  for (const auto& s : r.sites)
    sites.push_back({{"site", s.site},
                     {"wbits", s.bits.w},
                     {"abits", s.bits.x},
                     {"x_scale", s.x_scale},
                     {"w_scale", s.w_scale},
                     {"pearson_minmax", s.sim_before},
                     {"pearson", s.sim_after},
                     {"cosine", s.cosine_after},
                     {"mse", s.mse_after},
                     {"seconds", s.seconds},
                     {"method", s.notes.j}});
  rep["sites"] = sites;
  if (mixed) rep["mixed_precision"] = run.mixed_precision;
  if (!r.block_notes.is_null()) rep["block_step"] = r.block_notes;
  if (!r.refine_notes.is_null()) rep["network_step"] = r.refine_notes;
  return rep;
}

}  // namespace vitq
