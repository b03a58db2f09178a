// Fuzzes config.json -> ViTConfig (timm and Hugging Face layouts; the HF preprocessor file too).
#include "fuzz_common.h"
#include "model/vit_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vitq;
  const auto parts = fuzz::split_files(data, size, 2);
  fuzz::write_file("config/config.json", parts[0]);
  if (parts.size() > 1) fuzz::write_file("config/preprocessor_config.json", parts[1]);
  else fuzz::remove_file("config/preprocessor_config.json");
  fuzz::expect_clean([&] {
    const ViTConfig c = load_vit_config((fuzz::scratch_dir() / "config").string());
    // A config that loads must describe a buildable model.
    if (c.embed_dim <= 0 || c.num_heads <= 0 || c.embed_dim % c.num_heads != 0 || c.depth <= 0 ||
        c.patch_size <= 0 || c.img_size % c.patch_size != 0 || c.num_classes <= 0)
      std::abort();
  });
  return 0;
}
