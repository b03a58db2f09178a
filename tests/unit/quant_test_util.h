// Shared by the quantization unit tests: a synthetic linear site whose data the test owns.
#pragma once
#include <vector>

#include "quant/method.h"

namespace vitq::test {

// X [images·M x K], W [N x K] and bias are filled by the test; observe() computes the FP target
// y = X·Wᵀ + b (accumulated in double) and points obs (an fc1 site) at the data.
struct LinearSite {
  int images, M, K, N;
  std::vector<float> x, w, b, y;
  SiteObservation obs;

  LinearSite(int images_, int M_, int K_, int N_) : images(images_), M(M_), K(K_), N(N_) {}
  void observe() {
    y.resize(size_t(images) * M * N);
    for (int r = 0; r < images * M; ++r)
      for (int n = 0; n < N; ++n) {
        double s = b[size_t(n)];
        for (int k = 0; k < K; ++k) s += double(x[size_t(r) * K + k]) * w[size_t(n) * K + k];
        y[size_t(r) * N + n] = float(s);
      }
    obs.shape = {{SiteKind::Fc1, 0}, 1, M, N, K};
    obs.images = images;
    obs.x = x.data();
    obs.w = w.data();
    obs.bias = b.data();
    obs.target = y.data();
  }
};

}  // namespace vitq::test
