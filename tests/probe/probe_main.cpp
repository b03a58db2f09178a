#include <cstdio>
#include <exception>

#include "core/error.h"
#include "probe.h"

int main(int argc, char** argv) {
  CLI::App app{"vitq_probe: dumps vitq intermediate results for the parity tests"};
  app.require_subcommand(1);
  vitq::probe::register_preprocess(app);
  vitq::probe::register_forward(app);
  vitq::probe::register_quant(app);
  vitq::probe::register_rotate(app);
  vitq::probe::register_recon(app);
  vitq::probe::register_synth(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const vitq::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
