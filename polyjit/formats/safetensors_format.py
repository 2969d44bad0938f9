"""safetensors files: load (memory-mapped, streamed to the device tensor by tensor) and save.

A safetensors file is an 8-byte little-endian header length, a JSON header mapping each
tensor name to {dtype, shape, data_offsets}, then the raw bytes. We check the header
ourselves first (so a damaged file gives a `FormatError` naming the offset, and no size read
from the header is trusted beyond the file's length), then read tensors with the
`safetensors` package: `safe_open` memory-maps the file, so each tensor is copied to the
device one at a time and peak host memory stays near the largest tensor.
"""
from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

from . import FormatError, Model, TensorSpec

# Element sizes of every dtype the format defines (F8 types too: inspect reports them).
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
             "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_MAX_HEADER = 100 << 20   # the reference implementation's limit too


def _source_size(src):
    if isinstance(src, (bytes, bytearray, memoryview)):
        return len(src)
    return os.path.getsize(os.fspath(src))


def _read_prefix(src, n):
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src[:n])
    with open(os.fspath(src), "rb") as f:
        return f.read(n)


def read_header(src) -> tuple[dict, dict, int]:
    """(tensors: name -> {dtype, shape, data_offsets}, metadata, data start), validated."""
    size = _source_size(src)
    if size < 8:
        raise FormatError(f"safetensors: file is {size} bytes, shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", _read_prefix(src, 8))
    if n > _MAX_HEADER or 8 + n > size:
        raise FormatError(f"safetensors: header of {n} bytes at offset 8 runs past the end of "
                          f"the {size}-byte file (truncated?)")
    raw = _read_prefix(src, 8 + n)[8:]
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"safetensors: header at offset 8 is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise FormatError("safetensors: header at offset 8 is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data_size = size - 8 - n
    for name, t in header.items():
        _check_entry(name, t, 8 + n, data_size)
    return header, metadata, 8 + n


def _check_entry(name, t, data_start, data_size):
    try:
        dtype, shape, (begin, end) = t["dtype"], [int(d) for d in t["shape"]], t["data_offsets"]
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"safetensors: tensor {name!r} has a malformed header entry {t!r}") from None
    if dtype not in _ITEMSIZE:
        raise FormatError(f"safetensors: tensor {name!r} has unknown dtype {dtype!r}")
    if any(d < 0 for d in shape) or not (0 <= begin <= end):
        raise FormatError(f"safetensors: tensor {name!r} has bad shape {shape} or offsets {begin}..{end}")
    want = int(np.prod(shape, dtype=np.int64)) * _ITEMSIZE[dtype]
    if end - begin != want:
        raise FormatError(f"safetensors: tensor {name!r} ({dtype}{shape}) needs {want} bytes but "
                          f"its data_offsets span {end - begin}")
    if end > data_size:
        raise FormatError(f"safetensors: tensor {name!r} ends at offset {data_start + end}, past the "
                          f"end of the {data_start + data_size}-byte file (truncated?)")


_NP_DTYPES = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16,
              "U16": np.uint16, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "I32": np.int32,
              "U32": np.uint32, "F32": np.float32, "I64": np.int64, "U64": np.uint64,
              "F64": np.float64}


def _numpy_tensors(src, names):
    """Yield (name, numpy array) one at a time, memory-mapped when src is a path."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        # Bytes are in memory already; `deserialize` gives raw data per tensor (its numpy
        # helper lacks BF16, so we view the bytes with our own dtype table).
        from safetensors import deserialize
        for k, t in deserialize(bytes(src)):
            yield k, np.frombuffer(t["data"], dtype=_NP_DTYPES[t["dtype"]]).reshape(t["shape"])
        return
    from safetensors import safe_open
    with safe_open(os.fspath(src), framework="numpy") as f:
        for k in names:
            yield k, f.get_tensor(k)


def load_arrays(src, device=True, backend=None) -> dict:
    """name -> tensor; each tensor is put on the device as soon as it is read (device=True),
    so only one host tensor is alive at a time. device=False returns numpy arrays."""
    header, _, _ = read_header(src)
    for name, t in header.items():
        if t["dtype"].startswith("F8"):
            raise FormatError(f"safetensors: tensor {name!r} has dtype {t['dtype']}, which polyjit "
                              "does not support")
    out = {}
    put = None
    if device:
        from ..backends import device_put
        put = lambda x: device_put(x, backend=backend)  # noqa: E731
    for name, arr in _numpy_tensors(src, list(header)):
        out[name] = put(arr) if put else arr
        del arr   # drop the host copy before reading the next tensor
    return out


def _identity(params, *inputs):
    # A weights-only file has no computation; calling the Model gives back its tensors.
    return params


def load(src, device=True, backend=None, **_options) -> Model:
    header, metadata, _ = read_header(src)
    params = load_arrays(src, device=device, backend=backend)
    outputs = [TensorSpec(k, tuple(t["shape"]), t["dtype"]) for k, t in header.items()]
    return Model(fn=_identity, params=params, inputs=[], outputs=outputs,
                 metadata=dict(metadata), format="safetensors")


def inspect(src) -> dict:
    header, metadata, start = read_header(src)
    hist: dict = {}
    nbytes = 0
    for t in header.values():
        hist[t["dtype"]] = hist.get(t["dtype"], 0) + 1
        nbytes += t["data_offsets"][1] - t["data_offsets"][0]
    from ._summary import weights_summary
    summary = weights_summary((k, t["dtype"], t["shape"], t["data_offsets"][1] - t["data_offsets"][0])
                              for k, t in header.items())
    return {**summary, "inputs": [], "outputs": [],
            "tensors": len(header), "parameters": sum(int(np.prod(t["shape"])) for t in header.values()),
            "bytes": nbytes, "header_bytes": start, "dtypes": hist, "metadata": metadata,
            "shapes": {k: (t["dtype"], list(t["shape"])) for k, t in header.items()}}


def save(tensors: dict, path=None, metadata: dict | None = None):
    """Write name -> array (polyjit, numpy, any dtype incl. bfloat16) as safetensors.

    Returns the bytes when path is None."""
    import safetensors.numpy as stn
    arrays = {k: np.ascontiguousarray(np.asarray(v)) for k, v in tensors.items()}
    meta = {str(k): str(v) for k, v in (metadata or {}).items()} or None
    if path is None:
        return stn.save(arrays, metadata=meta)
    stn.save_file(arrays, os.fspath(path), metadata=meta)
    return None
