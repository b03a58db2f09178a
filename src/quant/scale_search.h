// Similarity-aware alternating search of the two steps (Δx, Δw) of a site, shared by
// EasyQuant (cosine, nothing else) and Liu et al. 2021 (Pearson, ranking-aware loss at
// matmul_qk, bias correction after each round).
//
// Candidates: C steps evenly spaced in [α·Δ₀, β·Δ₀], Δ₀ the max-based step. Each round fixes
// Δx and picks the best Δw, then fixes Δw and picks the best Δx; the search stops when a
// round changes neither, or after max_rounds. The objective is averaged over calibration
// images (per image over all of the site's output elements). Candidate outputs are computed
// exactly with an integer GEMM (both factors are integers) when both grids fit 8 bits,
// otherwise with a float GEMM of the integer codes.
#pragma once
#include <cstdint>
#include <vector>

#include "quant/method.h"
#include "quant/similarity.h"

namespace vitq {

struct SearchOptions {
  Similarity similarity = Similarity::Pearson;
  int candidates = 100;
  double alpha = 0.5, beta = 1.2;
  int max_rounds = 20;
  bool ranking = false;       // ranking-aware loss at matmul_qk
  double gamma = 0.1, theta = 0.2;
  int rank_tokens = 0;        // ranking loss over all pairs of a fixed random subset of this many
                              // key tokens per score row (unbiased estimate); 0 = all pairs, exact
  bool bias_correction = false;
  int search_tokens = 0;      // rows (tokens) per image used by the search; 0 = all
  // Candidate screen: each sweep over the C candidates of one step scores them all on a fixed
  // random sample of screen_rows rows per image, then the screen_keep best of those on all
  // (search_tokens) rows, and keeps the best there. 0 = no screen (every candidate on all rows).
  int screen_rows = 0;
  int screen_keep = 8;
  // Coarse-to-fine sweeps: score every coarse_stride-th candidate (and the last), then every
  // candidate between the best one's coarse neighbours, and keep the best scored. The same
  // choice as scoring all when the objective has one peak over the grid; not exact otherwise.
  // 0 = every candidate.
  int coarse_stride = 0;
  // Per-channel weight steps (linear sites): channel c's step is Δw·r_c with r_c = Δ₀_c / Δ₀ its
  // max-based step relative to the largest; the search chooses the common factor Δw over the
  // same candidates (per-channel initialisation, the paper's search on one scale factor). The
  // candidate outputs then run as float GEMMs of the scaled codes r_c·q.
  bool per_channel_weights = false;
  uint64_t seed = 0;
};

// r_c = Δ₀_c / max_c Δ₀_c of a weight (N × K) on grid wr: the per-channel search's step ratios.
std::vector<float> channel_step_ratios(const float* w, int N, int K, QRange wr);
// The codes of the per-channel search at common step dw: out[c][k] = r_c · q(w[c][k]) with
// q on channel c's step dw·r_c (as floats).
void scaled_channel_codes(const float* w, int N, int K, float dw, const std::vector<float>& ratios, QRange wr,
                          float* out);

SitePlan similarity_search(const SiteObservation& obs, Bits bits, const SearchOptions& opt, SiteNotes& notes);

}  // namespace vitq
