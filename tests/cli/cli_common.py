"""Shared plumbing of the command-line tests: run `vitq` on crafted inputs and assert the exit
code, that the message names what is wrong, and that the user's files are left alone.

Each test script builds its inputs in a temporary directory from the bundled model
(models/vit_fmnist_patch4_28) and small images it writes itself; nothing under ../shared."""
import argparse
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

SKIP = 77  # ctest SKIP_RETURN_CODE
FMNIST = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist (the bundled model's data)
EXIT = {"ok": 0, "internal": 1, "usage": 2, "model": 3, "data": 4, "io": 5}


def require_fashion_mnist():
    """FMNIST, or exits as skipped (saying why) when Debian's Fashion-MNIST is not installed."""
    if not os.path.isdir(FMNIST):
        print(f"skip: {FMNIST} (Debian package dataset-fashion-mnist) is not installed")
        sys.exit(SKIP)
    return FMNIST


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vitq", required=True)
    ap.add_argument("--source-dir", required=True)
    return ap.parse_args()


class Cli:
    """Runs vitq and records failed checks; finish() exits 1 if any failed."""

    def __init__(self, args):
        self.vitq = args.vitq
        self.source = args.source_dir
        self.model = os.path.join(args.source_dir, "models", "vit_fmnist_patch4_28")
        self.failures = 0
        self._tmp = tempfile.TemporaryDirectory(prefix="vitq-cli-")
        self.tmp = self._tmp.name

    def run(self, *cmd, timeout=600, limit_mb=None):
        """(exit code, stdout + stderr, seconds). limit_mb: address-space limit (ulimit -v)."""
        import time
        pre = None
        if limit_mb:
            import resource
            lim = limit_mb << 20
            pre = lambda: resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
        t = time.monotonic()
        r = subprocess.run([self.vitq, *map(str, cmd)], capture_output=True, text=True, timeout=timeout,
                           preexec_fn=pre, stdin=subprocess.DEVNULL)
        return r.returncode, r.stdout + r.stderr, time.monotonic() - t

    def check(self, ok, msg, detail=""):
        print(("ok    " if ok else "FAIL  ") + msg, flush=True)
        if not ok:
            self.failures += 1
            if detail:
                print("      " + detail.strip().replace("\n", "\n      ")[:3000])

    def expect(self, what, cmd, code, *patterns, **kw):
        """Runs cmd; checks the exit code (a name of EXIT) and that every regex pattern occurs in
        the output (case-insensitive). Returns the output."""
        rc, out, secs = self.run(*cmd, **kw)
        want = EXIT[code]
        missing = [p for p in patterns if not re.search(p, out, re.I | re.S)]
        self.check(rc == want and not missing,
                   f"{what}: exit {rc} (want {want} {code})" + (f", message lacks {missing}" if missing else ""),
                   out if rc != want or missing else "")
        return out

    def finish(self):
        self._tmp.cleanup()
        if self.failures:
            print(f"{self.failures} check(s) failed")
            sys.exit(1)
        print("all checks passed")
        sys.exit(0)

    # --- inputs -------------------------------------------------------------------------------
    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def copy_model(self, name="model"):
        dst = self.path(name)
        shutil.copytree(self.model, dst)
        return dst

    def image_folder(self, name="images", classes=("0", "1"), per_class=2, size=28):
        """An ImageFolder tree of small grey PNGs (deterministic pixels)."""
        root = self.path(name)
        for ci, c in enumerate(classes):
            os.makedirs(os.path.join(root, c), exist_ok=True)
            for i in range(per_class):
                px = bytes(((x * 7 + y * 3 + ci * 50 + i * 11) % 256) for y in range(size) for x in range(size))
                write_png(os.path.join(root, c, f"{i}.png"), size, size, px)
        return root


def snapshot(root):
    """{relative path: sha256} of every file under root (or of root itself)."""
    if os.path.isfile(root):
        return {"": hashlib.sha256(open(root, "rb").read()).hexdigest()}
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path, w, h, grey_pixels):
    raw = b"".join(b"\x00" + grey_pixels[y * w:(y + 1) * w] for y in range(h))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
                png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
