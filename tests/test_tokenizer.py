"""Tests for minigpt.tokenizer, minigpt.bpe and minigpt.gpt2_files: hand-worked merges, encode (tiktoken) ==
encode_slow (Python), round-trips, special tokens, save/load and its errors, the command line, and GPT-2's file
formats checked against tiktoken's own loaders.

    python -m pytest tests/test_tokenizer.py -q
"""

import base64
import json
import os
import pickle
import random
import subprocess
import sys
import warnings

import pytest
import tiktoken
import tiktoken.load
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigpt.bpe import learn_merges, to_encodable
from minigpt.gpt2_files import bytes_to_unicode, load_gpt2_tokenizer
from minigpt.tokenizer import (GPT2_SPLIT_PATTERN, SPECIAL_TOKENS, Tokenizer, bpe_by_bytes, count_pairs, merge_pair,
                               split_pretokens, train_bpe)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Text unlike anything simple: ASCII, accents, CJK, emoji (with ZWJ and skin tones), combining marks,
# right-to-left scripts, digits, whitespace runs, tabs, CRLF, contractions and special-token look-alikes.
VARIED_TEXTS = [
    "",
    "a",
    "hello world",
    "Hello, World! It's a test; we'll see: they've 3 cats, I'd say.",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\n\r\nand \n\n\n   runs",
    "ünïcödé façade naïve Zürich São Paulo",
    "日本語のテキスト、中文文本，한국어 텍스트",
    "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵",
    "e\u0301 combining a\u0308 marks",
    "עברית العربية mixed RTL",
    "numbers 1234567890 3.14159 -42 1e-10 0x1F",
    "code: def f(x):\n    return x**2  # comment\n",
    "<|endoftext|> plain <|end|> text <|user|>hi<|assistant|>",
    "<|endoftext",
    "\x00\x01\x7f control \u200b zero width \ufeff bom",
    "xqzjvkw qqqq zzzzzz ĳĳĳ",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab",
    "  \n",
    " ",
    "\n",
    "Ω≈ç√∫˜µ≤≥÷ åß∂ƒ©˙∆˚¬…æ",
]


def make_corpus(n_sentences: int = 1500, seed: int = 0) -> str:
    """A deterministic, varied little corpus (English-ish words, accents, CJK, emoji, numbers, code)."""
    rng = random.Random(seed)
    words = ("the a of to and in is that it was for on are with as he his they at be this from have or by "
             "one had not but what all were when we there can an your which their said if do will each "
             "about how up out them then she many some so these would other into has more her two like him "
             "see time could no make than first been its who now people my made over did down only way find "
             "use may water long little very after words called just where most know").split()
    extra = ["naïve", "café", "Zürich", "日本", "語", "😀", "👍", "3.14", "2024", "x=1", "f(x)", "it's",
             "we'll", "don't", "<b>", "###", "--", "Ω", "λ"]
    out = []
    for _ in range(n_sentences):
        n = rng.randint(4, 14)
        ws = [rng.choice(words) if rng.random() < 0.9 else rng.choice(extra) for _ in range(n)]
        ws[0] = ws[0].capitalize()
        out.append(" ".join(ws) + rng.choice([".", "!", "?", ",", ":", ";"]) + rng.choice([" ", "  ", "\n", "\n\n"]))
    return "".join(out)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_bpe(make_corpus(), vocab_size=600)


# --- the pieces, with the docstrings' worked examples --------------------------------------------

def test_helpers_worked_examples():
    assert split_pretokens("Hello world, it's 2024!!") == ["Hello", " world", ",", " it", "'s", " 2024", "!!"]
    assert count_pairs([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert merge_pair([97, 97, 97, 98], (97, 97), 256) == [256, 97, 98]
    ranks = {bytes([i]): i for i in range(256)} | {b"aa": 256, b"ab": 257, b"aaab": 258}
    assert bpe_by_bytes(b"aaab", ranks) == [b"aaab"]
    assert bpe_by_bytes(b"aaab", ranks, max_rank=258) == [b"aa", b"ab"]
    assert bytes_to_unicode()[ord(" ")] == "Ġ" and bytes_to_unicode()[ord("\n")] == "Ċ"


def test_docstring_examples_hold():
    import doctest

    for fn in (split_pretokens, count_pairs, merge_pair, bpe_by_bytes, to_encodable, learn_merges,
               bytes_to_unicode, train_bpe):
        runner = doctest.DocTestRunner()
        for test in doctest.DocTestFinder().find(fn, fn.__name__, globs=vars(sys.modules[fn.__module__]).copy()):
            runner.run(test)
        assert runner.failures == 0 and runner.tries > 0, fn.__name__


def test_pattern_is_tiktoken_r50k_and_splits_like_gpt2_original():
    from tiktoken_ext.openai_public import r50k_pat_str
    import regex
    assert GPT2_SPLIT_PATTERN == r50k_pat_str
    original = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    for text in VARIED_TEXTS + [make_corpus(50, seed=3)]:
        assert split_pretokens(text) == regex.findall(original, text)


def test_textbook_merges_aaabdaaabac():
    # Wikipedia's example: aa -> Z, ab -> Y, ZY -> X. Here Z = 256, Y = 257, X = 258.
    tok = train_bpe("aaabdaaabac", vocab_size=256 + 3, special_tokens=())
    assert tok.merges == [(97, 97), (97, 98), (256, 257)]
    assert [tok.token_bytes(i) for i in (256, 257, 258)] == [b"aa", b"ab", b"aaab"]
    ids = [258, ord("d"), 258, ord("a"), ord("c")]  # X d X a c
    assert tok.encode("aaabdaaabac") == ids
    assert tok.encode_slow("aaabdaaabac") == ids
    assert tok.decode(ids) == "aaabdaaabac"
    assert tok.vocab_size == 259


def test_special_token_ids_follow_the_merges(tok):
    assert tok.vocab_size == 600
    n = 256 + tok.n_merges
    assert tok.special_tokens == {s: n + k for k, s in enumerate(SPECIAL_TOKENS)}
    assert tok.eos_id == n and tok.pad_id == n + 1 and tok.special_id("<|end|>") == n + 5
    with pytest.raises(KeyError, match="not a special token"):
        tok.special_id("<|nope|>")
    with pytest.raises(ValueError, match="smaller than 256"):
        train_bpe("abc", vocab_size=260)


def test_training_ignores_special_token_strings():
    text = "<|endoftext|>" * 50 + "hello hello hello"
    tok = train_bpe(text, vocab_size=256 + len(SPECIAL_TOKENS) + 3)
    learned = [tok.token_bytes(256 + i) for i in range(tok.n_merges)]
    assert all(b"|" not in t and b"<" not in t for t in learned), learned


def test_training_runs_out_of_pairs_with_a_warning():
    with pytest.warns(UserWarning, match="ran out of pairs"):
        tok = train_bpe("ab ab", vocab_size=256 + 10, special_tokens=())
    assert tok.merges == [(97, 98), (32, 256)]  # "ab", then " ab"


# --- encode == encode_slow, round trips ---------------------------------------------------------

@pytest.mark.parametrize("text", VARIED_TEXTS)
def test_encode_matches_encode_slow_and_round_trips(tok, text):
    ids = tok.encode(text)
    assert ids == tok.encode_slow(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < 256 + tok.n_merges for i in ids)  # no special ids without allowed_special


def test_encode_matches_on_training_and_shuffled_text(tok):
    text = make_corpus(300, seed=1)
    assert tok.encode(text) == tok.encode_slow(text)
    chars = list(text)
    random.Random(0).shuffle(chars)  # same characters, none of the training words
    shuffled = "".join(chars)
    assert tok.encode(shuffled) == tok.encode_slow(shuffled)
    assert tok.decode(tok.encode(shuffled)) == shuffled
    # and the tokenizer compresses the kind of text it was trained on
    assert len(tok.encode(text)) < 0.5 * len(text.encode("utf-8"))


def test_trained_merges_satisfy_the_tiktoken_condition():
    # condition (*) of minigpt.bpe's docstring, on ordinary text and on degenerate a/b strings, where
    # overlapping pairs such as (a, aa) / (aa, a) arise
    rng = random.Random(0)
    for trial in range(20):
        text = "".join(rng.choice(["a", "b", "aa", "ab", " ", "\n", "c"]) for _ in range(rng.randint(50, 2000)))
        with warnings.catch_warnings():  # tiny corpora may run out of pairs
            warnings.simplefilter("ignore")
            t = train_bpe(text, vocab_size=256 + rng.randint(3, 120), special_tokens=())
        assert t.inconsistent_merges() == []
        assert t.encode(text) == t.encode_slow(text)
        probe = "".join(rng.choice("ab ") for _ in range(300))
        assert t.encode(probe) == t.encode_slow(probe)


def test_tiktoken_and_pair_merges_differ_without_the_condition():
    # Why train_bpe checks condition (*): merges aa, ab, then (a, ab) = "aab". On "aab" the pair
    # encoder merges aa first and then has [aa, b], which is not a merge; tiktoken only sees that
    # b"aa" + b"b" is the token b"aab" and joins them anyway.
    a, b = ord("a"), ord("b")
    bad = Tokenizer([(a, a), (a, b), (a, 257)], special_tokens={})
    assert bad.inconsistent_merges() == [2]
    assert bad.encode_slow("aab") == [256, b]
    assert bad.encode("aab") == [258]
    # two merges making the same bytes cannot even be given to tiktoken (it keys tokens by bytes)
    with pytest.raises(ValueError, match="already token"):
        Tokenizer([(a, b), (a, 256), (a, a), (258, b)])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=80))
def test_any_unicode_round_trips(tok, s):
    ids = tok.encode(s)
    assert tok.decode(ids) == s
    assert tok.encode_slow(s) == ids


FRAGMENTS = list(SPECIAL_TOKENS) + [" ", "  ", "\n", "\t", "a", "aa", "ab", "'s", "'ll", "9", "99", "é", "😀",
                                    "<|", "|>", "the", " the"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=5), max_size=20).map("".join))
def test_fragments_round_trip_with_and_without_specials(tok, s):
    assert tok.encode(s) == tok.encode_slow(s)
    assert tok.decode(tok.encode(s)) == s
    ids = tok.encode(s, allowed_special="all")
    assert ids == tok.encode_slow(s, allowed_special="all")
    assert tok.decode(ids) == s


# --- special tokens ----------------------------------------------------------------------------

def test_special_tokens_are_plain_text_unless_allowed(tok):
    end = tok.special_id("<|end|>")
    eot = tok.special_id("<|endoftext|>")
    text = "hi<|end|>there<|endoftext|>"
    plain = tok.encode(text)
    assert end not in plain and eot not in plain and len(plain) > 4
    assert plain == tok.encode_slow(text)
    both = tok.encode(text, allowed_special="all")
    assert both == tok.encode("hi") + [end] + tok.encode("there") + [eot]
    assert both == tok.encode_slow(text, allowed_special="all")
    only_end = tok.encode(text, allowed_special={"<|end|>"})
    assert only_end == tok.encode("hi") + [end] + tok.encode("there<|endoftext|>")
    assert only_end == tok.encode_slow(text, allowed_special={"<|end|>"})
    assert tok.decode(both) == tok.decode(plain) == text
    with pytest.raises(ValueError, match="unknown special"):
        tok.encode("x", allowed_special={"<|nope|>"})


# --- decode is total -----------------------------------------------------------------------------

def test_decode_never_raises(tok):
    assert tok.decode([]) == ""
    assert tok.decode([104, 10**9, -1, 0xC3]) == "h\ufffd\ufffd\ufffd"  # 0xC3 alone: half a character
    assert tok.decode([None, "x", 2**80, 104]) == "\ufffd\ufffd\ufffdh"
    e_acute = "é".encode("utf-8")
    assert tok.decode(list(e_acute)) == "é"  # byte ids compose into a character
    assert tok.decode([tok.eos_id]) == "<|endoftext|>"
    assert tok.decode_bytes([0xC3]) == b"\xc3"
    with pytest.raises(ValueError, match="not in this vocabulary"):
        tok.decode_bytes([10**9])
    rng = random.Random(0)
    for _ in range(200):
        tok.decode([rng.randrange(-5, tok.vocab_size + 5) for _ in range(rng.randrange(0, 20))])


def test_decode_can_skip_special_tokens(tok):
    """skip_special=True gives what a sampled reply says: special ids vanish, unknown ids stay U+FFFD."""
    hi, user, end = tok.encode("hi"), tok.special_id("<|user|>"), tok.special_id("<|end|>")
    assert tok.decode(hi + [user] + hi + [end]) == "hi<|user|>hi<|end|>"
    assert tok.decode(hi + [user] + hi + [end], skip_special=True) == "hihi"
    assert tok.decode([10**9, tok.eos_id], skip_special=True) == "\ufffd"


def test_decode_accepts_arrays_and_tensors(tok):
    import numpy as np
    ids = tok.encode("hello world")
    assert tok.decode(np.array(ids)) == "hello world"
    torch = pytest.importorskip("torch")
    assert tok.decode(torch.tensor(ids)) == "hello world"
    assert tok.decode(torch.tensor(ids[0])) == tok.decode(ids[:1])


def test_import_does_not_load_torch():
    code = "import sys, minigpt.tokenizer; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# --- save / load -------------------------------------------------------------------------------

def test_save_load_round_trip(tok, tmp_path):
    path = tmp_path / "tokenizer.bpe"
    tok.save(path)
    assert os.listdir(tmp_path) == ["tokenizer.bpe"]  # atomic: no temp file left behind
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "minigpt-bpe v1" and lines[-1].split("#")[0].split() == [str(x) for x in tok.merges[-1]]
    tok2 = Tokenizer.load(path)
    assert tok2 == tok and tok2.vocab_size == tok.vocab_size and tok2.special_tokens == tok.special_tokens
    text = make_corpus(20, seed=5) + "<|end|>"
    assert tok2.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
    tok.save(path)  # overwriting works
    assert Tokenizer.load(path) == tok
    assert pickle.loads(pickle.dumps(tok2)).encode(text) == tok.encode(text)


def _corrupt(lines, kind):
    """Return (lines, expected 1-based line number in the error) for one kind of damage."""
    lines = list(lines)
    merges_at = next(i for i, l in enumerate(lines) if l.startswith("merges "))
    first = merges_at + 1  # 0-based index of the first merge line
    if kind == "header":
        lines[0] = "not a tokenizer"
        return lines, 1
    if kind == "pattern":
        lines[2] = "pattern not-json"
        return lines, 3
    if kind == "bytes":
        lines[3] = "bytes " + " ".join(["00"] * 256)
        return lines, 4
    if kind == "future_id":
        lines[first + 1] = f"{256 + 5} 97"
        return lines, first + 2
    if kind == "not_ids":
        lines[first + 2] = "hello world"
        return lines, first + 3
    if kind == "truncated":
        return lines[:first + 3], first + 3
    if kind == "trailing":
        return lines + ["oops"], len(lines) + 1
    if kind == "special":
        lines[5] = "<|endoftext|> 12"  # not a JSON string
        return lines, 6
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["header", "pattern", "bytes", "future_id", "not_ids", "truncated",
                                  "trailing", "special"])
def test_load_rejects_corrupt_files_naming_file_and_line(tmp_path, kind):
    tok = train_bpe("aaabdaaabac hello hello world", vocab_size=256 + 6 + 8)
    path = tmp_path / "tok.bpe"
    tok.save(path)
    lines, line_no = _corrupt(path.read_text(encoding="utf-8").splitlines(), kind)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        Tokenizer.load(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{line_no}:") and "\n" not in msg, msg


def test_load_rejects_merges_that_break_the_tiktoken_condition(tmp_path):
    a, b = ord("a"), ord("b")
    path = tmp_path / "bad.bpe"
    Tokenizer([(a, a), (a, b), (a, 257)]).save(path)  # save does not judge; load does
    n_lines = len(path.read_text(encoding="utf-8").splitlines())
    with pytest.raises(ValueError, match=rf"bad.bpe:{n_lines}: merge 2 is not what tiktoken"):
        Tokenizer.load(path)


# --- GPT-2's own formats, checked against tiktoken's loaders ----------------------------------

def _write_gpt2_files(folder, merges_as_bytes: list[tuple[bytes, bytes]]):
    """Write encoder.json + vocab.bpe in OpenAI's published layout: tokens spelled with GPT-2's
    byte-to-unicode map, the 256 byte tokens in 'printable first' order, merges in rank order."""
    byte_order = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    byte_order += [b for b in range(256) if b not in byte_order]
    spell = bytes_to_unicode()

    def s(tok: bytes) -> str:
        return "".join(spell[x] for x in tok)

    encoder = {s(bytes([b])): i for i, b in enumerate(byte_order)}
    for k, (x, y) in enumerate(merges_as_bytes):
        encoder[s(x + y)] = 256 + k
    encoder["<|endoftext|>"] = 256 + len(merges_as_bytes)
    (folder / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    (folder / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{s(x)} {s(y)}\n" for x, y in merges_as_bytes),
                                      encoding="utf-8")


GPT2_PROBES = ["Hello world, the theater's there!", " the the  the\n\nthe", "they've 12 3456 ünï 😀",
               "<|endoftext|> and more", make_corpus(40, seed=7)]


@pytest.fixture
def tiktoken_reads_local_files(monkeypatch):
    """tiktoken's own loaders as the reference, reading local files and caching nothing. Before 0.12,
    tiktoken read even local paths through the optional `blobfile` package: plain open() here instead."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")

    def read_file(path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()
    monkeypatch.setattr(tiktoken.load, "read_file", read_file)


def test_load_gpt2_encoder_json_and_vocab_bpe_matches_tiktoken(tmp_path, tiktoken_reads_local_files):
    trained = train_bpe(make_corpus(200, seed=2), vocab_size=256 + 40, special_tokens=())
    merges = [(trained.token_bytes(p), trained.token_bytes(q)) for p, q in trained.merges]
    _write_gpt2_files(tmp_path, merges)

    ref_ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(str(tmp_path / "vocab.bpe"),
                                                              str(tmp_path / "encoder.json"))
    for path in (tmp_path, tmp_path / "vocab.bpe", tmp_path / "encoder.json"):
        tok = load_gpt2_tokenizer(path)
        assert tok.ranks == ref_ranks
        assert tok.special_tokens == {"<|endoftext|>": 256 + 40} and tok.vocab_size == 297
    ref = tiktoken.Encoding("ref", pat_str=GPT2_SPLIT_PATTERN, mergeable_ranks=ref_ranks,
                            special_tokens={"<|endoftext|>": 296})
    assert tok.token_bytes(0) == b"!" and tok.encode(" ") == [ref_ranks[b" "]]  # GPT-2's byte order
    for text in GPT2_PROBES:
        ids = ref.encode(text, disallowed_special=())
        assert tok.encode(text) == ids == tok.encode_slow(text)
        assert tok.decode(ids) == text
    assert tok.encode("<|endoftext|>", allowed_special="all") == [296]

    chat = load_gpt2_tokenizer(tmp_path, extra_special_tokens=SPECIAL_TOKENS)
    assert chat.special_tokens == {s: 296 + k for k, s in enumerate(SPECIAL_TOKENS)}


def test_load_gpt2_tiktoken_file_matches_tiktoken(tmp_path, tiktoken_reads_local_files):
    trained = train_bpe(make_corpus(200, seed=4), vocab_size=256 + 40, special_tokens=())
    _write_gpt2_files(tmp_path, [(trained.token_bytes(p), trained.token_bytes(q)) for p, q in trained.merges])
    gym = load_gpt2_tokenizer(tmp_path)
    # a .tiktoken file: "base64(token) rank" per line (what tiktoken.load.dump_tiktoken_bpe writes)
    tt_dir = tmp_path / "tt"
    tt_dir.mkdir()
    tt_path = tt_dir / "r50k_mini.tiktoken"
    tt_path.write_bytes(b"".join(base64.b64encode(t) + b" " + str(r).encode() + b"\n"
                                 for t, r in sorted(gym.ranks.items(), key=lambda kv: kv[1])))
    ref_ranks = tiktoken.load.load_tiktoken_bpe(str(tt_path))
    for path in (tt_path, tt_dir):
        tok = load_gpt2_tokenizer(path)
        assert tok.ranks == ref_ranks == gym.ranks
        assert tok.merges == gym.merges  # pairs recovered from ranks alone
        assert tok.eos_id == 296
    for text in GPT2_PROBES:
        assert tok.encode(text) == gym.encode(text) == tok.encode_slow(text)


def test_load_gpt2_bad_files(tmp_path):
    _write_gpt2_files(tmp_path, [(b"t", b"h"), (b"th", b"e")])
    assert load_gpt2_tokenizer(tmp_path).encode("the") == [257]
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\nt h\nthe nope\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab.bpe:3: expected two known tokens"):
        load_gpt2_tokenizer(tmp_path)
    tt = tmp_path / "x.tiktoken"
    tt.write_text("!!!notbase64 0\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"x.tiktoken:1:"):
        load_gpt2_tokenizer(tt)
    with pytest.raises(ValueError, match="expected a folder, encoder.json"):
        load_gpt2_tokenizer(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: expected encoder.json \+ vocab.bpe, or one .tiktoken"):
        load_gpt2_tokenizer(tmp_path / "empty")


# --- command line ------------------------------------------------------------------------------

def test_cli_trains_and_saves(tmp_path):
    src = tmp_path / "corpus.txt"
    src.write_text(make_corpus(200), encoding="utf-8")
    out = tmp_path / "tok.bpe"
    help_ = subprocess.run([sys.executable, "-m", "minigpt.tokenizer", "--help"], cwd=ROOT, capture_output=True,
                           encoding="utf-8", check=True)
    assert "vocab_size" in help_.stdout
    subprocess.run([sys.executable, "-m", "minigpt.tokenizer", f"--input={src}", "--vocab_size=300",
                    f"--out={out}"], cwd=ROOT, check=True, capture_output=True)
    tok = Tokenizer.load(out)
    assert tok.vocab_size == 300 and tok == train_bpe(src.read_text(encoding="utf-8"), 300)


def test_cli_without_input_is_a_one_line_error(tmp_path):
    out = tmp_path / "tok.bpe"
    run = subprocess.run([sys.executable, "-m", "minigpt.tokenizer", "--vocab_size=300", f"--out={out}"], cwd=ROOT,
                         capture_output=True, encoding="utf-8")
    assert run.returncode != 0 and not out.exists()
    assert run.stderr.strip().splitlines() == ["error: no training text: pass --input=FILE (python -m rlhf.world "
                                               "export writes the instruction world's corpus.txt)"]


def test_train_bpe_is_learn_merges_plus_specials():
    text = make_corpus(300, seed=5) + "<|endoftext|>" + make_corpus(100, seed=6)
    tok = train_bpe(text, vocab_size=400)
    assert tok.merges == learn_merges(text, 400 - 256 - len(SPECIAL_TOKENS), SPECIAL_TOKENS)
    assert list(tok.special_tokens.values()) == list(range(400 - len(SPECIAL_TOKENS), 400))
    assert to_encodable("a\ud800b") == "a\ufffdb"


def test_minigpt_imports_nothing_from_rlhf():
    code = ("import sys, minigpt.bpe, minigpt.tokenizer, minigpt.gpt2_files; "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'rlhf'], 'rlhf imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_lone_surrogates_become_replacement_characters(tok):
    # not encodable as UTF-8: both encoders replace them by U+FFFD, as tiktoken does
    text = "a\ud800b"
    assert tok.encode(text) == tok.encode_slow(text) == tok.encode("a\ufffdb")
    assert tok.decode(tok.encode(text)) == "a\ufffdb"
