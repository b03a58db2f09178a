// Element-wise and row-wise kernels of the ViT forward that are not GEMMs. Each fast kernel
// has a scalar reference (`*_ref`, plain libm, double accumulation) that the tests compare
// against. The fast kernels are compiled for several x86-64 levels and the best one the CPU
// supports is chosen at run time (GCC target_clones); they are single-threaded over the rows
// they are given, so callers parallelise over rows.
#pragma once
#include <cstddef>

namespace vitq {

// y[r] = (x[r] - mean) / sqrt(var + eps) * gamma + beta for each of `rows` rows of length n.
void layernorm_rows(const float* x, float* y, size_t rows, size_t n, const float* gamma, const float* beta,
                    float eps);
void layernorm_rows_ref(const float* x, float* y, size_t rows, size_t n, const float* gamma, const float* beta,
                        float eps);

// In place: s[r] = softmax(scale * s[r]) for each of `rows` rows of length n.
void softmax_rows(float* s, size_t rows, size_t n, float scale);
void softmax_rows_ref(float* s, size_t rows, size_t n, float scale);

// In place: x[r][j] = gelu(x[r][j] + bias[j]) (exact-erf GELU; bias may be null).
void bias_gelu_rows(float* x, size_t rows, size_t n, const float* bias);
void bias_gelu_rows_ref(float* x, size_t rows, size_t n, const float* bias);

// In place: d[j] *= GELU'(h[j]) = Φ(h) + h·φ(h) (the backward of the exact-erf GELU).
void gelu_grad_mul(float* d, const float* h, size_t n);
void gelu_grad_mul_ref(float* d, const float* h, size_t n);

// In place: acc[r][j] += y[r][j] + bias[j] (residual add; bias may be null).
void add_bias_residual_rows(float* acc, const float* y, size_t rows, size_t n, const float* bias);

// In place: y[r][j] += bias[j].
void add_bias_rows(float* y, size_t rows, size_t n, const float* bias);

// Vectorisable approximations used by the fast kernels (exposed for tests).
float exp_approx(float x);  // relative error < 2e-7 for x in [-87, 88]
float erf_approx(float x);  // absolute error < 3e-7 (A&S 7.1.26: 1.5e-7, plus float rounding)

}  // namespace vitq
