// The interface every PTQ method implements: observations of one site over the calibration
// set in, that site's plan entry out. The calibration driver (calibrate.h) decides the order
// of sites, where their inputs come from and the bit-widths; methods only choose scales.
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/site.h"
#include "quant/method_options.h"
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

// The format the driver chose for a site: bit-widths, the grid of the input operand, and whether
// the input is quantized per token (dynamic; linear sites). Per-token inputs and level grids have
// no step to choose: a method leaves them as minmax_site_plan makes them (the driver enforces it).
struct Bits {
  int w = 8, x = 8;
  Grid x_grid = Grid::Signed;
  bool x_per_token = false;
  float x_token_clip = 1.0f;  // per-token inputs: the clip ratio of each row's range (plan.h)
  int x_token_group = 0;      // per-token inputs: channels per group, 0 = the whole row (plan.h)
  bool qk_per_token = false;  // matmul_qk: Q and K per token (symmetric row steps, plan.h), no steps to choose
  // The input's step is fixed by its format (per token, or a level grid).
  bool x_fixed() const { return x_per_token || qk_per_token || is_level_grid(x_grid); }
};

// Format choices the driver makes for every method (calibrate.h: CalibOptions::grids). A method
// gets the result in Bits; its settings echo unsigned_softmax(), the driver records the rest.
struct GridPolicy {
  Grid softmax = Grid::Signed;  // the grid of the softmax output (the input of matmul_av)
  bool per_token = false;       // the inputs of linear sites per token (dynamic steps)
  float token_clip = 1.0f;      // their rows' ranges clipped to this share (1: not clipped)
  int token_group = 0;          // their rows in groups of this many channels (0: whole rows)
  int patch_embed_abits = 0;    // bits of the patch embedding's input (0: the activation bits)
  bool per_token_qk = false;    // Q and K of every matmul_qk per token (symmetric row steps at run time)
  bool unsigned_softmax() const { return softmax == Grid::Unsigned; }
};

// A method's recommended driver options at given bit-widths (Method::recipe): the CLI applies each
// one the user did not set on the command line. Unset = the driver's default.
struct Recipe {
  std::optional<Grid> softmax;            // --softmax-grid
  std::optional<bool> per_token;          // --per-token
  std::optional<bool> per_token_qk;       // --per-token-qk
  std::optional<int> patch_embed_abits;   // --patch-embed-abits
  std::optional<bool> rotate, rotate_mlp; // --rotate, --rotate-mlp
  std::optional<bool> gptq;               // --weight-rounding gptq
  std::optional<float> token_clip;        // --token-clip
  std::optional<int> token_group;         // --token-group
  std::optional<bool> ridge;              // --ridge-update
  std::optional<bool> qwt;                // --qwt
  std::optional<int> recon_iters;         // --recon-iters
  std::optional<double> recon_act_lr;     // --recon-act-lr (used when reconstruction runs)
  std::optional<double> recon_head_share; // --recon-head-share (used when reconstruction runs)
};

struct ViTModel;
class StagedForward;
class PlanSimulator;

// What a network-level step sees: the model and the calibration images (n × C × H × W).
struct NetworkContext {
  const ViTModel& model;
  const float* images;
  int n;
  int batch;
};

// What a block-level step sees (Method::calibrate_block): one transformer block once each of its
// sites has a plan entry. Streams are n × tokens × embed_dim, image-major.
struct BlockContext {
  StagedForward& forward;    // the model being calibrated (transforms applied), stage by stage
  int block;                 // 0-based; its stage is block + 1
  const float* x_in;         // the block's input in the partly quantized model (earlier blocks' plans)
  const float* fp_out;       // the FP model's output of the block
  PlanSimulator& simulator;  // the plan so far; forget(site) after changing a site's entry
};

class Method {
 public:
  virtual ~Method() = default;
  virtual std::string name() const = 0;
  // The method's settings as they go into the plan (`grids`: the driver's, echoed).
  virtual nlohmann::ordered_json settings(const GridPolicy& grids) const = 0;
  // Chooses the site's quantization at the given format.
  virtual SitePlan calibrate(const SiteObservation& obs, Bits bits, SiteNotes& notes) = 0;
  // Optional step over one block once its sites have plan entries (e.g. block reconstruction:
  // choose the block's entries so that its output from x_in matches fp_out). Runs before the
  // next block is observed, so later sites see the result. `notes` goes to the report.
  virtual void calibrate_block(BlockContext& /*block*/, QuantPlan& /*plan*/, nlohmann::ordered_json& /*notes*/) {}
  // The driver options the method is meant to run with at these bit-widths (default: none).
  virtual Recipe recipe(int /*wbits*/, int /*abits*/) const { return {}; }
  // Optional step over the whole network once every site has a plan entry (e.g. LAPQ's joint
  // optimisation of all steps on the network loss). `notes` goes to the report.
  virtual void refine(const NetworkContext& /*net*/, QuantPlan& /*plan*/, nlohmann::ordered_json& /*notes*/) {}
};

// Options every method may read that are not its own.
struct CommonOptions {
  uint64_t seed = 0;  // --seed: the calibration subset's and any sampling's
};

// The options of every registered method, by method name, each at its defaults until changed.
class MethodConfig {
 public:
  CommonOptions common;
  // The options object of a registered method (made at its defaults on first use).
  MethodOptions& of(const std::string& method) const;
  template <class T>
  T& get(const std::string& method) const {
    return dynamic_cast<T&>(of(method));
  }

 private:
  mutable std::map<std::string, std::unique_ptr<MethodOptions>> opts_;
};

// A registered method. The built-in ones are listed in quant/methods/registry.cpp; a test or a
// plug-in adds one with register_method().
struct MethodEntry {
  const char* name;
  const char* summary;  // one line for --help
  std::unique_ptr<MethodOptions> (*make_options)();
  // Makes the method from its options (cfg.of(name)) and the common ones; a bad combination of
  // options is an Error(Usage) naming them.
  std::unique_ptr<Method> (*make)(const MethodConfig& cfg);
};
const std::vector<MethodEntry>& registered_methods();  // in the order of --help
void register_method(const MethodEntry& e);             // refuses a name already registered
std::unique_ptr<Method> make_method(const std::string& name, const MethodConfig& cfg);
std::string method_names();  // for --help: the registered names, comma-separated
// The methods with a fast configuration (MethodOptions::apply_fast), comma-separated.
std::string fast_method_names();

}  // namespace vitq
