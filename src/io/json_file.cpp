#include "io/json_file.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>

namespace vitq {

nlohmann::ordered_json read_json_file(const std::string& path, ErrorKind parse_error_kind) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail(ErrorKind::Io, path, ": cannot open (", std::strerror(errno), ")");
  if (S_ISDIR(st.st_mode)) fail(ErrorKind::Io, path, ": is a directory, expected a JSON file");
  if (!S_ISREG(st.st_mode)) fail(ErrorKind::Io, path, ": is not a regular file, expected a JSON file");
  if (uint64_t(st.st_size) > kMaxJsonFileBytes)
    fail(ErrorKind::Io, path, ": is ", st.st_size, " bytes; JSON files over ", kMaxJsonFileBytes >> 20,
         " MiB are refused");
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(ErrorKind::Io, path, ": cannot open (", std::strerror(errno), ")");
  try {
    return nlohmann::ordered_json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    if (f.bad()) fail(ErrorKind::Io, path, ": read failed");
    fail(parse_error_kind, path, ": not valid JSON: ", e.what());
  }
}

}  // namespace vitq
