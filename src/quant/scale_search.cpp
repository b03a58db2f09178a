#include "quant/scale_search.h"

#include <dnnl.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <cmath>
#include <random>

#include "core/aligned.h"
#include "core/error.h"
#include "numerics/quantizer.h"
#include "quant/weight_moments.h"

namespace vitq {

std::vector<float> channel_step_ratios(const float* w, int N, int K, QRange wr) {
  std::vector<float> r(static_cast<size_t>(N));
  for (int c = 0; c < N; ++c) r[size_t(c)] = max_step(max_abs(w + size_t(c) * K, size_t(K)), wr);
  const float mx = *std::max_element(r.begin(), r.end());
  for (float& v : r) v /= mx;
  return r;
}

void scaled_channel_codes(const float* w, int N, int K, float dw, const std::vector<float>& ratios, QRange wr,
                          float* out) {
#pragma omp parallel for schedule(static)
  for (int c = 0; c < N; ++c) {
    float* o = out + size_t(c) * K;
    quantize_to_f32_codes(w + size_t(c) * K, o, size_t(K), dw * ratios[size_t(c)], wr);
    for (int k = 0; k < K; ++k) o[k] *= ratios[size_t(c)];
  }
}

namespace {

// Evaluates the objective of candidate steps on (a row sample of) the calibration data.
class Evaluator {
 public:
  // `rows`: rows (tokens) per image to score on, a fixed random sample (0 or ≥ M = all).
  Evaluator(const SiteObservation& obs, Bits bits, const SearchOptions& opt, int rows, uint64_t seed)
      : obs_(obs), opt_(opt) {
    const SiteShape& s = obs.shape;
    images_ = obs.images;
    groups_ = s.groups_per_image;
    N_ = s.N;
    K_ = s.K;
    rows_ = (rows > 0 && rows < s.M) ? rows : s.M;
    xr_ = qrange(bits.x, bits.x_grid);
    wr_ = qrange(bits.w);
    if (opt.per_channel_weights && !obs.attention()) ratios_ = channel_step_ratios(obs.w, s.N, s.K, wr_);
    int_path_ = bits.x <= 8 && bits.w <= 8 && ratios_.empty();  // scaled codes are not integers
    x_unsigned_ = xr_.lo == 0;
    ranking_ = opt.ranking && s.id.kind == SiteKind::MatmulQK;
    score_scale_ = 1.0f / std::sqrt(float(s.K));  // attention logits = scores / √d

    // Row sample (per image, the same rows for every group of the image), compact copies.
    const size_t xg = size_t(rows_) * K_, og = size_t(rows_) * N_;
    xs_.resize(size_t(images_) * groups_ * xg);
    os_.resize(size_t(images_) * groups_ * og);
    std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
    std::vector<int> idx(size_t(s.M));
    for (int i = 0; i < images_; ++i) {
      for (int r = 0; r < s.M; ++r) idx[size_t(r)] = r;
      if (rows_ < s.M)  // partial Fisher-Yates; rng() % span: platform-independent, bias < 2^-48
        for (int r = 0; r < rows_; ++r) {
          const uint64_t span = uint64_t(s.M - r);
          const uint64_t j = uint64_t(r) + rng() % span;
          std::swap(idx[size_t(r)], idx[size_t(j)]);
        }
      for (int g = 0; g < groups_; ++g) {
        const size_t src_blk = (size_t(i) * groups_ + g) * size_t(s.M);
        const size_t dst_blk = (size_t(i) * groups_ + g) * size_t(rows_);
        for (int r = 0; r < rows_; ++r) {
          const size_t sr = src_blk + size_t(idx[size_t(r)]), dr = dst_blk + size_t(r);
          std::copy_n(obs.x + sr * K_, K_, xs_.data() + dr * K_);
          std::copy_n(obs.target + sr * N_, N_, os_.data() + dr * N_);
        }
      }
    }
    wn_ = obs.attention() ? size_t(images_) * groups_ * N_ * K_ : size_t(N_) * K_;
    if (int_path_) {
      if (x_unsigned_) xu8_.resize(xs_.size());
      else xi8_.resize(xs_.size());
      wi8_.resize(wn_);
    } else {
      xf_.resize(xs_.size());
      wf_.resize(wn_);
    }
    if (ranking_) {  // the FP score order of every row (or of a fixed token subset), once
      orders_.resize(size_t(images_) * groups_ * rows_);
      const size_t m = opt.rank_tokens > 0 ? size_t(opt.rank_tokens) : size_t(N_);
#pragma omp parallel for schedule(static)
      for (size_t k = 0; k < orders_.size(); ++k)
        orders_[k] = rank_order_subset(os_.data() + k * N_, size_t(N_), m, opt.seed * 0x9e3779b97f4a7c15ull + k);
    }
    nthreads_ = omp_get_max_threads();
    ybuf_.resize(size_t(nthreads_));
    ybuf_i_.resize(size_t(nthreads_));
    rankbuf_.resize(size_t(nthreads_));
    rowbuf_.resize(size_t(nthreads_));
    sim_.resize(size_t(images_));
    rank_.resize(size_t(images_));
    so_.assign(size_t(images_), 0.0);
    so2_.assign(size_t(images_), 0.0);
    const size_t per_image = size_t(groups_) * rows_ * N_;
    for (int i = 0; i < images_; ++i)
      for (size_t k = 0; k < per_image; ++k) {
        const double v = os_[size_t(i) * per_image + k];
        so_[size_t(i)] += v;
        so2_[size_t(i)] += v * v;
      }
  }

  float dx0() const { return max_step(max_abs(obs_.x, size_t(obs_.x_per_image()) * images_), xr_); }
  float dw0() const { return max_step(max_abs(obs_.w, wn_), wr_); }
  QRange xrange() const { return xr_; }
  QRange wrange() const { return wr_; }
  bool int_path() const { return int_path_; }
  const std::vector<float>& ratios() const { return ratios_; }
  int rows() const { return rows_; }
  int channels() const { return obs_.attention() ? groups_ * N_ : N_; }

  void set_x(float dx) {
    dx_ = dx;
    const int64_t n = int64_t(xs_.size()), chunk = 1 << 14;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i += chunk) {
      const size_t len = size_t(std::min(chunk, n - i));
      if (int_path_ && x_unsigned_) quantize_to_u8(xs_.data() + i, xu8_.data() + i, len, dx, xr_);
      else if (int_path_) quantize_to_i8(xs_.data() + i, xi8_.data() + i, len, dx, xr_);
      else quantize_to_f32_codes(xs_.data() + i, xf_.data() + i, len, dx, xr_);
    }
  }

  void set_w(float dw) {
    dw_ = dw;
    if (!ratios_.empty()) {
      scaled_channel_codes(obs_.w, N_, K_, dw, ratios_, wr_, wf_.data());
      return;
    }
    const int64_t n = int64_t(wn_), chunk = 1 << 14;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i += chunk) {
      const size_t len = size_t(std::min(chunk, n - i));
      if (int_path_) quantize_to_i8(obs_.w + i, wi8_.data() + i, len, dw, wr_);
      else quantize_to_f32_codes(obs_.w + i, wf_.data() + i, len, dw, wr_);
    }
  }

  // Objective for the current codes with output correction `corr` (channels() values or
  // empty). If `err` is given, it receives per channel the mean of (ô − o).
  double objective(const std::vector<float>& corr, std::vector<double>* err = nullptr) {
    const float s = dx_ * dw_;
    const int C = channels();
    if (err) err_img_.assign(size_t(images_) * C, 0.0);
    // b′ = bias + correction, per group (attention corrections are per head).
    bc_.assign(size_t(groups_) * N_, 0.0f);
    for (int g = 0; g < groups_; ++g)
      for (int n = 0; n < N_; ++n) {
        const size_t c = size_t(obs_.attention() ? g * N_ + n : n);
        bc_[size_t(g) * N_ + n] = (obs_.bias ? obs_.bias[n] : 0.0f) + (corr.empty() ? 0.0f : corr[c]);
      }
    const bool need_row = ranking_ || err;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < images_; ++i) {
      const int t = omp_get_thread_num();
      auto& y = ybuf_[size_t(t)];
      auto& yi32 = ybuf_i_[size_t(t)];
      auto& row = rowbuf_[size_t(t)];
      if (int_path_) yi32.resize(size_t(rows_) * N_);
      else y.resize(size_t(rows_) * N_);
      row.resize(size_t(N_));
      PairStats st;
      st.n = double(groups_) * rows_ * N_;
      st.so = so_[size_t(i)];
      st.so2 = so2_[size_t(i)];
      double rank = 0;
      for (int g = 0; g < groups_; ++g) {
        const size_t blk = size_t(i) * groups_ + size_t(g);
        gemm(blk, y.data(), yi32.data());
        const float* b = bc_.data() + size_t(g) * N_;
        double* e = err ? err_img_.data() + size_t(i) * C + (obs_.attention() ? size_t(g) * N_ : 0) : nullptr;
        for (int r = 0; r < rows_; ++r) {
          const float* o = os_.data() + (blk * rows_ + size_t(r)) * N_;
          float* q = need_row ? row.data() : nullptr;
          const RowSums rs = int_path_ ? row_sums_i32(yi32.data() + size_t(r) * N_, o, b, s, size_t(N_), q)
                                       : row_sums_f32(y.data() + size_t(r) * N_, o, b, s, size_t(N_), q);
          st.sq += rs.q;
          st.sq2 += rs.q2;
          st.soq += rs.oq;
          if (e)
            for (int n = 0; n < N_; ++n) e[n] += double(q[n]) - double(o[n]);
          if (ranking_) rank += rank_row(q, blk * rows_ + size_t(r), t);
        }
      }
      sim_[size_t(i)] = st.value(opt_.similarity);
      rank_[size_t(i)] = ranking_ ? rank / double(groups_ * rows_) : 0.0;
    }
    double sim = 0, rank = 0;
    for (int i = 0; i < images_; ++i) {
      sim += sim_[size_t(i)];
      rank += rank_[size_t(i)];
    }
    sim /= images_;
    rank /= images_;
    last_rank_ = rank;
    if (err) {
      err->assign(size_t(C), 0.0);
      for (int i = 0; i < images_; ++i)
        for (int ch = 0; ch < C; ++ch) (*err)[size_t(ch)] += err_img_[size_t(i) * C + size_t(ch)];
      const double count = double(images_) * rows_;
      for (auto& v : *err) v /= count;
    }
    return ranking_ ? sim - opt_.gamma * rank : sim;
  }

  double last_rank() const { return last_rank_; }

 private:
  // (rows × N) = codes of x block × codes of w (block)ᵀ, into yi (integer path) or yf.
  void gemm(size_t blk, float* yf, int32_t* yi) {
    const size_t xo = blk * size_t(rows_) * K_;
    const size_t wo = obs_.attention() ? blk * size_t(N_) * K_ : 0;
    dnnl_status_t st;
    if (int_path_) {
      const int32_t zero = 0;
      int32_t* c = yi;
      if (x_unsigned_)
        st = dnnl_gemm_u8s8s32('N', 'T', 'F', rows_, N_, K_, 1.0f, xu8_.data() + xo, K_, 0, wi8_.data() + wo, K_, 0,
                               0.0f, c, N_, &zero);
      else
        st = dnnl_gemm_s8s8s32('N', 'T', 'F', rows_, N_, K_, 1.0f, xi8_.data() + xo, K_, 0, wi8_.data() + wo, K_, 0,
                               0.0f, c, N_, &zero);
    } else {
      st = dnnl_sgemm('N', 'T', rows_, N_, K_, 1.0f, xf_.data() + xo, K_, wf_.data() + wo, K_, 0.0f, yf, N_);
    }
    if (st != dnnl_success) fail(ErrorKind::Internal, "oneDNN GEMM failed in the scale search (status ", int(st), ")");
  }

  // Mean hinge Φ over the row's pairs, on attention logits (scores / √d):
  // max(θ − c·(q_i − q_j), 0) = c · max(θ/c − (q_i − q_j), 0) with c = 1/√d.
  double rank_row(const float* q, size_t row_id, int thread) {
    const float c = score_scale_, th = float(opt_.theta) / c;
    const RankOrder& ro = orders_[row_id];
    auto& scratch = rankbuf_[size_t(thread)];
    scratch.resize(ranking_scratch_size(ro.order.size()));
    const double m = double(ro.order.size()), pairs = m * (m - 1) / 2.0;
    return pairs > 0 ? c * ranking_loss_sorted(ro, q, th, scratch.data()) / pairs : 0.0;
  }

  const SiteObservation& obs_;
  const SearchOptions& opt_;
  int images_ = 0, groups_ = 1, rows_ = 0, N_ = 0, K_ = 0, nthreads_ = 1;
  QRange xr_{}, wr_{};
  bool int_path_ = true, x_unsigned_ = false, ranking_ = false;
  float score_scale_ = 1.0f;
  float dx_ = 1.0f, dw_ = 1.0f;
  std::vector<float> ratios_;  // per-channel step ratios (SearchOptions::per_channel_weights)
  size_t wn_ = 0;
  avector<float> xs_, os_, xf_, wf_;
  avector<int8_t> xi8_, wi8_;
  avector<uint8_t> xu8_;
  std::vector<RankOrder> orders_;
  std::vector<avector<float>> rankbuf_;
  std::vector<avector<float>> ybuf_, rowbuf_;
  std::vector<avector<int32_t>> ybuf_i_;
  std::vector<double> sim_, rank_;
  std::vector<double> so_, so2_, err_img_;  // Σo, Σo² per image (fixed), per-image channel errors
  avector<float> bc_;                       // bias + correction per group
  double last_rank_ = 0;
};

// Moments beyond this are not worth their memory; such sites evaluate weight steps directly.
constexpr size_t kMomentBytesLimit = size_t(2) << 30;

std::vector<float> candidates(float d0, const SearchOptions& o) {
  std::vector<float> c(size_t(o.candidates));
  for (int k = 0; k < o.candidates; ++k) {
    const double t = o.candidates == 1 ? 1.0 : double(k) / double(o.candidates - 1);
    c[size_t(k)] = float(d0 * (o.alpha + (o.beta - o.alpha) * t));
  }
  return c;
}

// The best of `cands` for one operand (set_op(evaluator, step) installs it), the first on ties.
// Without a screen every candidate is scored on `full`; with one, every candidate is scored
// on the screen's row sample, and the `keep` best of those on `full`. With a `stride` > 1
// (SearchOptions::coarse_stride), every stride-th candidate and the last are scored, then those
// between the best one's coarse neighbours. Leaves `full` at the chosen step. Returns the step
// and its objective on `full`.
struct SweepResult {
  float step;
  double objective;
  bool screen_top_won;  // the screen's own best was the best on all rows
};
template <class SetOp>
SweepResult sweep(Evaluator& full, Evaluator* screen, int keep, int stride, const std::vector<float>& cands,
                  const std::vector<float>& corr, SetOp set_op, int& evals) {
  const size_t C = cands.size();
  std::vector<double> f(C, 0.0);  // objective on `full` of the candidates scored so far
  std::vector<char> scored(C, 0);
  auto score = [&](size_t k) {
    if (scored[k]) return;
    set_op(full, cands[k]);
    f[k] = full.objective(corr);
    scored[k] = 1;
    ++evals;
  };
  auto best_scored = [&]() {  // the best scored candidate, the first on ties
    size_t b = C;
    for (size_t k = 0; k < C; ++k)
      if (scored[k] && (b == C || f[k] > f[b])) b = k;
    return b;
  };
  SweepResult r{0.0f, 0.0, true};
  if (screen && keep < int(C)) {
    std::vector<double> v(C);
    for (size_t k = 0; k < C; ++k) {
      set_op(*screen, cands[k]);
      v[k] = screen->objective(corr);
    }
    std::vector<size_t> order(C);
    for (size_t k = 0; k < C; ++k) order[k] = k;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return v[a] > v[b]; });
    order.resize(size_t(keep));
    for (size_t k : order) score(k);
    r.screen_top_won = best_scored() == order[0];
  } else if (stride > 1 && C > size_t(stride) + 1) {  // coarse-to-fine over the same grid
    const size_t s = size_t(stride);
    for (size_t k = 0; k < C; k += s) score(k);
    score(C - 1);
    const size_t b = best_scored();
    const size_t last_coarse = (C - 2) / s * s;  // the coarse point before C − 1
    const size_t lo = b == C - 1 ? last_coarse : (b >= s ? b - s : 0);
    const size_t hi = b == C - 1 ? C - 1 : std::min(b + s, C - 1);
    for (size_t k = lo + 1; k < hi; ++k) score(k);
  } else {
    for (size_t k = 0; k < C; ++k) score(k);
  }
  const size_t k = best_scored();
  r.step = cands[k];
  r.objective = f[k];
  set_op(full, r.step);
  return r;
}

// The alternating search of one site: its state across rounds.
class AlternatingSearch {
 public:
  AlternatingSearch(const SiteObservation& obs, Bits bits, const SearchOptions& opt)
      : obs_(obs), bits_(bits), opt_(opt), ev_(obs, bits, opt, opt.search_tokens, opt.seed) {
    if (opt.screen_rows > 0 && opt.screen_rows < ev_.rows() && opt.screen_keep < opt.candidates)
      screen_ = std::make_unique<Evaluator>(obs, bits, opt, opt.screen_rows, opt.seed + 1);
    dx0_ = dx_ = ev_.dx0();
    dw0_ = dw_ = ev_.dw0();
    cx_ = candidates(dx0_, opt);
    cw_ = candidates(dw0_, opt);
    if (opt.bias_correction) corr_.assign(size_t(ev_.channels()), 0.0f);
    ev_.set_x(dx_);
    ev_.set_w(dw_);
    if (screen_) {
      screen_->set_x(dx_);
      screen_->set_w(dw_);
    }
    j_start_ = j_ = ev_.objective(corr_);
    // Linear sites score weight candidates exactly from per-image moments (weight_moments.h),
    // on all tokens; attention sites (and sites too large for the moments) evaluate directly.
    if (!obs.attention() && WeightMoments::bytes_needed(obs) <= kMomentBytesLimit)
      wm_ = std::make_unique<WeightMoments>(obs, ev_.xrange(), ev_.wrange(), ev_.int_path(), ev_.ratios());
  }

  void run();
  SitePlan plan() const;
  void write_notes(SiteNotes& notes);
  const nlohmann::ordered_json& trace() const { return trace_; }

 private:
  void moments_at(float x) {
    if (wm_dx_ != x) {
      wm_->set_x(x);
      wm_dx_ = x;
    }
  }
  // The trace entry of the round so far: its steps (relative to the max-based ones) and objective.
  nlohmann::ordered_json& trace_round() {
    trace_.push_back({{"round", rounds_}, {"dx", dx_ / dx0_}, {"dw", dw_ / dw0_}, {"objective", j_}});
    return trace_.back();
  }
  float sweep_w();
  // Bias correction: removes the mean output error per channel; returns its mean magnitude.
  double correct_bias();

  const SiteObservation& obs_;
  Bits bits_;
  const SearchOptions& opt_;
  Evaluator ev_;
  std::unique_ptr<Evaluator> screen_;  // the candidate screen (SearchOptions::screen_rows)
  std::unique_ptr<WeightMoments> wm_;
  float wm_dx_ = -1.0f;  // the step the moments were built at
  float dx0_ = 0, dw0_ = 0, dx_ = 0, dw_ = 0;
  std::vector<float> cx_, cw_, corr_;
  double j_start_ = 0, j_ = 0;
  nlohmann::ordered_json trace_ = nlohmann::ordered_json::array();
  int rounds_ = 0, evals_ = 1, sweeps_ = 0, screen_misses_ = 0;
};

// Δw with Δx fixed (x codes stay as they are).
float AlternatingSearch::sweep_w() {
  float best_w = dw_;
  if (wm_) {
    double best = -1e300;
    moments_at(dx_);
    const std::vector<double> v = wm_->objectives(cw_, corr_, opt_.similarity);
    evals_ += int(cw_.size());
    for (size_t k = 0; k < cw_.size(); ++k)
      if (v[k] > best) { best = v[k]; best_w = cw_[k]; }
    ev_.set_w(best_w);
  } else {
    const SweepResult r = sweep(ev_, screen_.get(), opt_.screen_keep, opt_.coarse_stride, cw_, corr_,
                                [](Evaluator& e, float c) { e.set_w(c); }, evals_);
    best_w = r.step;
    ++sweeps_;
    screen_misses_ += !r.screen_top_won;
  }
  if (screen_) screen_->set_w(best_w);
  return best_w;
}

double AlternatingSearch::correct_bias() {
  std::vector<double> err;
  if (wm_) {
    moments_at(dx_);
    err = wm_->channel_error(dw_, corr_);
  } else {
    ev_.objective(corr_, &err);
    ++evals_;
  }
  double mean_abs_err = 0;
  for (size_t ch = 0; ch < corr_.size(); ++ch) {
    corr_[ch] -= float(err[ch]);
    mean_abs_err += std::fabs(err[ch]);
  }
  j_ = ev_.objective(corr_);
  ++evals_;
  return mean_abs_err / double(corr_.size());
}

void AlternatingSearch::run() {
  for (int round = 0; round < opt_.max_rounds; ++round) {
    ++rounds_;
    const float best_w = sweep_w();
    // Without bias correction nothing but the steps changes between rounds: if this Δw sweep
    // kept the Δw of the last round, the Δx sweep would see exactly the inputs of the last one
    // and keep Δx too, so the search has converged (the same plan, one sweep fewer).
    if (!opt_.bias_correction && round > 0 && best_w == dw_ && !screen_) {
      trace_round()["converged_after_w_sweep"] = true;  // j stays the last Δx sweep's best
      break;
    }
    // Δx with Δw fixed.
    const SweepResult rx = sweep(ev_, screen_.get(), opt_.screen_keep, opt_.coarse_stride, cx_, corr_,
                                 [](Evaluator& e, float c) { e.set_x(c); }, evals_);
    ++sweeps_;
    screen_misses_ += !rx.screen_top_won;
    if (screen_) screen_->set_x(rx.step);
    const bool changed = best_w != dw_ || rx.step != dx_;
    dw_ = best_w;
    dx_ = rx.step;
    j_ = rx.objective;
    const double mean_abs_err = opt_.bias_correction ? correct_bias() : 0.0;
    nlohmann::ordered_json& r = trace_round();
    if (opt_.bias_correction) r["mean_abs_bias_error_removed"] = mean_abs_err;
    if (!changed) break;
  }
}

SitePlan AlternatingSearch::plan() const {
  SitePlan sp;
  sp.x.bits = bits_.x;
  sp.x.grid = bits_.x_grid;
  sp.x.scale = dx_;
  sp.w.bits = bits_.w;
  sp.w.scale = dw_;
  for (float r : ev_.ratios()) sp.w.channel_scales.push_back(dw_ * r);
  if (opt_.bias_correction) sp.bias_correction = corr_;
  return sp;
}

void AlternatingSearch::write_notes(SiteNotes& notes) {
  notes.j["objective_start"] = j_start_;
  notes.j["objective"] = j_;
  if (opt_.ranking && obs_.shape.id.kind == SiteKind::MatmulQK) {
    // Without bias correction the last evaluation was of the sweep's last candidate, not of the
    // chosen steps (which ev holds).
    if (!opt_.bias_correction) ev_.objective(corr_);
    notes.j["rank_loss"] = ev_.last_rank();
  }
  notes.j["dx_over_max"] = dx_ / dx0_;
  notes.j["dw_over_max"] = dw_ / dw0_;
  notes.j["rounds"] = rounds_;
  notes.j["evaluations"] = evals_;
  notes.j["search_rows_per_image"] = ev_.rows();
  if (screen_) {
    notes.j["screen_rows_per_image"] = screen_->rows();
    notes.j["screen_sweeps"] = sweeps_;
    notes.j["screen_top_not_best"] = screen_misses_;
  }
}

}  // namespace

SitePlan similarity_search(const SiteObservation& obs, Bits bits, const SearchOptions& opt, SiteNotes& notes) {
  const auto t0 = std::chrono::steady_clock::now();
  if (obs.shape.M > 65535 || obs.shape.N > 65535) fail(ErrorKind::Internal, "site too large for the search");
  AlternatingSearch search(obs, bits, opt);
  search.run();
  search.write_notes(notes);
  notes.j["search_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  notes.j["trace"] = search.trace();
  return search.plan();
}

}  // namespace vitq
