#include "eval/evaluate.h"

#include <omp.h>

#include <chrono>
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/finite.h"

namespace vitq {

bool in_top_k(const float* logits, int classes, int label, int k) {
  // Number of classes ranked strictly before `label`.
  const float v = logits[label];
  if (std::isnan(v)) return false;
  int before = 0;
  for (int j = 0; j < classes; ++j)
    if (std::isnan(logits[j]) || logits[j] > v || (logits[j] == v && j < label)) ++before;
  return before < k;
}

void ReferenceAgreement::add(const float* logits, const float* ref, int n, int classes) {
  auto log_softmax = [classes](const float* l, std::vector<double>& out) {
    double mx = l[0];
    for (int k = 1; k < classes; ++k) mx = std::max(mx, double(l[k]));
    double s = 0;
    for (int k = 0; k < classes; ++k) s += std::exp(double(l[k]) - mx);
    const double lse = mx + std::log(s);
    for (int k = 0; k < classes; ++k) out[size_t(k)] = double(l[k]) - lse;
  };
  std::vector<double> lp(static_cast<size_t>(classes)), lr(static_cast<size_t>(classes));
  for (int i = 0; i < n; ++i) {
    const float* a = logits + size_t(i) * size_t(classes);
    const float* b = ref + size_t(i) * size_t(classes);
    int pa = 0, pb = 0;
    for (int k = 1; k < classes; ++k) {
      if (a[k] > a[pa]) pa = k;
      if (b[k] > b[pb]) pb = k;
    }
    log_softmax(a, lp);
    log_softmax(b, lr);
    double kl = 0;
    for (int k = 0; k < classes; ++k) kl += std::exp(lr[size_t(k)]) * (lr[size_t(k)] - lp[size_t(k)]);
    kl_ += kl;
    agree_ += pa == pb;
    ++n_;
  }
}

EvalResult evaluate(ViTForward& fwd, const Dataset& data, const std::vector<size_t>& indices,
                    const EvalOptions& opt, const std::function<void(const EvalProgress&)>& progress) {
  return evaluate(
      fwd.model().cfg, [&](const float* x, int b, float* l) { fwd.run(x, b, l, opt.hook); }, data, indices, opt,
      progress);
}

namespace {

// Loads images indices[start, start + n) into `images`, compacted over those that loaded (their
// slots in `ok_slots`); an unreadable one fails or is listed in res.skipped, as opt says.
void load_batch(const Dataset& data, const Preprocess& pre, const std::vector<size_t>& indices, size_t start, int n,
                const EvalOptions& opt, float* images, std::vector<std::string>& errors, std::vector<size_t>& ok_slots,
                EvalResult& res) {
  const size_t img_floats = size_t(pre.channels) * size_t(pre.height) * size_t(pre.width);
#pragma omp parallel for schedule(dynamic, 1)
  for (int i = 0; i < n; ++i) {
    errors[size_t(i)].clear();
    try {
      data.load(indices[start + size_t(i)], pre, images + size_t(i) * img_floats);
    } catch (const std::exception& e) {
      errors[size_t(i)] = e.what();
    }
  }
  ok_slots.clear();
  for (int i = 0; i < n; ++i) {
    if (errors[size_t(i)].empty()) {
      if (ok_slots.size() != size_t(i))
        std::copy_n(images + size_t(i) * img_floats, img_floats, images + ok_slots.size() * img_floats);
      ok_slots.push_back(size_t(i));
    } else if (opt.on_bad_image == BadImagePolicy::Fail) {
      fail(ErrorKind::Data, errors[size_t(i)], " (use --skip-bad-images to skip unreadable images)");
    } else {
      res.skipped.push_back(errors[size_t(i)]);
    }
  }
}

// One image's logits scored against its label (image: its preprocessed pixels, to locate a
// non-finite value).
void score_image(const Dataset& data, size_t idx, const float* lg, int NC, const float* image, const EvalOptions& opt,
                 EvalResult& res) {
  const int label = data.label(idx);
  if (label < 0 || label >= NC)
    fail(ErrorKind::Data, data.name(idx), ": label ", label, " is outside the model's ", NC, " classes");
  res.evaluated.push_back(idx);
  ++res.images;
  if (first_non_finite(lg, size_t(NC)) != size_t(NC)) {
    if (!opt.allow_non_finite) {
      const std::string where = opt.locate_non_finite ? opt.locate_non_finite(image) : "";
      fail(ErrorKind::Model, data.name(idx), ": the model's logits hold NaN/Inf",
           where.empty() ? "" : " - first non-finite value in ", where,
           "; not counted as a result (--allow-non-finite counts such images as wrong)");
    }
    res.predictions.push_back(-1);
    ++res.non_finite;
    return;
  }
  int best = 0;
  for (int k = 1; k < NC; ++k)
    if (lg[k] > lg[best]) best = k;
  res.predictions.push_back(best);
  res.top1 += best == label;
  res.top5 += in_top_k(lg, NC, label, std::min(5, NC));
}

}  // namespace

EvalResult evaluate(const ViTConfig& c, const ForwardFn& forward, const Dataset& data,
                    const std::vector<size_t>& indices, const EvalOptions& opt,
                    const std::function<void(const EvalProgress&)>& progress) {
  using clock = std::chrono::steady_clock;
  const Preprocess& pre = c.preprocess;
  const size_t img_floats = size_t(pre.channels) * size_t(pre.height) * size_t(pre.width);
  const int NC = c.num_classes;
  const int batch = std::max(1, opt.batch);

  avector<float> images(size_t(batch) * img_floats);
  std::vector<float> logits(size_t(batch) * size_t(NC));
  std::vector<std::string> errors(static_cast<size_t>(batch));
  std::vector<size_t> ok_slots;
  EvalResult res;
  const auto t0 = clock::now();

  for (size_t start = 0; start < indices.size(); start += size_t(batch)) {
    const int n = int(std::min(indices.size() - start, size_t(batch)));
    load_batch(data, pre, indices, start, n, opt, images.data(), errors, ok_slots, res);
    const int m = int(ok_slots.size());
    if (m > 0) {
      const auto f0 = clock::now();
      forward(images.data(), m, logits.data());
      res.forward_seconds += std::chrono::duration<double>(clock::now() - f0).count();
      if (opt.on_batch) opt.on_batch(images.data(), m, logits.data());
    }
    for (int j = 0; j < m; ++j)
      score_image(data, indices[start + ok_slots[size_t(j)]], logits.data() + size_t(j) * size_t(NC), NC,
                  images.data() + size_t(j) * img_floats, opt, res);
    if (progress)
      progress({start + size_t(n), indices.size(), res.top1,
                std::chrono::duration<double>(clock::now() - t0).count()});
  }
  res.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  // Skipping every image would report an accuracy of nothing as if it were a result.
  if (res.images == 0 && !res.skipped.empty())
    fail(ErrorKind::Data, "no image could be read: all ", res.skipped.size(),
         " images were skipped as unreadable; the first: ", res.skipped.front());
  return res;
}

}  // namespace vitq
