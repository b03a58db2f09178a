// JSON files a user gives vitq (config.json, preprocessor_config.json, plan.json): read with
// the errors of the documented exit codes, never a library exception.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"

namespace vitq {

// Reads and parses `path`. A missing path, a directory, an unreadable file or one over
// limits::kMaxJsonFileBytes (core/limits.h) is ErrorKind::Io (exit 5); text that is not JSON is `parse_error_kind`
// (ErrorKind::Model for configs and plans), naming the file and the parser's position.
nlohmann::ordered_json read_json_file(const std::string& path, ErrorKind parse_error_kind = ErrorKind::Model);

// True, with *out set, if v is a JSON integer in [lo, hi] — compared before any narrowing
// conversion, so 4294967304 is out of range for an int field instead of being read as 8.
template <class Int>
bool json_int_in(const nlohmann::ordered_json& v, long long lo, long long hi, Int* out) {
  if (!v.is_number_integer()) return false;
  if (v.is_number_unsigned() && v.get<unsigned long long>() > static_cast<unsigned long long>(hi)) return false;
  const long long x = v.get<long long>();
  if (x < lo || x > hi) return false;
  *out = static_cast<Int>(x);
  return true;
}

// Runs `f` (code that reads fields of a JSON document) and turns any nlohmann exception that
// escapes it — a field of the wrong type that no explicit check caught — into
// Error(ErrorKind::Model) naming `path`. Explicit checks give the better message; this is the net.
template <class F>
auto with_json_errors(const std::string& path, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::Model, path, ": a field has the wrong type or value (", e.what(), ")");
  }
}

}  // namespace vitq
