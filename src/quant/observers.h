// The statistics collectors of quantization code: SiteHooks that watch a forward pass (and
// may let another hook compute some sites). Each runs over the batches of a StagedForward in
// image order.
//   SiteTensorCapture   whole-set copies of chosen sites' operands and outputs (the calibration
//                       driver's site observations)
//   ChannelRange        per-input-channel min and max of x at chosen sites (LayerNorm rewrites)
//   SelectiveSimulation computes only a chosen set of sites with an inner hook and copies
//                       chosen outputs of the current batch (mixed precision's perturbations)
#pragma once
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/aligned.h"
#include "engine/site.h"

namespace vitq {

// One tensor of every image of the set, image-major.
struct SiteTensors {
  avector<float> x, w, y;  // w only for attention sites (a linear site's weight is the layer's)
};

class SiteTensorCapture : public SiteHook {
 public:
  // shapes: every site's per-image shape; n_images: the size of the whole set.
  SiteTensorCapture(const std::map<SiteId, SiteShape>& shapes, int n_images) : shapes_(shapes), n_(n_images) {}

  SiteHook* inner = nullptr;          // computes sites if set (e.g. the simulator of the plan so far)
  std::set<SiteId> want_y, want_xw;   // outputs / inputs to capture
  SiteId stop_after{SiteKind::Head, -2};  // throw StopStage once this site is captured
  std::map<SiteId, SiteTensors> buf;

  bool compute(const SiteCall& c) override { return inner ? inner->compute(c) : false; }
  void observe(const SiteCall& c) override;

 private:
  // Appends c.images images of per_image floats at the site's cursor.
  void append(avector<float>& dst, size_t& cursor, const float* src, int64_t per_image, int images);
  const std::map<SiteId, SiteShape>& shapes_;
  int n_;
  std::map<SiteId, size_t> cursor_y_, cursor_x_, cursor_w_;  // images captured so far
};

class ChannelRange : public SiteHook {
 public:
  explicit ChannelRange(std::set<SiteKind> kinds) : kinds_(std::move(kinds)) {}
  struct Range {
    std::vector<float> lo, hi;  // K values each: min and max over every row of every call
  };
  std::map<std::string, Range> range;  // by site name
  void observe(const SiteCall& c) override;

 private:
  std::set<SiteKind> kinds_;
};

class SelectiveSimulation : public SiteHook {
 public:
  SiteHook* inner = nullptr;
  std::set<SiteId> allowed;          // sites `inner` computes; the rest run in FP32
  std::map<SiteId, float*> capture;  // where a site's batch output goes (groups × M × N floats)
  std::function<void(const SiteCall&)> on_site;  // called for every site after its output
  bool compute(const SiteCall& c) override { return inner && allowed.count(c.site) ? inner->compute(c) : false; }
  bool softmax(int block, float* s, int rows, int n, float scale) override {
    return inner && allowed.count({SiteKind::MatmulAV, block}) ? inner->softmax(block, s, rows, n, scale) : false;
  }
  void observe(const SiteCall& c) override;
};

}  // namespace vitq
