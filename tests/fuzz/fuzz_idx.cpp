// Fuzzes the IDX (MNIST / Fashion-MNIST) reader, raw and gzip: images file, separator, labels
// file. Each part is gzip-named when it starts with gzip's magic bytes.
#include "data/dataset.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vitq;
  const auto parts = fuzz::split_files(data, size, 2);
  auto gz = [](std::string_view s) { return s.size() >= 2 && uint8_t(s[0]) == 0x1f && uint8_t(s[1]) == 0x8b; };
  for (const char* f : {"idx/t10k-images-idx3-ubyte", "idx/t10k-images-idx3-ubyte.gz", "idx/t10k-labels-idx1-ubyte",
                        "idx/t10k-labels-idx1-ubyte.gz"})
    fuzz::remove_file(f);
  const std::string images =
      fuzz::write_file(gz(parts[0]) ? "idx/t10k-images-idx3-ubyte.gz" : "idx/t10k-images-idx3-ubyte", parts[0]);
  if (parts.size() > 1)
    fuzz::write_file(gz(parts[1]) ? "idx/t10k-labels-idx1-ubyte.gz" : "idx/t10k-labels-idx1-ubyte", parts[1]);
  fuzz::expect_clean([&] {
    const auto ds = open_dataset(images);
    Preprocess p;
    p.channels = 1;
    p.height = p.width = 8;
    p.interp = Interp::Bilinear;
    p.crop_pct = 1.0;
    std::vector<float> out(64);
    for (size_t i = 0; i < std::min<size_t>(ds->size(), 3); ++i) {
      ds->load(i, p, out.data());
      (void)ds->label(i);
      (void)ds->name(i);
    }
    (void)ds->describe();
  });
  return 0;
}
