"""Tokenizers in plain Python: byte-level BPE (GPT-2 family, from a GGUF vocabulary and
merge list) and WordPiece (BERT, from vocab.txt). No dependencies beyond the stdlib.
"""
from __future__ import annotations

import unicodedata
from functools import lru_cache


# ---------------------------------------------------------------- character classes

def _is_letter(c):
    return unicodedata.category(c)[0] == "L"


def _is_number(c):
    return unicodedata.category(c)[0] == "N"


def _is_space(c):
    return c.isspace()


_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


def gpt2_pretokenize(text: str, split_digits=False) -> list[str]:
    """Split text as GPT-2's pattern does:
    's|'t|'re|'ve|'m|'ll|'d | ?letters+ | ?numbers+ | ?other+ | spaces+(?!\\S) | spaces+
    With split_digits, every number character is its own piece first (SmolLM, Llama 3 style)."""
    pieces, i, n = [], 0, len(text)
    while i < n:
        j = _match_at(text, i, n, split_digits)
        pieces.append(text[i:j])
        i = j
    return pieces


def _run(text, i, n, pred):
    while i < n and pred(text[i]):
        i += 1
    return i


def _match_at(text, i, n, split_digits):
    c = text[i]
    if split_digits and _is_number(c):
        return i + 1
    for con in _CONTRACTIONS:
        if text.startswith(con, i):
            return i + len(con)
    k = i + 1 if c == " " and i + 1 < n else i      # optional leading space
    if k < n:
        d = text[k]
        if _is_letter(d):
            return _run(text, k, n, _is_letter)
        if _is_number(d):
            if split_digits:           # digits were split off first: the space stands alone
                return i + 1
            return _run(text, k, n, _is_number)
        if not _is_space(d):
            return _run(text, k, n, lambda ch: not (_is_space(ch) or _is_letter(ch) or _is_number(ch)))
    # whitespace: the whole run, except that the last space before a non-space is left
    # to start the next piece (the (?!\S) lookahead backtracking by one)
    end = _run(text, i, n, _is_space)
    if end < n and end - i > 1:
        return end - 1
    return end


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map: printable Latin-1 bytes map to
    themselves, the others to code points from 256 up, in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class BPETokenizer:
    """Byte-level BPE. `tokens[i]` is the string of id i (in the byte->unicode alphabet);
    `merges` are "a b" pairs in priority order; `special` are ids matched verbatim in text."""

    def __init__(self, tokens, merges, special_ids=(), bos_id=None, eos_id=None,
                 split_digits=False, add_bos=False):
        self.tokens = list(tokens)
        self.vocab = {t: i for i, t in enumerate(self.tokens)}
        self.ranks = {tuple(m.split(" ", 1)): r for r, m in enumerate(merges)}
        self.special = {self.tokens[i]: i for i in special_ids}
        self.bos_id, self.eos_id, self.add_bos = bos_id, eos_id, add_bos
        self.split_digits = split_digits
        self.byte_map = bytes_to_unicode()
        self.unbyte = {c: b for b, c in self.byte_map.items()}
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_gguf_metadata(cls, meta: dict) -> "BPETokenizer":
        model = meta.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise ValueError(f"tokenizer model {model!r} is not byte-level BPE ('gpt2')")
        tokens = meta["tokenizer.ggml.tokens"]
        types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
        special = [i for i, t in enumerate(types) if t in (3, 4)]   # control, user-defined
        pre = meta.get("tokenizer.ggml.pre", "default")
        return cls(tokens, meta.get("tokenizer.ggml.merges", []), special,
                   bos_id=meta.get("tokenizer.ggml.bos_token_id"),
                   eos_id=meta.get("tokenizer.ggml.eos_token_id"),
                   split_digits=pre in ("smollm", "llama3", "llama-bpe", "qwen2", "deepseek-llm"),
                   add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)))

    # -- encoding
    def _bpe(self, piece: str) -> list[int]:
        if piece in self._cache:
            return self._cache[piece]
        parts = [self.byte_map[b] for b in piece.encode("utf-8")]
        while len(parts) > 1:
            best, at = None, -1
            for k in range(len(parts) - 1):
                r = self.ranks.get((parts[k], parts[k + 1]))
                if r is not None and (best is None or r < best):
                    best, at = r, k
            if best is None:
                break
            a, b = parts[at], parts[at + 1]
            out, k = [], 0        # merge every (a, b) pair, left to right
            while k < len(parts):
                if k < len(parts) - 1 and parts[k] == a and parts[k + 1] == b:
                    out.append(a + b)
                    k += 2
                else:
                    out.append(parts[k])
                    k += 1
            parts = out
        ids = []
        for p in parts:
            # a merge result missing from the vocabulary falls back to its single bytes
            ids.extend([self.vocab[p]] if p in self.vocab else [self.vocab[c] for c in p if c in self.vocab])
        self._cache[piece] = ids
        return ids

    def _split_special(self, text):
        """[(is_special, chunk)], specials matched longest first."""
        if not self.special:
            return [(False, text)]
        names = sorted(self.special, key=len, reverse=True)
        out, i, start = [], 0, 0
        while i < len(text):
            hit = next((s for s in names if text.startswith(s, i)), None)
            if hit is None:
                i += 1
                continue
            if start < i:
                out.append((False, text[start:i]))
            out.append((True, hit))
            i = start = i + len(hit)
        if start < len(text):
            out.append((False, text[start:]))
        return out

    def encode(self, text: str, add_bos=None, allow_special=True) -> list[int]:
        ids = [self.bos_id] if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None else []
        chunks = self._split_special(text) if allow_special else [(False, text)]
        for is_special, chunk in chunks:
            if is_special:
                ids.append(self.special[chunk])
                continue
            for piece in gpt2_pretokenize(chunk, self.split_digits):
                ids.extend(self._bpe(piece))
        return ids

    # -- decoding
    def decode(self, ids, skip_special=False) -> str:
        out, buf = [], bytearray()
        for i in ids:
            tok = self.tokens[int(i)]
            if tok in self.special:
                out.append(buf.decode("utf-8", errors="replace"))
                buf = bytearray()
                if not skip_special:
                    out.append(tok)
                continue
            buf.extend(self.unbyte.get(c, ord("?")) for c in tok)
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)


# ---------------------------------------------------------------- SentencePiece BPE (Llama 2, Mistral)

class SPMTokenizer:
    """SentencePiece BPE as GGUF stores it (tokenizer.ggml.model == "llama"): spaces become
    '▁', a '▁' is prefixed, adjacent pieces merge greedily by the highest vocabulary score,
    and characters outside the vocabulary fall back to their UTF-8 bytes as <0xXX> tokens."""

    def __init__(self, tokens, scores, types=None, bos_id=None, eos_id=None, unk_id=0,
                 add_bos=True, add_space_prefix=True):
        self.tokens = list(tokens)
        self.scores = list(scores)
        types = list(types) if types is not None else [1] * len(self.tokens)
        # only normal (1) and user-defined (4) pieces take part in merges
        self.vocab = {t: i for i, t in enumerate(self.tokens) if types[i] in (1, 4)}
        self.byte_ids = {}
        for i, t in enumerate(self.tokens):
            if types[i] == 6 or (len(t) == 6 and t.startswith("<0x") and t.endswith(">")):
                self.byte_ids[int(t[3:5], 16)] = i
        self.special = {self.tokens[i]: i for i, ty in enumerate(types) if ty == 3}
        self.bos_id, self.eos_id, self.unk_id = bos_id, eos_id, unk_id
        self.add_bos, self.add_space_prefix = add_bos, add_space_prefix

    @classmethod
    def from_gguf_metadata(cls, meta: dict) -> "SPMTokenizer":
        tokens = meta["tokenizer.ggml.tokens"]
        return cls(tokens, meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens),
                   meta.get("tokenizer.ggml.token_type"),
                   bos_id=meta.get("tokenizer.ggml.bos_token_id"),
                   eos_id=meta.get("tokenizer.ggml.eos_token_id"),
                   unk_id=meta.get("tokenizer.ggml.unknown_token_id", 0),
                   add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", True)),
                   add_space_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", True)))

    def _pieces(self, text):
        parts = list(text)
        while len(parts) > 1:
            best, at = None, -1
            for k in range(len(parts) - 1):
                i = self.vocab.get(parts[k] + parts[k + 1])
                if i is not None and (best is None or self.scores[i] > best):
                    best, at = self.scores[i], k
            if best is None:
                break
            parts[at:at + 2] = [parts[at] + parts[at + 1]]
        return parts

    def encode(self, text: str, add_bos=None) -> list[int]:
        ids = [self.bos_id] if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None else []
        if not text:
            return ids
        text = text.replace(" ", "\u2581")
        if self.add_space_prefix:
            text = "\u2581" + text
        for p in self._pieces(text):
            if p in self.vocab:
                ids.append(self.vocab[p])
            elif self.byte_ids:
                ids.extend(self.byte_ids.get(b, self.unk_id) for b in p.encode("utf-8"))
            else:
                ids.append(self.unk_id)
        return ids

    def decode(self, ids, skip_special=True) -> str:
        buf = bytearray()
        for i in ids:
            t = self.tokens[int(i)]
            if t in self.special:
                if not skip_special:
                    buf.extend(t.encode("utf-8"))
                continue
            if len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
                buf.append(int(t[3:5], 16))
            else:
                buf.extend(t.replace("\u2581", " ").encode("utf-8"))
        text = buf.decode("utf-8", errors="replace")
        return text[1:] if self.add_space_prefix and text.startswith(" ") else text


# ---------------------------------------------------------------- WordPiece (BERT)

class WordPieceTokenizer:
    """BERT's uncased WordPiece: clean, lower-case, strip accents, split on punctuation and
    CJK characters, then greedy longest-match-first sub-words with '##' continuations."""

    def __init__(self, vocab: list[str], lowercase=True, max_chars_per_word=100):
        self.tokens = list(vocab)
        self.vocab = {t: i for i, t in enumerate(self.tokens)}
        self.lowercase, self.max_chars = lowercase, max_chars_per_word
        self.cls_id, self.sep_id = self.vocab.get("[CLS]"), self.vocab.get("[SEP]")
        self.unk_id, self.pad_id = self.vocab.get("[UNK]"), self.vocab.get("[PAD]", 0)

    @classmethod
    def from_file(cls, path, **kw):
        with open(path, encoding="utf-8") as f:
            return cls([line.rstrip("\n") for line in f], **kw)

    def _basic(self, text):
        text = "".join(" " if _is_bert_space(c) else c for c in text
                       if not (ord(c) in (0, 0xFFFD) or _is_control(c)))
        text = "".join(f" {c} " if _is_cjk(c) else c for c in text)
        words = []
        for w in text.split():
            if self.lowercase:
                w = "".join(c for c in unicodedata.normalize("NFD", w.lower())
                            if unicodedata.category(c) != "Mn")
            words.extend(_split_punct(w))
        return words

    def _wordpiece(self, word):
        if len(word) > self.max_chars:
            return [self.unk_id]
        out, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in self.vocab:
                    out.append(self.vocab[sub])
                    break
                end -= 1
            if end == start:
                return [self.unk_id]
            start = end
        return out

    def encode(self, text: str, add_special=True, max_length=512) -> list[int]:
        ids = [i for w in self._basic(text) for i in self._wordpiece(w)]
        if add_special:
            ids = [self.cls_id] + ids[: max_length - 2] + [self.sep_id]
        return ids

    def decode(self, ids) -> str:
        words = []
        for i in ids:
            t = self.tokens[int(i)]
            if t.startswith("##") and words:
                words[-1] += t[2:]
            else:
                words.append(t)
        return " ".join(words)

    def batch(self, texts, max_length=512):
        """(ids, mask) padded int32 lists for a batch of texts."""
        enc = [self.encode(t, max_length=max_length) for t in texts]
        n = max(len(e) for e in enc)
        ids = [e + [self.pad_id] * (n - len(e)) for e in enc]
        mask = [[1] * len(e) + [0] * (n - len(e)) for e in enc]
        return ids, mask


def _is_bert_space(c):
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def _is_control(c):
    return c not in "\t\n\r" and unicodedata.category(c) in ("Cc", "Cf")


def _is_punct(c):
    o = ord(c)
    if 33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def _is_cjk(c):
    o = ord(c)
    return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2A6DF
            or 0x2A700 <= o <= 0x2B73F or 0x2B740 <= o <= 0x2B81F or 0x2B820 <= o <= 0x2CEAF
            or 0xF900 <= o <= 0xFAFF or 0x2F800 <= o <= 0x2FA1F)


def _split_punct(word):
    out, cur = [], ""
    for c in word:
        if _is_punct(c):
            if cur:
                out.append(cur)
            out.append(c)
            cur = ""
        else:
            cur += c
    if cur:
        out.append(cur)
    return out
