// Fuzzes image decoding (JPEG, PNG: 8/16-bit, grey, alpha, palette) and the preprocessing of
// whatever decodes (resize with PIL's filters, centre crop, normalisation). Images above
// kMaxPreprocessPixels are decoded but not resized: a few hundred bytes of JPEG can declare
// 57591 x 254 pixels, whose resize takes 0.5 s in a release build but over 25 s under the
// sanitizers' and the fuzzer's instrumentation, and the resize's arithmetic does not depend on
// the size beyond that (tests/parity/test_preprocess.py compares it with PIL on synthetic images
// and a sample of the shared photographs).
#include "data/image.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vitq;
  fuzz::expect_clean([&] {
    const Image img = decode_image_memory(data, size, "fuzz-input");
    constexpr int64_t kMaxPreprocessPixels = int64_t(1) << 20;
    if (int64_t(img.width) * img.height > kMaxPreprocessPixels) return;
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
