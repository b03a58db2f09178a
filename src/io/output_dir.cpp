#include "io/output_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "core/error.h"

namespace vitq {
namespace fs = std::filesystem;
namespace {

// ------------------------------------------------------------------ signal-time clean-up
// A table of staging locations that a SIGINT/SIGTERM/SIGHUP handler removes before the
// process dies of the signal. Only async-signal-safe calls run in the handler: getdents64,
// unlinkat, rmdir, unlink, then the default action re-raised.
constexpr int kSlots = 8;
struct Slot {
  std::atomic<int> state{0};  // 0 free, 1 being filled, 2 live
  int dirfd = -1;             // a staging directory (its entries are unlinked), or -1
  char path[4096] = {};       // the directory (rmdir) or the file (unlink)
};
Slot g_slots[kSlots];
std::atomic<bool> g_handler_installed{false};

void empty_dir_fd(int fd) {
  alignas(8) char buf[4096];
  for (int pass = 0; pass < 64; ++pass) {  // entries removed while listing: list again
    if (::lseek(fd, 0, SEEK_SET) != 0) return;
    bool removed = false;
    for (;;) {
      const long n = ::syscall(SYS_getdents64, fd, buf, sizeof buf);
      if (n <= 0) break;
      for (long off = 0; off < n;) {
        // struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, char name[].
        unsigned short reclen;
        std::memcpy(&reclen, buf + off + 16, sizeof reclen);
        const char* name = buf + off + 19;
        if (std::strcmp(name, ".") != 0 && std::strcmp(name, "..") != 0)
          removed |= ::unlinkat(fd, name, 0) == 0 || ::unlinkat(fd, name, AT_REMOVEDIR) == 0;
        off += reclen;
      }
    }
    if (!removed) return;
  }
}

void on_signal(int sig) {
  for (Slot& s : g_slots) {
    if (s.state.load() != 2) continue;
    if (s.dirfd >= 0) {
      empty_dir_fd(s.dirfd);
      ::rmdir(s.path);
    } else {
      ::unlink(s.path);
    }
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

void install_handler() {
  if (g_handler_installed.exchange(true)) return;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    struct sigaction old {};
    // Keep an inherited "ignore" (e.g. nohup): the user asked not to be stopped by it.
    if (::sigaction(sig, nullptr, &old) == 0 && old.sa_handler == SIG_IGN) continue;
    ::sigaction(sig, &sa, nullptr);
  }
}

int register_slot(const std::string& path, int dirfd) {
  install_handler();
  if (path.size() >= sizeof(Slot::path)) return -1;  // not cleaned on a signal; still on exceptions
  for (int i = 0; i < kSlots; ++i) {
    int expected = 0;
    if (!g_slots[i].state.compare_exchange_strong(expected, 1)) continue;
    std::memcpy(g_slots[i].path, path.c_str(), path.size() + 1);
    g_slots[i].dirfd = dirfd;
    g_slots[i].state.store(2);
    return i;
  }
  return -1;
}

void release_slot(int& slot) {
  if (slot < 0) return;
  g_slots[slot].state.store(1);
  if (g_slots[slot].dirfd >= 0) ::close(g_slots[slot].dirfd);
  g_slots[slot].dirfd = -1;
  g_slots[slot].state.store(0);
  slot = -1;
}

// ------------------------------------------------------------------ paths

std::string err_text(int e) { return std::generic_category().message(e); }

// Absolute, with symbolic links of the existing part resolved (so a link to the model
// directory is the model directory).
fs::path resolve(const std::string& p, const std::string& option) {
  std::error_code ec;
  fs::path abs = fs::absolute(p, ec);
  if (ec) fail(ErrorKind::Io, option, " ", p, ": ", ec.message());
  fs::path r = fs::weakly_canonical(abs, ec);
  if (ec) fail(ErrorKind::Io, option, " ", p, ": ", ec.message());
  return r.lexically_normal();
}

// True if `inner` is `outer` or lies inside it (both resolved).
bool is_within(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin(), o = outer.begin();
  for (; o != outer.end(); ++o, ++i) {
    if (o->empty()) continue;  // a trailing separator
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

bool pid_alive(long pid) { return pid > 0 && (::kill(pid_t(pid), 0) == 0 || errno != ESRCH); }

// Removes `.NAME.vitq-staging-PID` / `.NAME.vitq-old-PID` left by runs that were killed
// (SIGKILL, power loss): their process is gone.
void remove_stale(const fs::path& parent, const std::string& name) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const std::string n = e.path().filename().string();
    for (const std::string& tag : {"." + name + ".vitq-staging-", "." + name + ".vitq-old-"}) {
      if (n.rfind(tag, 0) != 0) continue;
      char* end = nullptr;
      const long pid = std::strtol(n.c_str() + tag.size(), &end, 10);
      if (end && *end == '\0' && !pid_alive(pid)) fs::remove_all(e.path(), ec);
    }
  }
}

// "given" as the user wrote it, with what it resolves to where that differs (a symbolic link).
std::string shown(const std::string& given, const fs::path& resolved) {
  std::error_code ec;
  const fs::path abs = fs::absolute(given, ec).lexically_normal();
  return abs == resolved ? given : cat(given, " (= ", resolved.string(), ")");
}

void check_inputs(const std::string& given, const fs::path& target, const OutputCheck& c, bool dir) {
  for (const std::string& in : c.inputs) {
    if (in.empty()) continue;
    const fs::path p = resolve(in, "input");
    if (is_within(p, target))
      fail(ErrorKind::Usage, c.option, " ", shown(given, target), ": ",
           p == target ? "is" : "contains", " the input ", in,
           dir ? ", which writing the output would replace; choose another output directory"
               : "; choose another output file");
    std::error_code ec;
    if (!dir && fs::is_directory(p, ec) && is_within(target, p) && fs::exists(target, ec))
      fail(ErrorKind::Usage, c.option, " ", shown(given, target), ": an existing file inside the input ", in,
           "; choose another output file");
  }
}

}  // namespace

// ------------------------------------------------------------------ StagedDir

StagedDir::StagedDir(const std::string& target, const OutputCheck& c) {
  if (target.empty()) fail(ErrorKind::Usage, c.option, ": empty output path");
  const fs::path t = resolve(target, c.option);
  if (t == t.root_path()) fail(ErrorKind::Usage, c.option, " ", target, ": the root directory cannot be an output");
  check_inputs(target, t, c, true);
  std::error_code ec;
  const fs::file_status st = fs::status(t, ec);
  if (fs::exists(st)) {
    if (!fs::is_directory(st))
      fail(ErrorKind::Io, c.option, " ", target, ": exists and is not a directory");
    size_t entries = 0;
    std::string first, subdir;
    for (const auto& e : fs::directory_iterator(t, ec)) {
      if (!entries++) first = e.path().filename().string();
      std::error_code ec2;
      if (subdir.empty() && e.is_directory(ec2) && !e.is_symlink(ec2)) subdir = e.path().filename().string();
    }
    if (ec) fail(ErrorKind::Io, c.option, " ", target, ": cannot list: ", ec.message());
    if (entries && !c.force)
      fail(ErrorKind::Usage, c.option, " ", target, ": directory exists and is not empty (", entries,
           " entries, e.g. '", first, "'); give --force to replace it as a whole, or choose another directory");
    if (entries && !subdir.empty())
      fail(ErrorKind::Usage, c.option, " ", target, ": holds the directory '", subdir,
           "', which vitq never writes; --force replaces only a directory of files - remove it yourself or "
           "choose another output directory");
  }
  const fs::path parent = t.parent_path();
  fs::create_directories(parent, ec);
  if (ec) fail(ErrorKind::Io, c.option, " ", target, ": cannot create the directory ", parent.string(), ": ",
               ec.message());
  const std::string name = t.filename().string();
  remove_stale(parent, name);
  const fs::path staging = parent / cat(".", name, ".vitq-staging-", ::getpid());
  fs::remove_all(staging, ec);  // a pid reused after a killed run
  if (::mkdir(staging.c_str(), 0777) != 0)
    fail(ErrorKind::Io, c.option, " ", target, ": cannot write in ", parent.string(), ": ", err_text(errno));
  target_ = t.string();
  staging_ = staging.string();
  const int fd = ::open(staging_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  slot_ = fd >= 0 ? register_slot(staging_, fd) : -1;
  if (fd >= 0 && slot_ < 0) ::close(fd);
}

StagedDir::~StagedDir() {
  if (committed_) return;
  release_slot(slot_);
  std::error_code ec;
  fs::remove_all(staging_, ec);
}

void StagedDir::commit() {
  // The handler's descriptor follows the directory through the rename: release it first, or
  // a signal during the commit would empty the new output.
  const int fd = ::open(staging_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  release_slot(slot_);
  std::error_code ec;
  if (!fs::exists(target_, ec)) {
    if (::rename(staging_.c_str(), target_.c_str()) != 0)
      fail(ErrorKind::Io, target_, ": cannot rename ", staging_, " onto it: ", err_text(errno));
    committed_ = true;
    return;
  }
  // Replace an existing (checked, --force) directory: exchange the two names atomically, then
  // remove the old contents, now under the staging name.
  if (::renameat2(AT_FDCWD, staging_.c_str(), AT_FDCWD, target_.c_str(), RENAME_EXCHANGE) == 0) {
    committed_ = true;
    fs::remove_all(staging_, ec);
    return;
  }
  const fs::path t(target_);
  const std::string old = (t.parent_path() / cat(".", t.filename().string(), ".vitq-old-", ::getpid())).string();
  fs::remove_all(old, ec);
  if (::rename(target_.c_str(), old.c_str()) != 0)
    fail(ErrorKind::Io, target_, ": cannot move the old output aside: ", err_text(errno));
  if (::rename(staging_.c_str(), target_.c_str()) != 0) {
    const int e = errno;
    ::rename(old.c_str(), target_.c_str());
    fail(ErrorKind::Io, target_, ": cannot rename ", staging_, " onto it: ", err_text(e));
  }
  committed_ = true;
  fs::remove_all(old, ec);
}

// ------------------------------------------------------------------ StagedFile

StagedFile::StagedFile(const std::string& target, const OutputCheck& c) {
  if (target.empty()) fail(ErrorKind::Usage, c.option, ": empty output path");
  const fs::path t = resolve(target, c.option);
  check_inputs(target, t, c, false);
  std::error_code ec;
  if (fs::is_directory(t, ec)) fail(ErrorKind::Io, c.option, " ", target, ": is a directory");
  fs::create_directories(t.parent_path(), ec);
  if (ec) fail(ErrorKind::Io, c.option, " ", target, ": cannot create the directory ", t.parent_path().string(),
               ": ", ec.message());
  target_ = t.string();
  temp_ = cat(target_, ".tmp.", ::getpid());
  const int fd = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) fail(ErrorKind::Io, c.option, " ", target, ": cannot write ", temp_, ": ", err_text(errno));
  ::close(fd);
  slot_ = register_slot(temp_, -1);
}

StagedFile::~StagedFile() {
  release_slot(slot_);
  if (!committed_) ::unlink(temp_.c_str());
}

void StagedFile::commit(const std::string& text) {
  std::FILE* f = std::fopen(temp_.c_str(), "wb");
  if (!f) fail(ErrorKind::Io, target_, ": cannot write ", temp_, ": ", err_text(errno));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0 &&
                  ::fsync(::fileno(f)) == 0;
  const int e = errno;
  if (std::fclose(f) != 0 || !ok) fail(ErrorKind::Io, target_, ": write failed: ", err_text(e));
  if (::rename(temp_.c_str(), target_.c_str()) != 0)
    fail(ErrorKind::Io, target_, ": cannot rename ", temp_, " onto it: ", err_text(errno));
  committed_ = true;
  release_slot(slot_);
}

}  // namespace vitq
