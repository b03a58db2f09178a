#include "io/json_file.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include "core/limits.h"

namespace vitq {

nlohmann::ordered_json read_json_file(const std::string& path, ErrorKind parse_error_kind) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail(ErrorKind::Io, path, ": cannot open (", std::strerror(errno), ")");
  if (S_ISDIR(st.st_mode)) fail(ErrorKind::Io, path, ": is a directory, expected a JSON file");
  if (!S_ISREG(st.st_mode)) fail(ErrorKind::Io, path, ": is not a regular file, expected a JSON file");
  if (uint64_t(st.st_size) > limits::kMaxJsonFileBytes)
    fail(ErrorKind::Io, path, ": is ", st.st_size, " bytes; JSON files over ", limits::kMaxJsonFileBytes >> 20,
         " MiB are refused");
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(ErrorKind::Io, path, ": cannot open (", std::strerror(errno), ")");
  std::string text(static_cast<size_t>(st.st_size), '\0');
  if (!f.read(text.data(), std::streamsize(text.size())) || f.gcount() != std::streamsize(text.size()))
    fail(ErrorKind::Io, path, ": read failed (", text.size(), " bytes expected)");
  // nlohmann's lexer takes a NUL byte for the end of the input, so "{...}\0garbage" would parse
  // as its prefix; JSON text never contains one.
  if (const size_t nul = text.find('\0'); nul != std::string::npos)
    fail(parse_error_kind, path, ": not valid JSON: NUL byte at offset ", nul);
  try {
    return nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(parse_error_kind, path, ": not valid JSON: ", e.what());
  }
}

}  // namespace vitq
