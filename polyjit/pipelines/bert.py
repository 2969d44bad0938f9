"""BERT encoders (all-MiniLM-L6-v2 and friends) from a Hugging Face model directory:
config.json + model.safetensors + WordPiece vocab.txt, with sentence-transformers style
mean pooling (and optional L2 normalisation) for sentence embeddings.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np

from .. import lax
from .. import numpy as pnp
from .tokenizers import WordPieceTokenizer


@dataclass(frozen=True)
class BertConfig:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    eps: float = 1e-12
    act: str = "gelu"

    @classmethod
    def from_dict(cls, c: dict) -> "BertConfig":
        act = c.get("hidden_act", "gelu")
        if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu"):
            raise NotImplementedError(f"BERT activation {act!r} is not supported")
        return cls(c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                   c["intermediate_size"], c.get("layer_norm_eps", 1e-12), act)


def layer_norm(x, w, b, eps):
    mu = pnp.mean(x, axis=-1, keepdims=True)
    var = pnp.mean(pnp.square(x - mu), axis=-1, keepdims=True)
    return (x - mu) * lax.rsqrt(var + eps) * w + b


def dense(x, params, name):
    """PyTorch Linear: x @ W.T + b, W stored (out, in)."""
    y = lax.dot_general(x, params[name + ".weight"], (((x.ndim - 1,), (1,)), ((), ())))
    return y + params[name + ".bias"]


def _act(x, kind):
    if kind == "relu":
        return pnp.maximum(x, 0)
    if kind == "gelu":   # exact erf GELU, as BERT uses
        return 0.5 * x * (1.0 + lax.erf(x * (1.0 / math.sqrt(2.0))))
    return 0.5 * x * (1.0 + pnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def bert_encode(params, ids, mask, token_types, cfg: BertConfig):
    """Last hidden states (B, T, hidden) for int32 ids/mask/token_types of shape (B, T)."""
    p = params
    b, t = ids.shape
    x = (pnp.take(p["embeddings.word_embeddings.weight"], ids, axis=0)
         + p["embeddings.position_embeddings.weight"][:t][None]
         + pnp.take(p["embeddings.token_type_embeddings.weight"], token_types, axis=0))
    x = layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], cfg.eps)
    # padded keys get a large negative score
    bias = (1.0 - mask.astype(pnp.float32))[:, None, None, :] * -1e9
    for i in range(cfg.layers):
        x = _layer(p, f"encoder.layer.{i}.", x, bias, cfg)
    return x


def _layer(p, pre, x, bias, cfg):
    b, t, d = x.shape
    h, hd = cfg.heads, d // cfg.heads
    split = lambda y: pnp.transpose(y.reshape(b, t, h, hd), (0, 2, 1, 3))  # noqa: E731
    q = split(dense(x, p, pre + "attention.self.query"))
    k = split(dense(x, p, pre + "attention.self.key"))
    v = split(dense(x, p, pre + "attention.self.value"))
    s = pnp.einsum("bhqd,bhkd->bhqk", q, k) * (1.0 / math.sqrt(hd)) + bias
    s = pnp.exp(s - pnp.max(s, axis=-1, keepdims=True))
    a = s / pnp.sum(s, axis=-1, keepdims=True)
    ctx = pnp.transpose(pnp.einsum("bhqk,bhkd->bhqd", a, v), (0, 2, 1, 3)).reshape(b, t, d)
    x = layer_norm(x + dense(ctx, p, pre + "attention.output.dense"),
                   p[pre + "attention.output.LayerNorm.weight"], p[pre + "attention.output.LayerNorm.bias"], cfg.eps)
    hmid = _act(dense(x, p, pre + "intermediate.dense"), cfg.act)
    return layer_norm(x + dense(hmid, p, pre + "output.dense"),
                      p[pre + "output.LayerNorm.weight"], p[pre + "output.LayerNorm.bias"], cfg.eps)


def mean_pool(hidden, mask):
    m = mask.astype(pnp.float32)[:, :, None]
    return pnp.sum(hidden * m, axis=1) / pnp.maximum(pnp.sum(m, axis=1), 1e-9)


class SentenceEncoder:
    """`SentenceEncoder.from_dir(path).encode(["a sentence", ...])` -> (N, hidden) numpy."""

    def __init__(self, cfg: BertConfig, params: dict, tokenizer: WordPieceTokenizer, normalize=False):
        self.cfg, self.params, self.tokenizer, self.normalize = cfg, params, tokenizer, normalize
        self._fn = None

    @classmethod
    def from_dir(cls, path, normalize=False):
        from ..formats.safetensors_format import load_arrays
        with open(os.path.join(path, "config.json")) as f:
            cfg = BertConfig.from_dict(json.load(f))
        params = load_arrays(os.path.join(path, "model.safetensors"))
        params = {k[5:] if k.startswith("bert.") else k: v for k, v in params.items()}
        lower = True
        tc = os.path.join(path, "tokenizer_config.json")
        if os.path.exists(tc):
            with open(tc) as f:
                lower = json.load(f).get("do_lower_case", True)
        tok = WordPieceTokenizer.from_file(os.path.join(path, "vocab.txt"), lowercase=lower)
        return cls(cfg, params, tok, normalize)

    def embed(self, params, ids, mask):
        """The jittable function: mean-pooled (optionally unit-length) embeddings."""
        e = mean_pool(bert_encode(params, ids, mask, pnp.zeros_like(ids), self.cfg), mask)
        if self.normalize:
            e = e / pnp.maximum(pnp.sqrt(pnp.sum(e * e, axis=-1, keepdims=True)), 1e-12)
        return e

    def encode(self, sentences, max_length=256) -> np.ndarray:
        if self._fn is None:
            from ..tracer.jit import jit
            self._fn = jit(self.embed)
        ids, mask = self.tokenizer.batch(list(sentences), max_length=max_length)
        return np.asarray(self._fn(self.params, np.asarray(ids, np.int32), np.asarray(mask, np.int32)))
