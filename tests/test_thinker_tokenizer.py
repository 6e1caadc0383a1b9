"""The from-scratch byte-level BPE against hand-checked splits and (when installed) the `tokenizers` package."""
import json

import pytest

from omniref.thinker.tokenizer import Tokenizer, bytes_to_unicode, load_tokenizer, pretokenize

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

SAMPLES = [
    "Hello world!", "  two  spaces   before\tand tab", "It's we'LL they've I'd", "numbers 12345 and 3.14",
    "line one\nline two\r\n\n  indented\n", "ünïcödé naïve café — “quotes” 日本語のテキスト 中文",
    "emoji 🙂👍🏽 mixed", "trailing spaces   ", "\n\n\nleading newlines", "a<|im_start|>user\nhi<|im_end|>\n",
    "symbols #$%^&*() ... !!! ???\n", "' quote alone and 'x", "x  \n  y", "e\u0301 decomposed accent",
]


def test_bytes_to_unicode_is_a_bijection_onto_printables():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert table[ord("A")] == "A" and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"
    assert all(c.isprintable() and not c.isspace() for c in table.values())


@pytest.mark.parametrize("text,words", [
    ("Hello world!", ["Hello", " world", "!"]),
    ("it's 42", ["it", "'s", " ", "4", "2"]),
    ("a  b", ["a", " ", " b"]),
    ("end.\n\nNext", ["end", ".\n\n", "Next"]),
    ("x \n y", ["x", " \n", " y"]),
    ("tail   ", ["tail", "   "]),
    ("\thi", ["\thi"]),
])
def test_pretokenize_known_splits(text, words):
    assert pretokenize(text) == words
    assert "".join(pretokenize(text)) == text


def test_bpe_merges_by_rank_and_round_trips():
    b = bytes_to_unicode()
    chars = sorted(set("helo wrd") | {b[ord(" ")]})
    vocab = {c: i for i, c in enumerate(chars)}
    merges = [("l", "l"), ("h", "e"), ("he", "ll"), ("hell", "o"), ("Ġ", "w")]
    for a, c in merges:
        vocab.setdefault(a + c, len(vocab))
    tok = Tokenizer(vocab, merges)
    ids = tok.encode("hello world")
    assert [tok.id_to_token(i) for i in ids] == ["hello", "Ġw", "o", "r", "l", "d"]
    assert tok.decode(ids) == "hello world"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode("hello!")
    with pytest.raises(TypeError):
        tok.encode(b"bytes")


def _build_reference_tokenizer(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
    tk = tokenizers.Tokenizer(models.BPE())
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = SAMPLES * 3 + ["the quick brown fox jumps over the lazy dog " * 4, "hello hello world wide web"]
    tk.train_from_iterator(corpus, trainer=trainer)
    path = tmp_path / "tokenizer.json"
    tk.save(str(path))
    return tk, path


def test_matches_tokenizers_package(tmp_path):
    ref, path = _build_reference_tokenizer(tmp_path)
    ours = load_tokenizer(tmp_path)
    assert isinstance(ours, Tokenizer) and len(ours) == ref.get_vocab_size()
    for text in SAMPLES + ["unseen words: zebra quantum 98765", "fox\n\n\n  dog!!  "]:
        expected = ref.encode(text).ids
        assert ours.encode(text) == expected, text
        assert ours.decode(expected) == ref.decode(expected, skip_special_tokens=False), text


def test_vocab_merges_files(tmp_path):
    ref, path = _build_reference_tokenizer(tmp_path)
    tj = json.loads(path.read_text(encoding="utf-8"))
    (tmp_path / "vocab.json").write_text(json.dumps(tj["model"]["vocab"]), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": {
        str(t["id"]): {"content": t["content"]} for t in tj["added_tokens"]}}), encoding="utf-8")
    path.unlink()
    ours = load_tokenizer(tmp_path)
    for text in SAMPLES:
        assert ours.encode(text) == ref.encode(text).ids, text
