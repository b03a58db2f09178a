// Image file reading and format detection. The format comes from the file's signature, never
// from its extension: ImageNet, for one, has PNG and CMYK files named .JPEG.
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "core/error.h"
#include "data/decode_internal.h"
#include "data/image.h"
#include "core/limits.h"

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

bool is_jpeg(const uint8_t* d, size_t n) { return starts_with(d, n, "\xFF\xD8\xFF", 3); }
bool is_png(const uint8_t* d, size_t n) { return starts_with(d, n, "\x89PNG\r\n\x1A\n", 8); }

// Error(Data) unless the first bytes are a JPEG or PNG signature.
void check_image_signature(const uint8_t* data, size_t size, const std::string& name) {
  if (size == 0) fail(ErrorKind::Data, name, ": empty file");
  if (is_jpeg(data, size) || is_png(data, size)) return;
  if (const char* fmt = other_format_name(data, size))
    fail(ErrorKind::Data, name, ": is a ", fmt, " image; vitq reads JPEG and PNG only");
  fail(ErrorKind::Data, name, ": not a JPEG or PNG file (unrecognised signature)");
}

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};

// Reads the file whose format the caller checks from its first bytes: its size is checked
// first (fstat, refused above limits::kMaxImageFileBytes before anything is read), then its
// first 16 bytes are checked for a JPEG or PNG signature (check_image_signature),
// and only then is the rest read, never more than the limit (a file that grows meanwhile, or
// a character device behind a symlink, is cut off at the limit and refused).
std::vector<uint8_t> read_image_file(const std::string& path) {
  std::unique_ptr<FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  if (!f) fail(ErrorKind::Data, path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (fstat(fileno(f.get()), &st) != 0) fail(ErrorKind::Data, path, ": cannot stat: ", std::strerror(errno));
  if (S_ISDIR(st.st_mode)) fail(ErrorKind::Data, path, ": cannot read: is a directory");
  if (S_ISREG(st.st_mode) && uint64_t(st.st_size) > limits::kMaxImageFileBytes)
    fail(ErrorKind::Data, path, ": file of ", uint64_t(st.st_size), " bytes exceeds the image file limit of ",
         limits::kMaxImageFileBytes, " bytes (", limits::kMaxImageFileBytes >> 20, " MiB)");
  std::vector<uint8_t> bytes(16);
  bytes.resize(std::fread(bytes.data(), 1, bytes.size(), f.get()));
  if (std::ferror(f.get())) fail(ErrorKind::Data, path, ": cannot read: ", std::strerror(errno));
  check_image_signature(bytes.data(), bytes.size(), path);
  if (S_ISREG(st.st_mode)) bytes.reserve(size_t(st.st_size));
  uint8_t buf[1 << 16];
  for (;;) {
    const size_t got = std::fread(buf, 1, sizeof buf, f.get());
    if (bytes.size() + got > limits::kMaxImageFileBytes)
      fail(ErrorKind::Data, path, ": file exceeds the image file limit of ", limits::kMaxImageFileBytes, " bytes (",
           limits::kMaxImageFileBytes >> 20, " MiB)");
    bytes.insert(bytes.end(), buf, buf + got);
    if (got < sizeof buf) break;
  }
  if (std::ferror(f.get())) fail(ErrorKind::Data, path, ": cannot read: ", std::strerror(errno));
  return bytes;
}

}  // namespace

namespace detail {

void check_image_size(uint64_t width, uint64_t height, const std::string& name) {
  if (width == 0 || height == 0) fail(ErrorKind::Data, name, ": image has no pixels (", width, "x", height, ")");
  if (width * height > limits::kMaxImagePixels)
    fail(ErrorKind::Data, name, ": image of ", width, "x", height, " pixels exceeds the limit of ",
         limits::kMaxImagePixels, " pixels");
}

}  // namespace detail

Image decode_image_memory(const uint8_t* data, size_t size, const std::string& name_for_errors) {
  const std::string& name = name_for_errors;
  check_image_signature(data, size, name);
  if (size > limits::kMaxImageFileBytes)
    fail(ErrorKind::Data, name, ": ", size, " bytes exceed the image file limit of ", limits::kMaxImageFileBytes,
         " bytes");
  if (is_jpeg(data, size)) return detail::decode_jpeg(data, size, name);
  return detail::decode_png(data, size, name);
}

Image decode_image_file(const std::string& path) {
  std::vector<uint8_t> bytes = read_image_file(path);
  return decode_image_memory(bytes.data(), bytes.size(), path);
}

}  // namespace vitq
