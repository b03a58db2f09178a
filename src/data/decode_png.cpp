// PNG decoding with libpng, matching PIL's Image.open(p).convert("RGB") (PIL has its own PNG
// reader; these are the facts of its behaviour, checked by tests/parity/test_preprocess.py):
//  - grey 1/2/4-bit: scaled to 0..255 (x255, x85, x17); 8-bit as is; grey is replicated.
//  - palette: expanded through PLTE; an index past the PLTE entries reads as PIL's default
//    palette, the grey ramp (i, i, i). tRNS is ignored (convert("RGB") drops transparency).
//  - alpha (grey+alpha, RGBA): dropped, without compositing.
//  - 16-bit RGB, RGBA and grey+alpha: PIL keeps the high byte of each sample (raw modes
//    "RGB;16B", "RGBA;16B", "LA;16B"), which png_set_strip_16 also does.
//  - 16-bit grey: PIL opens it as mode "I" (values 0..65535) and convert("RGB") clips each
//    value at 255, so everything from 1/256 of full scale up becomes white. That destroys the
//    image, so vitq does NOT match it: 16-bit grey also keeps its high byte, consistently with
//    the other 16-bit types (a deliberate, tested difference from PIL).
//  - gAMA, sBIT, bKGD, iCCP: ignored by both.
//  - A bad CRC in a chunk before the image data is an error (PIL: "broken PNG file"); chunks
//    after the image data are not read, as PIL tolerates a missing IEND.
//
// Error handling: libpng reports errors through a callback that must not return; it longjmps
// to the setjmp in run_libpng(), whose frame holds only trivially destructible locals.
#include <png.h>

#include <cctype>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "data/decode_internal.h"

namespace vitq::detail {
namespace {

// libpng's own bound on a side (its default, PNG_USER_WIDTH_MAX); the area is bounded by
// limits::kMaxImagePixels.
constexpr png_uint_32 kMaxPngSide = 1000000;

uint32_t read_be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

// Checks, before libpng sees the file, what would make it allocate in proportion to a
// declared rather than an actual size: the image size in IHDR (which must be the first chunk;
// libpng checks the rest of it), and the length of every chunk before the first IDAT, which
// must fit in the file and, for chunks libpng buffers whole, in limits::kMaxPngChunkBytes
// (libpng's own chunk_malloc_max does not cover all of them: an sPLT chunk declaring 2 GB is
// allocated before its data is found missing). The signature is checked by the caller.
void check_chunks(const uint8_t* data, size_t size, const std::string& name) {
  if (size >= 24 && std::memcmp(data + 12, "IHDR", 4) == 0)
    check_image_size(read_be32(data + 16), read_be32(data + 20), name);
  size_t pos = 8;
  while (size - pos >= 8) {
    const uint64_t length = read_be32(data + pos);
    char type[5] = {};
    std::memcpy(type, data + pos + 4, 4);
    for (char& ch : type)
      if (ch && !std::isalpha(static_cast<unsigned char>(ch))) ch = '?';
    if (std::memcmp(type, "IDAT", 4) == 0) return;  // read by libpng as a stream
    if (std::memcmp(type, "IEND", 4) == 0) return;
    if (length > limits::kMaxPngChunkBytes)
      fail(ErrorKind::Data, name, ": invalid PNG: chunk ", type, " at offset ", pos, " declares ", length,
           " bytes, above the limit of ", limits::kMaxPngChunkBytes, " bytes for a chunk other than IDAT");
    if (length + 12 > size - pos)
      fail(ErrorKind::Data, name, ": invalid PNG: file is truncated inside chunk ", type, " at offset ", pos,
           " (it declares ", length, " bytes, the file has ", size - pos - 8, " after its header)");
    pos += size_t(length) + 12;
  }
}

struct Reader {
  const uint8_t* data;
  size_t size;
  size_t pos;
  char message[256];
};

extern "C" void on_png_error(png_structp png, png_const_charp msg) {
  auto* r = static_cast<Reader*>(png_get_error_ptr(png));
  std::snprintf(r->message, sizeof r->message, "%s", msg);
  png_longjmp(png, 1);  // to the setjmp(png_jmpbuf(png)) in run_libpng
}

extern "C" void on_png_warning(png_structp, png_const_charp) {}  // PIL ignores them too

extern "C" void on_png_read(png_structp png, png_bytep out, size_t n) {
  auto* r = static_cast<Reader*>(png_get_io_ptr(png));
  if (n > r->size - r->pos) png_error(png, "file is truncated");
  std::memcpy(out, r->data + r->pos, n);
  r->pos += n;
}

struct Session {
  png_structp png = nullptr;
  png_infop info = nullptr;
  Session() = default;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session() {
    if (png) png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
  }
};

struct Decoded {
  int width = 0, height = 0, channels = 0;  // channels: 1 (grey or palette index) or 3
  bool palette = false;
  std::vector<uint8_t> pixels;
  std::vector<png_bytep> rows;
  uint8_t lut[256 * 3];  // palette -> RGB, PIL's grey ramp past the PLTE entries
};

// Runs libpng; returns false (message in r->message) if libpng failed. Throws Error only for
// checks done in this frame, never from a libpng callback. See the file comment on setjmp.
bool run_libpng(Session* s, Reader* r, const std::string& name, Decoded* out) {
  s->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, r, on_png_error, on_png_warning);
  if (!s->png) {
    std::snprintf(r->message, sizeof r->message, "libpng could not be initialised");
    return false;
  }
  s->info = png_create_info_struct(s->png);
  if (!s->info) {
    std::snprintf(r->message, sizeof r->message, "libpng could not be initialised");
    return false;
  }
  if (setjmp(png_jmpbuf(s->png))) return false;

  png_structp png = s->png;
  png_set_read_fn(png, r, on_png_read);
  png_set_crc_action(png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
  // Resource limits (src/core/limits.h): a chunk other than IDAT declaring more than
  // kMaxPngChunkBytes is an error as soon as its header is read; decompressed zTXt/iTXt/iCCP
  // data is limited likewise; at most kMaxPngChunkCount ancillary chunks are kept. Text chunks
  // are not used (PIL keeps them as metadata only) and are skipped without being buffered.
  png_set_user_limits(png, kMaxPngSide, kMaxPngSide);
  png_set_chunk_malloc_max(png, limits::kMaxPngChunkBytes);
  png_set_chunk_cache_max(png, limits::kMaxPngChunkCount);
  static const png_byte kTextChunks[] = "tEXt\0zTXt\0iTXt";
  png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, kTextChunks, 3);
  png_read_info(png, s->info);

  const png_uint_32 width = png_get_image_width(png, s->info);
  const png_uint_32 height = png_get_image_height(png, s->info);
  const int bit_depth = png_get_bit_depth(png, s->info);
  const int color_type = png_get_color_type(png, s->info);
  check_image_size(width, height, name);

  if (bit_depth == 16) png_set_strip_16(png);  // keeps the high byte
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    if (bit_depth < 8) png_set_packing(png);  // one index per byte, unscaled
    for (int i = 0; i < 256; ++i) std::memset(&out->lut[i * 3], i, 3);
    png_colorp plte = nullptr;
    int n = 0;
    if (png_get_PLTE(png, s->info, &plte, &n) == 0) png_error(png, "palette image without PLTE");
    for (int i = 0; i < n && i < 256; ++i) {
      out->lut[i * 3 + 0] = plte[i].red;
      out->lut[i * 3 + 1] = plte[i].green;
      out->lut[i * 3 + 2] = plte[i].blue;
    }
    out->palette = true;
  }
  if (color_type & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, s->info);

  out->width = static_cast<int>(width);
  out->height = static_cast<int>(height);
  out->channels = png_get_channels(png, s->info);
  const size_t stride = size_t(width) * size_t(out->channels);
  if ((out->channels != 1 && out->channels != 3) || png_get_rowbytes(png, s->info) != stride)
    png_error(png, "unexpected row layout after transformations");
  out->pixels.resize(stride * height);
  out->rows.resize(height);
  for (size_t y = 0; y < height; ++y) out->rows[y] = out->pixels.data() + y * stride;
  png_read_image(png, out->rows.data());
  return true;
}

}  // namespace

Image decode_png(const uint8_t* data, size_t size, const std::string& name) {
  check_chunks(data, size, name);
  Reader reader{data, size, 0, {}};
  Session session;
  Decoded d;
  if (!run_libpng(&session, &reader, name, &d)) fail(ErrorKind::Data, name, ": invalid PNG: ", reader.message);

  if (d.channels == 3) return Image{d.width, d.height, 3, std::move(d.pixels)};
  if (!d.palette) return gray_to_rgb(Image{d.width, d.height, 1, std::move(d.pixels)});
  Image img = Image::blank(d.width, d.height, 3);
  const size_t n = img.area();
  for (size_t i = 0; i < n; ++i) std::memcpy(&img.pixels[i * 3], &d.lut[d.pixels[i] * 3], 3);
  return img;
}

}  // namespace vitq::detail
