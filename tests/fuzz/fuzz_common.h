// Shared by the libFuzzer harnesses (tests/fuzz/fuzz_*.cpp, built with -DVITQ_FUZZ=ON and clang).
//
// The contract every harness checks: a parser given any bytes either returns or throws
// vitq::Error with a message. Anything else - another exception type escaping, a crash, an
// AddressSanitizer or UndefinedBehaviorSanitizer report, an allocation above libFuzzer's
// -malloc_limit_mb, a leak - is a bug libFuzzer reports.
//
// vitq's readers take paths (files are memory-mapped or streamed), so the input is written to
// files in a private temporary directory first. Harnesses that read several files (a model
// directory: config.json and model.safetensors) split the input at kFileSeparator; the seed
// corpus (tests/fuzz/make_corpus.py) is written in that form.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace vitq::fuzz {

inline constexpr std::string_view kFileSeparator = "\n--vitq-fuzz-next-file--\n";

// The process's scratch directory (created once, removed at exit).
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/vitq-fuzz-XXXXXX";
    if (!mkdtemp(templ.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    static const std::string keep = templ;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(keep, ec);
    });
    return std::filesystem::path(templ);
  }();
  return dir;
}

// Writes bytes to scratch_dir()/name (replacing it) and returns the path.
inline std::string write_file(const std::string& name, std::string_view bytes) {
  const std::filesystem::path p = scratch_dir() / name;
  std::filesystem::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  if (!f) {
    std::perror("write_file");
    std::abort();
  }
  return p.string();
}

// Removes scratch_dir()/name if present (a file the previous input wrote and this one does not).
inline void remove_file(const std::string& name) {
  std::error_code ec;
  std::filesystem::remove(scratch_dir() / name, ec);
}

// The input cut at kFileSeparator into at most `parts` pieces (the last one keeps the rest).
inline std::vector<std::string_view> split_files(const uint8_t* data, size_t size, size_t parts) {
  std::string_view s(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> out;
  while (out.size() + 1 < parts) {
    const size_t at = s.find(kFileSeparator);
    if (at == std::string_view::npos) break;
    out.push_back(s.substr(0, at));
    s.remove_prefix(at + kFileSeparator.size());
  }
  out.push_back(s);
  return out;
}

// Runs f; vitq::Error (the expected way to reject an input) must carry a message.
template <class F>
void expect_clean(F&& f) {
  try {
    f();
  } catch (const vitq::Error& e) {
    if (std::string_view(e.what()).empty()) {
      std::fprintf(stderr, "vitq::Error without a message\n");
      std::abort();
    }
  }
}

}  // namespace vitq::fuzz
