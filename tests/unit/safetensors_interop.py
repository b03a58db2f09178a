"""Helper of tests/unit/test_safetensors.cpp (SafeTensorsInterop): checks a file written by
vitq with an independent reader (json + numpy), then writes a file the way other tools do
(json.dumps with spaces, unsorted keys) with numpy's float16 and torch's bfloat16 encoders,
plus the float32 values those libraries decode them to, for vitq to compare against.

usage: safetensors_interop.py VITQ_WRITTEN OUT   (exit 77: numpy missing, test skipped)
"""
import json
import struct
import sys

try:
    import numpy as np
except ImportError:
    print("numpy not available")
    sys.exit(77)


def read(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    return n, raw[8:8 + n], header, raw[8 + n:]


def check_vitq_file(path):
    n, text, header, data = read(path)
    assert n % 8 == 0, f"header length {n} not a multiple of 8"
    assert text.rstrip(b" ") == json.dumps(header, separators=(",", ":")).encode(), \
        "header is not compact JSON with the keys in the written order"
    assert header.pop("__metadata__") == {"source": "vitq-test"}
    assert list(header) == sorted(header), f"tensors not in name order: {list(header)}"
    end = 0
    for name, info in header.items():
        assert list(info) == ["dtype", "shape", "data_offsets"], list(info)
        b, e = info["data_offsets"]
        assert b == end, f"{name}: offsets {b},{e} not contiguous"
        end = e
    assert end == len(data), f"data buffer {len(data)} bytes, tensors end at {end}"

    def arr(name, dtype):
        b, e = header[name]["data_offsets"]
        return np.frombuffer(data[b:e], dtype=dtype).reshape(header[name]["shape"])

    np.testing.assert_array_equal(arr("w", "<f4"), np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5 - 1)
    np.testing.assert_array_equal(arr("h", "<f2").astype(np.float64), [1.0, -2.0, 2.0 ** -24, 65504.0])
    np.testing.assert_array_equal(arr("i", "<i8"), [-3, 2 ** 40])
    assert header["h"]["dtype"] == "F16" and header["i"]["dtype"] == "I64"


def write_foreign_file(path):
    tensors = {}  # name -> (dtype, shape, bytes)
    bits = np.arange(65536, dtype=np.uint16)
    # Every binary16 bit pattern, and numpy's float32 decoding of each.
    tensors["f16_all"] = ("F16", [256, 256], bits.astype("<u2").tobytes())
    tensors["f16_all_expected"] = ("F32", [256, 256], bits.view(np.float16).astype("<f4").tobytes())
    # numpy's float32 -> float16 rounding of awkward values (ties, subnormals, overflow).
    vals = np.array([1 / 3, 0.1, -2.5, 65504, 65520, 1e-7, 6e-8, 2.0 ** -25, 1e5, -0.0], dtype=np.float32)
    with np.errstate(over="ignore"):  # 65520 and 1e5 round to inf on purpose
        tensors["f16_vals"] = ("F16", [10], vals.astype("<f2").tobytes())
        tensors["f16_vals_expected"] = ("F32", [10], vals.astype(np.float16).astype("<f4").tobytes())
    try:
        import torch
        t = torch.from_numpy(bits.view(np.int16).copy()).view(torch.bfloat16)
        tensors["bf16_all"] = ("BF16", [65536], bits.astype("<u2").tobytes())
        tensors["bf16_all_expected"] = ("F32", [65536], t.float().numpy().astype("<f4").tobytes())
    except ImportError:
        print("torch not available: no bfloat16 tensors")
    # Data in reverse name order, header keys in yet another order, metadata last.
    header, blobs, off = {}, [], 0
    for name in sorted(tensors, reverse=True):
        dtype, shape, raw = tensors[name]
        header[name] = {"data_offsets": [off, off + len(raw)], "shape": shape, "dtype": dtype}
        off += len(raw)
        blobs.append(raw)
    header = dict(sorted(header.items(), key=lambda kv: len(kv[0])))
    header["__metadata__"] = {"format": "np", "note": "caf\u00e9"}
    text = json.dumps(header, indent=1).encode()  # spaces, newlines, \u escapes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


if __name__ == "__main__":
    check_vitq_file(sys.argv[1])
    write_foreign_file(sys.argv[2])
