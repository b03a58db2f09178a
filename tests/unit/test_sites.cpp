// Site naming and the model's site list.
#include <gtest/gtest.h>

#include "engine/site.h"
#include "model/vit_config.h"

namespace vitq {
namespace {

TEST(Sites, NamesRoundTrip) {
  ViTConfig c;
  c.depth = 3;
  c.distilled = true;
  auto sites = model_sites(c);
  ASSERT_EQ(sites.size(), 1u + 6u * 3u + 2u);
  EXPECT_EQ(sites.front().id.name(), "patch_embed");
  EXPECT_EQ(sites[1].id.name(), "blocks.0.attn.qkv");
  EXPECT_EQ(sites[2].id.name(), "blocks.0.attn.matmul_qk");
  EXPECT_EQ(sites[3].id.name(), "blocks.0.attn.matmul_av");
  EXPECT_EQ(sites[4].id.name(), "blocks.0.attn.proj");
  EXPECT_EQ(sites[5].id.name(), "blocks.0.mlp.fc1");
  EXPECT_EQ(sites[6].id.name(), "blocks.0.mlp.fc2");
  EXPECT_EQ(sites.back().id.name(), "head_dist");
  for (const auto& s : sites) {
    SiteId parsed;
    ASSERT_TRUE(parse_site_name(s.id.name(), &parsed)) << s.id.name();
    EXPECT_EQ(parsed, s.id);
  }
  SiteId x;
  EXPECT_FALSE(parse_site_name("blocks.1.attn", &x));
  EXPECT_FALSE(parse_site_name("blocks.-1.mlp.fc1", &x));
  EXPECT_FALSE(parse_site_name("head ", &x));
}

TEST(Sites, ShapesOfViTTiny) {
  ViTConfig c;  // ViT-Ti/16 at 224
  c.embed_dim = 192;
  c.num_heads = 3;
  c.mlp_hidden = 768;
  auto sites = model_sites(c);
  EXPECT_EQ(c.tokens(), 197);
  const SiteShape& qk = sites[2];
  EXPECT_EQ(qk.groups_per_image, 3);
  EXPECT_EQ(qk.M, 197);
  EXPECT_EQ(qk.N, 197);
  EXPECT_EQ(qk.K, 64);
  const SiteShape& av = sites[3];
  EXPECT_EQ(av.N, 64);
  EXPECT_EQ(av.K, 197);
  EXPECT_EQ(sites[0].K, 768);  // 3 x 16 x 16
  EXPECT_EQ(sites[0].M, 196);
}

}  // namespace
}  // namespace vitq
