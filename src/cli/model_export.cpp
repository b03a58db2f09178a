#include "cli/model_export.h"

#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "runtime/quantized_model.h"

namespace vitq {

void export_quantized_dir(const ViTModel& model, const QuantPlan& plan, const std::string& src_dir,
                          const std::string& write_dir, const std::string& shown_dir) {
  const QuantizedViT q = quantize_model(model, plan);
  const WrittenModel w = write_quantized_model(q, src_dir, write_dir);
  std::error_code ec;
  const auto fp32 = std::filesystem::file_size(std::filesystem::path(src_dir) / "model.safetensors", ec);
  std::string storage;
  for (const auto& [k, n] : w.sites_by_storage) storage += cat(storage.empty() ? "" : ", ", n, " ", k);
  std::printf("wrote %s/model.safetensors: %.2f MB", shown_dir.c_str(), double(w.bytes) / 1e6);
  if (!ec && fp32 > 0)
    std::printf(" = %.3fx the FP32 checkpoint (%.2f MB)", double(w.bytes) / double(fp32), double(fp32) / 1e6);
  std::printf("\n      linear sites: %s; config.json and plan.json beside it (run it: vitq eval --model %s)\n",
              storage.c_str(), shown_dir.c_str());
}

}  // namespace vitq
