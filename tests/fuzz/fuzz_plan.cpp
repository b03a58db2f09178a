// Fuzzes plan.json (+ plan_codes.safetensors, + the QwT compensation file) -> QuantPlan, then
// its validation against the bundled model's config. Input: plan, separator, codes, separator,
// compensation.
#include "fuzz_common.h"
#include "model/vit_config.h"
#include "quant/plan.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vitq;
  static const ViTConfig cfg = load_vit_config(VITQ_SOURCE_DIR "/models/vit_fmnist_patch4_28");
  const auto parts = fuzz::split_files(data, size, 3);
  const std::string path = fuzz::write_file("plan/plan.json", parts[0]);
  const std::string names[] = {plan_codes_file_name(path), plan_compensation_file_name(path)};
  for (size_t i = 0; i < 2; ++i) {
    const std::string rel = "plan/" + std::filesystem::path(names[i]).filename().string();
    if (parts.size() > i + 1) fuzz::write_file(rel, parts[i + 1]);
    else fuzz::remove_file(rel);
  }
  fuzz::expect_clean([&] {
    const QuantPlan plan = load_plan(path);
    check_plan_matches(plan, cfg, path);
  });
  return 0;
}
