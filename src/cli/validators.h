// Range checks of numeric command-line options, run on the option's text before CLI11 converts
// it. A value outside the range, NaN, an infinity, or an integer that does not fit is a usage
// error (exit 2) that names the option. main.cpp gives every floating-point option of every
// command finite(), so no option lets NaN or Inf through, ranged or not.
#pragma once
#include <CLI/CLI.hpp>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <string>

#include "core/error.h"

namespace vitq::opt {

// The largest --batch (images per forward) and --threads any command accepts.
inline constexpr long long kMaxBatch = 1024, kMaxThreads = 1024;

namespace detail {
inline bool parse_real(const std::string& s, double* v) {
  if (s.empty()) return false;
  char* end = nullptr;
  *v = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size();  // ERANGE (1e400 -> inf, 1e-400 -> 0) is judged by the range
}
inline bool parse_integer(const std::string& s, long long* v) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  *v = std::strtoll(s.c_str(), &end, 10);
  return end == s.c_str() + s.size() && errno != ERANGE;
}
}  // namespace detail

// A finite number (not NaN, not ±Inf, not a decimal that overflows to Inf).
inline CLI::Validator finite() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        double v = 0;
        if (!detail::parse_real(s, &v)) return cat("'", s, "' is not a number");
        if (!std::isfinite(v)) return cat("must be a finite number (got ", s, ")");
        return {};
      },
      "", "finite");
}

// A number in [lo, hi], or in (lo, hi] with lo_open.
inline CLI::Validator real(double lo, double hi, bool lo_open = false) {
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        double v = 0;
        if (!detail::parse_real(s, &v)) return cat("'", s, "' is not a number");
        const bool ok = std::isfinite(v) && (lo_open ? v > lo : v >= lo) && v <= hi;
        if (!ok) return cat("must be a number in ", lo_open ? "(" : "[", lo, ", ", hi, "] (got ", s, ")");
        return {};
      },
      cat("in ", lo_open ? "(" : "[", lo, ", ", hi, "]"), "real range");
}

// An integer in [lo, hi] (decimal; out-of-range text such as 2147483648 or -1 for a count is refused
// here, with the range in the message, before any conversion can wrap it).
inline CLI::Validator integer(long long lo, long long hi) {
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        long long v = 0;
        if (!detail::parse_integer(s, &v) || v < lo || v > hi)
          return cat("must be an integer in [", lo, ", ", hi, "] (got ", s, ")");
        return {};
      },
      cat("in [", lo, ", ", hi, "]"), "integer range");
}

// A 64-bit unsigned decimal integer (a seed): 99999999999999999999 or -1 is refused, not wrapped.
inline CLI::Validator seed() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        char* end = nullptr;
        errno = 0;
        if (s.empty() || s[0] == '-' || (std::strtoull(s.c_str(), &end, 10), end != s.c_str() + s.size()) ||
            errno == ERANGE)
          return cat("must be an integer in [0, 2^64 - 1] (got ", s, ")");
        return {};
      },
      "", "seed");
}

// Adds finite() to every floating-point option (CLI11 type name FLOAT) of `app` and its
// subcommands, so an option added later cannot forget it.
inline void require_finite_reals(CLI::App& app) {
  for (CLI::Option* o : app.get_options())
    if (o->get_type_name().rfind("FLOAT", 0) == 0) o->check(finite());
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) require_finite_reals(*sub);
}

}  // namespace vitq::opt
