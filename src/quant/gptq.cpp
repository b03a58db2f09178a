#include "quant/gptq.h"

#include <Eigen/Dense>
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace vitq {

namespace {

using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

constexpr int kTileRows = 16;   // GPTQ: weight rows per task (fixed: the result must not depend on threads)
constexpr int kSolveCols = 64;  // triangular inverse: columns per task
constexpr int kGramTile = 256;  // accumulate_gram: H tile edge
constexpr int kGramRows = 512;  // accumulate_gram: X rows converted to double at once

void check_grid(const ChannelGrid& g, int N, int K, const char* who) {
  if (N < 1 || K < 1 || g.bits < kMinBits || g.bits > kMaxBits || g.step.size() != size_t(N) ||
      g.offset.size() != size_t(N))
    fail(ErrorKind::Internal, who, ": a ", g.bits, "-bit grid with ", g.step.size(), " steps and ", g.offset.size(),
         " offsets does not fit a ", N, " x ", K, " weight");
  for (int c = 0; c < N; ++c)
    if (!(std::isnormal(g.step[size_t(c)]) && g.step[size_t(c)] > 0) || !std::isfinite(g.offset[size_t(c)]))
      fail(ErrorKind::Internal, who, ": channel ", c, " has step ", g.step[size_t(c)], " and offset ",
           g.offset[size_t(c)]);
}

// Serial checks before the parallel loops (an exception must not leave an OpenMP region).
void check_finite_weights(const float* W, int N, int K) {
  for (size_t i = 0; i < size_t(N) * size_t(K); ++i)
    if (!std::isfinite(W[i]))
      fail(ErrorKind::Model, "weight [", i / size_t(K), "][", i % size_t(K), "] of a ", N, " x ", K,
           " weight is not finite (", W[i], ")");
}

// The best grid of one channel over the ratio candidates (see fit_channel_grid).
void fit_one_channel(const float* w, int K, int bits, const double* d, bool symmetric, float& step, float& offset,
                     float& ratio) {
  const auto [mn, mx] = std::minmax_element(w, w + K);
  const double amax = std::max(std::fabs(double(*mn)), std::fabs(double(*mx)));
  double best = INFINITY;
  for (int i = 0; i < kGridRatioCount; ++i) {
    float s, o = 0.0f;
    if (symmetric ? !symmetric_grid(amax, grid_ratio(i), bits, s) : !range_grid(*mn, *mx, grid_ratio(i), bits, s, o))
      continue;
    const double e = row_rounding_error(w, K, s, o, bits, d);
    if (e < best) {
      best = e;
      step = s;
      offset = o;
      ratio = float(grid_ratio(i));
    }
  }
  if (best == INFINITY) {  // no normal step: constant (or nearly constant) row
    step = kTinyStep;
    offset = symmetric ? 0.0f : float(0.5 * (double(*mn) + double(*mx)));
    ratio = 1.0f;
  }
}

// H with dead inputs (H_kk = 0) given H_kk = 1 — read from H, never written. Validates H.
struct Moments {
  std::vector<double> diag;
  std::vector<char> dead;
  int n_dead = 0;
};

Moments read_moments(const double* H, int N, int K) {
  for (size_t i = 0; i < size_t(K) * size_t(K); ++i)
    if (!std::isfinite(H[i]))
      fail(ErrorKind::Model, "GPTQ: H[", i / size_t(K), "][", i % size_t(K), "] = ", H[i], " is not finite (the ", K,
           " x ", K, " input second moments of a ", N, " x ", K, " weight)");
  Moments m;
  m.diag.resize(size_t(K));
  m.dead.assign(size_t(K), 0);
  for (int k = 0; k < K; ++k) {
    const double h = H[size_t(k) * size_t(K) + size_t(k)];
    if (h < 0)
      fail(ErrorKind::Model, "GPTQ: H[", k, "][", k, "] = ", h, " < 0 is not a second moment (", N, " x ", K,
           " weight)");
    m.dead[size_t(k)] = h == 0;
    m.n_dead += h == 0;
    m.diag[size_t(k)] = h == 0 ? 1.0 : h;
  }
  return m;
}

// R = J·P·(H + λI)·Pᵀ·J (lower triangle): R(i, j) = H[order[K−1−i]][order[K−1−j]] + λ[i = j],
// dead diagonals 1. Reads H's lower triangle only.
void reversed_damped(const double* H, const Moments& m, const std::vector<int>& order, double lambda,
                     Eigen::MatrixXd& R) {
  const int K = int(order.size());
#pragma omp parallel for schedule(static)
  for (int j = 0; j < K; ++j) {
    const size_t b = size_t(order[size_t(K - 1 - j)]);
    for (int i = j; i < K; ++i) {
      const size_t a = size_t(order[size_t(K - 1 - i)]);
      R(i, j) = a == b ? m.diag[a] + lambda : H[std::max(a, b) * size_t(K) + std::min(a, b)];
    }
  }
}

// U (row-major, upper) with UᵀU = (J R J)⁻¹ from R (lower triangle; destroyed): see
// inverse_cholesky_upper. False if R is not positive definite.
bool factor_reversed(Eigen::MatrixXd& R, double* U) {
  const int K = int(R.rows());
  Eigen::LLT<Eigen::Ref<Eigen::MatrixXd>> llt(R);
  if (llt.info() != Eigen::Success) return false;
  for (int k = 0; k < K; ++k)
    if (!(R(k, k) > 0) || !std::isfinite(R(k, k))) return false;
  // M = L⁻¹ (column-major, in U's memory), column blocks in parallel: column j of L⁻¹ is zero
  // above j, so block [j0, j1) solves only the trailing system L[j0:, j0:] · X = I[j0:, j0:j1].
  Eigen::Map<Eigen::MatrixXd> M(U, K, K);
  M.setZero();
  const int blocks = (K + kSolveCols - 1) / kSolveCols;
#pragma omp parallel for schedule(dynamic, 1)
  for (int b = 0; b < blocks; ++b) {
    const int j0 = b * kSolveCols, nb = std::min(kSolveCols, K - j0);
    auto X = M.block(j0, j0, K - j0, nb);
    X.topRows(nb).setIdentity();
    R.block(j0, j0, K - j0, K - j0).triangularView<Eigen::Lower>().solveInPlace(X);
  }
  // U(i, j) = M(K−1−i, K−1−j): reversing M's memory gives U column-major; transpose to row-major.
  std::reverse(U, U + size_t(K) * size_t(K));
  M.transposeInPlace();
  for (int k = 0; k < K; ++k)
    if (!std::isfinite(U[size_t(k) * size_t(K) + size_t(k)])) return false;
  return true;
}

// U for GPTQ on the (permuted) columns `order`, damping retried ×10 up to 3 times.
std::vector<double> gptq_factor(const double* H, const Moments& m, const std::vector<int>& order, int N,
                                double damp, GptqInfo& info) {
  const int K = int(order.size());
  const double mean_diag = std::accumulate(m.diag.begin(), m.diag.end(), 0.0) / K;
  std::vector<double> U(size_t(K) * size_t(K));
  Eigen::MatrixXd R(K, K);
  double d = damp;
  for (int attempt = 0; attempt <= 3; ++attempt) {
    if (attempt > 0) d = (attempt == 1 && damp == 0 ? 0.001 : d) * 10;
    reversed_damped(H, m, order, d * mean_diag, R);
    if (factor_reversed(R, U.data())) {
      info.damp = d;
      info.retries = attempt;
      return U;
    }
  }
  fail(ErrorKind::Model, "GPTQ: the ", K, " x ", K, " input second moments H of a ", N, " x ", K,
       " weight are not positive definite even with damping ", d, " · mean(diag H) (", damp,
       " and 3 retries at 10× damping)");
}

// GPTQ on weight rows [c0, c1): Algorithm 1 with lazy batch updates, per row exactly the
// reference's operations (the block's columns updated at once, the later columns by one GEMM
// per block). order: processing position → original column.
void gptq_rows(const float* W, int K, const std::vector<int>& order, const Moments& m, const double* U,
               const ChannelGrid& g, int block, int c0, int c1, int16_t* codes) {
  const int T = c1 - c0;
  RowMat Wt(T, K), E(T, std::min(block, K));
  for (int r = 0; r < T; ++r)
    for (int i = 0; i < K; ++i) {
      const size_t k = size_t(order[size_t(i)]);
      Wt(r, i) = m.dead[k] ? 0.0 : double(W[size_t(c0 + r) * size_t(K) + k]);
    }
  const Eigen::Map<const RowMat> Um(U, K, K);
  for (int b0 = 0; b0 < K; b0 += block) {
    const int b1 = std::min(b0 + block, K);
    for (int i = b0; i < b1; ++i) {
      const double* u = U + size_t(i) * size_t(K);
      for (int r = 0; r < T; ++r) {
        const float s = g.step[size_t(c0 + r)], o = g.offset[size_t(c0 + r)];
        double* w = &Wt(r, 0);
        const int32_t q = grid_code(w[i], s, o, g.bits);
        codes[size_t(c0 + r) * size_t(K) + size_t(order[size_t(i)])] = int16_t(q);
        const double err = (w[i] - grid_value(q, s, o)) / u[i];
        E(r, i - b0) = err;
        for (int j = i + 1; j < b1; ++j) w[j] -= err * u[j];
      }
    }
    if (b1 < K)
      Wt.rightCols(K - b1).noalias() -= E.leftCols(b1 - b0) * Um.block(b0, b1, b1 - b0, K - b1);
  }
}

}  // namespace

bool range_grid(double wmin, double wmax, double r, int bits, float& step, float& offset) {
  const double lo = r * wmin, hi = r * wmax;
  const float s = float((hi - lo) / double((int64_t(1) << bits) - 1));
  if (!(std::isnormal(s) && s > 0)) return false;
  step = s;
  offset = float(lo - double(s) * qmin(bits));
  return true;
}

bool symmetric_grid(double amax, double r, int bits, float& step) {
  const float s = float(r * amax / double(qmax(bits)));
  if (!(std::isnormal(s) && s > 0)) return false;
  step = s;
  return true;
}

double row_rounding_error(const float* w, int K, float step, float offset, int bits, const double* d) {
  double e = 0;
  for (int k = 0; k < K; ++k) {
    const double diff = grid_value(grid_code(w[k], step, offset, bits), step, offset) - double(w[k]);
    e += (d ? d[k] : 1.0) * diff * diff;
  }
  return e;
}

ChannelGrid fit_channel_grid(const float* W, int N, int K, int bits, const double* h_diag, bool symmetric) {
  if (N < 1 || K < 1 || bits < kMinBits || bits > kMaxBits)
    fail(ErrorKind::Internal, "fit_channel_grid: ", bits, "-bit grid for a ", N, " x ", K, " weight");
  check_finite_weights(W, N, K);
  for (int k = 0; h_diag && k < K; ++k)
    if (!(std::isfinite(h_diag[k]) && h_diag[k] >= 0))
      fail(ErrorKind::Model, "input second moment ", k, " of a ", N, " x ", K, " weight is ", h_diag[k]);
  ChannelGrid g;
  g.bits = bits;
  g.step.resize(size_t(N));
  g.offset.resize(size_t(N));
  g.ratio.resize(size_t(N));
#pragma omp parallel for schedule(dynamic, 4)
  for (int c = 0; c < N; ++c)
    fit_one_channel(W + size_t(c) * size_t(K), K, bits, h_diag, symmetric, g.step[size_t(c)], g.offset[size_t(c)],
                    g.ratio[size_t(c)]);
  return g;
}

void round_to_grid(const float* W, int N, int K, const ChannelGrid& g, int16_t* codes) {
  check_grid(g, N, K, "round_to_grid");
#pragma omp parallel for schedule(static)
  for (int c = 0; c < N; ++c) {
    const float s = g.step[size_t(c)], o = g.offset[size_t(c)];
    for (int k = 0; k < K; ++k) {
      const size_t i = size_t(c) * size_t(K) + size_t(k);
      codes[i] = int16_t(grid_code(W[i], s, o, g.bits));
    }
  }
}

void gptq_round(const float* W, int N, int K, const double* H, const ChannelGrid& g, const GptqOptions& opt,
                int16_t* codes, GptqInfo* info) {
  check_grid(g, N, K, "gptq_round");
  if (!(std::isfinite(opt.damp) && opt.damp >= 0) || opt.block < 1)
    fail(ErrorKind::Internal, "gptq_round: damp ", opt.damp, ", block ", opt.block);
  check_finite_weights(W, N, K);
  const Moments m = read_moments(H, N, K);
  std::vector<int> order(static_cast<size_t>(K));
  std::iota(order.begin(), order.end(), 0);
  if (opt.act_order)
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return m.diag[size_t(a)] > m.diag[size_t(b)]; });
  GptqInfo local;
  const std::vector<double> U = gptq_factor(H, m, order, N, opt.damp, local);
  local.dead = m.n_dead;
  const int tiles = (N + kTileRows - 1) / kTileRows;
#pragma omp parallel for schedule(dynamic, 1)
  for (int t = 0; t < tiles; ++t)
    gptq_rows(W, K, order, m, U.data(), g, opt.block, t * kTileRows, std::min(N, (t + 1) * kTileRows), codes);
  if (info) *info = local;
}

bool inverse_cholesky_upper(const double* A, int K, double* U) {
  Eigen::MatrixXd R(K, K);
  for (int j = 0; j < K; ++j)
    for (int i = j; i < K; ++i) R(i, j) = A[size_t(K - 1 - j) * size_t(K) + size_t(K - 1 - i)];
  return factor_reversed(R, U);
}

double weighted_output_error(const float* W, const int16_t* codes, const ChannelGrid& g, int N, int K,
                             const double* H) {
  check_grid(g, N, K, "weighted_output_error");
  const Eigen::Map<const RowMat> Hm(H, K, K);
  const int tiles = (N + kTileRows - 1) / kTileRows;
  std::vector<double> part(static_cast<size_t>(tiles));  // summed in order: independent of the thread count
#pragma omp parallel for schedule(dynamic, 1)
  for (int t = 0; t < tiles; ++t) {
    const int c0 = t * kTileRows, T = std::min(N, c0 + kTileRows) - c0;
    RowMat E(T, K);
    for (int r = 0; r < T; ++r) {
      const size_t c = size_t(c0 + r);
      for (int k = 0; k < K; ++k) {
        const size_t i = c * size_t(K) + size_t(k);
        E(r, k) = double(W[i]) - grid_value(codes[i], g.step[c], g.offset[c]);
      }
    }
    const RowMat EH = E * Hm;
    part[size_t(t)] = E.cwiseProduct(EH).sum();
  }
  return std::accumulate(part.begin(), part.end(), 0.0);
}

void accumulate_gram(const float* X, int64_t rows, int K, double* H) {
  if (K < 1 || rows < 0) fail(ErrorKind::Internal, "accumulate_gram: ", rows, " x ", K);
  Eigen::Map<RowMat> Hm(H, K, K);
  const int nt = (K + kGramTile - 1) / kGramTile;
  std::vector<std::pair<int, int>> tiles;  // lower-triangle tiles (a ≥ b)
  for (int a = 0; a < nt; ++a)
    for (int b = 0; b <= a; ++b) tiles.emplace_back(a, b);
  RowMat Xd(std::min<int64_t>(rows, kGramRows), K);
  for (int64_t r0 = 0; r0 < rows; r0 += kGramRows) {
    const int n = int(std::min<int64_t>(kGramRows, rows - r0));
    for (int r = 0; r < n; ++r)
      for (int k = 0; k < K; ++k) Xd(r, k) = double(X[size_t(r0 + r) * size_t(K) + size_t(k)]);
    // Each tile of H is summed over the row chunks in order by one thread: no thread dependence.
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t p = 0; p < tiles.size(); ++p) {
      const int a0 = tiles[p].first * kGramTile, b0 = tiles[p].second * kGramTile;
      const int na = std::min(kGramTile, K - a0), nb = std::min(kGramTile, K - b0);
      Hm.block(a0, b0, na, nb).noalias() += Xd.block(0, a0, n, na).transpose() * Xd.block(0, b0, n, nb);
    }
  }
  for (int i = 0; i < K; ++i)
    for (int j = i + 1; j < K; ++j) Hm(i, j) = Hm(j, i);
}

}  // namespace vitq
