// torchvision's CenterCrop on a PIL image (torchvision 0.14 functional.center_crop).
#include <cstring>

#include "core/error.h"
#include "data/image.h"

namespace vitq {
namespace {

// Python's int(round(d / 2.0)) for d >= 0: halves go to the even neighbour (1.5 -> 2, 2.5 -> 2).
int half_round_even(int d) {
  const int q = d / 2;
  if (d % 2 == 0) return q;
  return q % 2 == 0 ? q : q + 1;
}

}  // namespace

int center_crop_offset(int size, int crop) {
  if (crop <= 0 || crop > size) fail(ErrorKind::Internal, "center_crop_offset: crop ", crop, " outside [1, ", size, "]");
  return half_round_even(size - crop);
}

Image center_crop(const Image& img, int width, int height) {
  if (width <= 0 || height <= 0) fail(ErrorKind::Internal, "center_crop: invalid crop ", width, "x", height);
  if (img.pixels.size() != size_t(img.width) * size_t(img.height) * size_t(img.channels))
    fail(ErrorKind::Internal, "center_crop: inconsistent image ", img.width, "x", img.height, "x", img.channels);
  // A crop larger than the image: torchvision first pads with zeros, (crop - size) // 2 on the
  // left/top and the remainder on the right/bottom; the padded side then crops at offset 0.
  const int pad_left = width > img.width ? (width - img.width) / 2 : 0;
  const int pad_top = height > img.height ? (height - img.height) / 2 : 0;
  const int padded_w = width > img.width ? width : img.width;
  const int padded_h = height > img.height ? height : img.height;
  const int left = half_round_even(padded_w - width) - pad_left;  // in source coordinates
  const int top = half_round_even(padded_h - height) - pad_top;

  Image out;
  out.width = width;
  out.height = height;
  out.channels = img.channels;
  out.pixels.assign(size_t(width) * size_t(height) * size_t(img.channels), 0);
  const size_t C = size_t(img.channels);
  for (int y = 0; y < height; ++y) {
    const int sy = top + y;
    if (sy < 0 || sy >= img.height) continue;
    // Source columns [x0, x1) land at output columns [x0 - left, x1 - left).
    const int x0 = left < 0 ? 0 : left;
    const int x1 = left + width < img.width ? left + width : img.width;
    if (x1 <= x0) continue;
    std::memcpy(out.pixels.data() + (size_t(y) * size_t(width) + size_t(x0 - left)) * C,
                img.pixels.data() + (size_t(sy) * size_t(img.width) + size_t(x0)) * C, size_t(x1 - x0) * C);
  }
  return out;
}

}  // namespace vitq
