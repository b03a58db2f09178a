// ONNX export of a Vision Transformer (opset 17, Debian's libonnx): the graph a user serves with
// ONNX Runtime, TensorRT or Triton. Today the FP32 model; the quantization plan as QDQ pairs is
// the next step (issue 17).
#pragma once
#include <string>

#include "model/vit_model.h"

namespace vitq {

// The serialized ONNX ModelProto of `model`'s FP32 forward: input "pixels" [batch, C, H, W]
// (preprocessed as the model's config says), output "logits" [batch, classes], the batch size
// symbolic. Checked with onnx::checker before it is returned. A model with parts ONNX's standard
// operators are not used for here (a QwT compensation, an online MLP rotation) is an
// Error(Usage) naming the part.
std::string export_onnx_fp32(const ViTModel& model);

}  // namespace vitq
