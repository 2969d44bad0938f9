"""Model importers: a file becomes a `Model` holding `params` and a traced `fn(params, *inputs)`.

The format is detected from the file's first bytes (never from its name), then the
format's module loads it. Each format module defines `load(data: bytes | path, **options)
-> Model` and `inspect(data) -> dict`; none of them executes code from the file.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class TensorSpec:
    name: str
    shape: tuple          # ints, or str for symbolic dimensions bound at call time
    dtype: Any


@dataclass
class Model:
    """An imported model: call it like a function, or use `fn(params, *inputs)` to jit,
    differentiate or fine-tune it."""
    fn: Callable
    params: Any
    inputs: list = field(default_factory=list)     # TensorSpec
    outputs: list = field(default_factory=list)    # TensorSpec
    metadata: dict = field(default_factory=dict)
    format: str = ""

    def __post_init__(self):
        self._jitted = None

    def __call__(self, *inputs):
        if self._jitted is None:
            from ..tracer.jit import jit
            self._jitted = jit(self.fn)
        return self._jitted(self.params, *inputs)


class FormatError(ValueError):
    """A file that is not a model polyjit can read, or a damaged one."""


# (format name, module, predicate on the first 64 bytes); order matters: first match wins.
_MAGIC = [
    ("gguf", "gguf_format", lambda h: h[:4] == b"GGUF"),
    ("tflite", "tflite", lambda h: h[4:8] == b"TFL3"),
    ("pytorch", "pytorch", lambda h: h[:2] == b"PK" or h[:2] in (b"\x80\x02", b"\x80\x04", b"\x80\x05")),
    ("safetensors", "safetensors_format", lambda h: len(h) > 9 and h[8:9] == b"{"),
    ("onnx", "onnx", lambda h: h[:1] == b"\x08"),   # ModelProto field 1 (ir_version), varint
]


def read_bytes(path_or_bytes) -> bytes:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes)
    with open(os.fspath(path_or_bytes), "rb") as f:
        return f.read()


def _head(path_or_bytes, n=64) -> bytes:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes[:n])
    with open(os.fspath(path_or_bytes), "rb") as f:
        return f.read(n)


def detect(path_or_bytes) -> str:
    """The format of a model file, from its magic bytes."""
    head = _head(path_or_bytes)
    for name, _, match in _MAGIC:
        if match(head):
            return name
    shown = head[:16].hex(" ")
    raise FormatError(f"unknown model format: the file starts with bytes {shown!r}; polyjit reads "
                      "ONNX, TFLite, GGUF, safetensors and PyTorch (.pt/.pth) files")


def _module(fmt):
    mod = dict((n, m) for n, m, _ in _MAGIC)[fmt]
    return importlib.import_module(f".{mod}", __name__)


def load(path_or_bytes, **options) -> Model:
    """Load any supported model file (format detected from its first bytes)."""
    return _module(detect(path_or_bytes)).load(path_or_bytes, **options)


def inspect(path_or_bytes) -> dict:
    """A description of the model: format, sizes, ops, inputs and outputs."""
    fmt = detect(path_or_bytes)
    info = _module(fmt).inspect(path_or_bytes)
    return {"format": fmt, **info}
