// Output locations that never destroy a user's files.
//
// StagedDir: a command's output directory (-o) is written whole into a hidden staging
// directory beside it, `.NAME.vitq-staging-PID`, and replaces the target only in commit().
// Before any work starts it refuses a target that is, or contains, one of the command's
// inputs (the model being quantized, its calibration data, the plan), a target that exists
// and is not empty unless `force` (and even then one holding a subdirectory, which vitq never
// writes), and proves the location writable by creating the staging directory. A failure,
// an exception or Ctrl-C/SIGTERM (a signal handler empties and removes the staging directory
// with async-signal-safe calls) leaves the target as it was: absent, or its old contents.
//
// StagedFile: the same for one output file (eval/bench --json): never one of the inputs nor an
// existing file inside an input directory; written beside the target and renamed over it.
#pragma once
#include <string>
#include <vector>

namespace vitq {

struct OutputCheck {
  std::string option = "-o";         // how the user named the output, for messages
  std::vector<std::string> inputs;   // files and directories the command reads
  bool force = false;                // replace a non-empty output directory
};

class StagedDir {
 public:
  // Throws Error(Usage) for an output that is/contains an input or is not empty without
  // force; Error(Io) when the location cannot be created or written.
  StagedDir(const std::string& target, const OutputCheck& check);
  StagedDir(const StagedDir&) = delete;
  StagedDir& operator=(const StagedDir&) = delete;
  ~StagedDir();  // removes the staging directory unless committed

  const std::string& path() const { return staging_; }  // write the outputs here
  const std::string& target() const { return target_; }
  // Replaces the target with the staging directory (atomically where the file system can
  // exchange two names, else by two renames); the old contents are then removed.
  void commit();

 private:
  std::string target_, staging_;
  int slot_ = -1;  // in the signal handler's table
  bool committed_ = false;
};

class StagedFile {
 public:
  StagedFile(const std::string& target, const OutputCheck& check);
  StagedFile(const StagedFile&) = delete;
  StagedFile& operator=(const StagedFile&) = delete;
  ~StagedFile();
  // Writes `text` to the temporary file and renames it onto the target.
  void commit(const std::string& text);

 private:
  std::string target_, temp_;
  int slot_ = -1;
  bool committed_ = false;
};

}  // namespace vitq
