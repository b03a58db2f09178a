#include "quant/observers.h"

#include <algorithm>
#include <cmath>

#include "quant/staged_forward.h"

namespace vitq {

void SiteTensorCapture::observe(const SiteCall& c) {
  const SiteShape& s = shapes_.at(c.site);
  const int64_t rows = int64_t(s.groups_per_image) * s.M;
  if (want_y.count(c.site)) append(buf[c.site].y, cursor_y_[c.site], c.y, rows * s.N, c.images);
  if (want_xw.count(c.site)) {
    append(buf[c.site].x, cursor_x_[c.site], c.x, rows * s.K, c.images);
    if (c.site.is_attention())
      append(buf[c.site].w, cursor_w_[c.site], c.w, int64_t(s.groups_per_image) * s.N * s.K, c.images);
  }
  if (c.site == stop_after) throw StopStage{};
}

void SiteTensorCapture::append(avector<float>& dst, size_t& cursor, const float* src, int64_t per_image,
                               int images) {
  if (dst.size() != size_t(per_image) * size_t(n_)) dst.assign(size_t(per_image) * size_t(n_), 0.0f);
  std::copy_n(src, per_image * images, dst.data() + size_t(per_image) * cursor);
  cursor += size_t(images);
}

void ChannelRange::observe(const SiteCall& c) {
  if (!kinds_.count(c.site.kind)) return;
  Range& m = range[c.site.name()];
  m.lo.resize(size_t(c.K), INFINITY);
  m.hi.resize(size_t(c.K), -INFINITY);
  const int64_t rows = int64_t(c.groups) * c.M;
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = c.x + r * c.K;
    for (int k = 0; k < c.K; ++k) {
      m.lo[size_t(k)] = std::min(m.lo[size_t(k)], x[k]);
      m.hi[size_t(k)] = std::max(m.hi[size_t(k)], x[k]);
    }
  }
}

void SelectiveSimulation::observe(const SiteCall& c) {
  auto it = capture.find(c.site);
  if (it != capture.end()) std::copy_n(c.y, int64_t(c.groups) * c.M * c.N, it->second);
  if (on_site) on_site(c);
}

}  // namespace vitq
