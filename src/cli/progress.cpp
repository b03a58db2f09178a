#include "cli/progress.h"

#include <unistd.h>

#include <cstdio>

namespace vitq {

Progress::Progress(std::string label, size_t total, bool quiet)
    : label_(std::move(label)), total_(total), quiet_(quiet), tty_(isatty(STDERR_FILENO) != 0) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

Progress::~Progress() {
  if (!finished_ && tty_ && !quiet_) std::fputc('\n', stderr);
}

void Progress::update(size_t done, const std::string& status) {
  if (quiet_ || total_ == 0) return;
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double frac = double(done) / double(total_);
  const double eta = done ? elapsed * (1.0 - frac) / frac : 0.0;
  if (tty_) {
    if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    const int width = 30, filled = int(frac * width);
    std::string bar(size_t(filled), '#');
    bar.resize(size_t(width), '.');
    std::fprintf(stderr, "\r%s [%s] %zu/%zu %3.0f%%  %.0fs elapsed, ~%.0fs left  %s\033[K", label_.c_str(),
                 bar.c_str(), done, total_, 100 * frac, elapsed, eta, status.c_str());
    std::fflush(stderr);
  } else {
    const int decile = int(frac * 10);
    if (decile == last_decile_ && done < total_) return;
    last_decile_ = decile;
    std::fprintf(stderr, "%s: %zu/%zu (%.0f%%) %.1fs %s\n", label_.c_str(), done, total_, 100 * frac, elapsed,
                 status.c_str());
  }
}

void Progress::finish(const std::string& status) {
  if (quiet_ || finished_) return;
  finished_ = true;
  if (tty_) {
    update(total_, status);
    std::fputc('\n', stderr);
  }
}

}  // namespace vitq
