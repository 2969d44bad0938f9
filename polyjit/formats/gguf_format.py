"""GGUF files (llama.cpp): metadata, tensors, and dequantization as polyjit functions.

The `gguf` package parses the file (memory-mapped). Quantized tensors stay as their raw
uint8 blocks; `dequantize(blocks, qtype, shape)` turns them into float32 with pnp/lax ops,
so under jit it runs on the device and fuses with the matmul that consumes the weight.
Block layouts (ggml): each block holds `block_size` values in `type_size` bytes, with
float16 scales stored little-endian inside the block.
"""
from __future__ import annotations

import os
import tempfile
from collections import Counter

import numpy as np

from . import FormatError, Model, TensorSpec
from .. import lax
from .. import numpy as pnp

QK_K = 256
# name -> (values per block, bytes per block)
BLOCKS = {"F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q4_0": (32, 18), "Q4_1": (32, 20),
          "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34), "Q2_K": (256, 84),
          "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210)}


# ---------------------------------------------------------------- byte helpers (traceable)

def _cols(b, start, stop):
    """Bytes start..stop of every block: (n, stop - start) uint8."""
    return lax.slice(b, (0, start), (b.shape[0], stop))


def _u16(b, off):
    lo = _cols(b, off, off + 1).astype(pnp.uint16)
    hi = _cols(b, off + 1, off + 2).astype(pnp.uint16)
    return lo | (hi << 8)                                   # (n, 1), little-endian


def _f16(b, off):
    """The float16 at byte `off` of every block, as float32 of shape (n, 1)."""
    return lax.bitcast_convert_type(_u16(b, off), pnp.float16).astype(pnp.float32)


def _shifts(x, shifts, axis):
    """x >> s for each s, stacked on a new axis inserted at `axis`."""
    s = np.asarray(shifts, dtype=np.dtype(x.dtype))
    shape = [1] * (x.ndim + 1)
    shape[axis] = len(shifts)
    return pnp.expand_dims(x, axis) >> pnp.asarray(s.reshape(shape))


def _bits(x):
    """(n, k) bytes -> (n, 8k): bit j of byte i at column 8i + j (little-endian bit order)."""
    n, k = x.shape
    return (_shifts(x, range(8), 2) & 1).reshape(n, 8 * k)


def _i8(x):
    return lax.bitcast_convert_type(x, pnp.int8)


def _f32(x):
    return x.astype(pnp.float32)


# ---------------------------------------------------------------- block decoders: (n, bytes) -> (n, values)

def _q4_0(b):
    d, qs = _f16(b, 0), _cols(b, 2, 18)
    q = pnp.concatenate([qs & 15, qs >> 4], axis=1)       # low nibbles are values 0..15
    return d * _f32(q.astype(pnp.int8) - 8)


def _q4_1(b):
    d, m, qs = _f16(b, 0), _f16(b, 2), _cols(b, 4, 20)
    q = pnp.concatenate([qs & 15, qs >> 4], axis=1)
    return d * _f32(q) + m


def _q5(b, off):
    """5-bit values: 4 low bits as Q4, the 5th bit of value j is bit j of a 32-bit mask."""
    qh, qs = _cols(b, off, off + 4), _cols(b, off + 4, off + 20)
    low = pnp.concatenate([qs & 15, qs >> 4], axis=1)
    return low | (_bits(qh) << 4)


def _q5_0(b):
    return _f16(b, 0) * _f32(_q5(b, 2).astype(pnp.int8) - 16)


def _q5_1(b):
    return _f16(b, 0) * _f32(_q5(b, 4)) + _f16(b, 2)


def _q8_0(b):
    return _f32(_i8(_cols(b, 2, 34))) * _f16(b, 0)


def _q2_k(b):
    n = b.shape[0]
    scales, qs = _cols(b, 0, 16), _cols(b, 16, 80)
    d, dmin = _f16(b, 80)[:, :, None], _f16(b, 82)[:, :, None]
    dl, ml = d * _f32(scales & 15)[:, :, None], dmin * _f32(scales >> 4)[:, :, None]
    # value (half, j, h, l) is 2 bits at shift 2j of byte 32*half + 16h + l; scale 8*half + 2j + h
    q = _shifts(qs.reshape(n, 2, 32), (0, 2, 4, 6), 2) & 3
    return (dl * _f32(q.reshape(n, 16, 16)) - ml).reshape(n, QK_K)


def _q3_k(b):
    n = b.shape[0]
    hmask, qs, sc, d = _cols(b, 0, 32), _cols(b, 32, 96), _cols(b, 96, 108), _f16(b, 108)
    # 16 6-bit scales: low 4 bits are the nibbles of bytes 0..7, high 2 bits pairs of bytes 8..11
    low = pnp.concatenate([_cols(sc, 0, 8) & 15, _cols(sc, 0, 8) >> 4], axis=1)
    high = (_shifts(_cols(sc, 8, 12), (0, 2, 4, 6), 1) & 3).reshape(n, 16)
    scale = _f32((low | (high << 4)).astype(pnp.int8) - 32)
    dl = (d * scale)[:, :, None]
    q = (_shifts(qs.reshape(n, 2, 32), (0, 2, 4, 6), 2) & 3).reshape(n, 256)
    # a clear high-mask bit subtracts 4; bit (4*half + j) of hmask byte (16h + l)
    hbit = _bits(hmask.reshape(n * 32, 1)).reshape(n, 32, 8)
    hbit = pnp.transpose(hbit, (0, 2, 1)).reshape(n, 256)
    qv = q.astype(pnp.int8) - ((hbit ^ 1) << 2).astype(pnp.int8)
    return (dl * _f32(qv).reshape(n, 16, 16)).reshape(n, QK_K)


def _scale_min_k4(sc):
    """8 6-bit (scale, min) pairs packed in 12 bytes (Q4_K, Q5_K)."""
    a, m, hi = _cols(sc, 0, 4), _cols(sc, 4, 8), _cols(sc, 8, 12)
    scale = pnp.concatenate([a & 63, (hi & 15) | ((a >> 6) << 4)], axis=1)
    mins = pnp.concatenate([m & 63, (hi >> 4) | ((m >> 6) << 4)], axis=1)
    return _f32(scale), _f32(mins)


def _k_affine(b, q):
    """Q4_K / Q5_K: value = d*scale*q - dmin*min, 8 groups of 32."""
    n = b.shape[0]
    d, dmin = _f16(b, 0), _f16(b, 2)
    scale, mins = _scale_min_k4(_cols(b, 4, 16))
    return ((d * scale)[:, :, None] * _f32(q) - (dmin * mins)[:, :, None]).reshape(n, QK_K)


def _q4_k_values(qs):
    # value (j, h, l): nibble h of byte 32j + l
    n = qs.shape[0]
    return (_shifts(qs.reshape(n, 4, 32), (0, 4), 2) & 15).reshape(n, 8, 32)


def _q4_k(b):
    return _k_affine(b, _q4_k_values(_cols(b, 16, 144)))


def _q5_k(b):
    qh, qs = _cols(b, 16, 48), _cols(b, 48, 176)
    high = _shifts(qh, range(8), 1) & 1                   # (n, 8, 32): bit g of byte l
    return _k_affine(b, _q4_k_values(qs) | (high << 4))


def _q6_k(b):
    n = b.shape[0]
    ql, qh, sc, d = _cols(b, 0, 128), _cols(b, 128, 192), _cols(b, 192, 208), _f16(b, 208)
    # value (half, k, l): nibble k//2 of ql byte 64*half + 32*(k%2) + l, 2 bits at 2k of qh
    low = (_shifts(ql.reshape(n, 2, 64), (0, 4), 2) & 15).reshape(n, 2, 4, 32)
    high = _shifts(qh.reshape(n, 2, 32), (0, 2, 4, 6), 2) & 3
    q = (low | (high << 4)).astype(pnp.int8) - 32
    dl = (d * _f32(_i8(sc)))[:, :, None]
    return (dl * _f32(q).reshape(n, 16, 16)).reshape(n, QK_K)


def _f16_blocks(b):
    return _f32(lax.bitcast_convert_type(_u16(b, 0), pnp.float16))


def _bf16_blocks(b):
    return lax.bitcast_convert_type(_u16(b, 0).astype(pnp.uint32) << 16, pnp.float32)


def _f32_blocks(b):
    w = [_cols(b, i, i + 1).astype(pnp.uint32) << (8 * i) for i in range(4)]
    return lax.bitcast_convert_type(w[0] | w[1] | w[2] | w[3], pnp.float32)


DECODERS = {"F32": _f32_blocks, "F16": _f16_blocks, "BF16": _bf16_blocks, "Q4_0": _q4_0,
            "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1, "Q8_0": _q8_0, "Q2_K": _q2_k,
            "Q3_K": _q3_k, "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k}


def dequantize(raw, qtype: str, shape) -> "pnp.ndarray":
    """float32 tensor of `shape` (numpy order) from its raw bytes (any shape, uint8).

    Traceable: call it inside jit with `raw` a uint8 parameter to keep weights quantized in
    device memory and dequantize next to their use."""
    if qtype not in DECODERS:
        raise FormatError(f"gguf: dequantization of {qtype} is not supported "
                          f"(supported: {', '.join(DECODERS)})")
    bs, ts = BLOCKS[qtype]
    raw = pnp.asarray(raw)
    blocks = raw.reshape(raw.size // ts, ts)
    return DECODERS[qtype](blocks).reshape(tuple(shape))


# ---------------------------------------------------------------- reading files

class GGUFFile:
    """Parsed GGUF: `metadata` (key -> python value), `tensors` (name -> TensorInfo)."""

    def __init__(self, src):
        self.path, self._tmp = _as_path(src)
        self.size = os.path.getsize(self.path)
        try:
            import gguf
        except ImportError as e:  # pragma: no cover
            raise ImportError("reading GGUF needs the `gguf` package (pip install polyjit[formats])") from e
        try:
            self.reader = _checked_reader(gguf)(self.path)
        except FormatError as e:
            raise FormatError(f"gguf: cannot parse the header of the {self.size}-byte file: "
                              f"{str(e).removeprefix('gguf: ')}") from None
        except Exception as e:   # the reader raises assorted errors on damaged headers
            raise FormatError(f"gguf: cannot parse the header of the {self.size}-byte file: "
                              f"{type(e).__name__}: {e}") from None
        finally:
            if self._tmp:
                os.unlink(self._tmp)     # a memory map keeps the data alive
        self.metadata = self._metadata()
        self.tensors = {}
        for t in self.reader.tensors:
            self._check_tensor(t)
            self.tensors[t.name] = t

    def _metadata(self):
        out = {}
        for key, field in self.reader.fields.items():
            if key.startswith("GGUF."):
                continue
            try:
                out[key] = field.contents()
            except Exception as e:
                raise FormatError(f"gguf: metadata {key!r} at offset {field.offset} is damaged: {e}") from None
        return out

    def _check_tensor(self, t):
        qtype = t.tensor_type.name
        shape = tuple(int(d) for d in reversed(t.shape))
        if qtype in BLOCKS:
            bs, ts = BLOCKS[qtype]
            n = 1
            for d in shape:
                n *= d                      # Python ints: a damaged dim must not overflow
            if n % bs:
                raise FormatError(f"gguf: tensor {t.name!r} has {n} values, not whole {qtype} blocks")
            want = n // bs * ts
            if int(t.n_bytes) != want:
                raise FormatError(f"gguf: tensor {t.name!r} {qtype}{list(shape)} needs {want} bytes, "
                                  f"the file gives {t.n_bytes}")
        end = int(t.data_offset) + int(t.n_bytes)
        if end > self.size:
            raise FormatError(f"gguf: tensor {t.name!r} data at offset {t.data_offset}..{end} runs past "
                              f"the end of the {self.size}-byte file (truncated?)")

    def shape(self, name):
        return tuple(int(d) for d in reversed(self.tensors[name].shape))

    def qtype(self, name):
        return self.tensors[name].tensor_type.name

    def raw(self, name) -> np.ndarray:
        """The tensor's bytes as a flat uint8 array (memory-mapped)."""
        return np.asarray(self.tensors[name].data).reshape(-1).view(np.uint8)

    def get(self, name, dequantize_now=True, device=True):
        """A float32 tensor (dequantized eagerly with polyjit ops), or the raw uint8 blocks."""
        raw = self.raw(name)
        if not dequantize_now:
            from ..backends import device_put
            return device_put(np.array(raw)) if device else raw
        return dequantize(np.array(raw), self.qtype(name), self.shape(name))


def _checked_reader(gguf):
    """GGUFReader that bounds every read by the file: a read past the end, an array whose
    count cannot fit in the bytes left, or a tensor whose extent runs past the end raises a
    `FormatError` naming the offset (instead of looping over a corrupt count or failing
    inside a reshape). Reads go through a plain ndarray view of the memory map, which is
    also ~4x faster than indexing the np.memmap itself."""

    # fewest bytes one element of each value type takes (arrays: type + count)
    min_size = {int(t): 8 if t == gguf.GGUFValueType.STRING else 12 if t == gguf.GGUFValueType.ARRAY
                else np.dtype(gguf.GGUFReader.gguf_scalar_to_np.get(t, np.uint8)).itemsize
                for t in gguf.GGUFValueType}

    class CheckedReader(gguf.GGUFReader):
        def _get(self, offset, dtype, count=1, override_order=None):
            plain = self.__dict__.get("_plain")
            if plain is None:
                plain = self._plain = self.data.view(np.ndarray)
            dt = np.dtype(dtype)
            count = int(count)
            end = int(offset) + dt.itemsize * count
            if count < 0 or end > len(plain):
                raise FormatError(f"gguf: a {count}-element {dt.name} read at offset {offset} runs "
                                  f"past the end of the {len(plain)}-byte file (truncated or damaged)")
            arr = plain[int(offset):end].view(dt)
            return arr.view(arr.dtype.newbyteorder(self.byte_order if override_order is None
                                                   else override_order))

        def _get_field_parts(self, orig_offs, raw_type):
            if int(raw_type) == int(gguf.GGUFValueType.ARRAY):
                itype = int(self._get(orig_offs, np.uint32)[0])
                count = int(self._get(orig_offs + 4, np.uint64)[0])
                left = len(self.data) - orig_offs - 12
                if itype not in min_size:
                    raise FormatError(f"gguf: array at offset {orig_offs} has unknown element type {itype}")
                if count * min_size[itype] > left:
                    raise FormatError(f"gguf: array at offset {orig_offs} claims {count} elements, more "
                                      f"than the {left} bytes left in the file hold")
            return super()._get_field_parts(orig_offs, raw_type)

        def _build_tensors(self, start_offs, fields):
            size = len(self.data)
            for field in fields:
                _, name, _, dims, raw_dtype, offset = field.parts
                qtype = gguf.GGMLQuantizationType(int(raw_dtype[0]))
                bs, ts = gguf.GGML_QUANT_SIZES[qtype]
                n = 1
                for d in dims.tolist():
                    n *= int(d)
                begin = int(start_offs) + int(offset[0])
                end = begin + n * ts // bs
                if end > size:
                    raise FormatError(
                        f"gguf: tensor {bytes(name).decode('utf-8', 'replace')!r} data at offset "
                        f"{begin}..{end} runs past the end of the {size}-byte file (truncated?)")
            return super()._build_tensors(start_offs, fields)

    return CheckedReader


def _as_path(src):
    if isinstance(src, (bytes, bytearray, memoryview)):
        # GGUFReader memory-maps a path; bytes go through an unlinked temporary file.
        f = tempfile.NamedTemporaryFile(suffix=".gguf", delete=False)
        f.write(bytes(src))
        f.close()
        return f.name, f.name
    return os.fspath(src), None


def _arch_value(meta, key, default=None):
    arch = meta.get("general.architecture", "")
    return meta.get(f"{arch}.{key}", default)


def _check_llama(g: GGUFFile):
    """The hyperparameters a LLaMA-family model is built from, checked against each other and
    the tensor shapes before anything is sized from them (a damaged count must not size an
    allocation or a loop)."""
    meta = g.metadata
    arch = meta.get("general.architecture")

    def count(key, default=None):
        v = _arch_value(meta, key, default)
        if v is None:
            raise FormatError(f"gguf: {arch} metadata lacks {arch}.{key}")
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 < int(v) < 1 << 31:
            raise FormatError(f"gguf: {arch}.{key} = {v!r:.60} is not a count in 1..2**31-1")
        return int(v)

    def shape(name, want):
        if name in g.tensors and g.shape(name) != want:
            raise FormatError(f"gguf: tensor {name!r} has shape {list(g.shape(name))}, the metadata "
                              f"implies {list(want)}")

    emb = g.shape("token_embd.weight")
    if len(emb) != 2:
        raise FormatError(f"gguf: token_embd.weight has shape {list(emb)}, not (vocab, dim)")
    vocab, dim = emb
    if count("embedding_length") != dim:
        raise FormatError(f"gguf: {arch}.embedding_length = {_arch_value(meta, 'embedding_length')} but "
                          f"token_embd.weight has {dim} columns")
    heads = count("attention.head_count")
    kv = count("attention.head_count_kv", heads)
    layers, ffn = count("block_count"), count("feed_forward_length")
    count("context_length", 2048)
    if dim % heads or heads % kv:
        raise FormatError(f"gguf: {heads} heads / {kv} KV heads do not divide the {dim}-wide embedding")
    head_dim = dim // heads
    rope = _arch_value(meta, "rope.dimension_count", 0) or 0
    if isinstance(rope, bool) or not isinstance(rope, (int, np.integer)) or not 0 <= rope <= head_dim:
        raise FormatError(f"gguf: {arch}.rope.dimension_count = {rope!r:.60} does not fit the "
                          f"{head_dim}-wide heads")
    for key in ("rope.freq_base", "attention.layer_norm_rms_epsilon", "rope.scaling.factor"):
        v = _arch_value(meta, key)
        if v is not None and (isinstance(v, (str, list)) or not np.isfinite(float(v)) or float(v) <= 0):
            raise FormatError(f"gguf: {arch}.{key} = {v!r:.60} is not a positive number")
    blocks = {int(k.split(".")[1]) for k in g.tensors if k.startswith("blk.") and k.split(".")[1].isdigit()}
    if blocks != set(range(layers)):
        raise FormatError(f"gguf: {arch}.block_count = {layers} but the file has blocks "
                          f"{sorted(blocks)[:4]}...{sorted(blocks)[-2:]} ({len(blocks)} of them)")
    for name, want in (("output_norm.weight", (dim,)), ("output.weight", (vocab, dim))):
        shape(name, want)
    for i in range(layers):
        for name, want in (("attn_norm", (dim,)), ("ffn_norm", (dim,)), ("attn_q", (dim, dim)),
                           ("attn_k", (kv * head_dim, dim)), ("attn_v", (kv * head_dim, dim)),
                           ("attn_output", (dim, dim)), ("ffn_gate", (ffn, dim)),
                           ("ffn_up", (ffn, dim)), ("ffn_down", (dim, ffn))):
            shape(f"blk.{i}.{name}.weight", want)


def load(src, dequantize_now=True, **options) -> Model:
    """A Model: a LLaMA-family decoder when the architecture is one we know, otherwise the
    weights (float32, or raw blocks with dequantize_now=False) with an identity fn."""
    g = GGUFFile(src)
    arch = g.metadata.get("general.architecture")
    if arch in ("llama", "smollm", "mistral", "qwen2") and "token_embd.weight" in g.tensors:
        from ..pipelines.llama import LlamaModel
        _check_llama(g)
        try:
            return LlamaModel.from_gguf(g, dequantize_now=dequantize_now, **options).as_model()
        except FormatError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, OverflowError,
                NotImplementedError, UnicodeError) as e:
            raise FormatError(f"gguf: the {arch} model in this file is inconsistent: "
                              f"{type(e).__name__}: {e}") from None
    params = {k: g.get(k, dequantize_now) for k in g.tensors}
    return Model(fn=lambda p, *a: p, params=params, format="gguf", metadata=g.metadata,
                 outputs=[TensorSpec(k, g.shape(k), g.qtype(k)) for k in g.tensors])


def inspect(src) -> dict:
    g = GGUFFile(src)
    meta = g.metadata
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = _arch_value(meta, "vocab_size") or (len(tokens) if tokens is not None else None)
    big = {k: (v if not isinstance(v, list) or len(v) <= 16 else f"<{len(v)} items>")
           for k, v in meta.items()}
    from ._summary import io_entry, weights_summary
    summary = weights_summary((k, g.qtype(k), g.shape(k), int(g.tensors[k].n_bytes)) for k in g.tensors)
    llm = "token_embd.weight" in g.tensors
    return {
        **summary,
        "inputs": [io_entry("tokens", "int32", (-1, -1))] if llm else [],
        "outputs": [io_entry("logits", "float32", (-1, vocab or -1))] if llm else [],
        "architecture": meta.get("general.architecture"),
        "name": meta.get("general.name"),
        "layers": _arch_value(meta, "block_count"),
        "heads": _arch_value(meta, "attention.head_count"),
        "kv_heads": _arch_value(meta, "attention.head_count_kv"),
        "embedding": _arch_value(meta, "embedding_length"),
        "context_length": _arch_value(meta, "context_length"),
        "vocab_size": vocab,
        "tensors": len(g.tensors),
        "parameters": int(sum(np.prod(g.shape(k)) for k in g.tensors)),
        "quant_types": dict(Counter(g.qtype(k) for k in g.tensors)),
        "metadata": big,
    }
