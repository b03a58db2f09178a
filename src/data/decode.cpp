// Image file reading and format detection. The format comes from the file's signature, never
// from its extension: ImageNet, for one, has PNG and CMYK files named .JPEG.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "core/error.h"
#include "data/decode_internal.h"
#include "data/image.h"

namespace vitq {
namespace {

bool starts_with(const uint8_t* data, size_t size, const char* magic, size_t n) {
  return size >= n && std::memcmp(data, magic, n) == 0;
}

// Names formats that are recognisable but not supported, for a more useful message.
const char* other_format_name(const uint8_t* d, size_t n) {
  if (starts_with(d, n, "GIF8", 4)) return "GIF";
  if (starts_with(d, n, "BM", 2)) return "BMP";
  if (starts_with(d, n, "II*\0", 4) || starts_with(d, n, "MM\0*", 4)) return "TIFF";
  if (n >= 12 && starts_with(d, n, "RIFF", 4) && std::memcmp(d + 8, "WEBP", 4) == 0) return "WebP";
  if (n >= 12 && std::memcmp(d + 4, "ftyp", 4) == 0) return "HEIF/AVIF";
  return nullptr;
}

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};

std::vector<uint8_t> read_whole_file(const std::string& path) {
  std::unique_ptr<FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  if (!f) fail(ErrorKind::Data, path, ": cannot open: ", std::strerror(errno));
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  for (;;) {
    size_t got = std::fread(buf, 1, sizeof buf, f.get());
    bytes.insert(bytes.end(), buf, buf + got);
    if (got < sizeof buf) break;
  }
  // A directory opens fine on Linux and fails on the first read (EISDIR).
  if (std::ferror(f.get())) fail(ErrorKind::Data, path, ": cannot read: ", std::strerror(errno));
  return bytes;
}

}  // namespace

namespace detail {

void check_image_size(uint64_t width, uint64_t height, const std::string& name) {
  if (width == 0 || height == 0) fail(ErrorKind::Data, name, ": image has no pixels (", width, "x", height, ")");
  if (width * height > kMaxImagePixels)
    fail(ErrorKind::Data, name, ": image of ", width, "x", height, " pixels exceeds the limit of ",
         kMaxImagePixels, " pixels");
}

}  // namespace detail

Image decode_image_memory(const uint8_t* data, size_t size, const std::string& name_for_errors) {
  const std::string& name = name_for_errors;
  if (size == 0) fail(ErrorKind::Data, name, ": empty file");
  if (starts_with(data, size, "\xFF\xD8\xFF", 3)) return detail::decode_jpeg(data, size, name);
  if (starts_with(data, size, "\x89PNG\r\n\x1A\n", 8)) return detail::decode_png(data, size, name);
  if (const char* fmt = other_format_name(data, size))
    fail(ErrorKind::Data, name, ": is a ", fmt, " image; vitq reads JPEG and PNG only");
  fail(ErrorKind::Data, name, ": not a JPEG or PNG file (unrecognised signature)");
}

Image decode_image_file(const std::string& path) {
  std::vector<uint8_t> bytes = read_whole_file(path);
  return decode_image_memory(bytes.data(), bytes.size(), path);
}

}  // namespace vitq
