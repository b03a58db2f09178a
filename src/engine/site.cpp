#include "engine/site.h"

#include <regex>

#include "core/error.h"
#include "model/vit_model.h"

namespace vitq {

std::string SiteId::name() const {
  switch (kind) {
    case SiteKind::PatchEmbed: return "patch_embed";
    case SiteKind::Head: return "head";
    case SiteKind::HeadDist: return "head_dist";
    case SiteKind::Qkv: return cat("blocks.", block, ".attn.qkv");
    case SiteKind::MatmulQK: return cat("blocks.", block, ".attn.matmul_qk");
    case SiteKind::MatmulAV: return cat("blocks.", block, ".attn.matmul_av");
    case SiteKind::Proj: return cat("blocks.", block, ".attn.proj");
    case SiteKind::Fc1: return cat("blocks.", block, ".mlp.fc1");
    case SiteKind::Fc2: return cat("blocks.", block, ".mlp.fc2");
  }
  return "?";
}

bool parse_site_name(const std::string& name, SiteId* out) {
  if (name == "patch_embed") { *out = {SiteKind::PatchEmbed, -1}; return true; }
  if (name == "head") { *out = {SiteKind::Head, -1}; return true; }
  if (name == "head_dist") { *out = {SiteKind::HeadDist, -1}; return true; }
  static const std::regex re(R"(^blocks\.(\d{1,4})\.(attn\.qkv|attn\.matmul_qk|attn\.matmul_av|attn\.proj|mlp\.fc1|mlp\.fc2)$)");
  std::smatch m;
  if (!std::regex_match(name, m, re)) return false;
  int b = std::stoi(m[1].str());
  const std::string k = m[2].str();
  SiteKind kind = k == "attn.qkv"         ? SiteKind::Qkv
                  : k == "attn.matmul_qk" ? SiteKind::MatmulQK
                  : k == "attn.matmul_av" ? SiteKind::MatmulAV
                  : k == "attn.proj"      ? SiteKind::Proj
                  : k == "mlp.fc1"        ? SiteKind::Fc1
                                          : SiteKind::Fc2;
  *out = {kind, b};
  return true;
}

std::vector<SiteShape> model_sites(const ViTConfig& c) {
  const int T = c.tokens(), D = c.embed_dim, H = c.num_heads, d = c.head_dim();
  std::vector<SiteShape> s;
  s.push_back({{SiteKind::PatchEmbed, -1}, 1, c.num_patches(), D, c.patch_dim()});
  for (int b = 0; b < c.depth; ++b) {
    s.push_back({{SiteKind::Qkv, b}, 1, T, 3 * D, D});
    s.push_back({{SiteKind::MatmulQK, b}, H, T, T, d});
    s.push_back({{SiteKind::MatmulAV, b}, H, T, d, T});
    s.push_back({{SiteKind::Proj, b}, 1, T, D, D});
    s.push_back({{SiteKind::Fc1, b}, 1, T, c.mlp_hidden, D});
    s.push_back({{SiteKind::Fc2, b}, 1, T, D, c.mlp_hidden});
  }
  s.push_back({{SiteKind::Head, -1}, 1, 1, c.num_classes, D});
  if (c.distilled) s.push_back({{SiteKind::HeadDist, -1}, 1, 1, c.num_classes, D});
  return s;
}

const LinearWeights* site_weights(const ViTModel& m, const SiteId& id) {
  switch (id.kind) {
    case SiteKind::PatchEmbed: return &m.patch_embed;
    case SiteKind::Head: return &m.head;
    case SiteKind::HeadDist: return m.cfg.distilled ? &m.head_dist : nullptr;
    case SiteKind::Qkv: return &m.blocks.at(size_t(id.block)).qkv;
    case SiteKind::Proj: return &m.blocks.at(size_t(id.block)).proj;
    case SiteKind::Fc1: return &m.blocks.at(size_t(id.block)).fc1;
    case SiteKind::Fc2: return &m.blocks.at(size_t(id.block)).fc2;
    case SiteKind::MatmulQK:
    case SiteKind::MatmulAV: return nullptr;
  }
  return nullptr;
}

}  // namespace vitq
