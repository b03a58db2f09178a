// A site hook that names the first site whose input or output holds a NaN/Inf: run one
// forward with it to say where a non-finite result came from. Wraps an optional inner hook
// (e.g. a plan's simulator) so the forward computes what it computed before.
#pragma once
#include <string>

#include "core/error.h"
#include "core/finite.h"
#include "engine/site.h"

namespace vitq {

class NonFiniteProbe : public SiteHook {
 public:
  explicit NonFiniteProbe(SiteHook* inner = nullptr) : inner_(inner) {}
  bool compute(const SiteCall& c) override { return inner_ && inner_->compute(c); }
  void observe(const SiteCall& c) override {
    if (inner_) inner_->observe(c);
    if (!found_.empty()) return;
    const size_t nx = size_t(c.groups) * size_t(c.x_stride()), ny = size_t(c.groups) * size_t(c.y_stride());
    if (first_non_finite(c.x, nx) != nx) found_ = cat("the input of site ", c.site.name());
    else if (first_non_finite(c.y, ny) != ny)
      found_ = cat("the output of site ", c.site.name(), " (its input is finite)");
  }
  // "" if every site's input and output was finite.
  const std::string& found() const { return found_; }

 private:
  SiteHook* inner_;
  std::string found_;
};

}  // namespace vitq
