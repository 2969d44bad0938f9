"""String tensors and the ops on them (StringConcat, StringSplit, StringNormalizer,
RegexFullMatch, Equal on strings, ai.onnx.ml LabelEncoder).

polyjit arrays hold numbers only, so string tensors are host values: numpy object arrays
known at trace time. A graph's string inputs are baked in at trace time (like shape
operands: `needed_static_names` lists them), string ops run on the host while the graph
is traced, and their numeric results enter the trace as constants. A model whose outputs
are strings cannot be jitted (jit returns device arrays); the ONNX backend runs such a
model's function eagerly.
"""
from __future__ import annotations

import re
import unicodedata

import numpy as np

from .... import numpy as pnp
from . import op
from ._util import dtype_of, shape_of

ML = "ai.onnx.ml"


def is_string(x) -> bool:
    return isinstance(x, np.ndarray) and x.dtype.kind in "OUS"


def _strings(ctx, x, what="input"):
    v = ctx.const(x, f"the string {what}")
    if v.dtype.kind not in "OUS":
        raise ctx.fail(f"the {what} must be a string tensor, got {v.dtype.name}")
    return v


@op("Equal")
def equal(ctx, a, b):
    if is_string(a) or is_string(b):
        return np.equal(np.asarray(a, object), np.asarray(b, object)).astype(bool)
    return pnp.equal(a, b)


@op("StringConcat", static="all")
def string_concat(ctx, a, b):
    a, b = _strings(ctx, a), _strings(ctx, b)
    return np.char.add(a.astype(np.str_), b.astype(np.str_)).astype(object)


@op("StringSplit", static="all")
def string_split(ctx, x):
    x = _strings(ctx, x)
    sep = ctx.attr("delimiter") or None
    maxsplit = ctx.attr("maxsplit")
    parts = [s.split(sep) if maxsplit is None else s.split(sep, maxsplit)
             for s in x.astype(np.str_).reshape(-1).tolist()]
    width = max((len(p) for p in parts), default=0)
    out = np.array([p + [""] * (width - len(p)) for p in parts], dtype=object)
    counts = np.array([len(p) for p in parts], np.int64).reshape(x.shape)
    return [out.reshape(*x.shape, width), counts]


def _strip_accents(s):
    try:
        s.encode("ASCII", errors="strict")
        return s
    except UnicodeEncodeError:
        return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))


@op("StringNormalizer", static="all")
def string_normalizer(ctx, x):
    x = _strings(ctx, x)
    if x.ndim not in (1, 2):
        raise ctx.fail(f"the input must be 1-D or 2-D, got shape {x.shape}")
    action = ctx.attr("case_change_action", "NONE")
    sensitive = bool(ctx.attr("is_case_sensitive", 0))
    stops = list(ctx.attr("stopwords") or [])
    conv = {"LOWER": str.lower, "UPPER": str.upper, "NONE": lambda s: s}.get(action)
    if conv is None:
        raise ctx.fail(f"unknown case_change_action {action!r}")
    if sensitive:
        drop = set(stops)
        keep = [_strip_accents(s) for s in x.reshape(-1).tolist()]
        keep = [conv(s) for s in keep if s not in drop]
    else:
        drop = {conv(w) for w in stops}
        keep = [conv(_strip_accents(s)) for s in x.reshape(-1).tolist()]
        keep = [s for s in keep if s not in drop]
    keep = [s for s in keep if s] or [""]
    if x.ndim == 2 and x.shape[0] != 1:
        raise ctx.fail("a 2-D input must have one row ([1, C])")
    out = np.array(keep, dtype=object)
    return out.reshape(1, -1) if x.ndim == 2 else out


@op("RegexFullMatch", static="all")
def regex_full_match(ctx, x):
    x = _strings(ctx, x)
    try:
        rx = re.compile(ctx.attr("pattern"))
    except re.error as e:
        raise ctx.fail(f"invalid pattern {ctx.attr('pattern')!r}: {e}") from None
    return np.vectorize(lambda s: rx.fullmatch(s) is not None, otypes=[np.bool_])(x) \
        if x.size else np.zeros(x.shape, bool)


@op("LabelEncoder", domain=ML)
def label_encoder(ctx, x):
    """A lookup table. Numeric keys and values trace (a chain of compares and selects);
    string keys or values run on the host, so their inputs must be known at trace time."""
    a = ctx.attr
    keys = next((v for v in (a("keys_floats"), a("keys_int64s"), a("keys_strings"),
                             a("keys_tensor")) if v is not None), None)
    vals_src = [("floats", a("values_floats")), ("int64s", a("values_int64s")),
                ("strings", a("values_strings")), ("tensor", a("values_tensor"))]
    kind, vals = next(((k, v) for k, v in vals_src if v is not None), (None, None))
    if keys is None or vals is None:
        raise ctx.fail("LabelEncoder needs keys and values")
    keys, vals = list(np.asarray(keys).reshape(-1)), list(np.asarray(vals).reshape(-1))
    if kind == "tensor":
        dt_t = a("default_tensor")
        default = np.asarray(dt_t).reshape(-1)[0] if dt_t is not None else None
        out_dt = np.asarray(vals[0] if vals else dt_t).dtype
    elif kind == "floats":
        default, out_dt = a("default_float", -0.0), np.dtype(np.float32)
    elif kind == "int64s":
        default, out_dt = a("default_int64", -1), np.dtype(np.int64)
    else:
        default, out_dt = a("default_string", "_Unused"), np.dtype(object)
    if a("default_tensor") is not None and kind != "tensor":
        default = np.asarray(a("default_tensor")).reshape(-1)[0]
    str_keys = any(isinstance(k, (str, bytes)) for k in keys)
    if str_keys or out_dt.kind in "OUS" or is_string(x):
        xs = _strings(ctx, x) if str_keys else ctx.const(x, "the input")
        table = dict(zip([k.decode() if isinstance(k, bytes) else k for k in keys], vals))
        out = np.vectorize(lambda v: table.get(v, default), otypes=[object])(xs) \
            if xs.size else np.zeros(xs.shape, object)
        return out.astype(object) if out_dt.kind in "OUS" else out.astype(out_dt)
    # numeric keys -> numeric values: traceable
    x = pnp.asarray(x)
    kd = dtype_of(x)
    out = pnp.full(shape_of(x), np.asarray(default, out_dt), out_dt)
    for k, v in zip(keys, vals):
        out = pnp.where(pnp.equal(x, np.asarray(k, kd)), np.asarray(v, out_dt), out)
    return out
