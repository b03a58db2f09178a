#include "data/encode_png.h"

#include <png.h>
#include <zlib.h>

#include <csetjmp>
#include <cstdio>

#include "core/error.h"

namespace vitq {
namespace {

void append(png_structp png, png_bytep data, png_size_t n) {
  auto* out = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + n);
}

void no_flush(png_structp) {}

// libpng's error callback must not return: it longjmps to the setjmp in run(), whose frame
// holds only trivially destructible locals.
bool run(const Image& img, std::vector<uint8_t>* out) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  if (!png) return false;
  png_infop info = png_create_info_struct(png);
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, info ? &info : nullptr);
    return false;
  }
  png_set_write_fn(png, out, append, no_flush);
  png_set_compression_level(png, Z_BEST_COMPRESSION);
  png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_PAETH);
  png_set_IHDR(png, info, png_uint_32(img.width), png_uint_32(img.height), 8,
               img.channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_BASE, PNG_FILTER_TYPE_BASE);
  png_write_info(png, info);
  const size_t stride = size_t(img.width) * size_t(img.channels);
  for (int y = 0; y < img.height; ++y)
    png_write_row(png, const_cast<png_bytep>(img.pixels.data() + size_t(y) * stride));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}

}  // namespace

std::vector<uint8_t> encode_png(const Image& img) {
  if ((img.channels != 1 && img.channels != 3) || img.width <= 0 || img.height <= 0 ||
      img.pixels.size() != img.area() * size_t(img.channels))
    fail(ErrorKind::Internal, "encode_png: invalid image ", img.width, "x", img.height, "x", img.channels);
  std::vector<uint8_t> out;
  if (!run(img, &out)) fail(ErrorKind::Internal, "encode_png: libpng failed on a ", img.width, "x", img.height, " image");
  return out;
}

void write_png(const std::string& path, const Image& img) {
  const std::vector<uint8_t> bytes = encode_png(img);
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) fail(ErrorKind::Io, path, ": cannot be created");
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  if (std::fclose(f) != 0 || !ok) fail(ErrorKind::Io, path, ": cannot be written");
}

}  // namespace vitq
