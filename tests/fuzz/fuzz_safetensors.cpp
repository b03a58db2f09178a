// Fuzzes the safetensors reader: header, tensor table, offsets, dtypes, conversion to float32.
#include "fuzz_common.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vitq;
  const std::string path = fuzz::write_file("model.safetensors", {reinterpret_cast<const char*>(data), size});
  fuzz::expect_clean([&] {
    const SafeTensorsFile f = SafeTensorsFile::open(path);
    for (const std::string& name : f.names()) {
      const TensorInfo& t = f.info(name);
      const std::span<const uint8_t> b = f.bytes(name);
      if (b.size() != t.end - t.begin) std::abort();
      fuzz::expect_clean([&] { (void)f.to_f32(name); });  // non-float dtypes are an Error
    }
    (void)f.list_unused({});
  });
  return 0;
}
