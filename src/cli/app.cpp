#include "cli/app.h"

#include <omp.h>
#include <sys/resource.h>

#include "cli/commands.h"
#include "cli/validators.h"
#include "core/error.h"

namespace vitq {

void set_threads(int threads) {
  if (threads < 0) fail(ErrorKind::Usage, "--threads must be >= 0 (0 = all cores)");
  omp_set_num_threads(threads > 0 ? threads : omp_get_num_procs());
}

double peak_rss_mb() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

void add_allow_non_finite_flag(CLI::App* c, bool& flag) {
  c->add_flag("--allow-non-finite", flag,
              "Load a checkpoint whose weights hold NaN or Inf (default: exit 3 naming the tensor). Images whose "
              "logits are then non-finite count as wrong");
}

std::unique_ptr<CLI::App> make_app() {
  auto app = std::make_unique<CLI::App>("vitq " VITQ_VERSION
                                        ": evaluate, quantize and run Vision Transformers (timm / Hugging Face "
                                        "checkpoints)");
  app->set_version_flag("--version", "vitq " VITQ_VERSION);
  app->require_subcommand(1);
  app->footer(
      "Exit codes: 0 success, 1 internal error, 2 bad command line, 3 invalid model/config/plan file,\n"
      "4 invalid dataset or image, 5 file cannot be read or written.\n"
      "Run 'vitq COMMAND --help' for the options of a command.");
  add_quantize_command(*app);
  add_export_command(*app);
  add_synth_command(*app);
  add_eval_command(*app);
  add_info_command(*app);
  add_bench_command(*app);
  opt::require_finite_reals(*app);
  return app;
}

void run_app(const std::vector<std::string>& args) {
  std::unique_ptr<CLI::App> app = make_app();
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them last first
  try {
    app->parse(reversed);
  } catch (const CLI::ParseError& e) {
    fail(ErrorKind::Usage, e.what());
  }
}

}  // namespace vitq
