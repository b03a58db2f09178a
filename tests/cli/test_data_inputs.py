"""Command-line regression tests of the data inputs (issue 20, classes 4, 6 and 7).

Class 4, tiny inputs with a huge cost: crafted images and IDX files that declare huge sizes
must be refused from their headers - exit 4 naming the file, within about a second of CPU time and under a
1 GiB address-space limit (a normal eval of the bundled model runs under 512 MiB, so 1024 is
not too tight for oneDNN/OpenMP).
Class 6: a dataset where every image is unreadable is an error, not "top-1 0.00 % (0/0)".
Class 7: calibration on a directory of IDX files uses the training split and needs no labels;
a class-folder subset without a class map warns; quantize --skip-bad-images.
--calib-mirror: calibrating on images plus their mirrored copies equals calibrating on a folder
that holds the copies mirrored here (pure Python), site for site."""
import gzip
import json
import os
import re
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_common import FMNIST, Cli, parse_args, png_chunk, read_json, write_png  # noqa: E402

LIMIT_MB = 1024   # address space of every crafted-input run (see the module comment)
MAX_CPU_SECONDS = 2.0  # "about a second"; before the fix these took 4-8 s (2 GB of allocations)

args = parse_args()
cli = Cli(args)
M = cli.model


def fast(what, cmd, code, *patterns):
    """expect() under the address-space limit, also checking the CPU time the run used (user +
    system, which the 2 GB of allocations showed up in; unlike wall time it does not grow when
    the machine is busy with other work)."""
    import resource
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    rc, out, secs = cli.run(*cmd, limit_mb=LIMIT_MB)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    want = {"ok": 0, "data": 4, "usage": 2, "io": 5}[code]
    missing = [p for p in patterns if not re.search(p, out, re.I | re.S)]
    cli.check(rc == want and not missing and cpu < MAX_CPU_SECONDS,
              f"{what}: exit {rc} (want {want} {code}), {cpu:.2f} s CPU ({secs:.2f} s wall)"
              + (f", message lacks {missing}" if missing else ""),
              out if rc != want or missing or cpu >= MAX_CPU_SECONDS else "")
    return out


def folder_with(name, filename, data, extra_good=False):
    """An ImageFolder holding one crafted file (and optionally one good PNG in another class)."""
    root = cli.path(name)
    os.makedirs(os.path.join(root, "0"), exist_ok=True)
    p = os.path.join(root, "0", filename)
    with open(p, "wb") as f:
        f.write(data)
    if extra_good:
        os.makedirs(os.path.join(root, "1"), exist_ok=True)
        write_png(os.path.join(root, "1", "good.png"), 28, 28, bytes(range(256)) * 3 + bytes(16))
    return root, p


def ihdr(w, h):
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))


PNG_SIG = b"\x89PNG\r\n\x1a\n"


def eval_cmd(data, *extra):
    return ["eval", "--model", M, "--data", data, "-q", *extra]


# ---- class 4: images --------------------------------------------------------------------------
# A chunk header declaring 2^31-1 bytes, without its data: a 41-byte file.
for kind in (b"tEXt", b"zTXt", b"iTXt", b"sPLT", b"iCCP", b"eXIf", b"prVt"):
    data = PNG_SIG + ihdr(28, 28) + struct.pack(">I", 2**31 - 1) + kind
    root, p = folder_with(f"png_{kind.decode()}", "huge_chunk.png", data)
    fast(f"PNG with a {kind.decode()} chunk declaring 2^31-1 bytes", eval_cmd(root), "data", re.escape(p),
         kind.decode(), "limit")
    fast(f"PNG with a {kind.decode()} chunk declaring 2^31-1 bytes, --skip-bad-images", eval_cmd(root, "--skip-bad-images"),
         "data", "no image could be read", re.escape(p))

# A complete, valid text chunk of 1 MiB is fine (within the chunk limit, skipped unread).
px = bytes((x * 9) % 256 for x in range(28 * 28))
raw = b"".join(b"\x00" + px[y * 28:(y + 1) * 28] for y in range(28))
import zlib  # noqa: E402
good_png_with_text = (PNG_SIG + ihdr(28, 28) + png_chunk(b"tEXt", b"Comment\x00" + b"x" * (1 << 20)) +
                      png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))
root, p = folder_with("png_text_ok", "text.png", good_png_with_text)
fast("PNG with a real 1 MiB tEXt chunk is read", eval_cmd(root), "ok", r"top-1\s+\S+ %\s+\(\d/1\)")

# Image sizes declared in the header, refused before any pixel buffer exists.
idat = png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
for w, h in ((60000, 60000), (1000000, 1000), (1, 200000000)):
    root, p = folder_with(f"png_{w}x{h}", "big.png", PNG_SIG + ihdr(w, h) + idat + png_chunk(b"IEND", b""))
    fast(f"PNG declaring {w}x{h}", eval_cmd(root), "data", re.escape(p), f"{w}x{h}|exceeds|limit")


def jpeg_header(w, h):
    """SOI, a quantisation table, SOF0 (3 components) and SOS, then a little entropy data."""
    def seg(marker, payload):
        return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload
    dqt = seg(0xDB, b"\x00" + bytes([1] * 64))
    sof = seg(0xC0, struct.pack(">BHHB", 8, h, w, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00")
    sos = seg(0xDA, b"\x03\x01\x00\x02\x00\x03\x00\x00\x3f\x00")
    return b"\xff\xd8" + dqt + sof + sos + b"\x00" * 64 + b"\xff\xd9"


for w, h in ((65000, 65000), (65000, 3000)):
    root, p = folder_with(f"jpeg_{w}x{h}", "big.jpg", jpeg_header(w, h))
    fast(f"JPEG declaring {w}x{h} in SOF0", eval_cmd(root), "data", re.escape(p), f"{w}x{h}", "limit")

# Huge sparse files (no disk blocks): refused from their size, never read.
for name, head in (("not_jpeg.jpg", b"this is not an image"), ("sig_jpeg.jpg", b"\xff\xd8\xff\xe0"),
                   ("sig_png.png", PNG_SIG + ihdr(28, 28))):
    root, p = folder_with("sparse_" + name.replace(".", "_"), name, head)
    os.truncate(p, 6 << 30)
    fast(f"sparse 6 GiB file {name}", eval_cmd(root), "data", re.escape(p), "limit")
    os.remove(p)
# Just above the image file limit (256 MiB) is refused too; the message names the limit.
root, p = folder_with("sparse_limit", "a.jpg", b"\xff\xd8\xff")
os.truncate(p, (256 << 20) + 1)
fast("sparse image file of 256 MiB + 1 byte", eval_cmd(root), "data", re.escape(p), "268435456")
os.remove(p)
# A small file that is not an image is refused by its signature.
root, p = folder_with("text_as_jpg", "notes.jpg", b"hello, I am text\n" * 10)
fast("text file named .jpg", eval_cmd(root), "data", re.escape(p), "signature")


# ---- class 4: IDX -------------------------------------------------------------------------------
def idx_header(dims):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)


def idx_pair(name, images_bytes, n_labels=10, gz=True, labels=True):
    d = cli.path(name)
    os.makedirs(d, exist_ok=True)
    ext = ".gz" if gz else ""
    ip = os.path.join(d, "t10k-images-idx3-ubyte" + ext)
    with (gzip.open(ip, "wb") if gz else open(ip, "wb")) as f:
        f.write(images_bytes)
    if labels:
        with open(os.path.join(d, "t10k-labels-idx1-ubyte"), "wb") as f:
            f.write(idx_header([n_labels]) + bytes(i % 10 for i in range(n_labels)))
    return ip


# 60000 x 1000 x 1000 declared (60 GB), 1 MiB of zeros behind it: above the IDX limit.
p = idx_pair("idx_gz_huge", idx_header([60000, 1000, 1000]) + b"\x00" * (1 << 20), n_labels=60000)
fast("gzip IDX declaring 60000x1000x1000", eval_cmd(p), "data", re.escape(p), "60000 x 1000 x 1000", "limit")
# 60000 x 100 x 100 (600 MB, within the limit) in a gzip file of a few KB: more than it can hold.
p = idx_pair("idx_gz_ratio", idx_header([60000, 100, 100]) + b"\x00" * 4096, n_labels=60000)
fast("gzip IDX declaring 600 MB in a few KB", eval_cmd(p), "data", re.escape(p), "truncated", "gzip file of")
# The same as a raw file: the file size must match the header exactly.
p = idx_pair("idx_raw_huge", idx_header([60000, 1000, 1000]) + b"\x00" * 4096, n_labels=60000, gz=False)
fast("raw IDX declaring 60000x1000x1000", eval_cmd(p), "data", re.escape(p), "limit")
p = idx_pair("idx_raw_trunc", idx_header([60000, 100, 100]) + b"\x00" * 4096, n_labels=60000, gz=False)
fast("raw IDX declaring 600 MB with 4 KB of data", eval_cmd(p), "data", re.escape(p), "truncated", "announces 600000000")
p = idx_pair("idx_raw_side", idx_header([1, 20000, 2]) + b"\x00" * 40000, n_labels=1, gz=False)
fast("raw IDX with 20000-row images", eval_cmd(p), "data", re.escape(p), "20000x2", "limit")
# A huge declared labels file beside good images.
d = cli.path("idx_labels_huge")
os.makedirs(d)
p = os.path.join(d, "t10k-images-idx3-ubyte")
with open(p, "wb") as f:
    f.write(idx_header([4, 28, 28]) + b"\x00" * (4 * 784))
lp = os.path.join(d, "t10k-labels-idx1-ubyte")
with open(lp, "wb") as f:
    f.write(idx_header([0xFFFFFFFF]) + b"\x00" * 16)
fast("labels IDX declaring 2^32-1 labels", eval_cmd(p), "data", re.escape(lp))
# And a small good IDX pair still evaluates under the limit.
imgs = idx_header([10, 28, 28]) + bytes((i * 7) % 256 for i in range(10 * 784))
p = idx_pair("idx_good", imgs, n_labels=10)
fast("small good gzip IDX", eval_cmd(p), "ok", r"\(\d+/10\)")


# ---- class 6: every image unreadable ------------------------------------------------------------
root = cli.path("all_bad")
for c, names in (("0", ["a.jpg", "b.png"]), ("1", ["c.jpeg", "d.png"])):
    os.makedirs(os.path.join(root, c))
    for n in names:
        with open(os.path.join(root, c, n), "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 truncated" if n.endswith(("jpg", "jpeg")) else PNG_SIG + b"\x00\x00")
cli.expect("eval --skip-bad-images, every image corrupt", eval_cmd(root, "--skip-bad-images"), "data",
           "no image could be read", "all 4 images", re.escape(root))
cli.expect("eval without --skip-bad-images, every image corrupt", eval_cmd(root), "data", re.escape(root),
           "--skip-bad-images")
root_mixed, bad = folder_with("mixed", "bad.png", PNG_SIG + b"junk", extra_good=True)
out = cli.expect("eval --skip-bad-images, one of two images corrupt", eval_cmd(root_mixed, "--skip-bad-images"),
                 "ok", r"\(\d/1\)", "skipped: " + re.escape(bad))
cli.check("0/0" not in out, "a run with a readable image reports it")
# With --limit the subset may hold only bad images: still an error.
cli.expect("eval --skip-bad-images --limit 1 on an all-bad folder", eval_cmd(root, "--skip-bad-images", "--limit", "1"),
           "data", "no image could be read")


# ---- class 7: splits, labels, class counts, quantize --skip-bad-images --------------------------
def quantize_cmd(calib, out, *extra):
    return ["quantize", "--model", M, "--calib", calib, "--calib-size", "8", "--method", "minmax", "--bits", "8",
            "--plan-only", "-q", "-o", cli.path(out), *extra]


# A directory with both splits (small crafted files): calibration takes train-*, eval t10k-*.
d = cli.path("splits")
os.makedirs(d)
for split, n in (("train", 12), ("t10k", 6)):
    with gzip.open(os.path.join(d, f"{split}-images-idx3-ubyte.gz"), "wb") as f:
        f.write(idx_header([n, 28, 28]) + bytes((i * 3 + n) % 256 for i in range(n * 784)))
    with gzip.open(os.path.join(d, f"{split}-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(idx_header([n]) + bytes(i % 10 for i in range(n)))
out = cli.expect("quantize on a directory of both splits", quantize_cmd(d, "q_splits"), "ok",
                 r"calib\s+8 images from .*train-images-idx3-ubyte\.gz", "training split")
plan = read_json(cli.path("q_splits", "plan.json"))
samples = plan["calibration"]["samples"]
cli.check(len(samples) == 8 and all("train-images" in s for s in samples), "the plan's samples are train-* images",
          str(samples))
cli.expect("eval on a directory of both splits", eval_cmd(d), "ok", r"data\s+idx .*t10k-images-idx3-ubyte\.gz",
           "test split", r"\(\d/6\)")

# Only the test split in the directory: calibration says it had to use it.
d2 = cli.path("only_t10k")
os.makedirs(d2)
for n in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
    os.link(os.path.join(d, n), os.path.join(d2, n))
cli.expect("quantize on a directory of only t10k-*", quantize_cmd(d2, "q_t10k"), "ok", r"t10k-images", "no train-\*")

# An IDX images file without its labels file: calibrates (labels are not used); eval needs them.
d3 = cli.path("nolabels")
os.makedirs(d3)
os.link(os.path.join(d, "train-images-idx3-ubyte.gz"), os.path.join(d3, "train-images-idx3-ubyte.gz"))
cli.expect("quantize on an IDX file without labels", quantize_cmd(os.path.join(d3, "train-images-idx3-ubyte.gz"),
                                                                 "q_nolabels"), "ok", "labels not read")
cli.expect("quantize on a directory of IDX images without labels", quantize_cmd(d3, "q_nolabels_dir"), "ok",
           "train-images")
cli.expect("eval on an IDX file without labels", eval_cmd(os.path.join(d3, "train-images-idx3-ubyte.gz")), "data",
           "labels file", "not found")

if os.path.isdir(FMNIST):
    cli.expect("quantize --calib " + FMNIST, quantize_cmd(FMNIST, "q_fmnist"), "ok",
               r"calib\s+8 images from .*train-images-idx3-ubyte\.gz")
    samples = read_json(cli.path("q_fmnist", "plan.json"))["calibration"]["samples"]
    cli.check(all("train-images-idx3-ubyte.gz#" in s for s in samples), "Fashion-MNIST calibration samples are train-*",
              str(samples))
    cli.expect("eval --data " + FMNIST, eval_cmd(FMNIST, "--limit", "16"), "ok", r"data\s+idx .*t10k-images", "test split")
else:
    print(f"skip  {FMNIST} not installed: the Debian Fashion-MNIST checks")

# Class folders that are a subset of the model's classes, without a class map: a warning.
sub = cli.image_folder("cats_dogs", classes=("cat", "dog"), per_class=1)
out = cli.expect("eval on 2 class folders for a 10-class model", eval_cmd(sub), "ok",
                 r"warning: .*2 class folders but the model has 10 classes", "--class-map")
sub3 = cli.image_folder("three", classes=("a", "b", "c"), per_class=1)
cli.expect("eval on 3 class folders for a 10-class model", eval_cmd(sub3), "ok", r"warning: .*3 class folders")
full = cli.image_folder("ten", classes=tuple(str(i) for i in range(10)), per_class=1)
out = cli.expect("eval on 10 class folders", eval_cmd(full), "ok", r"\(\d+/10\)")
cli.check("warning" not in out, "no class-count warning when the folder count matches", out)
cmap = cli.path("classes.txt")
with open(cmap, "w") as f:
    f.write("\n".join(["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                       "cat"]) + "\n")  # 10 classes, folder "cat" is class 9
sub_cat = cli.image_folder("only_cat", classes=("cat",), per_class=1)
out = cli.expect("eval on a subset with --class-map", eval_cmd(sub_cat, "--class-map", cmap), "ok", r"\(\d/1\)")
cli.check("warning" not in out, "no class-count warning with a class map", out)

# quantize --skip-bad-images.
qroot = cli.image_folder("calib_mixed", classes=("0", "1"), per_class=3)
bad = os.path.join(qroot, "1", "broken.jpg")
with open(bad, "wb") as f:
    f.write(b"\xff\xd8\xff\xe0\x00\x10JFIF truncated")
cli.expect("quantize with a corrupt image", quantize_cmd(qroot, "q_bad"), "data", re.escape(bad), "--skip-bad-images")
cli.check(not os.path.exists(cli.path("q_bad", "plan.json")), "no plan written when an image is corrupt")
out = cli.expect("quantize --skip-bad-images with a corrupt image", quantize_cmd(qroot, "q_skip", "--skip-bad-images"),
                 "ok", "skipped: " + re.escape(bad), r"calib\s+6 images")
cal = read_json(cli.path("q_skip", "plan.json"))["calibration"]
cli.check(cal["images"] == 6 and len(cal["samples"]) == 6 and len(cal.get("skipped", [])) == 1
          and bad in cal["skipped"][0], "the plan lists 6 calibration images and the skipped one", str(cal))
cli.expect("quantize --skip-bad-images on an all-bad folder", quantize_cmd(root, "q_allbad", "--skip-bad-images"),
           "data", "no calibration image could be read", re.escape(root))
cli.check(not os.path.exists(cli.path("q_allbad", "plan.json")), "no plan written when no image can be read")

# --calib-mirror against the same images mirrored here: one folder of 4 PNGs (28 x 28, the bundled
# model's input size, so the preprocessing is the identity) calibrated with the flag, and a folder
# of those 4 plus their mirror images written by this script, calibrated without it. MinMax's
# extremes do not depend on the images' order: the sites must be equal.
def grey(x, y, i):
    return (x * x * 5 + y * 3 + i * 37 + (x * y) % 11) % 256


mroot, both = cli.path("mirror_src"), cli.path("mirror_both")
for d in (mroot, both):
    os.makedirs(os.path.join(d, "0"))
for i in range(4):
    px = [bytes(grey(x, y, i) for x in range(28)) for y in range(28)]
    write_png(os.path.join(mroot, "0", f"{i}.png"), 28, 28, b"".join(px))
    write_png(os.path.join(both, "0", f"{i}.png"), 28, 28, b"".join(px))
    write_png(os.path.join(both, "0", f"{i}m.png"), 28, 28, b"".join(row[::-1] for row in px))
qm = ["--calib-size", "0", "--method", "minmax", "--bits", "6", "--plan-only", "-q"]
cli.expect("quantize --calib-mirror", ["quantize", "--model", M, "--calib", mroot, "--calib-mirror", *qm, "-o",
                                       cli.path("q_mirror")], "ok", r"calib\s+8 images \(4 and each mirrored\)")
cli.expect("quantize on the folder with mirrored copies", ["quantize", "--model", M, "--calib", both, *qm, "-o",
                                                           cli.path("q_both")], "ok", r"calib\s+8 images from")
pm, pb = read_json(cli.path("q_mirror", "plan.json")), read_json(cli.path("q_both", "plan.json"))
cal = pm["calibration"]
cli.check(cal["images"] == 8 and cal.get("mirrored") is True and sum(s.endswith(" (mirrored)") for s in cal["samples"]) == 4,
          "--calib-mirror: the plan records 8 samples, 4 of them mirrored copies", json.dumps(cal)[:400])
same = [k for k in pm["sites"] if pm["sites"][k] == pb["sites"].get(k)]
cli.check(len(pm["sites"]) > 0 and len(same) == len(pm["sites"]) == len(pb["sites"]),
          f"--calib-mirror: every site's plan entry equals the one calibrated on the mirrored files "
          f"({len(same)}/{len(pm['sites'])})", str([k for k in pm["sites"] if k not in same][:5]))

cli.finish()
