// Fuzzes the class map reader (one folder name per line).
#include "data/dataset_internal.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vitq;
  const std::string path = fuzz::write_file("class_map.txt", {reinterpret_cast<const char*>(data), size});
  fuzz::expect_clean([&] {
    const detail::ClassMap m = detail::read_class_map(path);
    if (m.num_classes() <= 0) std::abort();
  });
  return 0;
}
