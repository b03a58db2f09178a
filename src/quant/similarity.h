// Similarity objectives of the scale search and the ranking-aware loss of the paper.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace vitq {

enum class Similarity { Pearson, Cosine, NegMse };
bool parse_similarity(const std::string& s, Similarity* out);  // "pearson", "cosine", "mse"
const char* similarity_name(Similarity s);

// Running sums of a pair (o, ô) from which every similarity is finished in O(1); per image.
struct PairStats {
  double n = 0, so = 0, so2 = 0, sq = 0, sq2 = 0, soq = 0;
  void add(const PairStats& o) {
    n += o.n; so += o.so; so2 += o.so2; sq += o.sq; sq2 += o.sq2; soq += o.soq;
  }
  double pearson() const;
  double cosine() const;
  double mse() const;
  double value(Similarity s) const;  // higher is better (NegMse = −mse)
};

// Accumulates (o[i], q[i]) for n pairs (float accumulation per call, double across calls).
PairStats pair_stats(const float* o, const float* q, size_t n);

// Fused epilogue of a candidate output row: q[n] = s·y[n] + b[n]; returns Σq, Σq², Σo·q and
// writes q to `out` if it is not null. y holds int32 (exact integer GEMM) or float codes' products.
struct RowSums {
  float q = 0, q2 = 0, oq = 0;
};
RowSums row_sums_i32(const int32_t* y, const float* o, const float* b, float s, size_t n, float* out);
RowSums row_sums_f32(const float* y, const float* o, const float* b, float s, size_t n, float* out);

// Reference implementations over whole vectors (tests compare against numpy).
double pearson(const float* a, const float* b, size_t n);
double cosine_similarity(const float* a, const float* b, size_t n);

// Ranking loss of the paper for one row of attention scores a (FP) and q (quantized):
//   Σ_{i<j} max(θ − (q_i − q_j)·sign(a_i − a_j), 0), exact O(n²).
double ranking_loss_row_exact(const float* a, const float* q, size_t n, float theta);

// Exact pair sum in at most O(n²) simple vectorisable steps: the row's FP scores are sorted once
// (descending), then for every pair (p < r) of the sorted order the term is
// max(θ − (q_p − q_r), 0); pairs with equal FP scores (sign 0) contribute θ. For each p only the
// r up to the last one whose q is within θ of q_p or above it can be non-zero (found from the
// suffix maxima of q), so a well-ordered row costs about n windows of a few pairs.
struct RankOrder {
  std::vector<uint16_t> order;                // indices of a, largest score first
  std::vector<uint16_t> tie_start, tie_len;   // runs of equal scores in the sorted order
};
RankOrder rank_order(const float* a, size_t n);
// Σ over the pairs of `ro` (all of a row, or a subset) for the quantized row q;
// `scratch` holds ranking_scratch_size(ro.order.size()) floats.
constexpr size_t kRankScratchPad = 16;
constexpr size_t ranking_scratch_size(size_t n) { return 2 * (n + kRankScratchPad) + 1; }
double ranking_loss_sorted(const RankOrder& ro, const float* q, float theta, float* scratch);

// The order of a fixed random subset of m of the row's n positions (m < n), for an unbiased
// estimate of the row's mean pair term from the m(m−1)/2 pairs within the subset: every pair of
// the row is equally likely to be among them. Deterministic for a seed.
RankOrder rank_order_subset(const float* a, size_t n, size_t m, uint64_t seed);

}  // namespace vitq
