// Turns the options every registered method declares (quant/method_options.h) into options of a
// CLI11 command, one help group per method. A flag two methods declare is one option that sets
// the value of both.
#pragma once
#include <CLI/CLI.hpp>
#include <set>
#include <string>
#include <vector>

#include "quant/method.h"

namespace vitq {

// The method options added to a command, to tell after parsing which of those given have no
// effect on the chosen method.
class MethodOptionFlags {
 public:
  // The flags given on the command line that no method in `used` declares.
  std::vector<std::string> given_but_unused(const std::set<std::string>& used) const;
  // Prints a warning to stderr for each (the run goes on: the option is harmless, but the user
  // probably meant another method or a misspelt flag's neighbour).
  void warn_unused(const std::string& method, const MethodConfig& cfg) const;

 private:
  friend MethodOptionFlags add_method_options(CLI::App* cmd, MethodConfig& cfg);
  struct Entry {
    CLI::Option* option;
    std::vector<std::string> methods;
  };
  std::vector<Entry> entries_;
};

MethodOptionFlags add_method_options(CLI::App* cmd, MethodConfig& cfg);

}  // namespace vitq
