#include "model/vit_config.h"

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "core/error.h"
#include "core/limits.h"
#include "io/json_file.h"

namespace vitq {
namespace {

using json = nlohmann::ordered_json;

// Normalisation constants of the preprocessing (pixel values in [0, 1]): a mean outside
// [-kMaxNorm, kMaxNorm] or a std outside [kMinStd, kMaxNorm] cannot come from a real model and
// would make every input non-finite or meaningless.
constexpr double kMaxNorm = 1e3, kMinStd = 1e-6;

// Typed field access with errors that name the file and the field.
struct Fields {
  const json& j;
  std::string file;
  std::string prefix;  // "model_args." etc.

  bool has(const char* k) const { return j.contains(k) && !j[k].is_null(); }
  [[noreturn]] void bad(const char* k, const char* what) const {
    fail(ErrorKind::Model, file, ": field '", prefix, k, "' ", what, " (got ", j[k].dump(), ")");
  }
  int get_int(const char* k, int lo, int hi) const {
    const json& v = j[k];
    if (!v.is_number_integer()) bad(k, "must be an integer");
    int x = 0;
    if (!json_int_in(v, lo, hi, &x)) bad(k, cat("must be in [", lo, ", ", hi, "]").c_str());
    return x;
  }
  double get_num(const char* k, double lo, double hi) const {
    const json& v = j[k];
    if (!v.is_number()) bad(k, "must be a number");
    double x = v.get<double>();
    if (!(x >= lo && x <= hi)) bad(k, cat("must be in [", lo, ", ", hi, "]").c_str());
    return x;
  }
  bool get_bool(const char* k) const {
    if (!j[k].is_boolean()) bad(k, "must be true or false");
    return j[k].get<bool>();
  }
  std::string get_str(const char* k) const {
    if (!j[k].is_string()) bad(k, "must be a string");
    return j[k].get<std::string>();
  }
  // A list of 1 or 3 per-channel normalisation constants (timm mean/std, HF image_mean/image_std).
  std::array<float, 3> get_norm(const char* k, bool is_std) const {
    const json& a = j[k];
    if (!a.is_array() || (a.size() != 1 && a.size() != 3)) bad(k, "must be a list of 1 or 3 numbers");
    std::array<float, 3> v{};
    for (size_t i = 0; i < 3; ++i) {
      const json& e = a[a.size() == 1 ? 0 : i];
      if (!e.is_number()) bad(k, "must contain numbers");
      const double x = e.get<double>();
      if (is_std && !(x >= kMinStd && x <= kMaxNorm))
        bad(k, cat("must hold standard deviations in [", kMinStd, ", ", kMaxNorm, "]").c_str());
      if (!is_std && !(x >= -kMaxNorm && x <= kMaxNorm))
        bad(k, cat("must hold means in [", -kMaxNorm, ", ", kMaxNorm, "]").c_str());
      v[i] = static_cast<float>(x);
    }
    return v;
  }
};

struct ArchDefaults {
  int embed_dim, depth, heads;
};

bool timm_size(const std::string& s, ArchDefaults* out) {
  if (s == "tiny") *out = {192, 12, 3};
  else if (s == "small") *out = {384, 12, 6};
  else if (s == "base") *out = {768, 12, 12};
  else if (s == "large") *out = {1024, 24, 16};
  else return false;
  return true;
}

void parse_pretrained_cfg(const Fields& f, ViTConfig& c) {
  Preprocess& p = c.preprocess;
  if (f.has("input_size")) {
    const json& s = f.j["input_size"];
    if (!s.is_array() || s.size() != 3 || !s[0].is_number_integer() || !s[1].is_number_integer() ||
        !s[2].is_number_integer())
      f.bad("input_size", "must be [channels, height, width]");
    int ch = 0, h = 0, w = 0;
    if (!json_int_in(s[0], 1, 3, &ch) || ch == 2 || !json_int_in(s[1], 1, limits::kMaxImageSize, &h) ||
        !json_int_in(s[2], 1, limits::kMaxImageSize, &w))
      f.bad("input_size", cat("must have 1 or 3 channels and a size in [1, ", limits::kMaxImageSize, "]").c_str());
    if (h != w) f.bad("input_size", "must be square (vitq supports square inputs)");
    c.in_chans = ch;
    c.img_size = h;
  }
  if (f.has("interpolation")) {
    std::string s = f.get_str("interpolation");
    if (!parse_interp(s, &p.interp)) f.bad("interpolation", "must be bilinear, bicubic or nearest");
  }
  if (f.has("crop_pct")) p.crop_pct = f.get_num("crop_pct", 0.05, 1.0);
  if (f.has("crop_mode")) {
    std::string m = f.get_str("crop_mode");
    if (m != "center") f.bad("crop_mode", "is not supported (vitq implements 'center')");
  }
  if (f.has("mean")) p.mean = f.get_norm("mean", false);
  if (f.has("std")) p.std = f.get_norm("std", true);
}

// model_args: timm VisionTransformer keyword arguments. Arguments that change the network
// in ways vitq does not implement are rejected by name rather than silently ignored.
void parse_model_args(const Fields& f, ViTConfig& c) {
  static const char* kUnsupported[] = {"no_embed_class", "pre_norm",   "fc_norm",     "reg_tokens",
                                       "init_values",    "qk_norm",    "dynamic_img_size",
                                       "class_token",    "global_pool", "weight_init", "embed_layer",
                                       "act_layer",      "norm_layer", "block_fn",     "mlp_layer",
                                       "pos_embed",      "proj_bias",  "final_norm"};
  double mlp_ratio = 4.0;
  bool ratio_given = false;
  for (auto it = f.j.begin(); it != f.j.end(); ++it) {
    const std::string& k = it.key();
    if (k == "img_size") {
      const json& v = it.value();
      if (v.is_array()) {
        if (v.size() != 2 || !json_int_in(v[0], 1, limits::kMaxImageSize, &c.img_size) || v[0] != v[1])
          f.bad("img_size", cat("must be an integer in [1, ", limits::kMaxImageSize, "] or a square [h, w] of them").c_str());
      } else {
        c.img_size = f.get_int("img_size", 1, limits::kMaxImageSize);
      }
    } else if (k == "patch_size") c.patch_size = f.get_int("patch_size", 1, limits::kMaxPatchSize);
    else if (k == "in_chans") c.in_chans = f.get_int("in_chans", 1, 3);
    else if (k == "embed_dim") c.embed_dim = f.get_int("embed_dim", 1, limits::kMaxEmbedDim);
    else if (k == "depth") c.depth = f.get_int("depth", 1, limits::kMaxDepth);
    else if (k == "num_heads") c.num_heads = f.get_int("num_heads", 1, limits::kMaxHeads);
    else if (k == "num_classes") c.num_classes = f.get_int("num_classes", 1, limits::kMaxClasses);
    else if (k == "mlp_ratio") { mlp_ratio = f.get_num("mlp_ratio", 0.01, 64); ratio_given = true; }
    else if (k == "qkv_bias") c.qkv_bias = f.get_bool("qkv_bias");
    else if (k == "distilled") c.distilled = f.get_bool("distilled");
    else {
      bool known_bad = false;
      for (const char* u : kUnsupported) known_bad |= (k == u);
      // Defaults of timm are harmless; anything else changes the network.
      const json& v = it.value();
      bool is_default = (k == "class_token" && v == true) || (k == "global_pool" && v == "token") ||
                        (k == "no_embed_class" && v == false) || (k == "pre_norm" && v == false) ||
                        (k == "reg_tokens" && v == 0) || (k == "init_values" && v.is_null()) ||
                        (k == "qk_norm" && v == false) || (k == "fc_norm" && v.is_null()) ||
                        (k == "dynamic_img_size" && v == false) || (k == "proj_bias" && v == true) ||
                        (k == "final_norm" && v == true) || (k == "drop_rate") ||
                        (k == "drop_path_rate") || (k == "attn_drop_rate") || (k == "proj_drop_rate") ||
                        (k == "pos_drop_rate") || (k == "patch_drop_rate") || (k == "weight_init");
      if (!is_default)
        fail(ErrorKind::Model, f.file, ": field 'model_args.", k, "' = ", v.dump(),
             known_bad ? " changes the network in a way vitq does not support"
                       : " is not a VisionTransformer argument vitq knows");
    }
  }
  if (ratio_given || f.has("embed_dim"))
    c.mlp_hidden = static_cast<int>(std::lround(std::floor(c.embed_dim * mlp_ratio)));
}

ViTConfig parse_timm(const json& j, const std::string& file) {
  Fields f{j, file, ""};
  ViTConfig c;
  c.layout = CheckpointLayout::Timm;
  c.architecture = f.get_str("architecture");
  std::string arch = c.architecture.substr(0, c.architecture.find('.'));  // drop a ".tag"
  static const std::regex re(R"(^(vit|deit)_(tiny|small|base|large)(_distilled)?_patch(\d{1,4})_(\d{1,4})$)");
  std::smatch m;
  bool named = std::regex_match(arch, m, re);
  if (named) {
    ArchDefaults d{};
    timm_size(m[2].str(), &d);
    c.embed_dim = d.embed_dim;
    c.depth = d.depth;
    c.num_heads = d.heads;
    c.mlp_hidden = 4 * d.embed_dim;
    c.distilled = m[3].matched;
    c.patch_size = std::stoi(m[4].str());
    c.img_size = std::stoi(m[5].str());
    if (m[1] == "deit" && m[2] == "large") named = false;
    if (c.distilled && m[1] != "deit") named = false;
  }
  bool has_args = f.has("model_args");
  if (!named && !has_args)
    fail(ErrorKind::Model, file, ": field 'architecture' = \"", c.architecture,
         "\" is not a known timm ViT/DeiT (", known_architectures(),
         ") and there are no 'model_args' describing it");
  if (f.has("pretrained_cfg")) {
    if (!j["pretrained_cfg"].is_object()) f.bad("pretrained_cfg", "must be an object");
    parse_pretrained_cfg(Fields{j["pretrained_cfg"], file, "pretrained_cfg."}, c);
  }
  if (has_args) {
    if (!j["model_args"].is_object()) f.bad("model_args", "must be an object");
    if (!named) {  // every structural argument must be given explicitly
      for (const char* k : {"embed_dim", "depth", "num_heads", "patch_size"})
        if (!j["model_args"].contains(k))
          fail(ErrorKind::Model, file, ": architecture '", c.architecture,
               "' is not a known timm name, so 'model_args' must give '", k, "'");
    }
    parse_model_args(Fields{j["model_args"], file, "model_args."}, c);
  }
  if (f.has("num_classes")) c.num_classes = f.get_int("num_classes", 1, limits::kMaxClasses);
  if (f.has("global_pool")) {
    std::string gp = f.get_str("global_pool");
    if (gp != "token") f.bad("global_pool", "is not supported (vitq implements 'token')");
  }
  return c;
}

ViTConfig parse_hf(const json& j, const std::string& file, const std::string& dir) {
  Fields f{j, file, ""};
  ViTConfig c;
  c.layout = CheckpointLayout::HuggingFace;
  c.architecture = "hf:ViTForImageClassification";
  if (f.has("model_type") && f.get_str("model_type") != "vit")
    f.bad("model_type", "must be \"vit\" (ViTForImageClassification)");
  if (f.has("architectures")) {
    const json& a = j["architectures"];
    if (!a.is_array() || a.empty() || a[0] != "ViTForImageClassification")
      f.bad("architectures", "must be [\"ViTForImageClassification\"]");
  }
  // HF defaults (transformers ViTConfig) for absent fields.
  c.embed_dim = f.has("hidden_size") ? f.get_int("hidden_size", 1, limits::kMaxEmbedDim) : 768;
  c.depth = f.has("num_hidden_layers") ? f.get_int("num_hidden_layers", 1, limits::kMaxDepth) : 12;
  c.num_heads = f.has("num_attention_heads") ? f.get_int("num_attention_heads", 1, limits::kMaxHeads) : 12;
  c.mlp_hidden = f.has("intermediate_size") ? f.get_int("intermediate_size", 1, limits::kMaxMlpHidden) : 3072;
  c.img_size = f.has("image_size") ? f.get_int("image_size", 1, limits::kMaxImageSize) : 224;
  c.patch_size = f.has("patch_size") ? f.get_int("patch_size", 1, limits::kMaxPatchSize) : 16;
  c.in_chans = f.has("num_channels") ? f.get_int("num_channels", 1, 3) : 3;
  c.qkv_bias = f.has("qkv_bias") ? f.get_bool("qkv_bias") : true;
  c.ln_eps = f.has("layer_norm_eps") ? static_cast<float>(f.get_num("layer_norm_eps", 1e-30, 1)) : 1e-12f;
  if (f.has("hidden_act") && f.get_str("hidden_act") != "gelu")
    f.bad("hidden_act", "is not supported (vitq implements exact-erf \"gelu\")");
  if (f.has("num_labels")) c.num_classes = f.get_int("num_labels", 1, limits::kMaxClasses);
  else if (f.has("id2label")) {
    if (!j["id2label"].is_object() || j["id2label"].empty()) f.bad("id2label", "must be a non-empty object");
    c.num_classes = static_cast<int>(j["id2label"].size());
  } else {
    c.num_classes = 2;  // transformers' default num_labels
  }
  // HF ViTImageProcessor defaults: resize to image_size x image_size, bilinear, mean = std = 0.5.
  Preprocess& p = c.preprocess;
  p.interp = Interp::Bilinear;
  p.crop_pct = 1.0;
  p.resize_exact = true;
  p.mean = {0.5f, 0.5f, 0.5f};
  p.std = {0.5f, 0.5f, 0.5f};
  std::string pp_path = dir + "/preprocessor_config.json";
  std::error_code ec;
  if (std::filesystem::symlink_status(pp_path, ec).type() != std::filesystem::file_type::not_found) {
    const json pj = read_json_file(pp_path);
    if (!pj.is_object()) fail(ErrorKind::Model, pp_path, ": must be a JSON object");
    Fields pf{pj, pp_path, ""};
    with_json_errors(pp_path, [&] {  // a type error here names this file, not config.json
      if (pf.has("image_mean")) p.mean = pf.get_norm("image_mean", false);
      if (pf.has("image_std")) p.std = pf.get_norm("image_std", true);
      if (pf.has("resample")) {
        int r = pf.get_int("resample", 0, 5);  // PIL codes: 0 nearest, 2 bilinear, 3 bicubic
        if (r == 0) p.interp = Interp::Nearest;
        else if (r == 2) p.interp = Interp::Bilinear;
        else if (r == 3) p.interp = Interp::Bicubic;
        else pf.bad("resample", "must be 0 (nearest), 2 (bilinear) or 3 (bicubic)");
      }
    });
  }
  return c;
}

void validate(const ViTConfig& c, const std::string& file) {
  auto bad = [&](const std::string& why) { fail(ErrorKind::Model, file, ": inconsistent architecture: ", why); };
  // A timm name such as vit_tiny_patch0_224 reaches here without model_args' range checks.
  if (c.patch_size < 1 || c.img_size < 1 || c.img_size > limits::kMaxImageSize || c.patch_size > c.img_size)
    bad(cat("image size ", c.img_size, " and patch size ", c.patch_size,
            " (need 1 <= patch size <= image size <= ", limits::kMaxImageSize, ")"));
  if (c.num_heads < 1 || c.embed_dim < 1 || c.depth < 1) bad("embed_dim, depth and num_heads must be positive");
  if (c.embed_dim > limits::kMaxEmbedDim || c.depth > limits::kMaxDepth || c.num_heads > limits::kMaxHeads)
    bad(cat("embed_dim ", c.embed_dim, ", depth ", c.depth, ", num_heads ", c.num_heads, " (limits ",
            limits::kMaxEmbedDim, ", ", limits::kMaxDepth, ", ", limits::kMaxHeads, ")"));
  if (c.mlp_hidden > limits::kMaxMlpHidden)
    bad(cat("mlp hidden size ", c.mlp_hidden, " exceeds the limit of ", limits::kMaxMlpHidden));
  if (const int64_t side = c.img_size / c.patch_size; side * side > limits::kMaxPatches)
    bad(cat("image size ", c.img_size, " / patch size ", c.patch_size, " gives ", side * side,
            " patches, above the limit of ", limits::kMaxPatches, " (src/core/limits.h)"));
  if (c.embed_dim % c.num_heads != 0)
    bad(cat("embed_dim ", c.embed_dim, " is not divisible by num_heads ", c.num_heads));
  if (c.img_size % c.patch_size != 0)
    bad(cat("image size ", c.img_size, " is not divisible by patch size ", c.patch_size));
  if (c.in_chans != 1 && c.in_chans != 3) bad(cat("in_chans ", c.in_chans, " (must be 1 or 3)"));
  if (c.mlp_hidden <= 0) bad("mlp hidden size must be positive");
}

}  // namespace

std::string known_architectures() {
  return "vit_{tiny,small,base,large}_patch{16,32}_{224,384}, "
         "deit_{tiny,small,base}[_distilled]_patch16_{224,384}, or any name with full model_args";
}

ViTConfig load_vit_config(const std::string& dir) {
  std::string file = dir + "/config.json";
  const json j = read_json_file(file);
  if (!j.is_object()) fail(ErrorKind::Model, file, ": must be a JSON object");
  ViTConfig c;
  if (j.contains("architecture")) c = with_json_errors(file, [&] { return parse_timm(j, file); });
  else if (j.contains("hidden_size") || j.contains("model_type"))
    c = with_json_errors(file, [&] { return parse_hf(j, file, dir); });
  else
    fail(ErrorKind::Model, file,
         ": neither a timm config (field 'architecture') nor a Hugging Face ViT config "
         "(fields 'model_type', 'hidden_size')");
  c.preprocess.channels = c.in_chans;
  c.preprocess.height = c.preprocess.width = c.img_size;
  validate(c, file);
  return c;
}

}  // namespace vitq
