// JSON files a user gives vitq (config.json, preprocessor_config.json, plan.json): read with
// the errors of the documented exit codes, never a library exception.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"

namespace vitq {

// Larger JSON files are refused before they are read (a plan of ViT-L with per-channel steps and
// bias corrections is a few MB).
inline constexpr uint64_t kMaxJsonFileBytes = uint64_t(64) << 20;

// Reads and parses `path`. A missing path, a directory, an unreadable file or one over
// kMaxJsonFileBytes is ErrorKind::Io (exit 5); text that is not JSON is `parse_error_kind`
// (ErrorKind::Model for configs and plans), naming the file and the parser's position.
nlohmann::ordered_json read_json_file(const std::string& path, ErrorKind parse_error_kind = ErrorKind::Model);

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
