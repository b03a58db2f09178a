// The hardware descriptions of the repository's targets/*.json, compiled in (CMake generates
// the definition from the files at configure time).
#pragma once
#include <vector>

namespace vitq {

struct BuiltinTarget {
  const char* name;  // the file's stem
  const char* json;  // its text
};

const std::vector<BuiltinTarget>& builtin_targets();

}  // namespace vitq
