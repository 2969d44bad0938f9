"""PyTorch checkpoints (.pt/.pth): weights as a pytree keyed like the state_dict.

Both layouts torch.save writes are read without importing torch:
- zip (torch >= 1.6): `<root>/data.pkl` is a pickle whose tensors refer to storages by
  persistent id; each storage's raw bytes are the zip member `<root>/data/<key>`.
- legacy: five pickles back to back in one stream (magic number, protocol version,
  sys info, the object, the list of storage keys), then each storage as an int64 element
  count followed by its bytes, in the order of that key list.

Pickle can call any importable function, so the unpickler resolves globals from a fixed
table of our own rebuild functions and plain containers; anything else raises a
`FormatError` naming the global before it is even imported. Loading never runs code from
the file.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import pickletools
import struct
import warnings
import zipfile

import numpy as np

from . import FormatError, Model, TensorSpec

try:
    import ml_dtypes
    _BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes is a core dependency
    _BF16 = None

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": _BF16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands in for a torch.<X>Storage class: only its dtype matters to us."""
    def __init__(self, name):
        self.name, self.dtype = name, np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor(storage, *args):
    """torch._utils._rebuild_tensor(_v2): legacy files store the bytes after the pickle, so
    their tensors wait (_LazyTensor) until `_resolve` runs."""
    if isinstance(storage, _LazyStorage):
        return _LazyTensor(storage, args)
    return _strided_copy(storage, *args)


def _strided_copy(storage, storage_offset, size, stride, *_ignored):
    """A host copy of the strided view torch would make, bounds-checked against the storage."""
    if not isinstance(storage, np.ndarray):
        raise FormatError(f"pytorch: tensor refers to a storage of type {type(storage).__name__}")
    try:
        storage_offset = int(storage_offset)
        size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    except (TypeError, ValueError):
        raise FormatError(f"pytorch: bad tensor size {size!r:.80} / stride {stride!r:.80}") from None
    if len(size) != len(stride) or any(s < 0 for s in size + stride) or storage_offset < 0:
        raise FormatError(f"pytorch: bad tensor size {size} / stride {stride} / offset {storage_offset}")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    count = int(np.prod(size, dtype=object))
    if count > max(64 * storage.size, 1 << 24):
        # stride-0 (expanded) views are legal, but a damaged size must not size an allocation
        raise FormatError(f"pytorch: tensor of size {size} is implausibly large for its "
                          f"{storage.size}-element storage")
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise FormatError(f"pytorch: tensor (size {size}, stride {stride}, offset {storage_offset}) "
                          f"reaches element {last} of a {storage.size}-element storage")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[storage_offset:], size,
                                           tuple(s * item for s in stride), writeable=False)
    return np.array(view)   # contiguous copy, independent of the storage


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    return data   # a Parameter is its data for us


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


# (module, name) -> what the file gets instead. Nothing here imports or calls torch.
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("builtins", "tuple"): tuple, ("builtins", "list"): list, ("builtins", "dict"): dict,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file, encoding="utf-8")
        self._load_storage = load_storage

    def find_class(self, module, name):
        # Called for GLOBAL / STACK_GLOBAL / INST / OBJ / EXT opcodes: the only way a
        # pickle reaches code. Only the table above answers. Protocol-2 pickles name
        # Python 2 modules; map the one we allow so that errors read naturally too.
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
        try:
            return _SAFE_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise FormatError(f"pytorch: refusing to load global '{module}.{name}': only tensors and "
                              "plain containers are allowed (the file may run code if loaded "
                              "with torch.load(weights_only=False))") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise FormatError(f"pytorch: unsupported persistent id {pid!r:.200}")
        return self._load_storage(pid)


def _check_opcodes(f):
    """Walk the pickle's opcodes without running them (pickletools) and refuse memo indices
    far beyond the number of opcodes: the C unpickler would size its memo array from such an
    index (a 1.4e9 index in a damaged file costs 11 GB)."""
    start = f.tell()
    try:
        with warnings.catch_warnings():      # a damaged STRING opcode warns about its escapes
            warnings.simplefilter("ignore", DeprecationWarning)
            for n, (opcode, arg, _) in enumerate(pickletools.genops(f)):
                if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and int(arg) > 2 * n + 64:
                    raise FormatError(f"pytorch: damaged pickle: memo index {arg} at opcode {n} "
                                      f"(offset {f.tell()})")
    except FormatError:
        raise
    except Exception as e:   # ValueError etc. from damaged opcodes
        raise FormatError(f"pytorch: damaged pickle near offset {f.tell()}: {e}") from None
    f.seek(start)


def _unpickle(data_or_file, load_storage):
    f = io.BytesIO(data_or_file) if isinstance(data_or_file, bytes) else data_or_file
    _check_opcodes(f)
    try:
        return _RestrictedUnpickler(f, load_storage).load()
    except FormatError:
        raise
    except RecursionError:
        raise FormatError("pytorch: pickle nests too deeply") from None
    except Exception as e:  # UnpicklingError, EOFError, struct/index/type errors on damaged data
        pos = f.tell() if hasattr(f, "tell") else "?"
        raise FormatError(f"pytorch: damaged pickle near offset {pos}: {type(e).__name__}: {e}") from None


def _as_storage(raw: bytes, dtype, numel, key, big_endian=False):
    need = numel * dtype.itemsize
    if len(raw) < need:
        raise FormatError(f"pytorch: storage {key!r} has {len(raw)} bytes, needs {need} "
                          f"({numel} x {dtype.name})")
    arr = np.frombuffer(raw, dtype=dtype, count=numel)
    return arr.byteswap() if big_endian and dtype.itemsize > 1 else arr


# ---------------------------------------------------------------- zip layout

def _load_zip(src):
    try:
        z = zipfile.ZipFile(io.BytesIO(src) if isinstance(src, bytes) else os.fspath(src))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, struct.error) as e:
        raise FormatError(f"pytorch: not a readable zip archive: {type(e).__name__}: {e}") from None
    with z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pkl:
            raise FormatError("pytorch: zip archive has no <root>/data.pkl (not a torch.save file?); "
                              f"members: {names[:8]}")
        root = pkl[0][: -len("data.pkl")]
        big = _read_member(z, root + "byteorder", optional=True) == b"big"

        cache = {}   # tensors sharing a storage share its array

        def load_storage(pid):
            _, stype, key, _location, numel = pid[:5]
            if key not in cache:
                raw = _read_member(z, f"{root}data/{key}")
                cache[key] = _as_storage(raw, stype.dtype, int(numel), key, big)
            return cache[key]

        return _unpickle(_read_member(z, pkl[0]), load_storage)


def _read_member(z, name, optional=False):
    try:
        info = z.getinfo(name)
        if info.file_size > 1024 * max(info.compress_size, 1024):
            raise FormatError(f"pytorch: zip member {name!r} claims {info.file_size} bytes from "
                              f"{info.compress_size} compressed (damaged or a zip bomb)")
        return z.read(name)
    except KeyError:
        if optional:
            return None
        raise FormatError(f"pytorch: zip archive lacks member {name!r}") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise FormatError(f"pytorch: zip member {name!r} is damaged: {e}") from None


# ---------------------------------------------------------------- legacy layout

def _load_legacy(data: bytes):
    f = io.BytesIO(data)
    no_storage = lambda pid: _fail("pytorch: storage reference in a legacy header pickle")  # noqa: E731
    magic = _unpickle(f, no_storage)
    if magic != LEGACY_MAGIC:
        raise FormatError(f"pytorch: pickle file is not a torch.save checkpoint (magic {magic!r:.60})")
    _unpickle(f, no_storage)                     # protocol version
    sys_info = _unpickle(f, no_storage)
    big = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    pending = {}                                 # key -> (dtype, numel, [arrays to fill])

    def load_storage(pid):
        _, stype, key, _location, numel = pid[:5]
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            raise FormatError(f"pytorch: storage views (key {key!r}) of pre-1.0 torch files are not supported")
        if key not in pending:
            pending[key] = (stype.dtype, int(numel), _LazyStorage(key))
        return pending[key][2]

    obj = _unpickle(f, load_storage)
    keys = _unpickle(f, no_storage)
    for key in keys:
        if key not in pending:
            raise FormatError(f"pytorch: storage key {key!r} listed but never used")
        dtype, numel, lazy = pending[key]
        start = f.tell()
        head = f.read(8)
        if len(head) < 8:
            raise FormatError(f"pytorch: storage {key!r} header at offset {start} is truncated")
        (count,) = struct.unpack("<q" if not big else ">q", head)
        if count != numel:
            raise FormatError(f"pytorch: storage {key!r} at offset {start} holds {count} elements, "
                              f"the pickle says {numel}")
        raw = f.read(numel * dtype.itemsize)
        if len(raw) < numel * dtype.itemsize:
            raise FormatError(f"pytorch: storage {key!r} data at offset {start + 8} is truncated")
        lazy.array = _as_storage(raw, dtype, numel, key, big)
    return _resolve(obj)


class _LazyStorage:
    """A legacy storage whose bytes come after the pickle: tensors wait for it."""
    def __init__(self, key):
        self.key, self.array = key, None


class _LazyTensor:
    def __init__(self, storage, args):
        self.storage, self.args = storage, args


def _fail(msg):
    raise FormatError(msg)


def _resolve(obj):
    """Replace legacy lazy tensors by arrays once storages are read; containers are rebuilt."""
    if isinstance(obj, _LazyTensor):
        if obj.storage.array is None:
            raise FormatError(f"pytorch: storage {obj.storage.key!r} is never stored in the file")
        return _strided_copy(obj.storage.array, *obj.args)
    if isinstance(obj, dict):
        return {k: _resolve(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v) for v in obj)
    return obj


# ---------------------------------------------------------------- public API

def _plain(obj):
    """OrderedDicts become dicts (pytree nodes), order kept."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    return obj


def load_state_dict(src) -> dict:
    """The checkpoint's object with tensors as numpy arrays (host), no torch needed."""
    data = src if isinstance(src, (bytes, bytearray, memoryview)) else None
    head = bytes(src[:4]) if data is not None else open(os.fspath(src), "rb").read(4)
    if head[:2] == b"PK":
        obj = _load_zip(bytes(src) if data is not None else src)
    elif head[:1] == b"\x80":
        obj = _load_legacy(bytes(data) if data is not None else open(os.fspath(src), "rb").read())
    else:
        raise FormatError(f"pytorch: file starts with {head.hex(' ')}, neither a zip nor a pickle")
    return _plain(obj)


def _leaves(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{prefix}{k}.")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{prefix}{i}.")
    elif isinstance(obj, np.ndarray):
        yield prefix[:-1], obj


def _to_device(obj, backend=None):
    from ..backends import device_put
    if isinstance(obj, dict):
        return {k: _to_device(v, backend) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, backend) for v in obj)
    if isinstance(obj, np.ndarray):
        return device_put(obj, backend=backend)
    return obj


def _identity(params, *inputs):
    return params   # a checkpoint holds weights, no computation


def load(src, device=True, backend=None, **_options) -> Model:
    obj = load_state_dict(src)
    outputs = [TensorSpec(k, a.shape, a.dtype) for k, a in _leaves(obj)]
    params = _to_device(obj, backend) if device else obj
    return Model(fn=_identity, params=params, outputs=outputs, format="pytorch",
                 metadata={"tensors": len(outputs)})


def inspect(src) -> dict:
    obj = load_state_dict(src)
    leaves = list(_leaves(obj))
    hist: dict = {}
    for _, a in leaves:
        hist[a.dtype.name] = hist.get(a.dtype.name, 0) + 1
    from ._summary import weights_summary
    summary = weights_summary((k, a.dtype.name, a.shape, a.nbytes) for k, a in leaves)
    return {**summary, "inputs": [], "outputs": [],
            "tensors": len(leaves), "parameters": int(sum(a.size for _, a in leaves)),
            "dtypes": hist, "shapes": {k: (a.dtype.name, list(a.shape)) for k, a in leaves}}
