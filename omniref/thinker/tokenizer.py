"""Text <-> token ids: a from-scratch byte-level BPE (the GPT-2 / Qwen2 tokenizer family).

Reads a Hub `tokenizer.json` (the `tokenizers` library's file) or the older `vocab.json` + `merges.txt` pair
(+ `tokenizer_config.json` for the special tokens). No dependency beyond the standard library.

The arrow, for `encode("Hello world!")`:

    1. special tokens ("<|im_start|>", ...) are cut out first and map straight to their ids
    2. NFC normalisation (when tokenizer.json asks for it)
    3. pre-tokenisation: split into words with the Qwen2 rule (below)   ["Hello", " world", "!"]
    4. byte-level: every word's UTF-8 bytes become printable stand-in characters (GPT-2's `bytes_to_unicode`,
       so that " " becomes "Ġ" and no byte is a control character)             ["Hello", "Ġworld", "!"]
    5. BPE: start from single characters and repeatedly merge the adjacent pair with the best (lowest) merge
       rank until no listed pair remains; each final piece is a vocabulary entry            [9707, 1879, 0]

`decode` reverses 4 (stand-in characters -> bytes -> UTF-8) after concatenating the pieces.

The Qwen2 pre-tokeniser regex, alternatives tried in order at each position (L = letter, N = number):
    (?i:'s|'t|'re|'ve|'m|'ll|'d)           an English contraction
    [^\\r\\n\\p{L}\\p{N}]?\\p{L}+              a letter run, with at most one leading non-letter (" world")
    \\p{N}                                 one digit (Qwen2 does not group digits)
    ␠?[^\\s\\p{L}\\p{N}]+[\\r\\n]*              a punctuation run, optional leading space, trailing newlines
    \\s*[\\r\\n]+                             whitespace up to the last newline
    \\s+(?!\\S) | \\s+                       other whitespace (leaving one space to prefix the next word)
Python's `re` has no `\\p{L}`, so `pretokenize` implements that regex as a small hand-written scanner with
`unicodedata` categories.
"""
from __future__ import annotations

import json
import os
import unicodedata
from functools import lru_cache
from pathlib import Path

__all__ = ["Tokenizer", "bytes_to_unicode", "pretokenize", "load_tokenizer"]

QWEN2_PATTERN_MARK = r"[^\r\n\p{L}\p{N}]?\p{L}+"   # substring identifying the Qwen2-style split regex


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Byte 0..255 -> a printable character (GPT-2): printable Latin-1 bytes map to themselves, the other 68
    bytes to U+0100.. in order, so every byte string becomes a string of visible characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _is_letter(c: str) -> bool:
    return unicodedata.category(c)[0] == "L"


def _is_number(c: str) -> bool:
    return unicodedata.category(c)[0] == "N"


def _is_punct(c: str) -> bool:
    """[^\\s\\p{L}\\p{N}]: neither whitespace, nor a letter, nor a number."""
    return not c.isspace() and not _is_letter(c) and not _is_number(c)


def pretokenize(text: str, max_digits: int = 1) -> list[str]:
    """Split `text` into words with the Qwen2 regex (module docstring); `max_digits` 3 gives `\\p{N}{1,3}`."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        j = i
        if c == "'" and i + 1 < n:                                     # contractions, any case
            for suf in ("s", "t", "re", "ve", "m", "ll", "d"):
                if text[i + 1:i + 1 + len(suf)].lower() == suf:
                    j = i + 1 + len(suf)
                    break
        if j == i and (_is_letter(c) or (c not in "\r\n" and not _is_number(c) and i + 1 < n
                                         and _is_letter(text[i + 1]))):
            j = i + 1                                                  # optional lead char or first letter
            while j < n and _is_letter(text[j]):
                j += 1
        if j == i and _is_number(c):                                   # digits, up to max_digits
            while j < n and j - i < max_digits and _is_number(text[j]):
                j += 1
        if j == i and (_is_punct(c) or (c == " " and i + 1 < n and _is_punct(text[i + 1]))):
            j = i + 1 if c == " " else i
            while j < n and _is_punct(text[j]):
                j += 1
            while j < n and text[j] in "\r\n":
                j += 1
        if j == i:                                                     # whitespace (c.isspace())
            k = i
            while k < n and text[k].isspace():
                k += 1
            newlines = [p for p in range(i, k) if text[p] in "\r\n"]
            if newlines:
                j = newlines[-1] + 1                                   # \s*[\r\n]+
            elif k == n or k - 1 == i:
                j = k                                                  # \s+ to the end, or a lone space
            else:
                j = k - 1                                              # \s+(?!\S): leave one space
        out.append(text[i:j])
        i = j
    return out


class Tokenizer:
    """Byte-level BPE. `encode(text) -> list[int]`, `decode(ids) -> str`, `token_to_id`, `id_to_token`."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], special: dict[str, int] | None = None,
                 *, nfc: bool = False, max_digits: int = 1, ignore_merges: bool = False):
        self.vocab = dict(vocab)
        self.ranks = {tuple(m): r for r, m in enumerate(merges)}     # pair -> priority (lower merges first)
        self.special = dict(special or {})
        self.vocab.update(self.special)
        self.inverse = {i: t for t, i in self.vocab.items()}
        self.nfc, self.max_digits, self.ignore_merges = nfc, max_digits, ignore_merges
        self.byte_char = bytes_to_unicode()
        self.char_byte = {c: b for b, c in self.byte_char.items()}
        self._cache: dict[str, list[int]] = {}

    # ---- encoding ---------------------------------------------------------------------------------------
    def _bpe(self, word: str) -> list[int]:
        """One byte-level word -> ids, merging the best-ranked adjacent pair until none is listed."""
        if word in self._cache:
            return self._cache[word]
        if self.ignore_merges and word in self.vocab:
            ids = [self.vocab[word]]
        else:
            parts = list(word)
            while len(parts) > 1:
                pairs = [(self.ranks.get((a, b), None), k) for k, (a, b) in enumerate(zip(parts, parts[1:]))]
                ranked = [(r, k) for r, k in pairs if r is not None]
                if not ranked:
                    break
                best = min(ranked)[0]
                a, b = [(parts[k], parts[k + 1]) for r, k in ranked if r == best][0]
                merged, k = [], 0
                while k < len(parts):                                   # merge every a,b occurrence, left to right
                    if k + 1 < len(parts) and parts[k] == a and parts[k + 1] == b:
                        merged.append(a + b); k += 2
                    else:
                        merged.append(parts[k]); k += 1
                parts = merged
            missing = [p for p in parts if p not in self.vocab]
            if missing:
                raise ValueError(f"BPE piece {missing[0]!r} of word {word!r} is not in the vocabulary")
            ids = [self.vocab[p] for p in parts]
        if len(self._cache) < 100_000:
            self._cache[word] = ids
        return ids

    def _split_special(self, text: str) -> list[tuple[str, bool]]:
        """Cut special-token strings out of `text` (longest first): [(piece, is_special)]."""
        if not self.special:
            return [(text, False)]
        names = sorted(self.special, key=len, reverse=True)
        out, i, start = [], 0, 0
        while i < len(text):
            hit = next((s for s in names if text.startswith(s, i)), None)
            if hit is None:
                i += 1
                continue
            if start < i:
                out.append((text[start:i], False))
            out.append((hit, True))
            i += len(hit)
            start = i
        if start < len(text):
            out.append((text[start:], False))
        return out

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        ids: list[int] = []
        for piece, is_special in self._split_special(text):
            if is_special:
                ids.append(self.special[piece])
                continue
            if self.nfc:
                piece = unicodedata.normalize("NFC", piece)
            for word in pretokenize(piece, self.max_digits):
                ids += self._bpe("".join(self.byte_char[b] for b in word.encode("utf-8")))
        return ids

    # ---- decoding ---------------------------------------------------------------------------------------
    def decode(self, ids, skip_special: bool = False) -> str:
        out, buf = [], bytearray()
        for i in ids:
            tok = self.inverse.get(int(i))
            if tok is None:
                raise ValueError(f"token id {int(i)} is outside the vocabulary (size {len(self.inverse)})")
            if tok in self.special:
                out.append(buf.decode("utf-8", errors="replace")); buf = bytearray()
                if not skip_special:
                    out.append(tok)
            else:
                buf += bytes(self.char_byte[c] for c in tok)
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    def id_to_token(self, i: int) -> str | None:
        return self.inverse.get(int(i))

    def __len__(self) -> int:
        return len(self.vocab)

    # ---- loading ----------------------------------------------------------------------------------------
    @classmethod
    def from_tokenizer_json(cls, path: str | os.PathLike) -> "Tokenizer":
        """Hub tokenizer.json: model.vocab / model.merges, added_tokens, normalizer, pre_tokenizer."""
        with open(path, encoding="utf-8") as fh:
            tj = json.load(fh)
        model = tj.get("model") or {}
        if model.get("type", "BPE") != "BPE":
            raise ValueError(f"{path}: model type {model.get('type')!r} is not BPE")
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
        special = {t["content"]: int(t["id"]) for t in tj.get("added_tokens") or []}
        norm = json.dumps(tj.get("normalizer") or {})
        pre = json.dumps(tj.get("pre_tokenizer") or {})
        if '"Split"' in pre and json.dumps(QWEN2_PATTERN_MARK)[1:-1] not in pre:
            raise ValueError(f"{path}: pre-tokenizer regex is not the Qwen2/cl100k style this reader implements")
        return cls(model["vocab"], merges, special, nfc='"NFC"' in norm,
                   max_digits=3 if r"\\p{N}{1,3}" in pre else 1, ignore_merges=bool(model.get("ignore_merges")))

    @classmethod
    def from_vocab_merges(cls, vocab_path, merges_path, config_path=None) -> "Tokenizer":
        """vocab.json + merges.txt (+ tokenizer_config.json's `added_tokens_decoder` for special tokens)."""
        with open(vocab_path, encoding="utf-8") as fh:
            vocab = json.load(fh)
        merges = []
        with open(merges_path, encoding="utf-8") as fh:
            for line in fh:
                line = line.rstrip("\n")
                if line and not line.startswith("#version"):
                    merges.append(tuple(line.split(" ", 1)))
        special = {}
        if config_path is not None and Path(config_path).exists():
            with open(config_path, encoding="utf-8") as fh:
                dec = json.load(fh).get("added_tokens_decoder") or {}
            special = {v["content"]: int(k) for k, v in dec.items()}
        return cls(vocab, merges, special, nfc=True)


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer | None:
    """The tokenizer of a checkpoint directory (tokenizer.json, else vocab.json + merges.txt), or None.

    Its files must be regular files (a FIFO would block the read forever); unreadable ones are a
    CheckpointError naming the directory.
    """
    from ..errors import CheckpointError, OmnirefError, regular_file
    d = Path(directory)
    try:
        if os.path.lexists(d / "tokenizer.json"):
            return Tokenizer.from_tokenizer_json(regular_file(d / "tokenizer.json", "tokenizer file", CheckpointError))
        if os.path.lexists(d / "vocab.json") and os.path.lexists(d / "merges.txt"):
            paths = [regular_file(d / n, "tokenizer file", CheckpointError) for n in ("vocab.json", "merges.txt")]
            config = d / "tokenizer_config.json"
            if os.path.lexists(config):
                regular_file(config, "tokenizer file", CheckpointError)
            return Tokenizer.from_vocab_merges(*paths, config)
    except OmnirefError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:   # JSON / layout errors of the files
        raise CheckpointError(f"{d}: cannot read the tokenizer ({type(e).__name__}: {e})", file=d) from None
    return None
