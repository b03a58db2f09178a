// The two similarity-search methods: EasyQuant (Wu et al. 2020) and the paper's method
// (Liu et al., NeurIPS 2021). Both run quant/scale_search; they differ in the objective and
// in the extra components of the paper.
#include "core/error.h"
#include "quant/methods/methods.h"
#include "quant/scale_search.h"

namespace vitq {
namespace {

class SearchMethod : public Method {
 public:
  SearchMethod(std::string name, const SearchOptions& o, const MethodArgs& a) : name_(std::move(name)), o_(o), a_(a) {}
  std::string name() const override { return name_; }
  nlohmann::ordered_json settings() const override {
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
    j["unsigned_softmax"] = o_.unsigned_softmax;
    j["seed"] = o_.seed;
    return j;
  }
  SitePlan calibrate(const SiteObservation& obs, Bits bits, SiteNotes& notes) override {
    return similarity_search(obs, bits, o_, notes);
  }

 private:
  std::string name_;
  SearchOptions o_;
  MethodArgs a_;
};

SearchOptions common(const MethodArgs& a, Similarity default_sim) {
  SearchOptions o;
  o.similarity = default_sim;
  if (!a.similarity.empty() && !parse_similarity(a.similarity, &o.similarity))
    fail(ErrorKind::Usage, "--similarity must be pearson, cosine or mse (got '", a.similarity, "')");
  if (a.candidates < 1 || a.candidates > 10000) fail(ErrorKind::Usage, "--candidates must be in [1, 10000]");
  if (!(a.alpha > 0 && a.alpha <= a.beta)) fail(ErrorKind::Usage, "need 0 < --alpha <= --beta");
  if (a.max_rounds < 1) fail(ErrorKind::Usage, "--max-rounds must be >= 1");
  if (a.search_tokens < 0 || a.rank_tokens < 0 || a.rank_tokens == 1)
    fail(ErrorKind::Usage, "--search-tokens must be >= 0 and --rank-tokens 0 or >= 2");
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
  o.unsigned_softmax = a.unsigned_softmax;
  o.seed = a.seed;
  return o;
}

}  // namespace

std::unique_ptr<Method> make_easyquant(const MethodArgs& a) {
  SearchOptions o = common(a, Similarity::Cosine);
  return std::make_unique<SearchMethod>("easyquant", o, a);
}

std::unique_ptr<Method> make_liu2021(const MethodArgs& a) {
  SearchOptions o = common(a, Similarity::Pearson);
  o.ranking = a.ranking;
  o.gamma = a.gamma;
  o.theta = a.theta;
  o.rank_tokens = a.rank_tokens;
  o.bias_correction = a.bias_correction;
  return std::make_unique<SearchMethod>("liu2021", o, a);
}

}  // namespace vitq
