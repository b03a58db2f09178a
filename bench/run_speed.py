#!/usr/bin/python3
"""vitq speed benchmark against its peers, measured in one run.

For each model (random weights, timm names) and batch size, every engine runs as its own
process once per repetition, interleaved (A B C A B C ...): the median of a process's timed
forwards is one repetition; the table shows the median over repetitions and their spread.

Engines (see ENGINE_GROUPS; adding one is one function returning an Engine):
  vitq-fp32     build/vitq bench, 2 and 1 threads
  vitq-int8     build/vitq bench on the W8A8 quantized model directory (integer run), 2 and 1 threads
  vitq-sim      the same directory with --simulate (quantize-dequantize, FP32 GEMMs), 2 threads
  vitq-fast     build/vitq bench on issue 16's fastest plan within a point of the best W8A8 accuracy
                on ViT-Ti's dev split (bench/recipe_speed.py's vitq-w8a8-signed+tables: vitq's W8A8
                formats, signed softmax grid, 8-bit GELU and softmax tables), 2 and 1 threads
  pytorch-fp32  PyTorch eager FP32 (bench/torch_bench.py), 1 and 2 threads, best reported
  pytorch-int8  PyTorch quantize_dynamic(nn.Linear, qint8), onednn engine, 1 and 2 threads
  ort-fp32      ONNX Runtime (bench/ort_bench.js, onnxruntime-node), 2 and 1 intra-op threads
  ort-int8      ONNX Runtime on the int8 rewrite of the export (bench/quantize_onnx_int8.py:
                DynamicQuantizeLinear + MatMulInteger, int8 per-channel weights), 2 and 1 threads
  ort-qdq       ONNX Runtime on vitq's QDQ export of the same W8A8 plan (`vitq export --onnx`; static
                steps, ORT fuses the QDQ pairs into its own int8 kernels: calibrations compared at
                equal kernels), 2 and 1 threads
  roofline      oneDNN GEMM roofline (build/bench/vitq_gemm_roofline), FP32 and INT8, 2 threads
The W8A8 plan of a random-weight model comes from `vitq quantize --method minmax --bits 8
--random-calibration 4` (speed does not depend on the steps); the head stays FP32 (vitq's
default), as it does in the PyTorch and ONNX Runtime int8 models.
PyTorch runs with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset and glibc malloc tuned (its best
configuration, measured on the machine of the tables): where those variables are set (the
developers' environment sets Haswell and 512), Debian's OpenBLAS runs AVX2 kernels and FP32 GEMM
at about half speed; with glibc's default thresholds, malloc hands PyTorch's large buffers back
to the OS on every forward (ViT-Ti batch 8 4x slower). Peak RSS of each process comes from
/usr/bin/time -v.
The machine's other load is measured from /proc/stat (before, during and after) and reported.

Needs: /usr/bin/python3 (torch, onnx), node + `npm install --ignore-scripts` in bench/,
a build with the vitq and vitq_gemm_roofline targets (--build-dir).

  /usr/bin/python3 bench/run_speed.py --out out/speed.json --results docs/RESULTS.md   # full run (~25 min idle)
  /usr/bin/python3 bench/run_speed.py --quick --models vit_ti --batches 1 --out /tmp/s.json
"""
import argparse
import dataclasses
import datetime
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tools"))
from results_md import replace_block  # noqa: E402  (run_speed's machine() is its own: it also lists the ISA)
from recipe_speed import CONFIGS as RECIPE_CONFIGS  # noqa: E402
PYTHON = "/usr/bin/python3"
TIME = "/usr/bin/time"
CORE_BUDGET = 2
PROCESS_TIMEOUT_S = 1800  # one engine process (a hang must not stall the whole run)
# PyTorch's environment (module comment): OpenBLAS at its native kernels, malloc kept from trimming.
TORCH_UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
TORCH_MALLOC = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967295"

MODELS = {  # short name -> (timm architecture, label)
    "vit_ti": ("vit_tiny_patch16_224", "ViT-Ti"),
    "deit_s": ("deit_small_patch16_224", "DeiT-S"),
    "vit_b": ("vit_base_patch16_224", "ViT-B"),
}
# Issue 16's fastest plan within a point of the best W8A8 accuracy (ViT-Ti dev; docs/RESULTS.md, "Integer
# element-wise operators"): the quantize options of recipe_speed's configuration of that name.
FAST_CONFIG = "vitq-w8a8-signed+tables"
PEER_ORDER = ["vitq", "vitq-fast", "vitq-sim", "pytorch", "ort", "ort-qdq", "roofline"]
PEER_LABEL = {"vitq": "vitq", "vitq-fast": "vitq fastest plan", "vitq-sim": "vitq simulated",
              "pytorch": "PyTorch 1.13", "ort": "ONNX Runtime",
              "ort-qdq": "ONNX Runtime on vitq's QDQ export", "roofline": "GEMM roofline"}
PRECISION_LABEL = {"fp32": "FP32", "int8": "INT8 (dynamic / W8A8)"}


# ------------------------------------------------------------------------------ context

@dataclasses.dataclass
class Ctx:
    build_dir: str
    work_dir: str
    warmup: int
    iters: int
    quick: bool

    @property
    def vitq(self):
        return os.path.join(self.build_dir, "vitq")

    @property
    def roofline(self):
        return os.path.join(self.build_dir, "bench", "vitq_gemm_roofline")


@dataclasses.dataclass
class Model:
    key: str
    arch: str
    label: str
    dir: str
    onnx: str
    onnx_int8: str = ""
    qdir: str = ""  # vitq W8A8 quantized model directory
    onnx_qdq: str = ""  # its QDQ ONNX export (vitq export --onnx)
    qdir_fast: str = ""  # the quantized directory of FAST_CONFIG


@dataclasses.dataclass
class Engine:
    """One process to run per repetition. argv(ctx, model, batch, json_path) builds its command,
    which must write JSON to json_path; parse(json, batch) turns that JSON into
    {precision: ms per image} (the roofline gives two precisions from one process)."""
    name: str
    peer: str
    threads: int
    argv: Callable[[Ctx, Model, int, str], List[str]]
    parse: Callable[[dict, int], Dict[str, float]]
    set_env: Dict[str, str] = dataclasses.field(default_factory=dict)
    unset_env: tuple = ()
    available: Callable[[Ctx], Optional[str]] = lambda ctx: None  # reason it cannot run, or None


def median_per_image(j, batch):
    return statistics.median(j["ms_per_batch"]) / batch


def missing_file(path, hint):
    return None if os.path.exists(path) else f"{path} not found ({hint})"


# ------------------------------------------------------------------------------ engines

def vitq_engine(threads=CORE_BUDGET, kind="fp32"):
    """kind: fp32 (the checkpoint), int8 (the W8A8 directory in integers), sim (the same, simulated),
    fast (FAST_CONFIG's directory in integers)."""
    def argv(ctx, m, b, out):
        model = {"fp32": m.dir, "fast": m.qdir_fast}.get(kind, m.qdir)
        cmd = [ctx.vitq, "bench", "--model", model, "--batch", b, "--threads", threads,
               "--warmup", ctx.warmup, "--iters", ctx.iters, "--json", out]
        return cmd + (["--simulate"] if kind == "sim" else [])

    return Engine(
        name=f"vitq {kind} t{threads}", peer={"sim": "vitq-sim", "fast": "vitq-fast"}.get(kind, "vitq"),
        threads=threads, argv=argv,
        parse=lambda j, b: {"fp32" if kind == "fp32" else "int8": median_per_image(j, b)},
        available=lambda ctx: missing_file(ctx.vitq, "build the 'vitq' target"))


def pytorch_engine(precision, threads):
    def argv(ctx, m, b, out):
        cmd = [PYTHON, os.path.join(HERE, "torch_bench.py"), "--model", m.dir, "--batch", b, "--threads", threads,
               "--warmup", ctx.warmup, "--iters", ctx.iters, "--json", out]
        return cmd + (["--int8"] if precision == "int8" else [])

    return Engine(
        name=f"pytorch {precision} t{threads}", peer="pytorch", threads=threads, argv=argv,
        parse=lambda j, b: {precision: median_per_image(j, b)},
        set_env={"GLIBC_TUNABLES": TORCH_MALLOC, "OMP_NUM_THREADS": str(threads),
                 "OPENBLAS_NUM_THREADS": str(threads)},
        unset_env=TORCH_UNSET)


def ort_engine(threads, precision="fp32", qdq=False):
    script = os.path.join(HERE, "ort_bench.js")
    model = (lambda m: m.onnx_qdq) if qdq else (lambda m: m.onnx if precision == "fp32" else m.onnx_int8)
    return Engine(
        name=f"ort {'qdq' if qdq else precision} t{threads}", peer="ort-qdq" if qdq else "ort", threads=threads,
        argv=lambda ctx, m, b, out: ["node", script, "--model", model(m),
                                     "--batch", b, "--threads", threads, "--warmup", ctx.warmup, "--iters", ctx.iters,
                                     "--json", out],
        parse=lambda j, b: {precision: median_per_image(j, b)},
        available=lambda ctx: missing_file(os.path.join(HERE, "node_modules", "onnxruntime-node"),
                                           "run 'npm install --ignore-scripts' in bench/"))


def roofline_engine(threads=CORE_BUDGET):
    def argv(ctx, m, b, out):
        return [ctx.roofline, "--model", m.dir, "--batch", b, "--threads", threads, "--json", out] + \
               (["--quick"] if ctx.quick else [])

    return Engine(
        name=f"roofline t{threads}", peer="roofline", threads=threads, argv=argv,
        parse=lambda j, b: dict(j["roofline_ms_per_image"]),
        available=lambda ctx: missing_file(ctx.roofline, "build the 'vitq_gemm_roofline' target"))


# Groups selectable with --engines, in run order: group -> (engine for a thread count, the
# thread counts measured; --threads overrides them).
ENGINE_GROUPS = {
    "vitq-fp32": (vitq_engine, (CORE_BUDGET, 1)),
    "vitq-int8": (lambda t: vitq_engine(t, "int8"), (CORE_BUDGET, 1)),
    "vitq-sim": (lambda t: vitq_engine(t, "sim"), (CORE_BUDGET,)),
    "vitq-fast": (lambda t: vitq_engine(t, "fast"), (CORE_BUDGET, 1)),
    "pytorch-fp32": (lambda t: pytorch_engine("fp32", t), (1, 2)),
    "ort-fp32": (ort_engine, (2, 1)),
    "pytorch-int8": (lambda t: pytorch_engine("int8", t), (1, 2)),
    "ort-int8": (lambda t: ort_engine(t, "int8"), (2, 1)),
    "ort-qdq": (lambda t: ort_engine(t, "int8", qdq=True), (2, 1)),
    "roofline": (roofline_engine, (CORE_BUDGET,)),
}


def make_engines(groups, threads=None):
    engines = []
    for g in groups:
        make, default_threads = ENGINE_GROUPS[g]
        engines += [make(t) for t in threads or default_threads]
    return engines


# ------------------------------------------------------------------------------ models

def prepare_model(ctx, key):
    """Random-weight checkpoint dir (timm config.json + model.safetensors), its ONNX export and
    the export's int8 rewrite, and the vitq W8A8 quantized directory; each reused if already in
    the work dir."""
    arch, label = MODELS[key]
    d = os.path.join(ctx.work_dir, arch)
    m = Model(key, arch, label, d, os.path.join(d, "model.onnx"), os.path.join(d, "model_int8.onnx"),
              os.path.join(d, "w8a8"), os.path.join(d, "w8a8_qdq.onnx"), os.path.join(d, FAST_CONFIG.replace("+", "-")))
    if not os.path.exists(m.onnx):
        export_model(d, m, arch)
    if not os.path.exists(m.onnx_int8):
        import quantize_onnx_int8  # noqa: E402
        log(f"  rewriting {arch} ONNX to int8 (DynamicQuantizeLinear + MatMulInteger)")
        quantize_onnx_int8.quantize(m.onnx, m.onnx_int8 + ".tmp")
        os.replace(m.onnx_int8 + ".tmp", m.onnx_int8)
    if not os.path.exists(os.path.join(m.qdir, "model.safetensors")) and os.path.exists(ctx.vitq):
        log(f"  quantizing {arch} to W8A8 with vitq (MinMax on 4 random images)")
        subprocess.run([ctx.vitq, "quantize", "--model", d, "--random-calibration", "4", "--method", "minmax",
                        "--bits", "8", "-o", m.qdir, "--force", "-q"], check=True, stdout=subprocess.DEVNULL)
    if not os.path.exists(os.path.join(m.qdir_fast, "model.safetensors")) and os.path.exists(ctx.vitq):
        log(f"  quantizing {arch} with vitq's fastest plan ({FAST_CONFIG}, 4 random images)")
        subprocess.run([ctx.vitq, "quantize", "--model", d, "--random-calibration", "4", *RECIPE_CONFIGS[FAST_CONFIG],
                        "-o", m.qdir_fast, "--force", "-q"], check=True, stdout=subprocess.DEVNULL)
    if not os.path.exists(m.onnx_qdq) and os.path.exists(os.path.join(m.qdir, "model.safetensors")):
        log(f"  exporting the {arch} W8A8 model as QDQ ONNX (vitq export --onnx)")
        subprocess.run([ctx.vitq, "export", "--model", m.qdir, "--onnx", m.onnx_qdq], check=True,
                       stdout=subprocess.DEVNULL)
    return m


def export_model(d, m, arch):
    sys.path.insert(0, os.path.join(REPO, "tests", "parity"))
    import ref_vit  # noqa: E402  (torch only in the preparation step, not while measuring)
    import export_onnx  # noqa: E402
    ref_vit.write_random_checkpoint(d, arch)
    log(f"  exporting {arch} to ONNX")
    export_onnx.export(d, m.onnx + ".tmp")
    os.replace(m.onnx + ".tmp", m.onnx)


# ------------------------------------------------------------------------------ machine state

def cpu_jiffies():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    total = sum(v[:8])  # guest time is already counted in user
    return total - idle, total


def own_cpu_seconds():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def busy_cores_while_quiet(seconds):
    """Average number of busy cores over `seconds` while this script runs nothing."""
    b0, _ = cpu_jiffies()
    time.sleep(seconds)
    b1, _ = cpu_jiffies()
    return (b1 - b0) / os.sysconf("SC_CLK_TCK") / seconds


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    flags = open("/proc/cpuinfo").read()
    isa = [x for x in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if re.search(rf"\b{x}\b", flags)]
    return {"cpu": model, "cores": os.cpu_count(), "isa": isa, "kernel": os.uname().release}


# ------------------------------------------------------------------------------ running

def log(msg):
    print(msg, file=sys.stderr, flush=True)


def engine_env(e):
    env = dict(os.environ)
    for k in e.unset_env:
        env.pop(k, None)
    env.update(e.set_env)
    return env


def parse_time_v(path):
    """Peak RSS (MB) and CPU percentage from /usr/bin/time -v output."""
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.strip().rpartition(": ")
            if k == "Maximum resident set size (kbytes)":
                out["peak_rss_mb"] = int(v) / 1024
            elif k == "Percent of CPU this job got":
                out["cpu_percent"] = float(v.rstrip("%") or 0)
    return out


def run_once(ctx, e, m, batch, tag):
    """Runs one engine process; returns a record with its ms/image per precision and peak RSS."""
    out = os.path.join(ctx.work_dir, f"{tag}.json")
    tv = os.path.join(ctx.work_dir, f"{tag}.time")
    cmd = [str(c) for c in e.argv(ctx, m, batch, out)]
    use_time = os.access(TIME, os.X_OK)
    full = ([TIME, "-v", "-o", tv] if use_time else []) + cmd
    t0 = time.monotonic()
    p = subprocess.Popen(full, env=engine_env(e), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killer = threading.Timer(PROCESS_TIMEOUT_S, p.kill)
    killer.start()
    _, status, ru = os.wait4(p.pid, 0)  # rusage of this child alone (fallback for peak RSS)
    killer.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read()
    p.stderr.close()
    rec = {"engine": e.name, "peer": e.peer, "threads": e.threads, "model": m.key, "batch": batch,
           "wall_s": time.monotonic() - t0, "cmd": " ".join(cmd)}
    if p.returncode != 0:
        rec["error"] = f"exit {p.returncode}: {err.strip()[-800:]}"
        log(f"    {e.name}: FAILED ({rec['error']})")
        return rec
    rec.update(parse_time_v(tv) if use_time else {"peak_rss_mb": ru.ru_maxrss / 1024})
    with open(out) as f:
        j = json.load(f)
    rec["ms_per_image"] = e.parse(j, batch)
    if "ms_per_batch" in j:
        rec["ms_per_batch_runs"] = j["ms_per_batch"]
    vals = ", ".join(f"{k} {v:.2f}" for k, v in rec["ms_per_image"].items())
    log(f"    {e.name}: {vals} ms/image, peak RSS {rec['peak_rss_mb']:.0f} MB")
    return rec


def run_all(ctx, models, batches, engines, repeats):
    """Every engine once per repetition, interleaved, for each model and batch in turn."""
    runs = []
    for m in models:
        for b in batches:
            for r in range(repeats):
                log(f"  {m.label} batch {b}, repetition {r + 1}/{repeats}")
                for i, e in enumerate(engines):
                    rec = run_once(ctx, e, m, b, f"{m.key}-b{b}-r{r}-e{i}")
                    rec["rep"] = r
                    runs.append(rec)
    return runs


# ------------------------------------------------------------------------------ summary

def summarize(runs):
    """Rows (model, batch, peer, precision, threads) with median, min, max over repetitions."""
    groups = {}
    for rec in runs:
        for prec, ms in rec.get("ms_per_image", {}).items():
            k = (rec["model"], rec["batch"], rec["peer"], prec, rec["threads"])
            g = groups.setdefault(k, {"ms": [], "rss": []})
            g["ms"].append(ms)
            g["rss"].append(rec.get("peak_rss_mb", 0))
    rows = []
    for (model, batch, peer, prec, threads), g in groups.items():
        med = statistics.median(g["ms"])
        rows.append({"model": model, "batch": batch, "peer": peer, "precision": prec, "threads": threads,
                     "median_ms_per_image": med, "min": min(g["ms"]), "max": max(g["ms"]), "n": len(g["ms"]),
                     "spread_pct": 100 * (max(g["ms"]) - min(g["ms"])) / med, "peak_rss_mb": max(g["rss"])})
    failures = {}
    for rec in runs:
        if "error" in rec:
            failures.setdefault((rec["model"], rec["batch"], rec["engine"]), rec["error"])
    return rows, failures


def best_rows(rows):
    """For each (model, batch, peer, precision): the row at the peer's best thread count."""
    best = {}
    for r in rows:
        k = (r["model"], r["batch"], r["peer"], r["precision"])
        if k not in best or r["median_ms_per_image"] < best[k]["median_ms_per_image"]:
            best[k] = r
    return best


def fmt_cell(r):
    return f"{r['median_ms_per_image']:.2f} ±{r['spread_pct'] / 2:.0f}% ({r['threads']}T)"


def load_line(idle, cores, what="the run"):
    verdict = "idle" if idle["idle"] else "**NOT IDLE — numbers are not final**"
    return (f"{verdict}: other processes used {idle['foreign_cores_during']:.2f} cores during {what}, "
            f"{idle['busy_cores_before']:.2f} before and {idle['busy_cores_after']:.2f} after (of {cores}); "
            f"load average {idle['loadavg_before']} → {idle['loadavg_after']}")


def header_lines(meta):
    mc, idle = meta["machine"], meta["idle"]
    if "parts" in meta:  # --merge: one line per separately measured part
        load = "Machine load, per part (measured separately, each when the machine was quiet): " + "; ".join(
            f"{'/'.join(MODELS[m][1] for m in p['models'])} batch {','.join(map(str, p['batches']))} at "
            f"{p['date']}: " + load_line(p["idle"], mc["cores"], "it") for p in meta["parts"]) + "."
    else:
        load = f"Machine load: {load_line(idle, mc['cores'])}."
    return [
        f"Machine: {mc['cpu']}, {mc['cores']} cores ({', '.join(mc['isa'])}), kernel {mc['kernel']}; "
        f"measured {meta['date']}. Core budget {CORE_BUDGET} threads; each engine at its best measured "
        f"thread count (nT).",
        load,
        f"Method: {meta['repeats']} interleaved repetitions (one process per engine each), {meta['warmup']} warmup "
        f"+ {meta['iters']} timed forwards per process; ms per image = median over repetitions of each process's "
        f"median; ± = half the min–max range over repetitions. PyTorch with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE "
        f"unset and glibc malloc tuned (why: `bench/run_speed.py`)."
        + (" **--quick: smoke test, not a measurement.**" if meta["quick"] else ""),
    ]


def precision_table(prec, best, models, batches):
    """Lines of the ms/image table of one precision (empty if no engine measured it)."""
    peers = [p for p in PEER_ORDER if any(k[2] == p and k[3] == prec for k in best)]
    if not peers:
        return []
    others = [p for p in peers if p not in ("vitq", "vitq-fast", "roofline")]
    has_vitq, has_roof = "vitq" in peers, "roofline" in peers
    head = ["model", "batch"] + [PEER_LABEL[p] for p in peers]
    if has_vitq:
        head += [f"{PEER_LABEL[p]} ÷ vitq" for p in others] + (["vitq ÷ roofline"] if has_roof else [])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mk in models:
        for b in batches:
            get = {p: best.get((mk, b, p, prec)) for p in peers}
            ms = {p: r["median_ms_per_image"] for p, r in get.items() if r}
            cells = [MODELS[mk][1], str(b)] + [fmt_cell(get[p]) if get[p] else "—" for p in peers]
            if has_vitq:
                v = ms.get("vitq")
                cells += [f"{ms[p] / v:.2f}×" if v and p in ms else "—" for p in others]
                if has_roof:
                    cells.append(f"{v / ms['roofline']:.2f}×" if v and "roofline" in ms else "—")
            out.append("| " + " | ".join(cells) + " |")
    out.append("")
    if has_vitq:
        out.append("Peer ÷ vitq > 1: vitq is faster. vitq ÷ roofline: how far vitq is above the sum of its GEMMs "
                   "at oneDNN's best (≥ 1).")
        if prec == "int8":
            out.append("INT8: vitq = the W8A8 quantized model directory run in integers (every matmul but the "
                       "head, both attention matmuls included); vitq simulated = the same plan "
                       "quantize-dequantize with FP32 GEMMs; PyTorch and ORT = dynamic int8 of the linear "
                       "layers (qkv, proj, fc1, fc2), attention matmuls in FP32; ORT on vitq's QDQ export = the "
                       "same W8A8 plan as static QDQ pairs (`vitq export --onnx`), which ORT fuses into its own "
                       "int8 kernels; vitq fastest plan = the plan of issue 16's goal below, run in integers.")
    elif prec == "int8":
        out.append("vitq INT8 (W8A8) is not benchmarked yet.")
    return out


def rss_table(best, models, batches):
    """Peak RSS (MB) of each engine at its best thread count."""
    cols = [(p, prec) for prec in ("fp32", "int8") for p in PEER_ORDER if any(k[2:] == (p, prec) for k in best)]
    head = ["model", "batch"] + [f"{PEER_LABEL[p]} {prec}" for p, prec in cols]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mk in models:
        for b in batches:
            cells = [MODELS[mk][1], str(b)]
            cells += [f"{best[(mk, b, p, prec)]['peak_rss_mb']:.0f}" if (mk, b, p, prec) in best else "—"
                      for p, prec in cols]
            out.append("| " + " | ".join(cells) + " |")
    out += ["", "Whole process (PyTorch and Node include their runtimes); the roofline's is its operand buffers."]
    return out


def detail_table(rows):
    out = ["| model | batch | engine | precision | threads | ms/image (median) | min | max | peak RSS MB |",
           "|---|---|---|---|---|---|---|---|---|"]
    order = {p: i for i, p in enumerate(PEER_ORDER)}
    for r in sorted(rows, key=lambda r: (list(MODELS).index(r["model"]), r["batch"], r["precision"],
                                         order.get(r["peer"], 9), r["threads"])):
        out.append(f"| {MODELS[r['model']][1]} | {r['batch']} | {PEER_LABEL[r['peer']]} | {r['precision']} | "
                   f"{r['threads']} | {r['median_ms_per_image']:.2f} | {r['min']:.2f} | {r['max']:.2f} | "
                   f"{r['peak_rss_mb']:.0f} |")
    return out


# Issue 4's speed goals for vitq W8A8: (label, peer, precision, minimum peer ÷ vitq W8A8).
GOALS = [("vitq FP32", "vitq", "fp32", 3.0), ("PyTorch int8", "pytorch", "int8", 2.0),
         ("ORT FP32", "ort", "fp32", 2.0), ("ORT int8", "ort", "int8", 1.3)]


def goal_cell(best, mk, b, peer, prec, ms, goal, marked=True):
    """'peer ÷ ms' for the peer's best row, with ✓/✗ against `goal` where `marked`; '—' without a row."""
    r = best.get((mk, b, peer, prec))
    if not r:
        return "—"
    q = r["median_ms_per_image"] / ms
    return f"{q:.2f}×" + ((" ✓" if q >= goal else " ✗") if marked else "")


def goals_table(best, models, batches):
    """vitq W8A8 against each goal: peer ÷ vitq (must reach the minimum), vitq ÷ INT8 roofline
    (≤ 2), and at batch 1 whether vitq W8A8 is faster than every PyTorch/ORT configuration."""
    head = ["model", "batch", "vitq W8A8 ms"] + [f"{g[0]} ÷ vitq (≥ {g[3]:g})" for g in GOALS]
    head += ["vitq ÷ INT8 roofline (≤ 2)", "batch 1: faster than every peer"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mk in models:
        for b in batches:
            v = best.get((mk, b, "vitq", "int8"))
            if not v:
                continue
            vm = v["median_ms_per_image"]
            cells = [MODELS[mk][1], str(b), f"{vm:.2f}"]
            cells += [goal_cell(best, mk, b, peer, prec, vm, goal) for _, peer, prec, goal in GOALS]
            rf = best.get((mk, b, "roofline", "int8"))
            q = vm / rf["median_ms_per_image"] if rf else None
            cells.append(f"{q:.2f}× {'✓' if q <= 2 else '✗'}" if rf else "—")
            peers = [r for k, r in best.items() if k[0] == mk and k[1] == b and k[2] in ("pytorch", "ort")]
            fastest = min(peers, key=lambda r: r["median_ms_per_image"]) if peers else None
            if b != 1 or not fastest:
                cells.append("")
            else:
                cells.append(f"{'✓' if vm < fastest['median_ms_per_image'] else '✗'} (best peer: "
                             f"{PEER_LABEL[fastest['peer']]} {fastest['precision']}, "
                             f"{fastest['median_ms_per_image']:.2f} ms)")
            out.append("| " + " | ".join(cells) + " |")
    return out if len(out) > 2 else []


# Issue 16's speed goals for the fastest plan within a point: (label, peer, precision, minimum ratio, batches
# the goal is set for, models it is set for).
FAST_GOALS = [("vitq FP32", "vitq", "fp32", 4.0, (8,), ("vit_ti", "deit_s")),
              ("ORT int8", "ort", "int8", 1.5, (1, 8), tuple(MODELS))]


def fast_goals_table(best, models, batches):
    """The fastest plan within a point (FAST_CONFIG) against issue 16's goals: peer ÷ it; a goal's cell
    is marked only for the models and batches the goal is set for."""
    head = ["model", "batch", "vitq fastest plan ms", "vitq W8A8 ÷ it"] + \
        [f"{g[0]} ÷ it (≥ {g[3]:g} at batch {'/'.join(map(str, g[4]))})" for g in FAST_GOALS]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mk in models:
        for b in batches:
            f = best.get((mk, b, "vitq-fast", "int8"))
            if not f:
                continue
            fm = f["median_ms_per_image"]
            w = best.get((mk, b, "vitq", "int8"))
            cells = [MODELS[mk][1], str(b), f"{fm:.2f}", f"{w['median_ms_per_image'] / fm:.2f}×" if w else "—"]
            cells += [goal_cell(best, mk, b, peer, prec, fm, goal, b in goal_batches and mk in goal_models)
                      for _, peer, prec, goal, goal_batches, goal_models in FAST_GOALS]
            out.append("| " + " | ".join(cells) + " |")
    return out if len(out) > 2 else []


def markdown(meta, rows, models, batches, failures, level=1, detail=True):
    """The report; level = heading level of its title (2 inside docs/RESULTS.md), detail = add the table
    of every (engine, thread count)."""
    best = best_rows(rows)
    h = "#" * level
    out = [f"{h} Speed: vitq vs PyTorch and ONNX Runtime", ""] + header_lines(meta)
    for prec in ("fp32", "int8"):
        table = precision_table(prec, best, models, batches)
        if table:
            out += ["", f"{h}# {PRECISION_LABEL[prec]}, ms per image", ""] + table
    goals = goals_table(best, models, batches)
    if goals:
        out += ["", f"{h}# vitq W8A8 against the speed goals (peer ÷ vitq W8A8; ✓ = met)", ""] + goals
    fast = fast_goals_table(best, models, batches)
    if fast:
        out += ["", f"{h}# vitq's fastest plan within a point against issue 16's goals (peer ÷ it; ✓ = met)", "",
                f"The plan: `vitq quantize {' '.join(RECIPE_CONFIGS[FAST_CONFIG])}` (bench/recipe_speed.py's "
                f"`{FAST_CONFIG}`), the fastest measured within 1 point of the best W8A8 top-1 on ViT-Ti's dev split "
                "([Integer element-wise operators](#integer-element-wise-operators)); here on the same random-weight "
                "models as the other rows.", ""] + fast
    out += ["", f"{h}# Peak memory (RSS, MB)", ""] + rss_table(best, models, batches)
    if detail:
        out += ["", f"{h}# Every configuration", ""] + detail_table(rows)
    for (mk, b, name), err in failures.items():
        out.append(f"- FAILED {MODELS[mk][1]} batch {b} {name}: {err.splitlines()[-1] if err else ''}")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------ main

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="results JSON (the markdown table is written next to it as .md)")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    ap.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repetitions (default 5)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed forwards per process (default 2)")
    ap.add_argument("--iters", type=int, default=10, help="timed forwards per process (default 10)")
    ap.add_argument("--engines", default=",".join(ENGINE_GROUPS),
                    help=f"comma-separated engine groups, from {', '.join(ENGINE_GROUPS)}")
    ap.add_argument("--threads", help="comma-separated thread counts for every engine, instead of each one's "
                                      f"own (vitq and roofline {CORE_BUDGET}; PyTorch, ORT 1 and 2)")
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build"),
                    help="build with the vitq and vitq_gemm_roofline targets (default: <repo>/build)")
    ap.add_argument("--work-dir", help="keep checkpoints/ONNX/raw outputs here and reuse them "
                                       "(default: a temporary dir, removed)")
    ap.add_argument("--results", "--readme", dest="results", metavar="MD",
                    help="also replace the <!-- speed:begin/end --> block of this markdown file (docs/RESULTS.md; "
                         "--readme is the old name) with the tables")
    ap.add_argument("--merge", help="comma-separated result JSONs of earlier runs (e.g. one per model, each measured "
                                    "in a quiet moment of a shared machine): write their combined tables instead of "
                                    "measuring")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 2 repetitions of 1 warmup + 2 forwards, quick roofline")
    a = ap.parse_args()
    a.models = [m for m in a.models.split(",") if m]
    a.batches = [int(b) for b in a.batches.split(",") if b]
    a.engines = [g for g in a.engines.split(",") if g]
    a.threads = [int(t) for t in a.threads.split(",")] if a.threads else None
    for m in a.models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r} (choose from {', '.join(MODELS)})")
    for g in a.engines:
        if g not in ENGINE_GROUPS:
            ap.error(f"unknown engine group {g!r} (choose from {', '.join(ENGINE_GROUPS)})")
    if a.quick:
        a.repeats, a.warmup, a.iters = min(a.repeats, 2), 1, 2
    return a


def write_results(a, meta, runs, models, batches):
    """The results JSON (meta, summary, raw runs), its markdown next to it, and the docs/RESULTS.md block."""
    rows, failures = summarize(runs)
    md = markdown(meta, rows, models, batches, failures)
    with open(a.out, "w") as f:
        json.dump({"meta": meta, "summary": rows, "runs": runs}, f, indent=1)
    md_path = os.path.splitext(a.out)[0] + ".md"
    with open(md_path, "w") as f:
        f.write(md)
    log(f"wrote {a.out} and {md_path}")
    if a.results:
        replace_block(a.results, "speed", markdown(meta, rows, models, batches, failures, level=2, detail=False))
        log(f"updated {a.results}")
    print(md)


def merge(a):
    parts = [json.load(open(p)) for p in a.merge.split(",") if p]
    runs = [r for p in parts for r in p["runs"]]
    models = [m for m in MODELS if any(m in p["meta"]["models"] for p in parts)]
    batches = sorted({b for p in parts for b in p["meta"]["batches"]})
    meta = dict(parts[0]["meta"])
    meta["parts"] = [{"models": list(p["meta"]["models"]), "batches": p["meta"]["batches"], "date": p["meta"]["date"],
                      "idle": p["meta"]["idle"]} for p in parts]
    meta["idle"] = {"idle": all(p["meta"]["idle"]["idle"] for p in parts)}
    meta["date"] = " / ".join(sorted({p["meta"]["date"][:10] for p in parts}))
    write_results(a, meta, runs, models, batches)


def main():
    a = parse_args()
    if a.merge:
        return merge(a)
    work = a.work_dir or tempfile.mkdtemp(prefix="vitq-speed-")
    os.makedirs(work, exist_ok=True)
    ctx = Ctx(os.path.abspath(a.build_dir), work, a.warmup, a.iters, a.quick)
    engines, skipped = [], {}
    for e in make_engines(a.engines, a.threads):
        why = e.available(ctx)
        if why:
            skipped[e.name] = why
            log(f"skipping {e.name}: {why}")
        else:
            engines.append(e)
    try:
        quiet = 1.0 if a.quick else 3.0
        models = []
        for key in a.models:  # prepare everything first: the idle check must not see the exports
            log(f"preparing {key}")
            models.append(prepare_model(ctx, key))
        before = {"loadavg": loadavg(), "busy": busy_cores_while_quiet(quiet)}
        b0, own0, t0 = cpu_jiffies()[0], own_cpu_seconds(), time.monotonic()
        runs = run_all(ctx, models, a.batches, engines, a.repeats)
        wall = time.monotonic() - t0
        busy = (cpu_jiffies()[0] - b0) / os.sysconf("SC_CLK_TCK")
        foreign = max(0.0, busy - (own_cpu_seconds() - own0)) / wall
        after = {"loadavg": loadavg(), "busy": busy_cores_while_quiet(quiet)}
    finally:
        if not a.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    idle = {"foreign_cores_during": foreign, "busy_cores_before": before["busy"], "busy_cores_after": after["busy"],
            "loadavg_before": before["loadavg"], "loadavg_after": after["loadavg"], "wall_s": wall}
    idle["idle"] = max(foreign, before["busy"], after["busy"]) < 0.15
    meta = {"date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(),
            "idle": idle, "repeats": a.repeats, "warmup": a.warmup, "iters": a.iters, "quick": a.quick,
            "models": {k: MODELS[k][0] for k in a.models}, "batches": a.batches,
            "engines": [e.name for e in engines], "skipped": skipped,
            "pytorch_env": {"unset": list(TORCH_UNSET), "GLIBC_TUNABLES": TORCH_MALLOC}}
    write_results(a, meta, runs, a.models, a.batches)


if __name__ == "__main__":
    main()
