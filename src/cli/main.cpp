// vitq: post-training quantization and integer inference for Vision Transformers.
#include <malloc.h>
#include <omp.h>

#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "cli/validators.h"
#include "core/error.h"

namespace vitq {

void set_threads(int threads) {
  if (threads < 0) fail(ErrorKind::Usage, "--threads must be >= 0 (0 = all cores)");
  omp_set_num_threads(threads > 0 ? threads : omp_get_num_procs());
}

void add_allow_non_finite_flag(CLI::App* c, bool& flag) {
  c->add_flag("--allow-non-finite", flag,
              "Load a checkpoint whose weights hold NaN or Inf (default: exit 3 naming the tensor). Images whose "
              "logits are then non-finite count as wrong");
}

}  // namespace vitq

int main(int argc, char** argv) {
  // Calibration and batched inference allocate and free many multi-megabyte scratch buffers;
  // glibc's default would mmap/munmap each one and pay page faults on every reuse.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  CLI::App app{"vitq " VITQ_VERSION
               ": evaluate, quantize and run Vision Transformers (timm / Hugging Face checkpoints)"};
  app.set_version_flag("--version", "vitq " VITQ_VERSION);
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 success, 1 internal error, 2 bad command line, 3 invalid model/config/plan file,\n"
      "4 invalid dataset or image, 5 file cannot be read or written.\n"
      "Run 'vitq COMMAND --help' for the options of a command.");
  vitq::add_quantize_command(app);
  vitq::add_export_command(app);
  vitq::add_eval_command(app);
  vitq::add_info_command(app);
  vitq::add_bench_command(app);
  vitq::opt::require_finite_reals(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
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
