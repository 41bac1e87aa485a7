"""A run's checkpoint: what ``testbed run --resume DIR`` needs to go on after the last
completed round (or FedBuff server version).

``DIR/checkpoint/`` holds:

- ``state.json``: the round, the simulated clock, the host calibration the clock was converted
  with (a resumed run converts with the same, not a fresh measurement), the CPU quotas, the
  rounds table so far, and how far each appended table (events, client_rounds, host_timeline)
  was written: its bytes, rows and header (a resumed run cuts each file back to that mark);
- ``framework.safetensors``: the framework's state (global adapters, the KD teacher, split's
  halves and server optimizer) and the server's torch RNG state;
- ``clients.safetensors``: what clients carry from round to round (KD students), per client;
- ``ledger.wire``: the ledger (testbed.sim.ledger) the resumed run replays to rebuild the
  simulation's state up to the checkpoint (flows in flight, availability, the network's draws).

The folder is written as ``checkpoint.tmp`` and renamed into place (the previous one kept as
``checkpoint.old`` until then), so a crash at any instant leaves one complete checkpoint.
Nothing in it is pickled: tensors are safetensors, the rest JSON or the testbed's wire format,
which rebuilds only registered types.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from testbed.backends import wire
from testbed.host.calibration import HostCalibration
from testbed.ml.statefile import StateFileError, load_state, save_state, unprefixed
from testbed.protocol import FrameworkState
from testbed.results.recorder import TableMark
from testbed.sim.ledger import Ledger

FOLDER = "checkpoint"
FORMAT = "testbed-checkpoint/2"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read back."""


@dataclass
class Checkpoint:
    round: int  # the last completed round (server version)
    sim_now_s: float
    calibration: HostCalibration
    bf16_step_speedup: float | None
    precision: str  # framework.precision as run (auto resolved)
    throttled: dict[int, float]  # client -> CPU quota (cores)
    rounds: list[dict[str, Any]]  # rounds.csv's rows so far
    marks: dict[str, TableMark]  # appended table file -> how far it was written
    framework: FrameworkState
    clients: dict[int, bytes]  # client -> checkpoint_state()
    ledger: Ledger
    torch_rng: torch.Tensor


def _plain(value: Any) -> Any:
    """A row's value as JSON holds it (numpy scalars as Python numbers)."""
    item = getattr(value, "item", None)
    return item() if callable(item) and not isinstance(value, (str, bytes)) else value


class RoundsJson:
    """The JSON list of a run's rounds rows, each row encoded once. A checkpoint is written after
    every round with all the rows so far, and a fleet round's row holds its selected clients
    (10,000 ids): encoding them all again each time grew with the square of the rounds (a
    100-round fleet run encoded 250 MB of JSON). A recorded row is final (the recorder appends
    rows and never edits them); a list that is not the one seen before (a resumed run's) is
    encoded afresh from where it differs."""

    def __init__(self) -> None:
        self._done: list[tuple[dict[str, Any], str]] = []  # (row, its JSON), a prefix of the rows

    def __call__(self, rows: list[dict[str, Any]]) -> str:
        same = 0
        while same < min(len(rows), len(self._done)) and self._done[same][0] is rows[same]:
            same += 1
        del self._done[same:]
        self._done += [(row, json.dumps({k: _plain(v) for k, v in row.items()}, allow_nan=True)) for row in rows[same:]]
        return "[" + ", ".join(text for _, text in self._done) + "]"


def write_checkpoint(run_dir: Path, ckpt: Checkpoint, rounds_json: RoundsJson | None = None) -> None:
    """The checkpoint folder, replaced in one step. `rounds_json`: the writer's encoder of the
    rounds rows, kept from checkpoint to checkpoint (a fresh one encodes every row)."""
    run_dir = Path(run_dir)
    tmp, final, old = run_dir / (FOLDER + ".tmp"), run_dir / FOLDER, run_dir / (FOLDER + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {
        "format": FORMAT, "round": ckpt.round, "sim_now_s": ckpt.sim_now_s,
        "calibration": ckpt.calibration.to_dict(), "bf16_step_speedup": ckpt.bf16_step_speedup,
        "precision": ckpt.precision, "throttled": {str(k): v for k, v in ckpt.throttled.items()},
        "marks": {name: {"bytes": m.bytes, "rows": m.rows, "columns": list(m.columns)}
                  for name, m in ckpt.marks.items()},
    }
    rounds = (rounds_json or RoundsJson())(ckpt.rounds)
    _write_bytes(tmp / "state.json", (json.dumps(state, allow_nan=True)[:-1] + f', "rounds": {rounds}}}').encode())
    save_state(tmp / "framework.safetensors", {**ckpt.framework.tensors, "rng.torch": ckpt.torch_rng},
               {"round": ckpt.round, "framework": ckpt.framework.meta})
    save_state(tmp / "clients.safetensors",
               {f"client.{cid}": torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else
                torch.zeros(0, dtype=torch.uint8) for cid, data in ckpt.clients.items()},
               {"round": ckpt.round})
    _write_bytes(tmp / "ledger.wire", wire.encode(ckpt.ledger.state()))
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(run_dir)
    shutil.rmtree(old, ignore_errors=True)


def read_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The run's checkpoint; None when it has none (no round completed)."""
    run_dir = Path(run_dir)
    folder = next((f for f in (run_dir / FOLDER, run_dir / (FOLDER + ".old")) if (f / "ledger.wire").is_file()),
                  None)
    if folder is None:
        return None
    try:
        state = json.loads((folder / "state.json").read_bytes())
        if state.get("format") != FORMAT:
            raise CheckpointError(f"{folder / 'state.json'}: not a {FORMAT} checkpoint")
        tensors, meta = load_state(folder / "framework.safetensors")
        client_tensors, client_meta = load_state(folder / "clients.safetensors")
        if meta.get("round") != state["round"] or client_meta.get("round") != state["round"]:
            raise CheckpointError(f"{folder}: its files are of different rounds")
        ledger = Ledger.from_state(wire.decode((folder / "ledger.wire").read_bytes()))
        rng = tensors.pop("rng.torch")
        return Checkpoint(
            round=int(state["round"]), sim_now_s=float(state["sim_now_s"]),
            calibration=HostCalibration.from_dict(state["calibration"]),
            bf16_step_speedup=state["bf16_step_speedup"], precision=str(state["precision"]),
            throttled={int(k): float(v) for k, v in state["throttled"].items()},
            rounds=list(state["rounds"]),
            marks={str(name): TableMark(int(m["bytes"]), int(m["rows"]), tuple(str(c) for c in m["columns"]))
                   for name, m in state["marks"].items()},
            framework=FrameworkState(tensors, meta.get("framework") or {}),
            clients={int(k): v.numpy().tobytes() for k, v in unprefixed(client_tensors, "client").items()},
            ledger=ledger, torch_rng=rng,
        )
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError, StateFileError, wire.WireError) as exc:
        raise CheckpointError(f"{folder}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
