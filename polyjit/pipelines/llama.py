"""A LLaMA-family decoder (SmolLM, Llama, Mistral layout) built from GGUF metadata.

RMSNorm, rotary embeddings with the file's base frequency (and linear scaling / per-dim
frequency factors when present), grouped-query attention with a fixed-size KV cache,
SwiGLU MLP, tied or separate output embedding. Weights come straight from the GGUF file:
dequantized once at load (fast on the numpy backend), or kept as raw quantized blocks and
dequantized inside the jitted step (`dequantize_now=False`), so a device backend fuses the
dequantization with the matmul that uses it.

GGUF stores Q and K projections with each head's rows permuted so that rotary pairs are
adjacent (x[2i], x[2i+1]); we rotate adjacent pairs to match, which is the same attention
as Hugging Face's rotate-half on the unpermuted weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import lax
from .. import numpy as pnp
from ..formats import Model, TensorSpec


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden_dim: int
    eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_dim: int = 0            # 0: the whole head
    rope_scale: float = 1.0      # linear position scaling
    context_length: int = 2048

    @property
    def head_dim(self):
        return self.dim // self.n_heads

    @classmethod
    def from_gguf_metadata(cls, meta: dict, vocab_size: int) -> "LlamaConfig":
        arch = meta["general.architecture"]
        get = lambda k, d=None: meta.get(f"{arch}.{k}", d)  # noqa: E731
        n_heads = int(get("attention.head_count"))
        scaling = get("rope.scaling.type")
        factor = float(get("rope.scaling.factor", 1.0) or 1.0)
        if scaling not in (None, "none", "linear"):
            raise NotImplementedError(f"rope scaling {scaling!r} is not supported (linear is)")
        return cls(vocab_size=vocab_size, dim=int(get("embedding_length")),
                   n_layers=int(get("block_count")), n_heads=n_heads,
                   n_kv_heads=int(get("attention.head_count_kv", n_heads)),
                   hidden_dim=int(get("feed_forward_length")),
                   eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
                   rope_theta=float(get("rope.freq_base", 10000.0)),
                   rope_dim=int(get("rope.dimension_count", 0) or 0),
                   rope_scale=factor if scaling == "linear" else 1.0,
                   context_length=int(get("context_length", 2048)))


# ---------------------------------------------------------------- building blocks

def rms_norm(x, w, eps):
    x32 = x.astype(pnp.float32)
    return x32 * lax.rsqrt(pnp.mean(x32 * x32, axis=-1, keepdims=True) + eps) * w


def linear(x, w, transposed=False):
    """x @ w.T with w stored (out, in) as in GGUF / PyTorch, or x @ w when `transposed`
    (stored (in, out): the contiguous layout numpy's BLAS matmul wants)."""
    return lax.dot_general(x, w, (((x.ndim - 1,), (0 if transposed else 1,)), ((), ())))


def silu(x):
    return x * (1.0 / (1.0 + pnp.exp(-x)))


def softmax(x, axis=-1):
    e = pnp.exp(x - pnp.max(x, axis=axis, keepdims=True))
    return e / pnp.sum(e, axis=axis, keepdims=True)


def rope_inv_freq(cfg: LlamaConfig, freq_factors=None) -> np.ndarray:
    rd = cfg.rope_dim or cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, rd, 2, dtype=np.float64) / rd))
    if freq_factors is not None:          # Llama 3 style per-frequency divisors
        inv = inv / np.asarray(freq_factors, np.float64)
    return (inv / cfg.rope_scale).astype(np.float32)


def apply_rope(x, positions, inv_freq):
    """Rotate adjacent pairs of the first 2*len(inv_freq) features. x: (B, T, H, D);
    positions: (T,) int32 (traced)."""
    b, t, h, d = x.shape
    half = inv_freq.shape[0]
    ang = positions.astype(pnp.float32)[:, None] * pnp.asarray(inv_freq)[None, :]   # (T, half)
    cos, sin = pnp.cos(ang)[None, :, None, :], pnp.sin(ang)[None, :, None, :]
    rot = x[..., : 2 * half].reshape(b, t, h, half, 2)
    x0, x1 = rot[..., 0], rot[..., 1]
    out = pnp.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1).reshape(b, t, h, 2 * half)
    if 2 * half == d:
        return out
    return pnp.concatenate([out, x[..., 2 * half:]], axis=-1)


# ---------------------------------------------------------------- the model

class LlamaModel:
    """`step(params, tokens, cache, pos)` is the jittable function; `generate` drives it."""

    def __init__(self, config: LlamaConfig, params: dict, quant: dict | None = None,
                 tokenizer=None, inv_freq=None, metadata=None):
        self.config, self.params, self.tokenizer = config, params, tokenizer
        self.quant = quant or {}          # name -> (qtype, shape) of weights kept quantized
        self.inv_freq = rope_inv_freq(config) if inv_freq is None else inv_freq
        self.metadata = metadata or {}
        self._step = None

    # -- loading
    @classmethod
    def from_gguf(cls, g, dequantize_now=True, **_):
        """From a `polyjit.formats.gguf_format.GGUFFile` (or a path / bytes)."""
        from ..formats.gguf_format import GGUFFile
        from .tokenizers import BPETokenizer, SPMTokenizer
        if not isinstance(g, GGUFFile):
            g = GGUFFile(g)
        vocab = g.shape("token_embd.weight")[0]
        cfg = LlamaConfig.from_gguf_metadata(g.metadata, vocab)
        params, quant = {}, {}
        for name in g.tensors:
            if name == "rope_freqs.weight":
                continue
            keep = not dequantize_now and g.qtype(name) not in ("F32",) and len(g.shape(name)) == 2
            if keep:
                params[name] = g.get(name, dequantize_now=False)
                quant[name] = (g.qtype(name), g.shape(name))
            elif len(g.shape(name)) == 2 and name != "token_embd.weight":
                params[name + ".T"] = _transposed(g.get(name))      # (in, out)
            else:
                params[name] = g.get(name)
        if dequantize_now and "output.weight" not in g.tensors:       # tied: a transposed copy
            params["output.weight.T"] = _transposed(params["token_embd.weight"])
        factors = np.asarray(g.get("rope_freqs.weight")) if "rope_freqs.weight" in g.tensors else None
        tok = None
        if g.metadata.get("tokenizer.ggml.model") == "gpt2":
            tok = BPETokenizer.from_gguf_metadata(g.metadata)
        elif g.metadata.get("tokenizer.ggml.model") == "llama":
            tok = SPMTokenizer.from_gguf_metadata(g.metadata)
        return cls(cfg, params, quant, tok, rope_inv_freq(cfg, factors), g.metadata)

    def _linear(self, params, x, name):
        if name + ".T" in params:
            return linear(x, params[name + ".T"], transposed=True)
        if name == "output.weight" and name not in params:
            name = "token_embd.weight"                                     # tied embeddings
        return linear(x, self._w(params, name))

    def _w(self, params, name):
        if name in self.quant:
            from ..formats.gguf_format import dequantize
            qtype, shape = self.quant[name]
            return dequantize(params[name], qtype, shape)
        return params[name]

    # -- the traced step
    def init_cache(self, batch=1, max_len=None):
        c = self.config
        s = max_len or min(c.context_length, 512)
        z = lambda: pnp.zeros((batch, c.n_kv_heads, s, c.head_dim), pnp.float32)  # noqa: E731
        return tuple((z(), z()) for _ in range(c.n_layers))

    def step(self, params, tokens, cache, pos, all_logits=False):
        """tokens (B, T) int32 at positions pos..pos+T-1 -> (logits (B, V) of the last
        position, or (B, T, V) with all_logits; the updated cache)."""
        c = self.config
        b, t = tokens.shape
        w = lambda n: self._w(params, n)  # noqa: E731
        emb = w("token_embd.weight")
        x = pnp.take(emb, tokens, axis=0)                                  # (B, T, dim)
        positions = pos + pnp.arange(t, dtype=pnp.int32)
        new_cache = []
        for i in range(c.n_layers):
            x, kv = self._block(params, i, x, cache[i], pos, positions)
            new_cache.append(kv)
        x = rms_norm(x, w("output_norm.weight"), c.eps)
        if not all_logits:
            x = x[:, -1]
        return self._linear(params, x, "output.weight"), tuple(new_cache)

    def _block(self, params, i, x, kv, pos, positions):
        c = self.config
        w = lambda n: self._w(params, f"blk.{i}.{n}")  # noqa: E731
        lin = lambda h, n: self._linear(params, h, f"blk.{i}.{n}")  # noqa: E731
        b, t, _ = x.shape
        h = rms_norm(x, w("attn_norm.weight"), c.eps)
        q = lin(h, "attn_q.weight").reshape(b, t, c.n_heads, c.head_dim)
        k = lin(h, "attn_k.weight").reshape(b, t, c.n_kv_heads, c.head_dim)
        v = lin(h, "attn_v.weight").reshape(b, t, c.n_kv_heads, c.head_dim)
        q, k = apply_rope(q, positions, self.inv_freq), apply_rope(k, positions, self.inv_freq)
        ck = lax.dynamic_update_slice(kv[0], pnp.transpose(k, (0, 2, 1, 3)), (0, 0, pos, 0))
        cv = lax.dynamic_update_slice(kv[1], pnp.transpose(v, (0, 2, 1, 3)), (0, 0, pos, 0))
        x = x + lin(self._attend(q, ck, cv, positions), "attn_output.weight")
        h = rms_norm(x, w("ffn_norm.weight"), c.eps)
        mlp = silu(lin(h, "ffn_gate.weight")) * lin(h, "ffn_up.weight")
        return x + lin(mlp, "ffn_down.weight"), (ck, cv)

    def _attend(self, q, ck, cv, positions):
        """Grouped-query attention of q (B, T, H, D) over the cache (B, KV, S, D); a query at
        position p sees cache slots 0..p."""
        c = self.config
        b, t, _, d = q.shape
        g = c.n_heads // c.n_kv_heads
        qg = q.reshape(b, t, c.n_kv_heads, g, d)
        scores = pnp.einsum("btkgd,bksd->bkgts", qg, ck) * (1.0 / math.sqrt(d))
        s = ck.shape[2]
        visible = pnp.arange(s, dtype=pnp.int32)[None, :] <= positions[:, None]     # (T, S)
        scores = pnp.where(visible, scores, -1e30)
        out = pnp.einsum("bkgts,bksd->btkgd", softmax(scores, axis=-1), cv)
        return out.reshape(b, t, c.n_heads * d)

    # -- running
    def _jitted(self):
        if self._step is None:
            from ..tracer.jit import jit
            self._step = jit(self.step, static_argnums=(4,))
        return self._step

    def logits(self, tokens, all_logits=False):
        """Logits for a prompt (list of ids or (B, T) array) from an empty cache."""
        toks = np.atleast_2d(np.asarray(tokens, dtype=np.int32))
        cache = self.init_cache(toks.shape[0], max_len=toks.shape[1])
        out, _ = self._jitted()(self.params, toks, cache, np.int32(0), all_logits)
        return np.asarray(out)

    def generate_ids(self, prompt_ids, max_new_tokens=20, temperature=0.0, top_k=None,
                     top_p=None, seed=0, stop_at_eos=True, max_len=None):
        """Greedy (temperature 0) or sampled continuation of prompt_ids, with a KV cache."""
        prompt = np.asarray(prompt_ids, dtype=np.int32)[None, :]
        total = max_len or prompt.shape[1] + max_new_tokens
        step = self._jitted()
        cache = self.init_cache(1, total)
        logits, cache = step(self.params, prompt, cache, np.int32(0), False)
        rng = np.random.default_rng(seed)
        out, pos = [], prompt.shape[1]
        for _ in range(max_new_tokens):
            tok = _choose(np.asarray(logits)[0], temperature, top_k, top_p, rng)
            out.append(tok)
            if stop_at_eos and self.tokenizer is not None and tok == self.tokenizer.eos_id:
                break
            if pos >= total:
                break
            logits, cache = step(self.params, np.array([[tok]], np.int32), cache, np.int32(pos), False)
            pos += 1
        return out

    def generate(self, prompt: str, max_new_tokens=20, **kw) -> str:
        ids = self.tokenizer.encode(prompt)
        return self.tokenizer.decode(self.generate_ids(ids, max_new_tokens, **kw))

    def chat(self, user_message: str, max_new_tokens=40, **kw) -> str:
        """One chat turn with the ChatML template SmolLM2-Instruct uses."""
        prompt = f"<|im_start|>user\n{user_message}<|im_end|>\n<|im_start|>assistant\n"
        ids = self.generate_ids(self.tokenizer.encode(prompt), max_new_tokens, **kw)
        return self.tokenizer.decode(ids, skip_special=True)

    def as_model(self) -> Model:
        c = self.config
        return Model(fn=lambda params, tokens, cache, pos: self.step(params, tokens, cache, pos),
                     params=self.params,
                     inputs=[TensorSpec("tokens", ("batch", "seq"), np.int32),
                             TensorSpec("cache", (), "kv"), TensorSpec("pos", (), np.int32)],
                     outputs=[TensorSpec("logits", ("batch", c.vocab_size), np.float32),
                              TensorSpec("cache", (), "kv")],
                     metadata={**self.metadata, "pipeline": self}, format="gguf")


def _transposed(w):
    from ..backends import device_put
    return device_put(np.ascontiguousarray(np.asarray(w).T))


def _choose(logits, temperature, top_k, top_p, rng) -> int:
    """Greedy argmax at temperature 0; otherwise sample from softmax(logits / T) restricted to
    the top_k tokens and the smallest set with probability >= top_p."""
    if not temperature:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    if top_k:
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= kth, z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p)
        keep = np.cumsum(p[order]) - p[order] < top_p
        mask = np.zeros_like(p, dtype=bool)
        mask[order[keep]] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    return int(rng.choice(len(p), p=p))
