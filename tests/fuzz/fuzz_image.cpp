// Fuzzes image decoding (JPEG, PNG: 8/16-bit, grey, alpha, palette) and the preprocessing of
// whatever decodes (resize with PIL's filters, centre crop, normalisation), at any size the
// decoders accept: the preprocessing resamples only the crop window, so a few hundred bytes of
// JPEG declaring 57591 x 254 (or 13 x 57867) pixels cost the decode and the crop, not a resize
// of the whole image (both were libFuzzer timeouts before that; see docs/FORMAT.md "Fuzzing").
// Images over kMaxPreprocessPixels are decoded but not preprocessed: PIL's filters cost about
// 4·scale taps per output pixel over every row of the window, so a 16973 x 8203 grey JPEG (139 MP,
// under the decoder's 179 MP limit) took 1 s to decode and preprocess in the release build but
// over 25 s under the sanitizers (a libFuzzer timeout, 2026-12-07; decoding alone: 6 s there).
// The resize itself is checked against PIL in test_preprocess.py.
#include "data/image.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vitq;
  fuzz::expect_clean([&] {
    const Image img = decode_image_memory(data, size, "fuzz-input");
    constexpr uint64_t kMaxPreprocessPixels = 16'000'000;
    if (uint64_t(img.width) * uint64_t(img.height) > kMaxPreprocessPixels) return;
    for (const Interp interp : {Interp::Bicubic, Interp::Bilinear}) {
      Preprocess p;
      p.height = p.width = 16;
      p.interp = interp;
      p.channels = interp == Interp::Bicubic ? 3 : 1;
      std::vector<float> out(size_t(p.channels) * 16 * 16);
      preprocess(img, p, out.data());
    }
  });
  return 0;
}
