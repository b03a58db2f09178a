// Fuzzes image decoding (JPEG, PNG: 8/16-bit, grey, alpha, palette) and the preprocessing of
// whatever decodes (resize with PIL's filters, centre crop, normalisation), at any size the
// decoders accept: the preprocessing resamples only the crop window, so a few hundred bytes of
// JPEG declaring 57591 x 254 (or 13 x 57867) pixels cost the decode and the crop, not a resize
// of the whole image (both were libFuzzer timeouts before that; see docs/FORMAT.md "Fuzzing").
#include "data/image.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vitq;
  fuzz::expect_clean([&] {
    const Image img = decode_image_memory(data, size, "fuzz-input");
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
