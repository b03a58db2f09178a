#include "quant/compensation.h"

#include <Eigen/Dense>
#include <algorithm>
#include <vector>

#include "core/error.h"
#include "engine/gemm_f32.h"

namespace vitq {

CompensationFit fit_compensation(const float* x, const float* e, const float* y, int64_t rows, int D, double damp) {
  const int A = D + 1;  // the inputs and the constant 1 (the bias)
  Eigen::MatrixXd G = Eigen::MatrixXd::Zero(A, A), R = Eigen::MatrixXd::Zero(A, D);
  // [X 1]ᵀ[X 1] and [X 1]ᵀE in double (the residual stream's outlier channels and offsets make
  // the system ill-conditioned: a float Gram costs digits of the solution), chunk by chunk.
  constexpr int64_t kChunk = 1024;
  using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  RowMat xa(kChunk, A), ec(kChunk, D);
  for (int64_t r0 = 0; r0 < rows; r0 += kChunk) {
    const int64_t n = std::min(kChunk, rows - r0);
    for (int64_t r = 0; r < n; ++r) {
      for (int j = 0; j < D; ++j) {
        xa(r, j) = x[size_t(r0 + r) * D + size_t(j)];
        ec(r, j) = e[size_t(r0 + r) * D + size_t(j)];
      }
      xa(r, D) = 1.0;
    }
    G.noalias() += xa.topRows(n).transpose() * xa.topRows(n);
    R.noalias() += xa.topRows(n).transpose() * ec.topRows(n);
  }
  const double lambda = damp * G.diagonal().head(D).mean();
  for (int j = 0; j < D; ++j) G(j, j) += lambda;
  Eigen::LLT<Eigen::MatrixXd> llt(G);
  if (llt.info() != Eigen::Success)
    fail(ErrorKind::Model, "error compensation: the block inputs' Gram matrix is not positive definite (",
         rows, " tokens of ", D, " channels; constant channels need a damping > 0)");
  const Eigen::MatrixXd S = llt.solve(R);  // A × D: rows 0..D-1 = Wᵀ, row D = b

  CompensationFit f;
  f.comp.w.resize(size_t(D) * D);
  f.comp.b.resize(size_t(D));
  for (int o = 0; o < D; ++o) {
    for (int k = 0; k < D; ++k) f.comp.w[size_t(o) * D + size_t(k)] = float(S(k, o));
    f.comp.b[size_t(o)] = float(S(D, o));
  }
  // The residual with the rounded (float) map, and the explained share.
  std::vector<float> p(size_t(kChunk) * D);
  double ss_res = 0, ss_e = 0, ss_y = 0, ss_tot = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += kChunk) {
    const int64_t n = std::min(kChunk, rows - r0);
    gemm_nt_f32(n, D, D, x + size_t(r0) * D, f.comp.w.data(), p.data());
    for (int64_t r = 0; r < n; ++r)
      for (int j = 0; j < D; ++j) {
        const size_t i = size_t(r0 + r) * D + size_t(j);
        const double ej = e[i], d = ej - (double(p[size_t(r) * D + size_t(j)]) + f.comp.b[size_t(j)]);
        const double mj = R(D, j) / double(rows);
        ss_res += d * d;
        ss_e += ej * ej;
        ss_tot += (ej - mj) * (ej - mj);
        ss_y += double(y[i]) * y[i];
      }
  }
  f.r2 = ss_tot > 0 ? 1.0 - ss_res / ss_tot : 0.0;
  f.rel_error_before = ss_y > 0 ? ss_e / ss_y : 0.0;
  f.rel_error_after = ss_y > 0 ? ss_res / ss_y : 0.0;
  return f;
}

nlohmann::ordered_json compensation_notes(const CompensationFit& f) {
  return {{"used", f.used()},
          {"r2", f.r2},
          {"rel_error_before", f.rel_error_before},
          {"rel_error_after", f.used() ? f.rel_error_after : f.rel_error_before}};
}

}  // namespace vitq
