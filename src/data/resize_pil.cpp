// Pillow's Image.resize for 8-bit L and RGB images, reproduced operation by operation so that
// the output is bit-identical to Pillow 9.x (the tests compare with PIL itself).
//
// BILINEAR / BICUBIC (Pillow's Resample.c): a separable convolution. For each output column
// (then row) the filter is centred at in0 + (i + 0.5) * scale in input coordinates, its support
// widened by the downscale factor (antialiasing: the filter is stretched to cover all input
// pixels that map to the output pixel), the taps are [round(center - support),
// round(center + support)) clipped to the image, and the weights filter((j - center + 0.5) /
// filterscale) normalised to sum 1. The weights are then turned into 22-bit fixed point
// (rounded half away from zero) and each output sample is
//   clip8((1 << 21 + sum_j in[j] * w[j]) >> 22).
// The horizontal pass runs first, over only the input rows the vertical pass will read; a
// pass is skipped when its dimension is unchanged. Every output sample depends only on its own
// taps, so resize_pil_window computes a window of the output (the centre crop that follows)
// with the same pixels and without the rest: a 1 x 4200 image resized to 248 x 1041600 costs
// the crop, not the 258 MB the whole resize would. The double-precision expressions below keep
// Pillow's exact operation order, because the fixed-point rounding of a weight can flip with
// the last bit of the double. Bicubic is Keys' cubic with a = -0.5.
//
// NEAREST (Pillow's Geometry.c, affine scaling): source column = int(x0), int(x0 + s), ...
// with x0 = s / 2 and s = in / out accumulated in double, likewise for rows.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "data/image.h"

namespace vitq {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // 8 bits of result, 2 of headroom: Pillow's choice

double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

double bicubic_filter(double x) {
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Fixed-point taps of outputs [o0, o0 + n) of a 1-D resampling: output o0 + i reads input
// [first[i], first[i] + count[i]).
struct Taps {
  int ksize = 0;  // stride of `weights` per output
  std::vector<int> first, count;
  std::vector<int32_t> weights;
};

Taps compute_taps(int in_size, int out_size, Interp interp, int o0, int n_out) {
  double (*filter)(double) = interp == Interp::Bicubic ? bicubic_filter : bilinear_filter;
  const double filter_support = interp == Interp::Bicubic ? 2.0 : 1.0;
  // Pillow passes the box edges as float; with the default box they are 0 and in_size.
  const float in0 = 0.0f, in1 = static_cast<float>(in_size);
  const double scale = static_cast<double>(in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = filter_support * filterscale;
  const double inv_filterscale = 1.0 / filterscale;

  Taps t;
  t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(size_t(n_out));
  t.count.resize(size_t(n_out));
  t.weights.assign(size_t(n_out) * size_t(t.ksize), 0);
  std::vector<double> w(size_t(t.ksize));
  for (int i = 0; i < n_out; ++i) {
    const double center = in0 + (o0 + i + 0.5) * scale;
    int lo = static_cast<int>(center - support + 0.5);  // truncation, as Pillow's (int) cast
    if (lo < 0) lo = 0;
    int hi = static_cast<int>(center + support + 0.5);
    if (hi > in_size) hi = in_size;
    const int n = hi - lo;
    double sum = 0.0;
    for (int j = 0; j < n; ++j) {
      w[size_t(j)] = filter((j + lo - center + 0.5) * inv_filterscale);
      sum += w[size_t(j)];
    }
    int32_t* out = &t.weights[size_t(i) * size_t(t.ksize)];
    for (int j = 0; j < n; ++j) {
      const double k = sum != 0.0 ? w[size_t(j)] / sum : w[size_t(j)];
      const double scaled = k * (1 << kPrecisionBits);
      out[j] = static_cast<int32_t>(k < 0 ? -0.5 + scaled : 0.5 + scaled);
    }
    t.first[size_t(i)] = lo;
    t.count[size_t(i)] = n;
  }
  return t;
}

inline uint8_t clip8(int32_t acc) {
  const int32_t v = acc >> kPrecisionBits;  // arithmetic shift: floor, as in Pillow
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Horizontal pass over input rows [row0, row0 + rows).
template <int C>
void resample_rows(const Image& in, int row0, int rows, const Taps& t, Image* out) {
  const int out_w = out->width;
  for (int y = 0; y < rows; ++y) {
    const uint8_t* src = in.pixels.data() + size_t(row0 + y) * size_t(in.width) * C;
    uint8_t* dst = out->pixels.data() + size_t(y) * size_t(out_w) * C;
    for (int x = 0; x < out_w; ++x) {
      const int32_t* k = &t.weights[size_t(x) * size_t(t.ksize)];
      const uint8_t* s = src + size_t(t.first[size_t(x)]) * C;
      const int n = t.count[size_t(x)];
      int32_t acc[C];
      for (int c = 0; c < C; ++c) acc[c] = 1 << (kPrecisionBits - 1);
      for (int j = 0; j < n; ++j)
        for (int c = 0; c < C; ++c) acc[c] += s[j * C + c] * k[j];
      for (int c = 0; c < C; ++c) dst[x * C + c] = clip8(acc[c]);
    }
  }
}

// Vertical pass; t.first is relative to the first row of `in`.
template <int C>
void resample_columns(const Image& in, const Taps& t, int first_offset, Image* out) {
  const size_t row_len = size_t(in.width) * C;
  std::vector<int32_t> acc(row_len);
  for (int y = 0; y < out->height; ++y) {
    const int32_t* k = &t.weights[size_t(y) * size_t(t.ksize)];
    const int first = t.first[size_t(y)] - first_offset;
    const int n = t.count[size_t(y)];
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    // Row-at-a-time accumulation: the same sums in the same order per sample as Pillow's
    // column loop (integer addition, so the order would not matter anyway), but cache-friendly.
    for (int j = 0; j < n; ++j) {
      const uint8_t* src = in.pixels.data() + size_t(first + j) * row_len;
      const int32_t kj = k[j];
      for (size_t i = 0; i < row_len; ++i) acc[i] += src[i] * kj;
    }
    uint8_t* dst = out->pixels.data() + size_t(y) * row_len;
    for (size_t i = 0; i < row_len; ++i) dst[i] = clip8(acc[i]);
  }
}

Image make_image(int w, int h, int c) {
  Image img;
  img.width = w;
  img.height = h;
  img.channels = c;
  img.pixels.resize(size_t(w) * size_t(h) * size_t(c));
  return img;
}

// Copies columns [x0, x0 + out->width) of input rows [row0, row0 + out->height).
void copy_columns(const Image& in, int row0, int x0, Image* out) {
  const size_t C = size_t(in.channels), len = size_t(out->width) * C;
  for (int y = 0; y < out->height; ++y)
    std::memcpy(out->pixels.data() + size_t(y) * len,
                in.pixels.data() + (size_t(row0 + y) * size_t(in.width) + size_t(x0)) * C, len);
}

// The window [x0, x0 + w) x [y0, y0 + h) of the width x height resize.
template <int C>
Image resample(const Image& img, int width, int height, Interp interp, int x0, int y0, int w, int h) {
  const bool need_horizontal = width != img.width;
  const bool need_vertical = height != img.height;
  // The input rows the vertical pass reads (all of the window's rows when it is skipped).
  Taps vt;
  int row_first = y0, row_end = y0 + h;
  if (need_vertical) {
    vt = compute_taps(img.height, height, interp, y0, h);
    row_first = vt.first.front();  // first and first + count grow with the output index
    row_end = vt.first.back() + vt.count.back();
  }
  Image tmp = make_image(w, row_end - row_first, C);
  if (need_horizontal)
    resample_rows<C>(img, row_first, row_end - row_first, compute_taps(img.width, width, interp, x0, w), &tmp);
  else
    copy_columns(img, row_first, x0, &tmp);
  if (!need_vertical) return tmp;
  Image out = make_image(w, h, C);
  resample_columns<C>(tmp, vt, row_first, &out);
  return out;
}

Image resize_nearest(const Image& img, int width, int height, int x0, int y0, int w, int h) {
  const int C = img.channels;
  Image out = make_image(w, h, C);  // zero: Pillow fills unmapped pixels with 0
  const double sx = static_cast<double>(static_cast<float>(img.width)) / width;
  const double sy = static_cast<double>(static_cast<float>(img.height)) / height;
  // Pillow accumulates the source coordinate (xo += a[0]) instead of multiplying; the
  // accumulated rounding decides ties, so do the same (from 0, also for a window).
  std::vector<int> src_x(size_t(w), -1);
  double xo = sx * 0.5;
  for (int x = 0; x < x0 + w; ++x, xo += sx) {
    const int xi = xo < 0.0 ? -1 : static_cast<int>(xo);
    if (x >= x0 && xi >= 0 && xi < img.width) src_x[size_t(x - x0)] = xi;
  }
  double yo = sy * 0.5;
  for (int y = 0; y < y0 + h; ++y, yo += sy) {
    const int yi = yo < 0.0 ? -1 : static_cast<int>(yo);
    if (y < y0 || yi < 0 || yi >= img.height) continue;
    const uint8_t* src = img.pixels.data() + size_t(yi) * size_t(img.width) * size_t(C);
    uint8_t* dst = out.pixels.data() + size_t(y - y0) * size_t(w) * size_t(C);
    for (int x = 0; x < w; ++x)
      if (src_x[size_t(x)] >= 0) std::memcpy(dst + size_t(x) * size_t(C), src + size_t(src_x[size_t(x)]) * size_t(C), size_t(C));
  }
  return out;
}

}  // namespace

Image resize_pil_window(const Image& img, int width, int height, Interp interp, int x0, int y0, int w, int h) {
  if (img.channels != 1 && img.channels != 3)
    fail(ErrorKind::Internal, "resize_pil: image has ", img.channels, " channels (1 or 3 supported)");
  if (img.width <= 0 || img.height <= 0 ||
      img.pixels.size() != size_t(img.width) * size_t(img.height) * size_t(img.channels))
    fail(ErrorKind::Internal, "resize_pil: inconsistent image ", img.width, "x", img.height, "x", img.channels);
  if (width <= 0 || height <= 0) fail(ErrorKind::Internal, "resize_pil: invalid target size ", width, "x", height);
  if (w <= 0 || h <= 0 || x0 < 0 || y0 < 0 || x0 > width - w || y0 > height - h)
    fail(ErrorKind::Internal, "resize_pil: window ", w, "x", h, "+", x0, "+", y0, " is not inside ", width, "x", height);
  // Same size: Pillow returns a copy whatever the filter; resample() then only copies the window.
  if (interp == Interp::Nearest && (width != img.width || height != img.height))
    return resize_nearest(img, width, height, x0, y0, w, h);
  return img.channels == 3 ? resample<3>(img, width, height, interp, x0, y0, w, h)
                           : resample<1>(img, width, height, interp, x0, y0, w, h);
}

Image resize_pil(const Image& img, int width, int height, Interp interp) {
  return resize_pil_window(img, width, height, interp, 0, 0, width, height);
}

}  // namespace vitq
