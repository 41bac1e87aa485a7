"""``generations.jsonl``: what the global model generated at each evaluation of a generative run.

One JSON object per line: ``round`` (0 = before training), ``prompt`` (the prompt as the model
saw it, template included), ``reference``, ``output`` (greedy), ``rouge_l`` and
``exact_match`` of that example. The same seeded held-out prompts every round, so a prompt's
outputs can be followed round by round (``pandas.read_json(path, lines=True)``). Lines are
appended once a round's evaluation is done; a resumed run first drops the lines of rounds
after its checkpoint, which it evaluates again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FILE = "generations.jsonl"


def append_generations(out_dir: Path, rnd: int, rows: list[dict[str, Any]]) -> None:
    """Append round `rnd`'s generations (flushed to disk before returning)."""
    if not rows:
        return
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(out_dir) / FILE, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({"round": rnd, **row}, ensure_ascii=False) + "\n")
        f.flush()


def keep_rounds_through(out_dir: Path, last_round: int) -> None:
    """Drop the lines of rounds after `last_round` (a resumed run evaluates them again); a
    line that is not a JSON object with an integer round (a write cut short) goes too."""
    path = Path(out_dir) / FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("round"), int) and row["round"] <= last_round:
            kept.append(line)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
    tmp.replace(path)
