// Fuzzes the checkpoint loader: config.json and model.safetensors read against each other
// (names, shapes, dtypes, non-finite values). Input: config, separator, safetensors.
#include "fuzz_common.h"
#include "model/vit_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vitq;
  const auto parts = fuzz::split_files(data, size, 2);
  fuzz::write_file("model/config.json", parts[0]);
  fuzz::write_file("model/model.safetensors", parts.size() > 1 ? parts[1] : std::string_view{});
  fuzz::expect_clean([&] { (void)load_vit_model((fuzz::scratch_dir() / "model").string()); });
  return 0;
}
