// GPTQ weight rounding (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for
// Generative Pre-trained Transformers", Algorithm 1; reference code github IST-DASLab/gptq,
// gptq.py `fasterquant`) on a per-output-channel affine grid, plus round-to-nearest (RTN) on
// the same grid, the grid fit and the second-moment matrix it needs.
//
// Grid of channel c (a weight row W[c][·] of a site y = x·Wᵀ): b-bit codes q on the signed grid
// [qmin, qmax] = [−2^(b−1), 2^(b−1)−1] (quantizer.h) with
//     ŵ = Δ_c · q + o_c,        q(w) = clip(round((w − o_c) / Δ_c), qmin, qmax),
// i.e. asymmetric min/max quantization written as signed codes plus an offset: q = qmin maps to
// the low end lo_c of the range, q = qmax to its high end hi_c. The code is always computed by
// quantize_one(float(w − o_c), Δ_c, ·) (round half to even, true division); ŵ in double.
//
// GPTQ quantizes the columns (inputs) k = 0..K−1 of W one at a time and spreads each column's
// rounding error over the columns not yet quantized, so as to minimise the expected squared
// output error Σ_c (w_c − ŵ_c)ᵀ H (w_c − ŵ_c), H = E[x xᵀ] over the calibration inputs.
#pragma once
#include <cstdint>
#include <vector>

#include "numerics/quantizer.h"

namespace vitq {

// One affine grid per output channel (see above). step[c] > 0 is a normal float.
struct ChannelGrid {
  int bits = 0;
  std::vector<float> step, offset;
  std::vector<float> ratio;  // the clipping ratio r chosen by fit_channel_grid (1 = full range)
};

// The clipping-ratio candidates of fit_channel_grid: r_i = (100 − i) / 100, i = 0..50 (1.00 down
// to 0.50).
constexpr int kGridRatioCount = 51;
inline double grid_ratio(int i) { return double(100 - i) / 100.0; }

// The grid of one channel for the clipped range [r·min_k w_k, r·max_k w_k] (clipped towards 0):
//     Δ = float((hi − lo) / (2^b − 1)),   o = float(lo − Δ·qmin)   (lo, hi in double).
// Returns false (and leaves step/offset alone) when Δ would not be a positive normal float.
bool range_grid(double wmin, double wmax, double r, int bits, float& step, float& offset);

// The symmetric grid of one channel for the clipped range [−r·amax, r·amax]: Δ = float(r·amax /
// qmax), offset 0 (the zero point ONNX QDQ and TensorRT require of weights). False when Δ would
// not be a positive normal float.
bool symmetric_grid(double amax, double r, int bits, float& step);

// Per channel, the candidate r (grid_ratio) that minimises the weighted squared rounding error
//     Σ_k d_k (ŵ_k − w_k)²,    d_k = h_diag[k] (the input second moment E[x_k²]) or 1 if null,
// the first (largest r) on ties. A channel whose range gives no normal step at r = 1 (constant
// rows, zero rows) gets Δ = kTinyStep and o = the row's mid-range, so that it is exact when
// constant. symmetric: the grids of symmetric_grid (offset 0; a zero row gets Δ = kTinyStep).
// Throws Error(Model) on non-finite weights or non-finite / negative h_diag.
constexpr float kTinyStep = 1e-30f;
ChannelGrid fit_channel_grid(const float* W, int N, int K, int bits, const double* h_diag, bool symmetric = false);

// Weighted squared rounding error Σ_k d_k (ŵ_k − w_k)² of one row on (step, offset) (d = 1 if
// null): the objective of fit_channel_grid.
double row_rounding_error(const float* w, int K, float step, float offset, int bits, const double* d);

// The code of w on a channel's grid, q = clip(round(float(w − o) / Δ)), and its value ŵ = Δ·q + o
// (exact in double: Δ·q has at most 24 + 10 significant bits).
inline int32_t grid_code(double w, float step, float offset, int bits) {
  return quantize_one(float(w - double(offset)), step, qrange(bits, Grid::Signed));
}
inline double grid_value(int32_t q, float step, float offset) { return double(step) * q + double(offset); }

// Round to nearest: codes[c·K + k] = q(W[c][k]) on channel c's grid. codes: N × K.
void round_to_grid(const float* W, int N, int K, const ChannelGrid& g, int16_t* codes);

struct GptqOptions {
  double damp = 0.01;      // λ = damp · mean(diag H) added to the diagonal (GPTQ's percdamp)
  int block = 128;         // columns per lazy batch update
  bool act_order = false;  // process the columns by descending H_kk
};

// What gptq_round did (optional output).
struct GptqInfo {
  double damp = 0;     // the relative damping used (opt.damp, or more after retries)
  int retries = 0;     // Cholesky retries with 10× damping
  int dead = 0;        // inputs with H_kk = 0
};

// GPTQ (Algorithm 1 with lazy batch updates) on the grid g; codes: N × K, in W's column order.
//   H: K × K row-major, symmetric (only its lower triangle is read), E[x xᵀ] (a positive
//      multiple gives the same result up to rounding). Inputs with H_kk = 0 are dead: H_kk := 1,
//      W[·][k] := 0 (on a copy; neither H nor W is written).
//   Columns permuted by descending H_kk (stable) if act_order. λ = damp · mean(diag H) added to
//   the diagonal (after the dead inputs' 1); U = the upper Cholesky factor of H⁻¹ (H⁻¹ = UᵀU;
//   inverse_cholesky_upper). For each column i in order, per channel: q = q(w_i) on the current
//   (error-updated) w_i, err = (w_i − ŵ_i) / U_ii, w_j −= err · U_ij for the later j — the
//   block's columns at once, the later blocks by one product per block of `block` columns.
// If H + λI is not positive definite, retries with λ × 10, × 100, × 1000 (from damp = 0.001 if
// opt.damp = 0), then throws Error(Model). Throws Error(Model) on a non-finite W or H or a
// negative H_kk, Error(Internal) on a grid that does not fit N or bad options.
// Work: one Cholesky and one triangular inverse of K × K (≈ K³/3 multiply-adds each; the
// inverse in parallel), N·K² for the rows (tiles of 16 rows in parallel); memory ≈ 2 K² doubles.
// The codes do not depend on the thread count (fixed tiles; Eigen runs serially inside them).
void gptq_round(const float* W, int N, int K, const double* H, const ChannelGrid& g, const GptqOptions& opt,
                int16_t* codes, GptqInfo* info = nullptr);

// U (K × K row-major, upper; zeros below the diagonal) with UᵀU = A⁻¹ for a symmetric positive
// definite A (row-major, lower triangle read). Computed as U = J·L⁻¹·J, L the Cholesky factor
// of J·A·J (J the reversal permutation): A = U⁻¹U⁻ᵀ, and J·U⁻¹·J is lower triangular with a
// positive diagonal, hence that Cholesky factor — the same U as cholesky_upper(inverse(A)) in
// one Cholesky and one triangular inverse. Returns false if A is not (numerically) positive
// definite.
bool inverse_cholesky_upper(const double* A, int K, double* U);

// Σ_c (w_c − ŵ_c)ᵀ H (w_c − ŵ_c) over the channels (the expected squared output error when H =
// E[x xᵀ]); ŵ from codes on g; H K × K row-major, used in full.
double weighted_output_error(const float* W, const int16_t* codes, const ChannelGrid& g, int N, int K,
                             const double* H);

// H += Xᵀ X for X: rows × K row-major (float), accumulated in double (float products are exact in
// double). H: K × K row-major, symmetric on entry; the lower triangle is accumulated and mirrored.
// The result does not depend on the thread count.
void accumulate_gram(const float* X, int64_t rows, int K, double* H);

}  // namespace vitq
