"""vitq from Python: load a ViT checkpoint, a quantization plan or a quantized model directory,
predict logits for numpy batches, preprocess images exactly as the command line does, and
quantize — the same C++ code as the `vitq` command, in this process.

    import vitq
    model = vitq.load("models/vit_fmnist_patch4_28")       # FP32 checkpoint (timm / Hugging Face)
    x = model.preprocess("image.png")                       # float32 [C, H, W], as `vitq eval` sees it
    logits = model.predict(x[None])                         # float32 [1, classes]

    out = vitq.quantize("models/vit_fmnist_patch4_28", calib="calib_dir", method="vitq", bits=4,
                        out="q4", calib_size=256)           # any `vitq quantize` option as a keyword
    q = vitq.load(out["dir"])                               # runs in integers
    s = vitq.load(out["dir"], simulate=True)                # the same plan, quantize-dequantize
    p = vitq.load("models/vit_fmnist_patch4_28", plan=out["plan"])  # a plan on the FP32 checkpoint

Errors raise vitq.Error with the command line's message; its `exit_code` is the CLI's (2 bad
arguments, 3 invalid model/config/plan, 4 invalid data or image, 5 file not readable/writable).
"""
import json
import os

from ._vitq import Error, set_threads, __version__  # noqa: F401
from ._vitq import Model as _Model
from ._vitq import run_cli as _run_cli

__all__ = ["Error", "Model", "load", "preprocess", "quantize", "export", "run", "set_threads", "__version__"]


class Model:
    """A model vitq runs: FP32, a plan simulated (quantize-dequantize), or a quantized model
    directory in integers (or simulated). Create it with vitq.load()."""

    def __init__(self, directory, plan=None, simulate=False, allow_non_finite=False):
        self._m = _Model(os.fspath(directory), os.fspath(plan) if plan else "", bool(simulate),
                         bool(allow_non_finite))
        self.directory = os.fspath(directory)

    @property
    def engine(self):
        """'fp32', 'simulated' or 'integer'."""
        return self._m.engine

    @property
    def method(self):
        """The plan's method ('' for FP32)."""
        return self._m.method

    @property
    def config(self):
        """Architecture and preprocessing (img_size, in_chans, num_classes, mean, std, ...)."""
        return self._m.config

    def predict(self, images):
        """Logits of preprocessed images: float32 [N, C, H, W] -> [N, classes] (or [C, H, W] -> [classes]).
        Any float array is converted to contiguous float32 first."""
        import numpy as np
        a = np.asarray(images)
        if a.dtype.kind == "f" and a.dtype != np.float32:
            a = a.astype(np.float32)
        return self._m.predict(a)

    def preprocess(self, image):
        """One image as the model's input, float32 [C, H, W], exactly as `vitq eval` preprocesses it:
        a path (JPEG or PNG, decoded by vitq as PIL's open(path).convert('RGB')), a PIL image, or
        8-bit pixels as a numpy array [H, W] (grey) or [H, W, 3] (RGB)."""
        if isinstance(image, (str, bytes, os.PathLike)):
            return self._m.preprocess_file(os.fsdecode(image))
        import numpy as np
        if hasattr(image, "mode") and hasattr(image, "convert"):  # a PIL image
            image = np.asarray(image if image.mode == "L" else image.convert("RGB"))
        return self._m.preprocess_pixels(np.asarray(image))

    def __repr__(self):
        c = self.config
        what = self.engine + (f", {self.method}" if self.method else "")
        return f"vitq.Model({self.directory!r}, {c['architecture']}, {what})"


def load(directory, plan=None, simulate=False, allow_non_finite=False):
    """Loads an FP32 checkpoint directory (config.json + model.safetensors; with plan=PLAN.json
    the plan is simulated) or a quantized model directory (integer run; simulate=True runs the
    same plan quantize-dequantize)."""
    return Model(directory, plan=plan, simulate=simulate, allow_non_finite=allow_non_finite)


def preprocess(image, model):
    """The preprocessing of `model` (a vitq.Model or a model directory) applied to one image."""
    if not isinstance(model, Model):
        model = load(model)
    return model.preprocess(image)


def _options(options):
    """Keyword arguments as command-line options: calib_size=64 -> --calib-size 64, per_token=True
    -> --per-token, False/None -> omitted, a list or tuple -> the option once per item."""
    args = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            for v in value:
                args += [flag, os.fspath(v) if isinstance(v, os.PathLike) else str(v)]
        else:
            args += [flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
    return args


def run(*args):
    """Runs `vitq args...` in this process (e.g. run('eval', '--model', d, '--data', data));
    its output goes to the process's stdout/stderr. Raises vitq.Error on failure."""
    _run_cli([os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args])


def quantize(model_dir, *, calib, out, method="vitq", bits=8, quiet=True, **options):
    """Calibrates a plan with `vitq quantize` and writes the quantized model directory `out`.
    Other options as keywords (calib_size=256, wbits=4, plan_only=True, force=True, ...: every
    option of `vitq quantize --help`, dashes as underscores). Returns {'dir', 'plan', 'report'}
    (report: the parsed report.json)."""
    opts = dict(options)
    if quiet:
        opts["quiet"] = True
    run("quantize", "--model", model_dir, "--calib", calib, "--method", method, "--bits", bits, "-o", out,
        *_options(opts))
    out = os.fspath(out)
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    return {"dir": out, "plan": os.path.join(out, "plan.json"), "report": report}


def export(model_dir, *, onnx=None, out=None, plan=None, **options):
    """`vitq export`: the ONNX graph (onnx=FILE) of a checkpoint, plan or quantized model
    directory, or the quantized model directory (out=DIR) of a plan. Returns the path written."""
    if (onnx is None) == (out is None):
        err = Error("export: give exactly one of onnx= (an ONNX file) and out= (a quantized model directory)")
        err.exit_code = 2
        raise err
    args = ["export", "--model", model_dir]
    if plan:
        args += ["--plan", plan]
    args += ["--onnx", onnx] if onnx is not None else ["-o", out]
    run(*args, *_options(options))
    return os.fspath(onnx if onnx is not None else out)
