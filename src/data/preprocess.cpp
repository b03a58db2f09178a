// timm's evaluation transform on a decoded image:
//   Resize(scale_size, interp) -> CenterCrop(size) -> ToTensor -> Normalize(mean, std)
// with timm's scale_size (transforms_factory.transforms_imagenet_eval) and torchvision 0.14's
// Resize/CenterCrop semantics on PIL images. The arithmetic mirrors the Python expressions
// (double division, floor/int truncation, float32 normalisation in torchvision's order).
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "data/image.h"

namespace vitq {
namespace {

void check_preprocess(const Preprocess& p) {
  if (p.channels != 1 && p.channels != 3) fail(ErrorKind::Data, "preprocess: channels must be 1 or 3, not ", p.channels);
  if (p.height <= 0 || p.width <= 0 || p.height > 16384 || p.width > 16384)
    fail(ErrorKind::Data, "preprocess: input size ", p.height, "x", p.width, " must be in [1, 16384]");
  if (!(p.crop_pct > 0.0) || !std::isfinite(p.crop_pct))
    fail(ErrorKind::Data, "preprocess: crop_pct ", p.crop_pct, " must be a positive number");
  for (int c = 0; c < p.channels; ++c)
    if (!(p.std[size_t(c)] != 0.0f) || !std::isfinite(p.std[size_t(c)]) || !std::isfinite(p.mean[size_t(c)]))
      fail(ErrorKind::Data, "preprocess: mean/std of channel ", c, " must be finite with std != 0");
}

// Python's int(x) for a size computed in double; the result must be a usable image size.
int to_size(double x, const char* what) {
  if (!(x >= 1.0) || x > 1 << 20) fail(ErrorKind::Data, "preprocess: ", what, " ", x, " is not a valid image size");
  return static_cast<int>(x);
}

}  // namespace

void preprocess_resize_size(int in_w, int in_h, const Preprocess& p, int* out_w, int* out_h) {
  if (p.resize_exact) {  // HF ViTImageProcessor: straight to the model size
    *out_w = p.width;
    *out_h = p.height;
    return;
  }
  if (p.height != p.width) {
    // timm: scale_size = tuple(int(x / crop_pct) for x in img_size); Resize((h, w)).
    *out_h = to_size(p.height / p.crop_pct, "resize height");
    *out_w = to_size(p.width / p.crop_pct, "resize width");
    return;
  }
  // timm: scale_size = int(math.floor(img_size / crop_pct)); Resize(int) scales the short side
  // to it and the long side to int(scale_size * long / short) (true division in double).
  const int size = to_size(std::floor(p.height / p.crop_pct), "resize size");
  const bool portrait = in_w <= in_h;
  const int64_t short_side = portrait ? in_w : in_h, long_side = portrait ? in_h : in_w;
  const int new_long = to_size(static_cast<double>(int64_t(size) * long_side) / static_cast<double>(short_side),
                               "resized long side");
  *out_w = portrait ? size : new_long;
  *out_h = portrait ? new_long : size;
}

void preprocess(const Image& img, const Preprocess& p, float* out_chw) {
  check_preprocess(p);
  if ((img.channels != 1 && img.channels != 3) || img.width <= 0 || img.height <= 0 ||
      img.pixels.size() != size_t(img.width) * size_t(img.height) * size_t(img.channels))
    fail(ErrorKind::Data, "preprocess: invalid image ", img.width, "x", img.height, "x", img.channels);

  // A 1-channel model sees PIL's convert("L"); a grey source stays 1-channel through the resize
  // and is replicated at the end, which gives the same values as resizing its RGB copy.
  // `cur` follows the latest stage so that skipped stages cost no copy.
  const Image* cur = &img;
  Image gray, resized, cropped;
  if (p.channels == 1 && img.channels == 3) {
    gray = rgb_to_gray(img);
    cur = &gray;
  }
  int rw = 0, rh = 0;
  preprocess_resize_size(cur->width, cur->height, p, &rw, &rh);
  if (rw != cur->width || rh != cur->height) {  // torchvision returns the image unchanged
    // Only the part of the resized image the centre crop keeps is computed: per axis the crop
    // if it fits, else the whole axis (which the crop then pads). An extreme aspect ratio
    // (1 x 4200 -> 248 x 1041600) thus costs the crop, not the whole resize.
    const int ww = std::min(p.width, rw), wh = std::min(p.height, rh);
    resized = resize_pil_window(*cur, rw, rh, p.interp, center_crop_offset(rw, ww), center_crop_offset(rh, wh), ww, wh);
    cur = &resized;
  }
  if (cur->width != p.width || cur->height != p.height) {
    cropped = center_crop(*cur, p.width, p.height);
    cur = &cropped;
  }
  const Image& work = *cur;

  // ToTensor (v / 255 in float32) then Normalize ((x - mean) / std, float32), per channel.
  const size_t plane = size_t(p.width) * size_t(p.height);
  const size_t C = size_t(work.channels);
  for (int c = 0; c < p.channels; ++c) {
    const size_t src_c = C == 1 ? 0 : size_t(c);
    const float mean = p.mean[size_t(c)], stdv = p.std[size_t(c)];
    float* dst = out_chw + size_t(c) * plane;
    const uint8_t* src = work.pixels.data() + src_c;
    for (size_t i = 0; i < plane; ++i) dst[i] = (static_cast<float>(src[i * C]) / 255.0f - mean) / stdv;
  }
}

}  // namespace vitq
