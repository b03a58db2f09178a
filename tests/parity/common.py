"""Shared plumbing of the parity tests: arguments, skipping, running vitq binaries."""
import argparse
import os
import subprocess
import sys
import tempfile

SKIP = 77  # ctest SKIP_RETURN_CODE


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--probe", required=True)
    ap.add_argument("--vitq", required=True)
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--shared-dir", required=True)
    return ap.parse_args()


def shared_available(args, *parts):
    """True if ../shared/<parts> exists; otherwise prints why the shared part is skipped."""
    path = os.path.join(args.shared_dir, *parts)
    if os.path.exists(path):
        return True
    print(f"SKIPPED (shared part): {path} not found — ../shared is absent on this machine")
    return False


def run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        print("command failed:", " ".join(map(str, cmd)))
        print(r.stdout)
        print(r.stderr)
        raise SystemExit(1)
    return r.stdout


class Checker:
    """Collects pass/fail results so a test reports every failure, not just the first."""

    def __init__(self):
        self.failures = 0

    def check(self, ok, msg):
        print(("ok    " if ok else "FAIL  ") + msg, flush=True)
        if not ok:
            self.failures += 1

    def finish(self):
        if self.failures:
            print(f"{self.failures} check(s) failed")
            sys.exit(1)
        print("all checks passed")
        sys.exit(0)


def tmpdir():
    return tempfile.TemporaryDirectory(prefix="vitq-parity-")
