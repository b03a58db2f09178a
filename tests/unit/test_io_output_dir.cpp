// StagedDir / StagedFile: outputs are written beside the target and replace it only on
// commit; failures and signals leave the target as it was and no staging entries behind.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"
#include "io/output_dir.h"

namespace fs = std::filesystem;
using vitq::Error;
using vitq::ErrorKind;
using vitq::OutputCheck;
using vitq::StagedDir;
using vitq::StagedFile;

namespace {

struct TempRoot {
  fs::path dir;
  TempRoot() {
    char tmpl[] = "/tmp/vitq-outdir-XXXXXX";
    dir = ::mkdtemp(tmpl);
  }
  ~TempRoot() { fs::remove_all(dir); }
};

void write(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }
std::string read(const fs::path& p) {
  std::ifstream f(p);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
size_t entries(const fs::path& d) { return size_t(std::distance(fs::directory_iterator(d), {})); }
ErrorKind kind_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.kind();
  }
  return ErrorKind::Internal;
}

}  // namespace

TEST(StagedDir, NotCommittedLeavesNothing) {
  TempRoot r;
  {
    StagedDir out((r.dir / "out").string(), {});
    write(fs::path(out.path()) / "a.json", "1");
    EXPECT_NE(out.path(), (r.dir / "out").string());
  }
  EXPECT_FALSE(fs::exists(r.dir / "out"));
  EXPECT_EQ(entries(r.dir), 0u);
}

TEST(StagedDir, CommitCreatesAndForceReplacesWhole) {
  TempRoot r;
  const fs::path t = r.dir / "out";
  {
    StagedDir out(t.string(), {});
    write(fs::path(out.path()) / "a.json", "old");
    write(fs::path(out.path()) / "stale.bin", "x");
    out.commit();
  }
  EXPECT_EQ(read(t / "a.json"), "old");
  // Not empty: refused without force, the old contents untouched.
  EXPECT_EQ(kind_of([&] { StagedDir out(t.string(), {}); }), ErrorKind::Usage);
  EXPECT_EQ(read(t / "a.json"), "old");
  {
    OutputCheck c;
    c.force = true;
    StagedDir out(t.string(), c);
    write(fs::path(out.path()) / "a.json", "new");
    EXPECT_EQ(read(t / "a.json"), "old");  // replaced only on commit
    out.commit();
  }
  EXPECT_EQ(read(t / "a.json"), "new");
  EXPECT_FALSE(fs::exists(t / "stale.bin"));
  EXPECT_EQ(entries(r.dir), 1u);  // no staging or old directory left
}

TEST(StagedDir, RefusesInputsAndNonDirectories) {
  TempRoot r;
  fs::create_directories(r.dir / "model" / "sub");
  write(r.dir / "model" / "w.bin", "weights");
  OutputCheck c;
  c.inputs = {(r.dir / "model").string()};
  c.force = true;
  EXPECT_EQ(kind_of([&] { StagedDir o((r.dir / "model").string(), c); }), ErrorKind::Usage);
  EXPECT_EQ(kind_of([&] { StagedDir o(r.dir.string(), c); }), ErrorKind::Usage);  // contains it
  fs::create_symlink(r.dir / "model", r.dir / "link");
  EXPECT_EQ(kind_of([&] { StagedDir o((r.dir / "link").string(), c); }), ErrorKind::Usage);
  EXPECT_EQ(kind_of([&] { StagedDir o((r.dir / "model" / "w.bin" / "x").string(), {}); }), ErrorKind::Io);
  EXPECT_EQ(kind_of([&] { StagedDir o((r.dir / "model" / "w.bin").string(), {}); }), ErrorKind::Io);
  EXPECT_EQ(read(r.dir / "model" / "w.bin"), "weights");
  // An output inside the model directory is not destructive: allowed.
  EXPECT_NO_THROW({ StagedDir o((r.dir / "model" / "q").string(), c); });
}

TEST(StagedDir, SignalRemovesAFilledStagingDirectory) {
  TempRoot r;
  for (int sig : {SIGINT, SIGTERM}) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      StagedDir out((r.dir / "out").string(), {});
      for (int i = 0; i < 50; ++i) write(fs::path(out.path()) / ("f" + std::to_string(i)), std::string(1000, 'x'));
      ::raise(sig);
      ::_exit(0);  // not reached
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == sig) << "status " << status;
    EXPECT_EQ(entries(r.dir), 0u) << "signal " << sig << " left " << (entries(r.dir) ? fs::directory_iterator(r.dir)->path().string() : "");
  }
}

TEST(StagedDir, RemovesStagingOfAKilledRun) {
  TempRoot r;
  // A staging directory of a process that no longer exists (pid far above pid_max's default).
  fs::create_directories(r.dir / ".out.vitq-staging-2147483000");
  write(r.dir / ".out.vitq-staging-2147483000" / "plan.json", "{}");
  {
    StagedDir out((r.dir / "out").string(), {});
    out.commit();
  }
  EXPECT_EQ(entries(r.dir), 1u);
}

TEST(StagedFile, ReplacesOnCommitAndRefusesInputs) {
  TempRoot r;
  const fs::path t = r.dir / "r.json";
  write(t, "old");
  {
    StagedFile f(t.string(), {});
    EXPECT_EQ(read(t), "old");
  }
  EXPECT_EQ(read(t), "old");
  EXPECT_EQ(entries(r.dir), 1u);
  {
    StagedFile f(t.string(), {});
    f.commit("new");
  }
  EXPECT_EQ(read(t), "new");
  OutputCheck c;
  c.option = "--json";
  c.inputs = {t.string()};
  EXPECT_EQ(kind_of([&] { StagedFile f(t.string(), c); }), ErrorKind::Usage);
  fs::create_directories(r.dir / "model");
  write(r.dir / "model" / "config.json", "cfg");
  c.inputs = {(r.dir / "model").string()};
  EXPECT_EQ(kind_of([&] { StagedFile f((r.dir / "model" / "config.json").string(), c); }), ErrorKind::Usage);
  EXPECT_EQ(read(r.dir / "model" / "config.json"), "cfg");
  EXPECT_EQ(kind_of([&] { StagedFile f(r.dir.string(), {}); }), ErrorKind::Io);  // a directory
}
