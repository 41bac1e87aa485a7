"""Token ids cached on disk per tokenizer and length."""

from __future__ import annotations

from testbed.ml.tokencache import TokenCache


class Counting:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> list[list[int]]:
        self.calls.append(list(texts))
        return [[len(t), ord(t[0])] for t in texts]


def test_ids_come_from_disk_after_the_first_encoding(tmp_path):
    path = tmp_path / "encoded" / "tok-8.json"
    enc = Counting()
    texts = ["alpha", "beta", "alpha", "gamma"]
    first = TokenCache(path).ids(texts, enc)
    assert first == [[5, 97], [4, 98], [5, 97], [5, 103]]
    assert enc.calls == [["alpha", "beta", "gamma"]]  # each distinct text encoded once
    again = TokenCache(path).ids(["gamma", "alpha", "delta"], enc)  # a new process reads the file
    assert again == [[5, 103], [5, 97], [5, 100]]
    assert enc.calls[1:] == [["delta"]]


def test_an_unreadable_or_unwritable_cache_still_encodes(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert TokenCache(bad).ids(["x"], Counting()) == [[1, 120]]
    assert TokenCache(bad).ids(["x"], Counting()) == [[1, 120]]  # rewritten whole
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert TokenCache(blocked / "sub" / "c.json").ids(["yz"], Counting()) == [[2, 121]]


def test_a_cache_is_per_tokenizer_file_and_length(tmp_path):
    tok = tmp_path / "tokenizer.json"
    tok.write_text('{"model": 1}')
    a, b = TokenCache.for_tokenizer(tmp_path, tok, 96), TokenCache.for_tokenizer(tmp_path, tok, 32)
    tok.write_text('{"model": 2}')
    c = TokenCache.for_tokenizer(tmp_path, tok, 96)
    assert len({a.path, b.path, c.path}) == 3 and a.path.parent == tmp_path / "encoded"
