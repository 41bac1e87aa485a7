"""Token ids of texts, kept on disk per tokenizer and length: every worker of every run
encodes the same articles, and on 2 cores that sat on each run's start-up critical path
(0.8 s for a rank hosting four clients of the bundled data).

One JSON file per (tokenizer file contents, max_tokens) in the asset cache's `encoded/`
folder maps sha1(text) to the text's first max_tokens ids. Writes are atomic (a temporary
file, then a rename): concurrent workers may each write the file, all with correct content.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class TokenCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._ids: dict[str, list[int]] = json.loads(path.read_text())
        except (OSError, ValueError):  # absent or unreadable: start empty, rewrite it
            self._ids = {}

    @classmethod
    def for_tokenizer(cls, cache_dir: Path, tokenizer_file: Path, max_tokens: int) -> TokenCache:
        """The cache of this tokenizer file's contents; one object per file in a process, so a
        worker's clients read the file once."""
        digest = hashlib.sha256(tokenizer_file.read_bytes()).hexdigest()[:16]
        path = cache_dir / "encoded" / f"{digest}-{max_tokens}.json"
        if path not in _OPEN:
            _OPEN[path] = cls(path)
        return _OPEN[path]

    def ids(self, texts: list[str], encode: Callable[[list[str]], list[list[int]]]) -> list[list[int]]:
        """Each text's cached ids; the others from `encode` (one call), then stored."""
        keys = [text_key(t) for t in texts]
        missing = list({k: i for i, k in enumerate(keys) if k not in self._ids}.values())  # each text once
        if missing:
            for i, ids in zip(missing, encode([texts[i] for i in missing]), strict=True):
                self._ids[keys[i]] = list(ids)
            self._write()
        return [list(self._ids[k]) for k in keys]

    def _write(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._ids, separators=(",", ":")))
            os.replace(tmp, self.path)
        except OSError:  # a read-only cache: the ids were still computed
            pass


_OPEN: dict[Path, TokenCache] = {}  # cache file -> its object in this process
