// Fuzzes the quantized model directory reader: config.json (with its "vitq" section), plan.json
// and model.safetensors (packed codes, steps, bit unpacking), checked against each other.
// Input: config, separator, plan, separator, safetensors.
#include "fuzz_common.h"
#include "runtime/quantized_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vitq;
  const auto parts = fuzz::split_files(data, size, 3);
  const char* names[] = {"qmodel/config.json", "qmodel/plan.json", "qmodel/model.safetensors"};
  for (size_t i = 0; i < 3; ++i) {
    if (i < parts.size()) fuzz::write_file(names[i], parts[i]);
    else fuzz::remove_file(names[i]);
  }
  const std::string dir = (fuzz::scratch_dir() / "qmodel").string();
  fuzz::expect_clean([&] {
    if (!is_quantized_model_dir(dir)) return;
    const QuantizedViT q = load_quantized_model(dir);
    (void)simulation_plan(q);
  });
  return 0;
}
