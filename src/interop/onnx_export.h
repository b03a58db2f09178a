// ONNX export of a Vision Transformer (opset 17, Debian's libonnx): the graph a user serves with
// ONNX Runtime, TensorRT or Triton — the FP32 model, or the model under a quantization plan in
// QDQ form (QuantizeLinear/DequantizeLinear pairs on each quantized operand, int8 weight codes).
#pragma once
#include <string>

#include "model/vit_model.h"
#include "quant/plan.h"

namespace vitq {

// The serialized ONNX ModelProto of `model`'s forward: input "pixels" [batch, C, H, W]
// (preprocessed as the model's config says), output "logits" [batch, classes], the batch size
// symbolic. Checked with onnx::checker before it is returned.
//
// plan == nullptr: FP32. Otherwise `model` must be the checkpoint rewritten by the plan's
// transforms (plan_transforms.h) and each planned site becomes, as plan.h defines it:
//   activation operand  x̂ = DequantizeLinear(QuantizeLinear(clip(x, Δ·lo, Δ·hi), Δ, 0), Δ, 0):
//                       int8 (signed grid) or uint8 (unsigned) codes; the clip is emitted as
//                       Max/Min when the grid is narrower than the type (b < 8 bits); per-head
//                       steps as per-axis steps on the head axis;
//   weight operand      int8 codes (site_weight_codes: the plan's own or round(W/Δw_c)) stored
//                       as the initializer, DequantizeLinear with per-channel steps (axis of the
//                       output channel), plus the weight offset o_c added to the dequantized weight;
//   bias correction     added to the bias (linear sites) or to Q·Kᵀ / P·V per head.
// Expressed exactly with standard float operators instead (not QDQ; ONNX Runtime runs them in
// float): per-token input steps (ReduceMin/ReduceMax per row, then the codes by Div/Round/Max/
// Min and x̂ = code·Δ — token_quant's operations in its order; the patch embedding then as
// rows: Reshape/Transpose into patches and MatMul), level grids (Round(p·2^15) clipped, then
// Gather from the grid's 2^15 + 1-entry table), the online MLP rotation (MatMul by the constant
// H_F·diag(s)/√F), QwT compensation (MatMul + Add of the block's input), GELU tables (the
// fc1 output's code by Div/Round/Max/Min, then Gather from the block's table) and the softmax
// exponent table (ReduceMax, the index by Sub/Mul/Round/Min, Gather from the 2^bits
// exponentials, ReduceSum, Reciprocal, Mul: vitq's operations but the order of the sum).
// Codes wider than 8 bits are an Error(Usage) naming the site and operand.
// `info` (optional) receives what the graph holds, for the user's message.
struct OnnxExportInfo {
  int qdq_operands = 0;       // activation operands as QuantizeLinear/DequantizeLinear
  int per_token_inputs = 0;   // as float operators
  int level_grid_inputs = 0;  // as float operators (Gather from the grid's table)
  bool mlp_rotation = false;
  int compensated_blocks = 0;
  int gelu_tables = 0;         // blocks whose GELU is the plan's table (Gather)
  bool softmax_table = false;  // the softmax's exponentials from the plan's table (Gather)
  std::string summary() const;  // e.g. "24 QDQ activations, 25 per-token inputs and 12 level grids as float operators"
};
std::string export_onnx(const ViTModel& model, const QuantPlan* plan, OnnxExportInfo* info = nullptr);

}  // namespace vitq
