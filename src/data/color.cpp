// Channel conversions and interpolation names.
#include <cstring>

#include "core/error.h"
#include "data/image.h"

namespace vitq {

Image rgb_to_gray(const Image& rgb) {
  if (rgb.channels != 3) fail(ErrorKind::Internal, "rgb_to_gray: image has ", rgb.channels, " channels, not 3");
  Image g = Image::blank(rgb.width, rgb.height, 1);
  const size_t n = g.area();
  const uint8_t* p = rgb.pixels.data();
  // PIL's convert("L"): ITU-R 601-2 weights 0.299/0.587/0.114 in 16-bit fixed point
  // (19595 + 38470 + 7471 = 65536), rounded by adding half before the shift.
  for (size_t i = 0; i < n; ++i, p += 3)
    g.pixels[i] = static_cast<uint8_t>((p[0] * 19595u + p[1] * 38470u + p[2] * 7471u + 0x8000u) >> 16);
  return g;
}

Image gray_to_rgb(const Image& gray) {
  if (gray.channels != 1) fail(ErrorKind::Internal, "gray_to_rgb: image has ", gray.channels, " channels, not 1");
  Image c = Image::blank(gray.width, gray.height, 3);
  const size_t n = c.area();
  for (size_t i = 0; i < n; ++i) std::memset(&c.pixels[i * 3], gray.pixels[i], 3);
  return c;
}

bool parse_interp(const std::string& s, Interp* out) {
  if (s == "bilinear") *out = Interp::Bilinear;
  else if (s == "bicubic") *out = Interp::Bicubic;
  else if (s == "nearest") *out = Interp::Nearest;
  else return false;
  return true;
}

const char* interp_name(Interp i) {
  switch (i) {
    case Interp::Nearest: return "nearest";
    case Interp::Bilinear: return "bilinear";
    case Interp::Bicubic: return "bicubic";
  }
  return "unknown";
}

}  // namespace vitq
