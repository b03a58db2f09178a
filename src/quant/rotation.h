// Orthogonal rotations of a ViT that keep its FP function (QuaRot / SpinQuant style): they spread
// the few outlier channels of the residual stream, of the attention heads and of the MLP's hidden
// units over all channels, so that low-bit activation grids fit. Rows are row vectors, linear
// layers compute y = x·Wᵀ + b, C = I − 11ᵀ/D centres a row, D = embed_dim, d = head_dim,
// F = mlp_hidden.
//
// Residual stream (RotationSpec::residual), weights only — the forward is unchanged:
//  1. every writer of the stream is centred, W ← C·W, b ← b·C (patch embedding, cls/dist tokens,
//     pos_embed, attn.proj, mlp.fc2): the stream becomes x·C, and LayerNorm, which subtracts the
//     mean anyway, computes the same thing from it;
//  2. each LayerNorm's γ, β go into the linear layer it feeds (qkv ← norm1, fc1 ← norm2, head and
//     head_dist ← norm): W ← W·diag(γ), b ← b + W·β, then γ = 1, β = 0;
//  3. the stream is rotated by Q = H_D·diag(s)·H_Dᵀ / D (H_D the normalized Hadamard matrix of
//     numerics/hadamard.h, s random ±1 with s_0 = +1): writers W ← Q·W, b ← b·Q; readers W ← W·Q.
//     Q is orthogonal and symmetric and Q·1 = 1 (Hᵀ·1 = D·e_0 as H's first column is 1, s_0 = 1,
//     H·e_0 = 1), so the rotated stream x·C·Q is still zero-mean with the same norm, and
//     LayerNorm with γ = 1, β = 0 returns the original normalized row times Q, which the readers'
//     W·Q undo: (n·Q)·(W·diag(γ)·Q)ᵀ = n·diag(γ)·Wᵀ.
// Heads (RotationSpec::heads), weights only: per block, the q and k rows of qkv of every head h
// are rotated by one R = H_d·diag(s)/√d (q → q·R, k → k·R: W_h ← Rᵀ·W_h, b_h ← b_h·R, so
// (q·R)·(k·R)ᵀ = q·kᵀ), the v rows by another R₂, and the matching input columns of attn.proj
// by R₂ (W[:, h] ← W[:, h]·R₂), since the head's output is then o·R₂.
// MLP (RotationSpec::mlp), the one part with a run-time cost: fc2's input h (after GELU) becomes
// h·M at run time, M = H_F·diag(s)/√F (ViTModel::mlp_rotation_signs, applied by the forward), and
// fc2's weight W ← W·M, so that (h·M)·(W·M)ᵀ = h·Wᵀ.
//
// Signs: random_signs(n, seed, rotation_stream(kind, block)) (numerics/hadamard.h), so the same
// seed gives the same model on every platform. The arithmetic runs in double; the result is
// rounded to float once per weight.
#pragma once
#include <cstdint>
#include <vector>

#include "model/vit_model.h"

namespace vitq {

struct RotationSpec {
  uint64_t seed = 0;
  bool residual = true;  // steps 1–3: centre writers, fold LayerNorm γ/β, rotate the stream by Q
  bool heads = true;     // per-head Hadamard rotations of Q/K and of V (with attn.proj's columns)
  bool mlp = false;      // online randomized Hadamard of fc2's input (a run-time transform)
};

// The model rotated as `spec` says (each part independently). Refuses with Error(Usage), naming
// the size, a dimension that has no Hadamard matrix (embed_dim for the residual stream, head_dim
// for the heads, mlp_hidden for the MLP), and an MLP rotation of a model that already has one.
ViTModel rotate_model(const ViTModel& model, const RotationSpec& spec);

// The sign streams (random_signs' `stream`): kind in the high 32 bits, block in the low.
enum class RotationKind : uint32_t { Residual = 0, QueryKey = 1, Value = 2, Mlp = 3 };
inline uint64_t rotation_stream(RotationKind kind, int block = 0) {
  return (uint64_t(kind) << 32) | uint32_t(block);
}

// s of Q (s_0 forced to +1), of the head rotations R (QueryKey) and R₂ (Value) of block `block`,
// and of the MLP rotation (one for all blocks) — what rotate_model uses, for tests.
std::vector<float> rotation_signs(RotationKind kind, int n, uint64_t seed, int block = 0);

// Q = H_D·diag(s)·H_Dᵀ / D of the residual stream, D × D row-major (for tests).
std::vector<double> residual_rotation_matrix(int D, uint64_t seed);

}  // namespace vitq
