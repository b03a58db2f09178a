// Writing a quantized model directory from the CLI (vitq quantize, vitq export), with a summary
// of what was written and how its size compares with the FP32 checkpoint.
#pragma once
#include <string>

#include "model/vit_model.h"
#include "quant/plan.h"

namespace vitq {

// Writes write_dir/{model.safetensors, config.json, plan.json} for `model` (loaded from src_dir)
// quantized by `plan`, and prints the sizes; messages name shown_dir (the directory the user
// gave, which write_dir, a staging directory, becomes).
void export_quantized_dir(const ViTModel& model, const QuantPlan& plan, const std::string& src_dir,
                          const std::string& write_dir, const std::string& shown_dir);

}  // namespace vitq
