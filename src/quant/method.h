// The interface every PTQ method implements: observations of one site over the calibration
// set in, that site's plan entry out. The calibration driver (calibrate.h) decides the order
// of sites, where their inputs come from and the bit-widths; methods only choose scales.
#pragma once
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/site.h"
#include "quant/plan.h"

namespace vitq {

// One site seen over the calibration set (row-major, image-major).
struct SiteObservation {
  SiteShape shape;          // per image: groups_per_image, M, N, K
  int images = 0;
  const float* x = nullptr;       // images · groups · M · K: the site's input
  const float* w = nullptr;       // linear: N · K weight; attention: images · groups · N · K
  const float* bias = nullptr;    // linear: N or null; attention: null
  const float* target = nullptr;  // images · groups · M · N: the FP model's output of the site

  bool attention() const { return shape.id.is_attention(); }
  int64_t rows_per_image() const { return int64_t(shape.groups_per_image) * shape.M; }
  int64_t x_per_image() const { return rows_per_image() * shape.K; }
  int64_t w_per_image() const { return attention() ? int64_t(shape.groups_per_image) * shape.N * shape.K : 0; }
  int64_t y_per_image() const { return rows_per_image() * shape.N; }
  // The site call over all of the observation's images (one group per image and head) writing
  // its output to y (images · y_per_image() floats).
  SiteCall call(float* y) const {
    SiteCall c;
    c.site = shape.id;
    c.images = images;
    c.groups = images * shape.groups_per_image;
    c.M = shape.M;
    c.N = shape.N;
    c.K = shape.K;
    c.x = x;
    c.w = w;
    c.w_stride = attention() ? int64_t(shape.N) * shape.K : 0;
    c.bias = bias;
    c.y = y;
    return c;
  }
};

// What a method tells the report about one site (free-form, per method).
struct SiteNotes {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
};

struct Bits {
  int w = 8, x = 8;
};

struct ViTModel;

// What a network-level step sees: the model and the calibration images (n × C × H × W).
struct NetworkContext {
  const ViTModel& model;
  const float* images;
  int n;
  int batch;
};

class Method {
 public:
  virtual ~Method() = default;
  virtual std::string name() const = 0;
  virtual nlohmann::ordered_json settings() const = 0;
  // Chooses the site's quantization at the given bit-widths.
  virtual SitePlan calibrate(const SiteObservation& obs, Bits bits, SiteNotes& notes) = 0;
  // Optional step over the whole network once every site has a plan entry (e.g. LAPQ's joint
  // optimisation of all steps on the network loss). `notes` goes to the report.
  virtual void refine(const NetworkContext& /*net*/, QuantPlan& /*plan*/, nlohmann::ordered_json& /*notes*/) {}
};

// Method options from the command line (each method reads the ones it uses).
struct MethodArgs {
  double percentile = 99.99;
  // Similarity search (easyquant, liu2021)
  std::string similarity;  // empty: the method's own default
  int candidates = 100;
  double alpha = 0.5, beta = 1.2;
  int max_rounds = 20;
  bool ranking = true, bias_correction = true;
  double gamma = 0.1, theta = 0.2;
  int rank_tokens = 0;         // ranking loss: 0 = exact pair sum; m = pairs within m random tokens per row
  int search_tokens = 0;       // 0 = all tokens; k = k random tokens per image in the search
  int screen_tokens = 0;       // candidate screen: rows per image that rank all candidates (0 = none)
  int screen_keep = 8;         // candidate screen: how many of the screen's best are scored on all rows
  int coarse_stride = 0;       // coarse-to-fine sweeps: every this-many-th candidate first (0 = all)
  bool unsigned_softmax = false;  // fix: unsigned grid for the softmax output (matmul_av x)
  bool per_channel_weights = false;
  uint64_t seed = 0;
  // ACIQ (Banner et al. 2019): each part can be switched off for an ablation.
  bool aciq_clip = true;             // analytical activation clipping
  std::string aciq_dist = "auto";    // auto (likelier fit) | laplace | gauss
  bool aciq_bit_alloc = true;        // per-channel weight bit allocation
  bool aciq_bias_correction = true;  // per-channel weight mean/norm restoration
  // LAPQ (Nahshan et al. 2019)
  std::vector<double> lapq_p = {2, 2.5, 3, 3.5, 4};  // Lp norms of the initialisation
  int lapq_evals = 400;        // network loss evaluations in the network-level step, all included
  int lapq_loss_images = 32;   // calibration images the loss is computed on (0 = all)
  double lapq_range = 2.0;     // joint step: each step within [init / r, init · r]
  bool lapq_joint = true;      // false: stop after choosing p (ablation)
  // Bit-Split (Wang et al. 2020)
  std::string bitsplit_act = "percentile";  // method of the activation steps
  int bitsplit_epochs = 30;                 // alternating rounds at most
};

// The registered methods, in the order of --help (quant/methods/registry.cpp).
struct MethodEntry {
  const char* name;
  std::unique_ptr<Method> (*make)(const MethodArgs&);
  const char* summary;
};
const std::vector<MethodEntry>& registered_methods();
std::unique_ptr<Method> make_method(const std::string& name, const MethodArgs& args);
std::string method_names();  // for --help: the registered names, comma-separated

}  // namespace vitq
