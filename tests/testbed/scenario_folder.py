"""A scenario in a folder of its own, naming a data file, two traces and an availability file
by paths relative to itself (the smoke scenario otherwise): for the tests of scenario paths,
of resuming from elsewhere and of compose files."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from network import synthetic_trace
from tests.fuzzing import SMOKE

AVAILABILITY = {"a": {"active": [0, 500], "inactive": [400, 900], "finish_time": 1000}}


def write_inputs(folder: Path) -> None:
    """A data file, two traces and an availability file under `folder`."""
    (folder / "data").mkdir(parents=True)
    rows = "".join(f"story {i} about {topic},{topic}\n" for i in range(40) for topic in ("sport", "tech"))
    (folder / "data" / "news.csv").write_text("text,label\n" + rows)
    (folder / "traces").mkdir()
    for direction, rates in (("up", [2.0, 5.0]), ("down", [10.0, 20.0])):
        synthetic_trace(rates_mbps=rates, duration_s=30, seed=1).write(folder / "traces" / f"cell.{direction}")
    (folder / "avail.json").write_text(json.dumps(AVAILABILITY))


def scenario_in(folder: Path, **changes) -> Path:
    """The smoke scenario in `folder`, naming its inputs by paths relative to `folder`."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw["dataset"] = {"path": "data/news.csv", "max_tokens": 32, "test_size": 20}
    raw["fleet"][0]["link"] = {"trace_up": "traces/cell.up", "trace_down": "./traces/cell.down", "rtt_ms": 40}
    raw["availability"] = {"kind": "fedscale", "path": "avail.json"}
    raw["output"] = "runs/moved"
    raw.update(changes)
    path = folder / "scenario.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
