// Errors that reach the user: each carries a category (mapped to the process exit code)
// and a message that names the file, the field and what is wrong.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace vitq {

enum class ErrorKind {
  Usage = 2,     // bad command line
  Model = 3,     // model, checkpoint, config or plan file invalid
  Data = 4,      // dataset or image invalid
  Io = 5,        // file cannot be read or written
  Internal = 1,  // a bug: an invariant of vitq itself failed
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& msg) : std::runtime_error(msg), kind_(kind) {}
  ErrorKind kind() const { return kind_; }
  int exit_code() const { return static_cast<int>(kind_); }

 private:
  ErrorKind kind_;
};

// Concatenates any streamable values: cat("tensor ", name, " has ", n, " dims").
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

template <class... Args>
[[noreturn]] void fail(ErrorKind kind, const Args&... args) {
  throw Error(kind, cat(args...));
}

}  // namespace vitq
