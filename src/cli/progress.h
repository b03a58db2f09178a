// Progress reporting for long commands: a redrawn bar on a terminal, plain lines otherwise
// (logs and CI), always on stderr so stdout stays machine-readable.
#pragma once
#include <chrono>
#include <string>

namespace vitq {

class Progress {
 public:
  Progress(std::string label, size_t total, bool quiet = false);
  ~Progress();
  // Reports `done` of total with an optional status text ("top-1 83.1%").
  void update(size_t done, const std::string& status = "");
  void finish(const std::string& status = "");
  void set_total(size_t total) { total_ = total; }

 private:
  std::string label_;
  size_t total_;
  bool quiet_, tty_, finished_ = false;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace vitq
