// Turns the options every registered method declares (quant/method_options.h) into options of a
// CLI11 command, one help group per method. A flag two methods declare is one option that sets
// the value of both.
#pragma once
#include <CLI/CLI.hpp>

#include "quant/method.h"

namespace vitq {

void add_method_options(CLI::App* cmd, MethodConfig& cfg);

}  // namespace vitq
