// JPEG decoding with libjpeg-turbo, matching PIL's Image.open(p).convert("RGB").
//
// Debian's PIL links the same libjpeg-turbo and decodes with the library defaults (ISLOW IDCT,
// fancy upsampling, out_color_space RGB for 3 components, grey for 1, CMYK for 4), so using
// the same defaults gives the same pixels. CMYK/YCCK files: PIL asks libjpeg for CMYK, assumes
// Adobe's inverted convention ("CMYK;I": every sample is 255 - v) and converts to RGB with
//   nk = 255 - k;  channel = clip(nk - muldiv255(c, nk)),  muldiv255(a, b) = (t + (t >> 8)) >> 8
// with t = a * b + 128, which this file reproduces.
//
// Error handling: libjpeg reports fatal errors through error_exit, which must not return.
// Throwing a C++ exception through libjpeg's C frames is undefined, so error_exit longjmps
// back to run_libjpeg(), whose frame holds only trivially destructible locals, and the caller
// turns the stored message into an Error. Warnings (recoverable corrupt data) are ignored as
// PIL ignores them, except "premature end of JPEG file": PIL refuses truncated files.

// jpeglib.h needs size_t and FILE declared before it, and jerror.h needs jpeglib.h.
#include <csetjmp>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <vector>

#include <jpeglib.h>
#include <jerror.h>

#include "core/error.h"
#include "data/decode_internal.h"

namespace vitq::detail {
namespace {

struct ErrorManager {
  jpeg_error_mgr pub;  // first member: libjpeg only sees this part
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

extern "C" void on_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

extern "C" void on_emit_message(j_common_ptr cinfo, int msg_level) {
  // msg_level -1 is a warning; >= 0 are trace messages. libjpeg's memory source reports
  // running out of data as the warning JWRN_JPEG_EOF and then pads with a fake EOI.
  if (msg_level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
    auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
    std::snprintf(err->message, sizeof err->message, "file is truncated (premature end of JPEG data)");
    std::longjmp(err->jump, 1);
  }
}

extern "C" void on_output_message(j_common_ptr) {}  // never print to stderr

// The decoder state, owned by decode_jpeg() so that it is destroyed however decoding ends.
struct Session {
  jpeg_decompress_struct cinfo{};
  ErrorManager err{};
  bool created = false;
  Session() = default;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

struct Decoded {
  int width = 0, height = 0, components = 0;
  std::vector<uint8_t> pixels;  // interleaved, `components` samples per pixel
};

// Runs libjpeg. Returns false (message in s->err.message) if libjpeg failed. May throw Error
// for checks done here, never from inside a libjpeg callback. No local in this frame has a
// destructor, and none is read after longjmp, as setjmp requires.
bool run_libjpeg(Session* s, const uint8_t* data, size_t size, const std::string& name, Decoded* out) {
  s->cinfo.err = jpeg_std_error(&s->err.pub);
  s->err.pub.error_exit = on_error_exit;
  s->err.pub.emit_message = on_emit_message;
  s->err.pub.output_message = on_output_message;
  if (setjmp(s->err.jump)) return false;

  // Marked before the call: jpeg_destroy of a zeroed or half-created struct is harmless.
  s->created = true;
  jpeg_create_decompress(&s->cinfo);
  jpeg_mem_src(&s->cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&s->cinfo, TRUE);

  jpeg_decompress_struct& c = s->cinfo;
  switch (c.num_components) {
    case 1: c.out_color_space = JCS_GRAYSCALE; break;
    case 3: c.out_color_space = JCS_RGB; break;
    case 4: c.out_color_space = JCS_CMYK; break;
    default: fail(ErrorKind::Data, name, ": cannot handle a JPEG with ", c.num_components, " components");
  }
  check_image_size(c.image_width, c.image_height, name);
  jpeg_start_decompress(&c);

  out->width = static_cast<int>(c.output_width);
  out->height = static_cast<int>(c.output_height);
  out->components = c.output_components;
  const size_t stride = size_t(out->width) * size_t(out->components);
  out->pixels.resize(stride * size_t(out->height));
  while (c.output_scanline < c.output_height) {
    JSAMPROW row = out->pixels.data() + size_t(c.output_scanline) * stride;
    jpeg_read_scanlines(&c, &row, 1);
  }
  jpeg_finish_decompress(&c);
  return true;
}

uint8_t clip8(int v) { return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v)); }

// PIL's MULDIV255: a * b / 255, rounded, in integers.
int muldiv255(int a, int b) {
  int t = a * b + 128;
  return (t + (t >> 8)) >> 8;
}

}  // namespace

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name) {
  Session session;
  Decoded d;
  if (!run_libjpeg(&session, data, size, name, &d))
    fail(ErrorKind::Data, name, ": invalid JPEG: ", session.err.message);

  if (d.components == 3) return Image{d.width, d.height, 3, std::move(d.pixels)};
  if (d.components == 1) return gray_to_rgb(Image{d.width, d.height, 1, std::move(d.pixels)});
  // 4: Adobe-inverted CMYK, as PIL assumes
  Image img = Image::blank(d.width, d.height, 3);
  const size_t n = img.area();
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = &d.pixels[i * 4];
    const int nk = p[3];  // 255 - (255 - stored k)
    for (int ch = 0; ch < 3; ++ch) img.pixels[i * 3 + size_t(ch)] = clip8(nk - muldiv255(255 - p[ch], nk));
  }
  return img;
}

}  // namespace vitq::detail
