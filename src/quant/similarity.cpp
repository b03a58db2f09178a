#include "quant/similarity.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include "numerics/multiversion.h"

namespace vitq {

bool parse_similarity(const std::string& s, Similarity* out) {
  if (s == "pearson") *out = Similarity::Pearson;
  else if (s == "cosine") *out = Similarity::Cosine;
  else if (s == "mse") *out = Similarity::NegMse;
  else return false;
  return true;
}

const char* similarity_name(Similarity s) {
  switch (s) {
    case Similarity::Pearson: return "pearson";
    case Similarity::Cosine: return "cosine";
    case Similarity::NegMse: return "mse";
  }
  return "?";
}

double PairStats::pearson() const {
  if (n < 2) return 0;
  const double cov = soq - so * sq / n;
  const double vo = so2 - so * so / n, vq = sq2 - sq * sq / n;
  if (vo <= 0 || vq <= 0) return 0;
  return cov / std::sqrt(vo * vq);
}

double PairStats::cosine() const {
  if (so2 <= 0 || sq2 <= 0) return 0;
  return soq / std::sqrt(so2 * sq2);
}

double PairStats::mse() const { return n > 0 ? (so2 - 2 * soq + sq2) / n : 0; }

double PairStats::value(Similarity s) const {
  switch (s) {
    case Similarity::Pearson: return pearson();
    case Similarity::Cosine: return cosine();
    case Similarity::NegMse: return -mse();
  }
  return 0;
}

PairStats pair_stats(const float* o, const float* q, size_t n) {
  // Float partial sums over short runs, double across runs: fast and accurate enough for
  // ranking candidates whose similarities differ in the 4th-6th digit.
  PairStats s;
  s.n = double(n);
  const size_t run = 256;
  for (size_t b = 0; b < n; b += run) {
    const size_t e = std::min(n, b + run);
    float so = 0, so2 = 0, sq = 0, sq2 = 0, soq = 0;
#pragma omp simd reduction(+ : so, so2, sq, sq2, soq)
    for (size_t i = b; i < e; ++i) {
      so += o[i];
      so2 += o[i] * o[i];
      sq += q[i];
      sq2 += q[i] * q[i];
      soq += o[i] * q[i];
    }
    s.so += so; s.so2 += so2; s.sq += sq; s.sq2 += sq2; s.soq += soq;
  }
  return s;
}


VITQ_MULTIVERSION
RowSums row_sums_i32(const int32_t* y, const float* o, const float* b, float s, size_t n, float* out) {
  float sq = 0, sq2 = 0, soq = 0;
  if (out) {
#pragma omp simd reduction(+ : sq, sq2, soq)
    for (size_t i = 0; i < n; ++i) {
      const float v = s * float(y[i]) + b[i];
      out[i] = v;
      sq += v;
      sq2 += v * v;
      soq += o[i] * v;
    }
  } else {
#pragma omp simd reduction(+ : sq, sq2, soq)
    for (size_t i = 0; i < n; ++i) {
      const float v = s * float(y[i]) + b[i];
      sq += v;
      sq2 += v * v;
      soq += o[i] * v;
    }
  }
  return {sq, sq2, soq};
}

VITQ_MULTIVERSION
RowSums row_sums_f32(const float* y, const float* o, const float* b, float s, size_t n, float* out) {
  float sq = 0, sq2 = 0, soq = 0;
#pragma omp simd reduction(+ : sq, sq2, soq)
  for (size_t i = 0; i < n; ++i) {
    const float v = s * y[i] + b[i];
    if (out) out[i] = v;
    sq += v;
    sq2 += v * v;
    soq += o[i] * v;
  }
  return {sq, sq2, soq};
}

double pearson(const float* a, const float* b, size_t n) {
  double ma = 0, mb = 0;
  for (size_t i = 0; i < n; ++i) { ma += a[i]; mb += b[i]; }
  ma /= double(n);
  mb /= double(n);
  double cov = 0, va = 0, vb = 0;
  for (size_t i = 0; i < n; ++i) {
    cov += (a[i] - ma) * (b[i] - mb);
    va += (a[i] - ma) * (a[i] - ma);
    vb += (b[i] - mb) * (b[i] - mb);
  }
  return (va > 0 && vb > 0) ? cov / std::sqrt(va * vb) : 0;
}

double cosine_similarity(const float* a, const float* b, size_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < n; ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  return (aa > 0 && bb > 0) ? ab / std::sqrt(aa * bb) : 0;
}

namespace {
inline double phi_pair(float ai, float aj, float qi, float qj, float theta) {
  const float d = ai - aj;
  const float sgn = d > 0 ? 1.0f : (d < 0 ? -1.0f : 0.0f);
  const float p = (qi - qj) * sgn;
  return p < theta ? double(theta - p) : 0.0;
}
}  // namespace

double ranking_loss_row_exact(const float* a, const float* q, size_t n, float theta) {
  double s = 0;
  for (size_t i = 0; i + 1 < n; ++i)
    for (size_t j = i + 1; j < n; ++j) s += phi_pair(a[i], a[j], q[i], q[j], theta);
  return s;
}


RankOrder rank_order(const float* a, size_t n) {
  RankOrder ro;
  ro.order.resize(n);
  std::iota(ro.order.begin(), ro.order.end(), uint16_t(0));
  std::stable_sort(ro.order.begin(), ro.order.end(), [&](uint16_t i, uint16_t j) { return a[i] > a[j]; });
  for (size_t p = 0; p < n;) {
    size_t e = p + 1;
    while (e < n && a[ro.order[e]] == a[ro.order[p]]) ++e;
    if (e - p > 1) {
      ro.tie_start.push_back(uint16_t(p));
      ro.tie_len.push_back(uint16_t(e - p));
    }
    p = e;
  }
  return ro;
}

namespace {
// Σ_{p<r} max(θ − q[p] + q[r], 0) over q[0..n).
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
double hinge_upper_pairs(const float* q, size_t n, float theta) {
  double total = 0;
  for (size_t p = 0; p + 1 < n; ++p) {
    const float base = theta - q[p];
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (size_t r = p + 1; r < n; ++r) {
      const float v = base + q[r];
      s += v > 0 ? v : 0.0f;
    }
    total += s;
  }
  return total;
}

// The same sum in 16×16 tiles (16 p, each broadcast, against 16 consecutive r), scanning for
// each block of 16 p only the r blocks up to the first one past which no q is above the block's
// lowest cut q[p] − θ: with the suffix maxima m[r] = max q[r..n) (non-increasing;
// m[n..n+16] = −∞), the terms of an r block starting past that point are ≤ 0 exactly (and stay
// ≤ 0 in float: θ − q[p] == −(q[p] − θ) exactly and rounding is monotone), so they contribute
// nothing. Terms of a scanned tile that lie past one p's own window are exact zeros for the
// same reason; q[n..n+16) must hold −FLT_MAX so that those past the row are zeros too. In the
// diagonal tile only r > p counts (the others get −∞). A tile has no data-dependent branch, so a
// row costs about (window / 16) tiles per block of 16 p and one mispredicted loop exit per block
// (a per-p window mispredicts once per p). Float lanes hold one block's terms (≤ 16 per tile),
// then go into a double.
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// 16 × −∞ then 15 × 0: the 16 floats from (15 − i) are −∞ in lanes 0..i and 0 after.
alignas(64) constexpr float kLowerTriangle[31] = {kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf,
                                                  kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf, kNegInf,
                                                  kNegInf, kNegInf, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
double hinge_upper_pairs_windowed(const float* q, float* m, size_t n, float theta) {
  if (n < 2) return 0.0;
  constexpr size_t L = kRankScratchPad;
  static_assert(L == 16, "tiles are 16 x 16");
  for (size_t r = n; r <= n + L; ++r) m[r] = kNegInf;
  for (size_t r = n; r-- > 0;) m[r] = std::max(q[r], m[r + 1]);
  double total = 0;
  for (size_t p0 = 0; p0 + 1 < n; p0 += L) {
    const size_t np = std::min(L, n - 1 - p0);  // p in [p0, p0 + np): every p with some r > p
    float base[L];
    float cut = std::numeric_limits<float>::infinity();
    for (size_t i = 0; i < L; ++i) {
      const float c = i < np ? q[p0 + i] - theta : std::numeric_limits<float>::infinity();
      base[i] = -c;  // p past the row: −∞, terms 0
      cut = std::min(cut, c);
    }
    alignas(64) float acc[L] = {};
    for (size_t i = 0; i < np; ++i) {  // diagonal tile: r = p0 + l, p = p0 + i, l > i
      const float b = base[i];
      const float* lower = kLowerTriangle + (L - 1 - i);
#pragma omp simd
      for (size_t l = 0; l < L; ++l) {
        const float t = (q[p0 + l] + b) + lower[l];
        acc[l] += t > 0.0f ? t : 0.0f;
      }
    }
    for (size_t r0 = p0 + L; m[r0] > cut; r0 += L) {  // stops by r0 ≥ n: m[n..n+16] = −∞
      const float* qr = q + r0;
      for (size_t i = 0; i < L; ++i) {
        const float b = base[i];
#pragma omp simd
        for (size_t l = 0; l < L; ++l) {
          const float t = qr[l] + b;
          acc[l] += t > 0.0f ? t : 0.0f;
        }
      }
    }
    for (size_t l = 0; l < L; ++l) total += double(acc[l]);
  }
  return total;
}
}  // namespace

double ranking_loss_sorted(const RankOrder& ro, const float* q, float theta, float* scratch) {
  const size_t n = ro.order.size();
  float* qs = scratch;
  for (size_t p = 0; p < n; ++p) qs[p] = q[ro.order[p]];
  for (size_t p = n; p < n + kRankScratchPad; ++p) qs[p] = -std::numeric_limits<float>::max();
  double s = hinge_upper_pairs_windowed(qs, scratch + n + kRankScratchPad, n, theta);
  for (size_t t = 0; t < ro.tie_start.size(); ++t) {  // tied scores: sign 0, term θ
    const size_t len = ro.tie_len[t];
    s -= hinge_upper_pairs(qs + ro.tie_start[t], len, theta);
    s += double(theta) * double(len) * double(len - 1) / 2.0;
  }
  return s;
}

RankOrder rank_order_subset(const float* a, size_t n, size_t m, uint64_t seed) {
  if (m >= n) return rank_order(a, n);
  // Partial Fisher-Yates for the subset (rng() % span: platform-independent, bias < 2^-48).
  std::mt19937_64 rng(seed);
  std::vector<uint16_t> idx(n);
  std::iota(idx.begin(), idx.end(), uint16_t(0));
  for (size_t k = 0; k < m; ++k) std::swap(idx[k], idx[k + size_t(rng() % (n - k))]);
  idx.resize(m);
  std::vector<float> sub(m);
  for (size_t k = 0; k < m; ++k) sub[k] = a[idx[k]];
  RankOrder ro = rank_order(sub.data(), m);
  for (auto& o : ro.order) o = idx[o];  // back to positions of the full row
  return ro;
}

}  // namespace vitq
