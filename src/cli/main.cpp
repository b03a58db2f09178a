// vitq: post-training quantization and integer inference for Vision Transformers.
#include <malloc.h>

#include <cstdio>
#include <exception>

#include "cli/app.h"
#include "core/error.h"

int main(int argc, char** argv) {
  // Calibration and batched inference allocate and free many multi-megabyte scratch buffers;
  // glibc's default would mmap/munmap each one and pay page faults on every reuse.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  std::unique_ptr<CLI::App> app = vitq::make_app();
  try {
    app->parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app->exit(e);
    return code == 0 ? 0 : static_cast<int>(vitq::ErrorKind::Usage);
  } catch (const vitq::Error& e) {
    std::fprintf(stderr, "vitq: error: %s\n", e.what());
    return e.exit_code();
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "vitq: error: out of memory (try a smaller --batch)\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vitq: internal error: %s\n", e.what());
    return 1;
  }
  return 0;
}
