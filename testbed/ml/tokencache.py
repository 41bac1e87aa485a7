"""Token ids of texts, kept on disk per tokenizer and length: every worker of every run
encodes the same articles, and on 2 cores that sat on each run's start-up critical path
(0.8 s for a rank hosting four clients of the bundled data).

One JSON file per (tokenizer file contents, max_tokens) in the `encoded/` folder of the
derived files (testbed.ml.assets.derived_dir: the asset cache, or a docker client's own
writable folder, which reads the cache's file first) maps sha1(text) to the text's first
max_tokens ids. Writes are atomic (a temporary file, then a rename): concurrent workers may
each write the file, all with correct content.
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
    def __init__(self, path: Path, seed: Path | None = None) -> None:
        """The ids of `path`, over those of `seed` (a read-only copy elsewhere, read only)."""
        self.path = path
        self._ids: dict[str, list[int]] = {}
        for source in (seed, path) if seed is not None and seed != path else (path,):
            try:
                self._ids.update(json.loads(source.read_text()))
            except (OSError, ValueError, TypeError):  # absent or unreadable: start without it, rewrite it
                pass

    @classmethod
    def for_tokenizer(cls, cache_dir: Path, tokenizer_file: Path, max_tokens: int, *,
                      seed_dir: Path | None = None) -> TokenCache:
        """The cache of this tokenizer file's contents in `cache_dir` (first filled from the same
        file in `seed_dir`, never written there); one object per file in a process, so a
        worker's clients read the file once."""
        digest = hashlib.sha256(tokenizer_file.read_bytes()).hexdigest()[:16]
        name = Path("encoded") / f"{digest}-{max_tokens}.json"
        path = cache_dir / name
        if path not in _OPEN:
            _OPEN[path] = cls(path, seed_dir / name if seed_dir is not None else None)
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
