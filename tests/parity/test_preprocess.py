"""Parity of vitq's data layer with PIL + torchvision (the acceptance test of src/data).

The reference is computed here, independently of vitq: PIL decodes (Image.open(p).convert),
PIL resizes (Image.resize), and timm's evaluation transform is built by hand from torchvision
0.14 (Resize(floor(size / crop_pct)) -> CenterCrop -> ToTensor -> Normalize). vitq's results come
from vitq_probe (tests/probe/probe_preprocess.cpp).

Checks:
  decode      identical pixels (max abs diff 0)
  resize      identical pixels (max abs diff 0; Pillow's fixed-point resampler is reproduced)
  preprocess  every value within 1/255 (in [0, 1] units, i.e. 1/255/std after normalisation)
  damaged     corrupt/truncated files exit with Error(Data) naming the file, never crash;
              randomly damaged JPEGs get PIL's accept/reject decision and pixels
on synthetic images generated here (odd sizes, RGB and L, PNG and JPEG variants, 1..16-bit,
palette, alpha, interlaced, CMYK JPEG), on a deterministic sample of ../shared images when
present, and on Fashion-MNIST through open_dataset when Debian's copy is installed.

One documented, deliberate difference: 16-bit grey PNGs. PIL's convert("RGB") clips the
16-bit value at 255; vitq keeps the high byte (see src/data/decode_png.cpp). For those files
the reference is PIL's 16-bit sample values >> 8, and the test also checks that they really
differ from PIL's clipped conversion (so that the exception is not vacuous).

Exit status: 0 pass, 1 fail, 77 skip (prints why).
"""
import glob
import gzip
import math
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib

try:
    import numpy as np
    from PIL import Image
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode
except ImportError as e:  # pragma: no cover
    print(f"SKIP: needs numpy, torch, torchvision and PIL ({e}); run with Debian's /usr/bin/python3")
    sys.exit(77)

import common  # tests/parity/common.py: arguments and the shared-dir check

# PIL warns that palette PNGs with a tRNS byte string "should be converted to RGBA"; the test
# makes such files on purpose.
warnings.filterwarnings("ignore", message="Palette images with Transparency")

PIL_FILTER = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
TV_INTERP = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR,
             "bicubic": InterpolationMode.BICUBIC}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
CIFAR = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


class DataChecker:
    """Runs vitq_probe, compares with the reference, keeps the max diff per category."""

    def __init__(self, probe, tmp):
        self.probe, self.tmp = probe, tmp
        self.failures = []
        self.stats = {}  # category -> [count, max diff]
        self.calls = 0

    def fail(self, msg):
        self.failures.append(msg)
        print("FAIL:", msg)

    def note(self, category, diff):
        s = self.stats.setdefault(category, [0, 0.0])
        s[0] += 1
        s[1] = max(s[1], float(diff))

    def run(self, args):
        self.calls += 1
        return subprocess.run([self.probe] + [str(a) for a in args], capture_output=True, text=True)

    def probe_u8(self, args):
        out = os.path.join(self.tmp, "probe.u8")
        r = self.run(args + ["--out", out])
        if r.returncode != 0:
            return None, f"probe {' '.join(map(str, args))} exited {r.returncode}: {r.stderr.strip()}"
        w, h, c = map(int, r.stdout.split()[:3])
        a = np.fromfile(out, dtype=np.uint8)
        if a.size != w * h * c:
            return None, f"probe wrote {a.size} bytes for {w}x{h}x{c}"
        return a.reshape(h, w, c) if c > 1 else a.reshape(h, w), None

    def probe_f32(self, args, shape):
        out = os.path.join(self.tmp, "probe.f32")
        r = self.run(args + ["--out", out])
        if r.returncode != 0:
            return None, None, f"probe {' '.join(map(str, args))} exited {r.returncode}: {r.stderr.strip()}"
        a = np.fromfile(out, dtype="<f4")
        if a.size != int(np.prod(shape)):
            return None, None, f"probe wrote {a.size} floats, expected {shape}"
        return a.reshape(shape), r.stdout, None

    # ---- the three checks -------------------------------------------------------------------

    def check_decode(self, path, ref, category):
        got, err = self.probe_u8(["decode", "--image", path])
        if err:
            return self.fail(f"decode {path}: {err}")
        if got.shape != ref.shape:
            return self.fail(f"decode {path}: shape {got.shape}, PIL {ref.shape}")
        d = int(np.abs(got.astype(int) - ref.astype(int)).max())
        self.note(category, d)
        if d != 0:
            self.fail(f"decode {path}: max abs diff {d} vs PIL (expected identical)")

    def check_resize(self, path, src_pil, w, h, interp, gray, category):
        ref = np.asarray(src_pil.resize((w, h), PIL_FILTER[interp]))
        args = ["resize", "--image", path, "--width", w, "--height", h, "--interp", interp]
        got, err = self.probe_u8(args + (["--gray"] if gray else []))
        if err:
            return self.fail(f"resize {path} -> {w}x{h} {interp}: {err}")
        if got.shape != ref.shape:
            return self.fail(f"resize {path} -> {w}x{h} {interp}: shape {got.shape}, PIL {ref.shape}")
        d = int(np.abs(got.astype(int) - ref.astype(int)).max())
        self.note(category, d)
        if d != 0:
            self.fail(f"resize {path} {src_pil.size} -> {w}x{h} {interp} {'L' if gray else 'RGB'}: "
                      f"max abs diff {d} vs PIL (expected identical)")

    def check_preprocess(self, path, src_pil, cfg, category):
        h, w, ch, interp, crop_pct, (mean, std) = cfg[:6]
        resize_exact = len(cfg) > 6 and cfg[6]
        ref = reference_transform(h, w, interp, crop_pct, mean, std, resize_exact)(src_pil).numpy()
        args = ["preprocess", "--image", path, "--height", h, "--width", w, "--channels", ch,
                "--interp", interp, "--crop-pct", repr(crop_pct),
                "--mean", ",".join(map(repr, mean[:ch])), "--std", ",".join(map(repr, std[:ch]))]
        got, _, err = self.probe_f32(args + (["--resize-exact"] if resize_exact else []), ref.shape)
        if err:
            return self.fail(f"preprocess {path} {cfg}: {err}")
        self.compare_tensor(got, ref, std[:ch], f"preprocess {path} {cfg}", category)

    def compare_tensor(self, got, ref, std, what, category):
        # The acceptance bound: 1/255 of the [0, 1] range per channel, on every value.
        scaled = np.abs(got.astype(np.float64) - ref.astype(np.float64)) * np.array(std)[:, None, None]
        d = float(scaled.max())
        self.note(category, d * 255.0)  # reported in 8-bit steps
        self.note(category + " (raw float diff)", float(np.abs(got - ref).max()))
        if not np.isfinite(got).all() or d > 1.0 / 255.0:
            self.fail(f"{what}: max diff {d * 255:.4f}/255 exceeds 1/255")


def reference_transform(h, w, interp, crop_pct, mean, std, resize_exact=False):
    """timm's transforms_imagenet_eval, by hand, on torchvision 0.14."""
    if resize_exact:  # Hugging Face ViTImageProcessor: plain resize, no crop
        scale = (h, w)
    elif h == w:
        scale = int(math.floor(h / crop_pct))
    else:
        scale = tuple(int(x / crop_pct) for x in (h, w))
    return transforms.Compose([
        transforms.Resize(scale, interpolation=TV_INTERP[interp]),
        transforms.CenterCrop((h, w)),
        transforms.ToTensor(),
        transforms.Normalize(mean[: len(mean)], std[: len(std)]),
    ])


def pil_rgb(path):
    return Image.open(path).convert("RGB")


# ---- synthetic images ----------------------------------------------------------------------

def png_file(path, samples, bit_depth, color_type, plte=None, trns=None, interlace=False):
    """Writes a PNG from integer samples (H x W [x C]) with any bit depth, by hand."""
    h, w = samples.shape[:2]
    s = samples.reshape(h, w, -1)

    def pack_rows(img):
        rows = []
        for y in range(img.shape[0]):
            r = img[y].reshape(-1)
            if bit_depth == 16:
                data = r.astype(">u2").tobytes()
            elif bit_depth == 8:
                data = r.astype(np.uint8).tobytes()
            else:  # 1, 2, 4 bits: big-endian bit fields
                bits = ((r[:, None].astype(np.uint16) >> np.arange(bit_depth - 1, -1, -1)) & 1).astype(np.uint8)
                data = np.packbits(bits.reshape(-1)).tobytes()
            rows.append(b"\x00" + data)  # filter type 0
        return b"".join(rows)

    if interlace:  # Adam7: seven sub-images, each with its own rows
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        raw = b"".join(pack_rows(s[y0::dy, x0::dx]) for x0, y0, dx, dy in passes
                       if s[y0::dy, x0::dx].size)
    else:
        raw = pack_rows(s)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0,
                                                           1 if interlace else 0))
    if plte is not None:
        out += chunk(b"PLTE", bytes(np.asarray(plte, dtype=np.uint8).reshape(-1)))
    if trns is not None:
        out += chunk(b"tRNS", trns)
    out += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(out)


def smooth_image(rng, h, w, c):
    """Random but image-like content (gradients + blobs + noise), so JPEG and resizing see
    realistic structure as well as the hard edges of pure noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for _ in range(c):
        fx, fy, ph = rng.uniform(0.01, 0.2), rng.uniform(0.01, 0.2), rng.uniform(0, 6.3)
        v = 128 + 90 * np.sin(fx * x + ph) * np.cos(fy * y) + rng.normal(0, 12, (h, w))
        chans.append(v)
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


def make_synthetic(d, rng):
    """Returns [(path, kind)], kind = 'rgb' | 'l' | 'gray16' | 'special'."""
    files = []
    # (3, 700) and (650, 2): extreme aspect ratios, whose resize is far larger than the crop.
    for (h, w) in [(17, 31), (250, 333), (5, 9), (333, 250), (1, 1), (480, 640), (3, 700), (650, 2)]:
        for noise in (True, False):
            if noise:
                rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            else:
                rgb = smooth_image(rng, h, w, 3)
            tag = f"{w}x{h}_{'noise' if noise else 'smooth'}"
            gray = rgb[..., 0]
            for mode, arr in (("rgb", rgb), ("l", gray)):
                p = os.path.join(d, f"{tag}_{mode}.png")
                Image.fromarray(arr).save(p)
                files.append((p, mode))
                p = os.path.join(d, f"{tag}_{mode}.jpg")
                Image.fromarray(arr).save(p, quality=90)
                files.append((p, mode))
    # JPEG variants on one natural-ish image: chroma subsampling, progressive, CMYK.
    base = smooth_image(rng, 123, 157, 3)
    for name, kw in (("444", dict(subsampling=0)), ("422", dict(subsampling=1)), ("420", dict(subsampling=2)),
                     ("prog", dict(progressive=True)), ("q50", dict(quality=50)), ("opt", dict(optimize=True))):
        p = os.path.join(d, f"jpeg_{name}.jpg")
        Image.fromarray(base).save(p, quality=kw.pop("quality", 92), **kw)
        files.append((p, "rgb"))
    p = os.path.join(d, "cmyk.jpg")
    Image.fromarray(rng.integers(0, 256, (37, 45, 4), dtype=np.uint8), "CMYK").save(p, quality=95)
    files.append((p, "special"))
    # PNG variants, written by hand to cover every bit depth and colour type.
    h, w = 23, 37
    png_file(p := os.path.join(d, "rgb16.png"), rng.integers(0, 65536, (h, w, 3)), 16, 2)
    files.append((p, "special"))
    png_file(p := os.path.join(d, "rgba16.png"), rng.integers(0, 65536, (h, w, 4)), 16, 6)
    files.append((p, "special"))
    png_file(p := os.path.join(d, "la16.png"), rng.integers(0, 65536, (h, w, 2)), 16, 4)
    files.append((p, "special"))
    png_file(p := os.path.join(d, "rgba8.png"), rng.integers(0, 256, (h, w, 4)), 8, 6)
    files.append((p, "special"))
    png_file(p := os.path.join(d, "la8.png"), rng.integers(0, 256, (h, w, 2)), 8, 4)
    files.append((p, "special"))
    for bits in (1, 2, 4, 8):
        png_file(p := os.path.join(d, f"gray{bits}.png"), rng.integers(0, 1 << bits, (h, w)), bits, 0)
        files.append((p, "special"))
        n = 1 << bits
        plte = rng.integers(0, 256, (max(1, n - 3) if bits > 1 else 2, 3))  # short palettes too
        idx = rng.integers(0, n, (h, w))  # some indices past the palette when it is short
        trns = bytes(rng.integers(0, 256, len(plte)).astype(np.uint8))
        png_file(p := os.path.join(d, f"pal{bits}.png"), idx, bits, 3, plte=plte, trns=trns)
        files.append((p, "special"))
    png_file(p := os.path.join(d, "rgb_trns.png"), rng.integers(0, 256, (h, w, 3)), 8, 2,
             trns=struct.pack(">HHH", 1, 2, 3))
    files.append((p, "special"))
    png_file(p := os.path.join(d, "interlaced_rgb.png"), rng.integers(0, 256, (29, 41, 3)), 8, 2, interlace=True)
    files.append((p, "special"))
    png_file(p := os.path.join(d, "interlaced_gray2.png"), rng.integers(0, 4, (13, 11)), 2, 0, interlace=True)
    files.append((p, "special"))
    g16 = rng.integers(0, 65536, (h, w))
    g16[0, :4] = [0, 255, 256, 65535]
    png_file(p := os.path.join(d, "gray16.png"), g16, 16, 0)
    files.append((p, "gray16"))
    png_file(p := os.path.join(d, "gray16_interlaced.png"), g16, 16, 0, interlace=True)
    files.append((p, "gray16"))
    return files


def reference_decode(path, kind):
    if kind == "gray16":  # vitq's documented rule: high byte of the 16-bit sample
        im = Image.open(path)
        assert im.mode in ("I", "I;16", "I;16B"), im.mode
        v = (np.asarray(im).astype(np.int64) >> 8).astype(np.uint8)
        return np.repeat(v[..., None], 3, axis=2)
    return np.asarray(pil_rgb(path))


def run_synthetic(ck, d):
    rng = np.random.default_rng(20240611)
    files = make_synthetic(d, rng)
    for path, kind in files:
        ck.check_decode(path, reference_decode(path, kind), f"decode synthetic {'PNG' if path.endswith('png') else 'JPEG'}")
        if kind == "gray16":
            clipped = np.asarray(Image.open(path).convert("RGB"))
            if np.array_equal(clipped, reference_decode(path, kind)):
                ck.fail(f"{path}: PIL's clipped 16-bit grey equals the high-byte rule; the test is vacuous")
    # Resizing: up and down, each pass alone and both, all three filters, RGB and L.
    targets = {
        (31, 17): [(15, 8), (77, 40), (31, 60), (50, 17), (7, 3), (1, 1)],
        (333, 250): [(224, 224), (133, 100), (666, 500), (333, 249), (100, 250), (297, 223)],
        (9, 5): [(1, 1), (2, 3), (64, 64), (9, 11)],
        (250, 333): [(248, 330), (224, 298), (500, 333)],
        (640, 480): [(330, 248), (256, 192), (1001, 751)],
        (1, 1): [(5, 3)],
        (700, 3): [(9, 2), (1400, 11), (233, 3)],
        (2, 650): [(3, 1300), (1, 100), (2, 7)],
    }
    for path, kind in files:
        if kind not in ("rgb", "l") or not path.endswith(".png"):
            continue
        src = pil_rgb(path)
        for (w, h) in targets[src.size]:
            for interp in ("bicubic", "bilinear", "nearest"):
                ck.check_resize(path, src, w, h, interp, False, f"resize synthetic RGB {interp}")
                if kind == "l" and interp != "nearest":
                    ck.check_resize(path, Image.open(path).convert("L"), w, h, interp, True,
                                    f"resize synthetic L {interp}")
    for path, kind in files:  # JPEG sources too, a few sizes
        if path.endswith(".jpg") and kind == "rgb":
            src = pil_rgb(path)
            w, h = src.size
            for interp in ("bicubic", "bilinear"):
                ck.check_resize(path, src, max(1, w * 2 // 3), max(1, h * 3 // 5), interp, False,
                                f"resize synthetic RGB {interp}")
    # The timm transform: several configurations, RGB and grey models.
    configs = [
        (224, 224, 3, "bicubic", 0.875, IMAGENET),
        (224, 224, 3, "bicubic", 0.9, HALF),
        (224, 224, 3, "bilinear", 0.875, IMAGENET),
        (384, 384, 3, "bicubic", 1.0, HALF),      # upscaling
        (32, 32, 3, "bilinear", 1.0, CIFAR),
        (200, 160, 3, "bicubic", 0.9, IMAGENET),  # non-square: tuple Resize
        (224, 224, 3, "bilinear", 1.0, HALF, True),  # resize_exact (HF)
        (28, 28, 1, "bilinear", 1.0, ((0.2860,), (0.3530,))),
        (64, 64, 1, "bicubic", 0.875, ((0.5,), (0.25,))),
        (96, 96, 3, "nearest", 0.95, IMAGENET),
        (224, 224, 3, "bicubic", 1.15, IMAGENET),  # crop larger than the resized image: zero padding
    ]
    for path, kind in files:
        if kind not in ("rgb", "l") or "noise" in path:
            continue
        for cfg in configs:
            src = Image.open(path).convert("L" if cfg[2] == 1 else "RGB")
            ck.check_preprocess(path, src, cfg, f"preprocess synthetic {cfg[3]}")
    for path, kind in files:  # the odd formats through the whole pipeline once
        if kind == "special":
            ck.check_preprocess(path, pil_rgb(path), configs[0], "preprocess synthetic bicubic")
    return len(files)


def run_errors(ck, d):
    """Corrupt input must give exit code 4 (Error(Data)) naming the file, never a crash."""
    good = open(glob.glob(os.path.join(d, "640x480_smooth_rgb.jpg"))[0], "rb").read()
    goodpng = open(glob.glob(os.path.join(d, "333x250_smooth_rgb.png"))[0], "rb").read()
    cases = {
        "trunc_half.jpg": good[: len(good) // 2],
        "trunc_noeoi.jpg": good[:-2],
        "trunc_header.jpg": good[:40],
        "trunc_half.png": goodpng[: len(goodpng) // 2],
        "trunc_sig.png": goodpng[:12],
        "garbage.jpg": bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)),
        "empty.png": b"",
        "fake.jpg": b"GIF89a" + b"\0" * 100,
        "badcrc.png": goodpng[:29] + bytes([goodpng[29] ^ 1]) + goodpng[30:],
    }
    for name, data in cases.items():
        p = os.path.join(d, name)
        with open(p, "wb") as f:
            f.write(data)
    for name in list(cases) + ["does_not_exist.jpg"]:
        p = os.path.join(d, name)
        r = ck.run(["decode", "--image", p, "--out", os.path.join(d, "err.u8")])
        if r.returncode != 4 or p not in r.stderr:
            ck.fail(f"corrupt {name}: expected exit 4 with the path in the message, got {r.returncode}: "
                    f"{r.stderr.strip()[:200]}")
        else:
            ck.note("corrupt files rejected with Error(Data)", 0)


def run_mutations(ck, d):
    """Randomly damaged files (fixed seed). JPEG: vitq must take the same decision as PIL
    (accept/reject) and, when both accept, give the same pixels (libjpeg's recoverable damage
    is decoded identically). PNG: libpng is stricter than PIL's reader about chunk framing and
    CRCs, so vitq may reject a damaged file PIL reads; it must never crash, and when both
    decode the pixels must agree."""
    rng = random.Random(1234)
    sources = [os.path.join(d, "640x480_smooth_rgb.jpg"), os.path.join(d, "jpeg_prog.jpg"),
               os.path.join(d, "333x250_noise_rgb.png")]
    decisions = {}
    for src in sources:
        data = open(src, "rb").read()
        is_png = src.endswith(".png")
        for it in range(40):
            b = bytearray(data)
            kind = it % 4
            if kind == 0:  # a few random bytes in the body
                for _ in range(rng.randint(1, 5)):
                    b[rng.randrange(min(600, len(b) // 3), len(b) - 2)] = rng.randrange(256)
            elif kind == 1:  # inserted bytes
                p = rng.randrange(min(600, len(b) // 3), len(b) - 2)
                b[p:p] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
            elif kind == 2:  # header damage
                b[rng.randrange(8, 60)] = rng.randrange(256)
            else:  # truncation
                b = b[: rng.randrange(8, len(b) - 1)]
            p = os.path.join(d, "mutated" + (".png" if is_png else ".jpg"))
            with open(p, "wb") as f:
                f.write(bytes(b))
            try:
                ref = np.asarray(pil_rgb(p))
            except Exception:  # noqa: BLE001 - any PIL failure is a rejection
                ref = None
            got, err = ck.probe_u8(["decode", "--image", p])
            if err and " exited 4:" not in err:
                ck.fail(f"damaged {os.path.basename(src)} #{it}: {err}")
                continue
            key = ("PNG" if is_png else "JPEG", "PIL ok" if ref is not None else "PIL rejects",
                   "vitq ok" if got is not None else "vitq rejects")
            decisions[key] = decisions.get(key, 0) + 1
            if ref is not None and got is not None:
                same = got.shape == ref.shape and np.array_equal(got, ref)
                ck.note("damaged files decoded by both: max diff", 0 if same else 255)
                if not same:
                    ck.fail(f"damaged {os.path.basename(src)} #{it}: decoded differently from PIL")
            elif not is_png and (ref is None) != (got is None):
                ck.fail(f"damaged {os.path.basename(src)} #{it}: PIL {'accepts' if ref is not None else 'rejects'}, "
                        f"vitq {'accepts' if got is not None else 'rejects'}")
            elif is_png and ref is None and got is not None:
                ck.fail(f"damaged {os.path.basename(src)} #{it}: vitq accepts a PNG that PIL rejects")
    return ", ".join(f"{k[0]} {k[1]}/{k[2]}: {v}" for k, v in sorted(decisions.items()))


def run_shared(ck, shared):
    files = sorted(glob.glob(os.path.join(shared, "data/imagenet-sample/calib/*/*.JPEG")) +
                   glob.glob(os.path.join(shared, "data/imagenet-sample/dev/*/*.JPEG")))
    if not files:
        return "no images under data/imagenet-sample"
    step = max(1, len(files) // 30)
    sample = files[::step][:30]
    # Include every non-RGB JPEG of the set (ImageNet has grey and CMYK ones): cheap to find.
    odd = [f for f in files if Image.open(f).mode != "RGB"]
    sample += [f for f in odd if f not in sample]
    for path in sample:
        src = pil_rgb(path)
        ck.check_decode(path, np.asarray(src), "decode imagenet JPEG")
        w, h = src.size
        s = 248 / min(w, h)
        for (tw, th), interp in (((int(w * s) if w > h else 248, int(h * s) if h > w else 248), "bicubic"),
                                 ((224, 224), "bilinear"), ((w * 3 // 2, h * 5 // 4), "bicubic"),
                                 ((w // 3, h // 2), "nearest")):
            ck.check_resize(path, src, tw, th, interp, False, f"resize imagenet {interp}")
        ck.check_preprocess(path, src, (224, 224, 3, "bicubic", 0.9, HALF), "preprocess imagenet bicubic")
        ck.check_preprocess(path, src, (224, 224, 3, "bilinear", 0.875, IMAGENET), "preprocess imagenet bilinear")
    for path in sample[:6]:
        ck.check_preprocess(path, Image.open(path).convert("L"), (224, 224, 1, "bicubic", 0.875, ((0.45,), (0.27,))),
                            "preprocess imagenet grey model")
    cifar = sorted(glob.glob(os.path.join(shared, "data/cifar10/dev/*/*.jpg")))[::1000][:5]
    for path in cifar:
        src = pil_rgb(path)
        ck.check_decode(path, np.asarray(src), "decode cifar10 JPEG")
        ck.check_preprocess(path, src, (32, 32, 3, "bilinear", 1.0, CIFAR), "preprocess cifar10 (no resize)")
        ck.check_resize(path, src, 64, 64, "bicubic", False, "resize cifar10 bicubic up")
    return f"{len(sample)} ImageNet JPEGs ({len(odd)} non-RGB), {len(cifar)} CIFAR-10 JPEGs"


def run_fashion_mnist(ck, d):
    root = "/usr/share/datasets/fashion-mnist"
    images = os.path.join(root, "t10k-images-idx3-ubyte.gz")
    if not os.path.exists(images):
        return f"{images} not installed"
    with gzip.open(images) as f:
        raw = f.read()
    with gzip.open(os.path.join(root, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read()[8:], dtype=np.uint8)
    n, rows, cols = struct.unpack(">III", raw[4:16])
    pix = np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, rows, cols)
    for i in (0, 1, 4321, n - 1):
        for cfg in ((28, 28, 1, "bilinear", 1.0, ((0.2860,), (0.3530,))), (56, 56, 3, "bicubic", 0.875, HALF)):
            h, w, ch, interp, crop, (mean, std) = cfg
            ref = reference_transform(h, w, interp, crop, mean[:ch], std[:ch])(
                Image.fromarray(pix[i]).convert("L" if ch == 1 else "RGB")).numpy()
            args = ["dataset", "--path", root, "--index", i, "--height", h, "--width", w, "--channels", ch,
                    "--interp", interp, "--crop-pct", crop, "--mean", ",".join(map(repr, mean[:ch])),
                    "--std", ",".join(map(repr, std[:ch]))]
            got, stdout, err = ck.probe_f32(args, ref.shape)
            if err:
                ck.fail(f"fashion-mnist #{i}: {err}")
                continue
            label, num_classes, size = map(int, stdout.split()[:3])
            if (label, num_classes, size) != (int(labels[i]), 10, n):
                ck.fail(f"fashion-mnist #{i}: label/classes/size {label}/{num_classes}/{size}, "
                        f"expected {labels[i]}/10/{n}")
            ck.compare_tensor(got, ref, std[:ch], f"fashion-mnist #{i} {cfg}", "preprocess fashion-mnist (IDX)")
    return "4 Fashion-MNIST test images"


def main():
    a = common.parse_args()
    if not os.access(a.probe, os.X_OK):
        print(f"SKIP: probe {a.probe} is not built")
        return common.SKIP
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="vitq_pp_") as tmp:
        ck = DataChecker(a.probe, tmp)
        syn = os.path.join(tmp, "synthetic")
        os.mkdir(syn)
        print(f"synthetic: {run_synthetic(ck, syn)} generated images")
        run_errors(ck, syn)
        print("damaged files:", run_mutations(ck, syn))
        if common.shared_available(a, "data"):
            print("shared:", run_shared(ck, a.shared_dir))
        else:
            print("only synthetic images (and Fashion-MNIST if installed) were checked")
        print("fashion-mnist:", run_fashion_mnist(ck, syn))
    print(f"\n{'check':58s} {'n':>5s}  max diff")
    for k in sorted(ck.stats):
        cnt, mx = ck.stats[k]
        unit = "" if "raw float" in k else ("/255" if k.startswith("preprocess") else "")
        print(f"{k:58s} {cnt:5d}  {mx:.3g}{unit}")
    print(f"{ck.calls} probe runs in {time.time() - t0:.1f} s")
    if ck.failures:
        print(f"\n{len(ck.failures)} FAILURES")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
