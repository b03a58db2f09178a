// The vitq application: every subcommand on one CLI11 App. The `vitq` executable (main.cpp) and
// the Python module (src/python/) run the same App, so both accept the same options and give
// the same messages.
#pragma once
#include <CLI/CLI.hpp>

#include <memory>
#include <string>
#include <vector>

namespace vitq {

std::unique_ptr<CLI::App> make_app();

// Runs the App on `args` (without the program name), as `vitq args...` would, but returns
// nothing and prints no error: a bad command line is an Error(Usage) with CLI11's message;
// vitq::Error and other exceptions propagate.
void run_app(const std::vector<std::string>& args);

}  // namespace vitq
