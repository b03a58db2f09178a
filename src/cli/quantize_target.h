// `vitq quantize --target`: the hardware description (quant/target.h) shapes the method's
// recipe, bounds the bit-widths, refuses the command-line options it cannot run before any
// calibration, and checks the finished plan before anything is written.
#pragma once
#include <string>
#include <vector>

#include "quant/calibrate.h"
#include "quant/target.h"

namespace vitq {

// The method's recipe without what the target cannot run (the driver's default then stays);
// `dropped` gets what was left out, comma-separated.
Recipe recipe_for_target(Recipe r, const Target& t, std::string& dropped);

// The driver options and bit-widths of a run, against the target: a usage error naming the
// option and what the target lacks. mp_candidates: the mixed-precision candidates (empty: none).
void check_options_for_target(const CalibOptions& opt, int wbits, int abits, const std::vector<int>& mp_candidates,
                              const Target& t);

// The finished plan against the target: a usage error listing what it cannot run, with the
// method option that leads there where one does.
void check_plan_for_target(const QuantPlan& plan, const Target& t);
// --gelu-table / --softmax-table BITS (0 = off): refused (ErrorKind::Usage) if the target runs no
// such table.
void check_tables_for_target(int gelu_bits, int softmax_bits, const Target& t);

}  // namespace vitq
