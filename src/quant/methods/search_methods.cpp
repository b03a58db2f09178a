// The two similarity-search methods: EasyQuant (Wu et al. 2020) and the paper's method
// (Liu et al., NeurIPS 2021). Both run quant/scale_search; they differ in the objective and
// in the extra components of the paper.
#include "core/error.h"
#include "quant/methods/methods.h"
#include "quant/scale_search.h"

namespace vitq {

void SearchMethodOptions::declare(OptionDecls& d) {
  d.text("--similarity", &similarity, "Search objective: pearson (liu2021 default), cosine (easyquant default), mse");
  d.integer("--candidates", &candidates, 1, 10000, "Search: candidate steps per operand");
  d.real("--alpha", &alpha, 0, 100, "Search: smallest candidate, as a fraction of the max-based step", true);
  d.real("--beta", &beta, 0, 100, "Search: largest candidate, as a fraction of the max-based step", true);
  d.integer("--max-rounds", &max_rounds, 1, 1000, "Search: alternating rounds at most");
  d.integer("--search-tokens", &search_tokens, 0, 1 << 20, "Search: tokens per image used to score candidates (0 = all)");
  d.integer("--screen-tokens", &screen_tokens, 0, 1 << 20,
            "Search: candidate screen. Each sweep scores all candidates on this many random tokens per image, then "
            "the --screen-keep best of them on all tokens, and keeps the best there (0 = every candidate on all "
            "tokens). The report counts the sweeps where the screen's own best was not the best on all tokens");
  d.integer("--screen-keep", &screen_keep, 1, 10000, "Search: candidates the screen passes on");
  d.integer("--coarse-stride", &coarse_stride, 0, 10000,
            "Search: coarse-to-fine sweeps. Score every S-th candidate (and the last), then the candidates between "
            "the best one's coarse neighbours (0 = every candidate, exact). Approximate: the same choice only where "
            "the objective has a single peak over the candidates");
  d.flag("--per-channel-weights", &per_channel_weights,
         "one weight step per output channel: each channel's max-based step times one factor the search chooses");
}

bool SearchMethodOptions::apply_fast() {
  if (coarse_stride == 0) coarse_stride = 10;
  return true;
}

void Liu2021Options::declare(OptionDecls& d) {
  SearchMethodOptions::declare(d);
  d.off_switch("--no-ranking", &ranking, "no ranking-aware loss at matmul_qk");
  d.off_switch("--no-bias-correction", &bias_correction, "no bias correction");
  d.real("--gamma", &gamma, 0, 1e6, "weight of the ranking loss");
  d.real("--theta", &theta, 0, 1e6, "margin of the ranking loss");
  d.integer("--rank-tokens", &rank_tokens, 0, 1 << 20,
            "ranking loss over the pairs within this many random key tokens per score row (0 = all pairs, exact)");
}

bool Liu2021Options::apply_fast() {
  SearchMethodOptions::apply_fast();
  if (rank_tokens == 0) rank_tokens = 64;
  return true;
}

namespace {

class SearchMethod : public Method {
 public:
  SearchMethod(std::string name, const SearchOptions& o) : name_(std::move(name)), o_(o) {}
  std::string name() const override { return name_; }
  nlohmann::ordered_json settings(const GridPolicy& g) const override {
    nlohmann::ordered_json j;
    j["similarity"] = similarity_name(o_.similarity);
    j["candidates"] = o_.candidates;
    j["alpha"] = o_.alpha;
    j["beta"] = o_.beta;
    j["max_rounds"] = o_.max_rounds;
    j["ranking"] = o_.ranking;
    if (o_.ranking) {
      j["gamma"] = o_.gamma;
      j["theta"] = o_.theta;
      j["rank_tokens_per_row"] = o_.rank_tokens;  // 0 = all pairs
    }
    j["bias_correction"] = o_.bias_correction;
    j["search_tokens_per_image"] = o_.search_tokens;  // 0 = all
    j["screen_tokens_per_image"] = o_.screen_rows;     // 0 = no candidate screen
    if (o_.screen_rows > 0) j["screen_keep"] = o_.screen_keep;
    if (o_.coarse_stride > 0) j["coarse_stride"] = o_.coarse_stride;  // absent: every candidate
    if (o_.per_channel_weights) j["per_channel_weights"] = true;
    j["unsigned_softmax"] = g.unsigned_softmax();
    j["seed"] = o_.seed;
    return j;
  }
  SitePlan calibrate(const SiteObservation& obs, Bits bits, SiteNotes& notes) override {
    return similarity_search(obs, bits, o_, notes);
  }

 private:
  std::string name_;
  SearchOptions o_;
};

SearchOptions common(const SearchMethodOptions& a, Similarity default_sim, uint64_t seed) {
  SearchOptions o;
  o.similarity = default_sim;
  if (!a.similarity.empty() && !parse_similarity(a.similarity, &o.similarity))
    fail(ErrorKind::Usage, "--similarity must be pearson, cosine or mse (got '", a.similarity, "')");
  if (a.candidates < 1 || a.candidates > 10000) fail(ErrorKind::Usage, "--candidates must be in [1, 10000]");
  if (!(a.alpha > 0 && a.alpha <= a.beta)) fail(ErrorKind::Usage, "need 0 < --alpha <= --beta");
  if (a.max_rounds < 1) fail(ErrorKind::Usage, "--max-rounds must be >= 1");
  if (a.search_tokens < 0) fail(ErrorKind::Usage, "--search-tokens must be >= 0");
  o.candidates = a.candidates;
  o.alpha = a.alpha;
  o.beta = a.beta;
  o.max_rounds = a.max_rounds;
  o.search_tokens = a.search_tokens;
  if (a.screen_tokens < 0 || a.screen_keep < 1)
    fail(ErrorKind::Usage, "--screen-tokens must be >= 0 and --screen-keep >= 1");
  o.screen_rows = a.screen_tokens;
  o.screen_keep = a.screen_keep;
  if (a.coarse_stride < 0 || a.coarse_stride == 1)
    fail(ErrorKind::Usage, "--coarse-stride must be 0 (every candidate) or >= 2");
  if (a.coarse_stride > 0 && a.screen_tokens > 0)
    fail(ErrorKind::Usage, "--coarse-stride and --screen-tokens cannot be combined");
  o.coarse_stride = a.coarse_stride;
  o.per_channel_weights = a.per_channel_weights;
  o.seed = seed;
  return o;
}

}  // namespace

std::unique_ptr<Method> make_easyquant(const MethodConfig& cfg) {
  SearchOptions o = common(cfg.get<SearchMethodOptions>("easyquant"), Similarity::Cosine, cfg.common.seed);
  return std::make_unique<SearchMethod>("easyquant", o);
}

std::unique_ptr<Method> make_liu2021(const MethodConfig& cfg) {
  const Liu2021Options& a = cfg.get<Liu2021Options>("liu2021");
  SearchOptions o = common(a, Similarity::Pearson, cfg.common.seed);
  if (a.rank_tokens < 0 || a.rank_tokens == 1) fail(ErrorKind::Usage, "--rank-tokens must be 0 or >= 2");
  o.ranking = a.ranking;
  o.gamma = a.gamma;
  o.theta = a.theta;
  o.rank_tokens = a.rank_tokens;
  o.bias_correction = a.bias_correction;
  return std::make_unique<SearchMethod>("liu2021", o);
}

}  // namespace vitq
