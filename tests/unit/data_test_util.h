// Helpers for the data-layer unit tests: temporary directories and small image encoders
// (PNG written by hand with zlib, JPEG through libjpeg's compressor).
#pragma once
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <jpeglib.h>

namespace vitq::testutil {

// A fresh directory under the system temp dir, removed with its contents at scope exit.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    for (int attempt = 0; attempt < 100; ++attempt) {
      path_ = std::filesystem::temp_directory_path() / ("vitq_data_test_" + std::to_string(rd()));
      if (std::filesystem::create_directory(path_)) return;
    }
    throw std::runtime_error("cannot create a temporary directory");
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

inline std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

inline void put_be32(std::vector<uint8_t>* out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out->push_back(uint8_t(v >> s));
}

inline void png_chunk(std::vector<uint8_t>* out, const char* type, const std::vector<uint8_t>& data) {
  put_be32(out, uint32_t(data.size()));
  std::vector<uint8_t> td(type, type + 4);
  td.insert(td.end(), data.begin(), data.end());
  out->insert(out->end(), td.begin(), td.end());
  put_be32(out, uint32_t(crc32(0, td.data(), uInt(td.size()))));
}

// A non-interlaced PNG. `samples` holds width * height * channels values (row-major), each
// below 2^bit_depth; channels follows from color_type (0: 1, 2: 3, 3: 1, 4: 2, 6: 4).
inline std::vector<uint8_t> make_png(int width, int height, int bit_depth, int color_type,
                                     const std::vector<uint32_t>& samples, const std::vector<uint8_t>& plte = {},
                                     const std::vector<uint8_t>& trns = {}) {
  const int channels = color_type == 2 ? 3 : color_type == 4 ? 2 : color_type == 6 ? 4 : 1;
  std::vector<uint8_t> raw;
  for (int y = 0; y < height; ++y) {
    raw.push_back(0);  // filter: none
    const size_t row0 = size_t(y) * size_t(width) * size_t(channels);
    const size_t n = size_t(width) * size_t(channels);
    if (bit_depth >= 8) {
      for (size_t i = 0; i < n; ++i) {
        if (bit_depth == 16) raw.push_back(uint8_t(samples[row0 + i] >> 8));
        raw.push_back(uint8_t(samples[row0 + i]));
      }
    } else {
      uint32_t acc = 0;
      int filled = 0;
      for (size_t i = 0; i < n; ++i) {
        acc = (acc << bit_depth) | samples[row0 + i];
        filled += bit_depth;
        if (filled == 8) {
          raw.push_back(uint8_t(acc));
          acc = 0;
          filled = 0;
        }
      }
      if (filled) raw.push_back(uint8_t(acc << (8 - filled)));
    }
  }
  std::vector<uint8_t> z(compressBound(uLong(raw.size())));
  uLongf zlen = uLongf(z.size());
  if (compress(z.data(), &zlen, raw.data(), uLong(raw.size())) != Z_OK) throw std::runtime_error("zlib");
  z.resize(zlen);

  std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  std::vector<uint8_t> ihdr;
  put_be32(&ihdr, uint32_t(width));
  put_be32(&ihdr, uint32_t(height));
  ihdr.insert(ihdr.end(), {uint8_t(bit_depth), uint8_t(color_type), 0, 0, 0});
  png_chunk(&out, "IHDR", ihdr);
  if (!plte.empty()) png_chunk(&out, "PLTE", plte);
  if (!trns.empty()) png_chunk(&out, "tRNS", trns);
  png_chunk(&out, "IDAT", z);
  png_chunk(&out, "IEND", {});
  return out;
}

// JPEG-encodes interleaved pixels (components 1, 3 or 4; 4 is written as Adobe CMYK).
inline std::vector<uint8_t> make_jpeg(int width, int height, int components, const std::vector<uint8_t>& pixels,
                                      int quality = 90, bool progressive = false) {
  jpeg_compress_struct c{};
  jpeg_error_mgr err{};
  c.err = jpeg_std_error(&err);  // valid input only: the default error_exit is acceptable here
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long len = 0;
  jpeg_mem_dest(&c, &buf, &len);
  c.image_width = JDIMENSION(width);
  c.image_height = JDIMENSION(height);
  c.input_components = components;
  c.in_color_space = components == 1 ? JCS_GRAYSCALE : components == 3 ? JCS_RGB : JCS_CMYK;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, quality, TRUE);
  if (progressive) jpeg_simple_progression(&c);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(&pixels[size_t(c.next_scanline) * size_t(width) * size_t(components)]);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::vector<uint8_t> out(buf, buf + len);
  std::free(buf);
  return out;
}

// Smooth, image-like RGB content (JPEG-friendly), deterministic.
inline std::vector<uint8_t> smooth_rgb(int width, int height) {
  std::vector<uint8_t> p(size_t(width) * size_t(height) * 3);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c)
        p[(size_t(y) * size_t(width) + size_t(x)) * 3 + size_t(c)] = uint8_t((x * (3 + c) + y * (5 - c)) & 0xFF);
  return p;
}

}  // namespace vitq::testutil
