"""safetensors files: load (memory-mapped, streamed to the device tensor by tensor) and save.

A safetensors file is an 8-byte little-endian header length, a JSON header mapping each
tensor name to {dtype, shape, data_offsets}, then the raw bytes. We check the header
ourselves first (so a damaged file gives a `FormatError` naming the offset, and no size read
from the header is trusted beyond the file's length), then read tensors with the
`safetensors` package: `safe_open` memory-maps the file, so each tensor is copied to the
device one at a time and peak host memory stays near the largest tensor. The package's
numpy API lacks float8, so those tensors are viewed from our own memory map; bytes already
in memory are viewed in place. Every dtype of the format round-trips: the float8 kinds and
BF16 through ml_dtypes, C64 on the host only (polyjit arrays have no complex dtype); the
packed sub-byte F4/F6 kinds are described by `inspect` but not read.
"""
from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

from . import FormatError, Model, TensorSpec

# Bits per element of every dtype the format defines (sub-byte F4/F6 too: inspect reports them).
_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8,
         "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32,
         "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
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
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError(f"safetensors: __metadata__ must map names to strings, got {metadata!r:.80}")
    data_size = size - 8 - n
    for name, t in header.items():
        _check_entry(name, t, 8 + n, data_size)
    # the format forbids holes and overlaps: the tensors cover the data exactly, in some order
    at = 0
    for name, t in sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"])):
        begin, end = t["data_offsets"]
        if begin != at:
            raise FormatError(f"safetensors: tensor {name!r} starts at data offset {begin}, expected {at} "
                              "(overlapping tensors or a hole in the data)")
        at = end
    if at != data_size:
        raise FormatError(f"safetensors: the tensors cover {at} of the {data_size} data bytes after the header")
    return header, metadata, 8 + n


def _check_entry(name, t, data_start, data_size):
    try:
        dtype, shape, (begin, end) = t["dtype"], t["shape"], t["data_offsets"]
        if not isinstance(shape, list) or any(type(d) is not int for d in shape):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"safetensors: tensor {name!r} has a malformed header entry {t!r:.200}") from None
    if not isinstance(dtype, str) or dtype not in _BITS:
        raise FormatError(f"safetensors: tensor {name!r} has unknown dtype {dtype!r:.40}")
    if (any(d < 0 for d in shape) or type(begin) is not int or type(end) is not int
            or not (0 <= begin <= end)):
        raise FormatError(f"safetensors: tensor {name!r} has bad shape {shape} or offsets {begin!r:.40}..{end!r:.40}")
    n = 1
    for d in shape:
        n *= d                                   # Python ints: a damaged dim must not overflow
    bits = n * _BITS[dtype]
    if bits % 8:
        raise FormatError(f"safetensors: tensor {name!r} ({dtype}{shape}) does not end on a byte boundary")
    want = bits // 8
    if end - begin != want:
        raise FormatError(f"safetensors: tensor {name!r} ({dtype}{shape}) needs {want} bytes but "
                          f"its data_offsets span {end - begin}")
    if end > data_size:
        raise FormatError(f"safetensors: tensor {name!r} ends at offset {data_start + end}, past the "
                          f"end of the {data_start + data_size}-byte file (truncated?)")


_NP_DTYPES = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16,
              "U16": np.uint16, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "I32": np.int32,
              "U32": np.uint32, "F32": np.float32, "I64": np.int64, "U64": np.uint64,
              "F64": np.float64, "C64": np.complex64, "F8_E4M3": ml_dtypes.float8_e4m3fn,
              "F8_E5M2": ml_dtypes.float8_e5m2, "F8_E8M0": ml_dtypes.float8_e8m0fnu,
              "F8_E4M3FNUZ": ml_dtypes.float8_e4m3fnuz, "F8_E5M2FNUZ": ml_dtypes.float8_e5m2fnuz}
# dtypes `safe_open(framework="numpy")` reads itself; the others (float8) are viewed from the
# memory map with our own dtype table.
_PACKAGE_NUMPY = {"BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "I64",
                  "U64", "F64", "C64"}


def _numpy_tensors(src, header, data_start):
    """Yield (name, numpy array) one at a time, memory-mapped when src is a path (the header
    is validated first, so every extent lies inside the file)."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        # in memory already: each tensor is a view of its bytes, no copy
        buf = memoryview(src).cast("B")
        for k, t in header.items():
            begin, end = t["data_offsets"]
            yield k, np.frombuffer(buf[data_start + begin:data_start + end],
                                   dtype=_NP_DTYPES[t["dtype"]]).reshape(t["shape"])
        return
    from safetensors import SafetensorError, safe_open
    path = os.fspath(src)
    try:
        f = safe_open(path, framework="numpy")
    except SafetensorError as e:      # rules we do not check ourselves
        raise FormatError(f"safetensors: {e}") from None
    with f:
        for k, t in header.items():
            if t["dtype"] in _PACKAGE_NUMPY:
                try:
                    arr = f.get_tensor(k)
                except SafetensorError as e:
                    raise FormatError(f"safetensors: tensor {k!r}: {e}") from None
                yield k, arr
                continue
            begin, end = t["data_offsets"]
            if end == begin:
                yield k, np.zeros(t["shape"], _NP_DTYPES[t["dtype"]])
                continue
            yield k, np.memmap(path, dtype=_NP_DTYPES[t["dtype"]], mode="r", offset=data_start + begin,
                               shape=tuple(t["shape"]))


def load_arrays(src, device=True, backend=None) -> dict:
    """name -> tensor; each tensor is put on the device as soon as it is read (device=True),
    so only one host tensor is alive at a time. device=False returns numpy arrays."""
    header, _, start = read_header(src)
    for name, t in header.items():
        if t["dtype"] not in _NP_DTYPES:
            raise FormatError(f"safetensors: tensor {name!r} has dtype {t['dtype']} (packed sub-byte "
                              "floats), which polyjit does not read")
        if device and t["dtype"] == "C64":
            raise FormatError(f"safetensors: tensor {name!r} is complex64, which polyjit arrays do "
                              "not support; load_arrays(..., device=False) gives it as numpy")
    out = {}
    put = None
    if device:
        from ..backends import device_put
        put = lambda x: device_put(x, backend=backend)  # noqa: E731
    for name, arr in _numpy_tensors(src, header, start):
        out[name] = put(arr) if put else np.array(arr) if isinstance(arr, np.memmap) else arr
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
    arrays = {k: np.require(np.asarray(v), requirements="C") for k, v in tensors.items()}   # 0-d stays 0-d
    meta = {str(k): str(v) for k, v in (metadata or {}).items()} or None
    if path is None:
        return stn.save(arrays, metadata=meta)
    stn.save_file(arrays, os.fspath(path), metadata=meta)
    return None
