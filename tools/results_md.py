"""What the scripts that measure and publish results share (tools/run_accuracy.py,
tools/run_ablation.py, bench/calib_cost.py, bench/recipe_speed.py, bench/run_speed.py): running a
vitq command, the machine line of a table, and replacing a generated block of a markdown file."""
import json
import os
import platform
import subprocess
import sys


def run(cmd, env=None):
    """Runs cmd (any items, made strings; env: its environment, None = this one); its stdout, or exit 1
    with the end of its stderr."""
    r = subprocess.run([str(x) for x in cmd], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.stderr.write(f"command failed ({r.returncode}): {' '.join(map(str, cmd))}\n{r.stderr[-3000:]}\n")
        raise SystemExit(1)
    return r.stdout


def machine():
    """'CPU model, N cores, Linux release': the machine line under every table."""
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def load_results(path):
    """The `results` of a results JSON written by save_results ({} if the file does not exist yet):
    the measuring scripts resume from it."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f).get("results", {})


def save_results(path, results, **fields):
    """Writes {**fields, machine, results} to path (its directory made if needed)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({**fields, "machine": machine(), "results": results}, f, indent=1)


def replace_block(path, name, text):
    """Replaces what stands between <!-- NAME:begin --> and <!-- NAME:end --> in the markdown file
    by a newline, text and a newline; exits naming the file if a marker is missing."""
    with open(path) as f:
        s = f.read()
    a, b = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if a not in s or b not in s:
        sys.exit(f"{path}: markers {a} / {b} not found")
    s = s[: s.index(a) + len(a)] + "\n" + text + "\n" + s[s.index(b):]
    with open(path, "w") as f:
        f.write(s)
