"""Reading ONNX protobufs safely: decode errors with byte offsets, tensors, external data.

Parsing only decodes protobuf messages (no code from the file ever runs). A decode failure
is re-examined by a small wire-format walker that says where the bytes stop making sense,
because protobuf's own message ("Error parsing message") names no position.
"""
from __future__ import annotations

import math
import os

import numpy as np
import onnx
from onnx import numpy_helper

from .. import FormatError, read_bytes


# A sparse tensor's dense form may take at most this many bytes (a damaged file can declare
# any dims; dense tensors are bounded by the bytes actually stored).
MAX_TENSOR_BYTES = 1 << 34


class OnnxError(FormatError):
    """A malformed ONNX model, or one using something polyjit cannot run."""


class UnsupportedOpError(OnnxError):
    """A node whose op type (in its domain and opset) has no polyjit implementation."""


# ---------------------------------------------------------------- wire-format walker
def _varint(buf, pos):
    """(value, new_pos) of the varint at pos; raises ValueError past the end."""
    shift = result = 0
    while True:
        if pos >= len(buf):
            raise ValueError("a varint runs past the end of the data")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("a varint is longer than 10 bytes")


# ModelProto fields holding sub-messages we descend into (graph=7, functions=25), and
# GraphProto's (node=1, initializer=5, input=11, output=12, value_info=13).
_NESTED = {"ModelProto": {7: "GraphProto"}, "GraphProto": {1: "NodeProto", 5: "TensorProto"}}


def find_wire_error(buf: bytes, start=0, end=None, kind="ModelProto", depth=0):
    """A description of the first wire-format problem in buf[start:end], or None."""
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        field_start = pos
        try:
            key, pos = _varint(buf, pos)
            field, wire = key >> 3, key & 7
            if field == 0:
                return f"byte {field_start}: field number 0 is invalid in {kind}"
            if wire == 0:
                _, pos = _varint(buf, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                n, pos = _varint(buf, pos)
                if pos + n > end:
                    return (f"byte {field_start}: {kind} field {field} declares {n} bytes but only "
                            f"{end - pos} remain (the file is truncated or corrupted)")
                sub = _NESTED.get(kind, {}).get(field)
                if sub and depth < 8:
                    err = find_wire_error(buf, pos, pos + n, sub, depth + 1)
                    if err:
                        return err
                pos += n
            else:
                return f"byte {field_start}: {kind} field {field} has invalid wire type {wire}"
        except ValueError as e:
            return f"byte {field_start}: {e} (the file is truncated or corrupted)"
        if pos > end:
            return f"byte {field_start}: {kind} field runs past the end (the file is truncated)"
    return None


def parse_model(path_or_bytes) -> tuple[onnx.ModelProto, str | None]:
    """(ModelProto, directory for external data or None)."""
    base = None
    if not isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        base = os.path.dirname(os.path.abspath(os.fspath(path_or_bytes)))
    data = read_bytes(path_or_bytes)
    if not data:
        raise OnnxError("empty ONNX file (0 bytes)")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # protobuf's DecodeError, from whichever implementation
        where = find_wire_error(data) or f"protobuf reports: {e}"
        raise OnnxError(f"not a valid ONNX model ({len(data)} bytes): {where}") from None
    if not model.HasField("graph"):
        where = find_wire_error(data)
        raise OnnxError("not an ONNX model: no graph found" + (f" ({where})" if where else ""))
    return model, base


# ---------------------------------------------------------------- tensors
def _load_external(t: onnx.TensorProto, base_dir):
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location")
    if not loc:
        raise OnnxError(f"tensor {t.name!r} is stored externally but names no location")
    if base_dir is None:
        raise OnnxError(f"tensor {t.name!r} lives in external file {loc!r}: load the model from "
                        "a path (or pass base_dir=) so polyjit can find it")
    path = os.path.realpath(os.path.join(base_dir, loc))
    if not path.startswith(os.path.realpath(base_dir) + os.sep):
        raise OnnxError(f"tensor {t.name!r}: external location {loc!r} points outside the "
                        f"model's directory {base_dir!r}")
    if not os.path.isfile(path):
        raise OnnxError(f"tensor {t.name!r}: external data file {path!r} does not exist")
    offset, length = int(info.get("offset", 0)), info.get("length")
    size = os.path.getsize(path)
    length = size - offset if length is None else int(length)
    if offset < 0 or length < 0 or offset + length > size:
        raise OnnxError(f"tensor {t.name!r}: external data {loc!r} offset {offset} length "
                        f"{length} exceed the file's {size} bytes")
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def tensor_to_numpy(t: onnx.TensorProto, base_dir=None) -> np.ndarray:
    """A TensorProto's value, with external data read from base_dir."""
    if t.data_location == onnx.TensorProto.EXTERNAL:
        raw = _load_external(t, base_dir)
        t2 = onnx.TensorProto()
        t2.CopyFrom(t)
        del t2.external_data[:]
        t2.data_location = onnx.TensorProto.DEFAULT
        t2.raw_data = raw
        t = t2
    expected = math.prod(t.dims)
    if any(d < 0 for d in t.dims):
        raise OnnxError(f"tensor {t.name!r} has negative dims {list(t.dims)}")
    if not t.data_type or t.data_type not in onnx.TensorProto.DataType.values():
        raise OnnxError(f"tensor {t.name!r} (dims {list(t.dims)}) has "
                        + (f"unknown data type {t.data_type}" if t.data_type else "no data type"))
    try:
        arr = numpy_helper.to_array(t)
    except Exception as e:
        raise OnnxError(f"tensor {t.name!r} (dims {list(t.dims)}, data type "
                        f"{_type_name(t.data_type)}) cannot be decoded: {e}") from None
    if arr.size != expected:
        raise OnnxError(f"tensor {t.name!r}: holds {arr.size} values but dims {list(t.dims)} "
                        f"need {expected}")
    return arr


def _type_name(elem_type) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return str(elem_type)


def elem_dtype(elem_type):
    """numpy dtype for an ONNX element type (None for strings and unknown types)."""
    try:
        dt = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        return None
    return None if dt.kind in "OSU" else dt


def value_info_spec(vi):
    """(shape tuple with str for symbolic dims / None for unknown, dtype or None) of a ValueInfo."""
    tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
    if tt is None:
        return None, None
    shape = None
    if tt.HasField("shape"):
        # negative sizes (some exporters write -1) and unnamed dims are unknown: None
        shape = tuple((d.dim_value if d.dim_value >= 0 else None) if d.HasField("dim_value")
                      else (d.dim_param or None) for d in tt.shape.dim)
    return shape, elem_dtype(tt.elem_type)


def attributes(node) -> dict:
    """A node's attributes as Python values (graphs stay GraphProto, tensors become numpy)."""
    out = {}
    for a in node.attribute:
        if a.ref_attr_name:
            raise OnnxError(f"node {node.name!r} ({node.op_type}): attribute {a.name!r} refers to "
                            f"a function attribute {a.ref_attr_name!r}, outside a function")
        out[a.name] = _attr_value(a)
    return out


def attr_type_name(t) -> str:
    try:
        return onnx.AttributeProto.AttributeType.Name(t)
    except ValueError:
        return f"unknown ({t})"


# the value field of each attribute type
_ATTR_FIELDS = {1: "f", 2: "i", 3: "s", 4: "t", 5: "g", 11: "sparse_tensor", 13: "tp",
                6: "floats", 7: "ints", 8: "strings", 9: "tensors", 10: "graphs",
                12: "sparse_tensors", 14: "type_protos"}


def attr_kind(a) -> int:
    """An attribute's type; where it is UNDEFINED (IR version 1 files leave it out, and
    protobuf reads an out-of-range type as UNDEFINED), the type of the field that is set."""
    if a.type != onnx.AttributeProto.UNDEFINED:
        return a.type
    for k, f in _ATTR_FIELDS.items():
        v = getattr(a, f)
        if (len(v) if k in (6, 7, 8, 9, 10, 12, 14) else a.HasField(f)):
            return k
    raise OnnxError(f"attribute {a.name!r} has no (valid) type and no value")


def _attr_value(a):
    T = onnx.AttributeProto
    kind = attr_kind(a)
    get = {T.FLOAT: lambda: a.f, T.INT: lambda: a.i, T.STRING: lambda: a.s.decode("utf-8", "replace"),
           T.TENSOR: lambda: tensor_to_numpy(a.t), T.GRAPH: lambda: a.g,
           T.FLOATS: lambda: list(a.floats), T.INTS: lambda: list(a.ints),
           T.STRINGS: lambda: [s.decode("utf-8", "replace") for s in a.strings],
           T.TENSORS: lambda: [tensor_to_numpy(t) for t in a.tensors],
           T.GRAPHS: lambda: list(a.graphs),
           T.SPARSE_TENSOR: lambda: _sparse(a.sparse_tensor),
           T.SPARSE_TENSORS: lambda: [_sparse(t) for t in a.sparse_tensors],
           T.TYPE_PROTO: lambda: a.tp, T.TYPE_PROTOS: lambda: list(a.type_protos)}.get(kind)
    if get is None:
        raise OnnxError(f"attribute {a.name!r} has type {attr_type_name(kind)}, which polyjit "
                        "does not read")
    try:
        return get()
    except OnnxError as e:
        raise OnnxError(f"attribute {a.name!r}: {e}") from None


def _sparse(sp):
    """A SparseTensorProto as a dense array, its indices and size checked first."""
    name = sp.values.name or "(sparse)"
    values = tensor_to_numpy(sp.values)
    idx = tensor_to_numpy(sp.indices)
    dims = tuple(int(d) for d in sp.dims)
    size = math.prod(dims)
    if any(d < 0 for d in dims) or values.ndim != 1 or idx.dtype.kind not in "iu":
        raise OnnxError(f"sparse tensor {name!r}: dims {list(dims)}, values of shape "
                        f"{values.shape}, indices of type {idx.dtype}: not a valid sparse tensor")
    if size * values.dtype.itemsize > MAX_TENSOR_BYTES:
        raise OnnxError(f"sparse tensor {name!r}: dense shape {list(dims)} needs "
                        f"{size * values.dtype.itemsize} bytes (over {MAX_TENSOR_BYTES})")
    idx = idx.astype(np.int64)
    if idx.ndim == 2 and idx.shape == (values.size, len(dims)):
        if idx.size and ((idx < 0).any() or (idx >= np.array(dims)).any()):
            raise OnnxError(f"sparse tensor {name!r}: an index lies outside dims {list(dims)}")
        idx = np.ravel_multi_index(idx.T, dims) if dims else idx.reshape(-1)
    elif idx.shape != (values.size,):
        raise OnnxError(f"sparse tensor {name!r}: indices of shape {idx.shape} for "
                        f"{values.size} values and dims {list(dims)}")
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        raise OnnxError(f"sparse tensor {name!r}: an index lies outside its {size} elements")
    dense = np.zeros(size, values.dtype)
    dense[idx] = values
    return dense.reshape(dims)
