"""A synthetic run folder of a large fleet, for the report's scale test and
benchmarks/report_scale.py: seeded numpy, no simulation, written in a second or two.

Synchronous rounds of ``per_round`` clients drawn from ``clients``: each downloads the adapter,
computes for a lognormal time whose median depends on its device class, and uploads it; about
3% fail during compute (``failed``, cause killed / offline / battery) and 0.5% run out of memory
(``oom``, peak memory over the budget; others peak at 35-85% of it). The round ends at the
last arrival plus a short aggregation. Energy is NaN for one device class (NO_POWER), as for a
device without a power figure. Learning metrics are NaN, as in ``emulation.compute: predicted``
runs. Tables are written as CSV and, with
``parquet=True``, also as ``<name>.parquet`` beside them (same columns).

    python tests/testbed/fleet_report_data.py OUT [--clients 10000] [--rounds 100] [--per-round 1000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

ADAPTER_BYTES = 1_843_200  # SmolLM2-135M LoRA r=8 on q/v, fp32
WIRE_OVERHEAD = 1.02
# device class -> (share of the fleet, median compute s, memory budget MB)
DEVICE_CLASSES = {
    "pixel-7": (0.30, 55.0, 3000.0), "galaxy-s23": (0.20, 45.0, 3500.0), "iphone-14": (0.15, 40.0, 2500.0),
    "raspberry-pi-5": (0.15, 120.0, 2000.0), "jetson-nano": (0.12, 90.0, 1800.0), "jetson-orin": (0.08, 25.0, 6000.0),
}
LINKS = {"lte": (30.0, 10.0), "5g": (200.0, 50.0), "wifi": (100.0, 40.0)}  # down, up Mbit/s
CAUSES = np.array(["killed", "offline", "battery"])
NO_POWER = "iphone-14"  # its client-rounds have no energy figure (NaN), as a device without power_w


def _fleet(clients: int, rng: np.random.Generator) -> pd.DataFrame:
    """One row per client: client, name (class#k), class, link, rates, compute median, budget."""
    names = list(DEVICE_CLASSES)
    shares = np.array([DEVICE_CLASSES[n][0] for n in names])
    counts = np.floor(shares / shares.sum() * clients).astype(int)
    counts[0] += clients - counts.sum()
    cls = np.repeat(np.arange(len(names)), counts)
    k = np.concatenate([np.arange(1, c + 1) for c in counts])
    link_names = np.array(list(LINKS))
    link = rng.integers(0, len(LINKS), clients)
    return pd.DataFrame({
        "client": np.arange(clients), "cls": cls,
        "name": [f"{names[c]}#{i}" for c, i in zip(cls, k)],
        "device": np.array(names)[cls], "link": link_names[link],
        "down_mbps": np.array([v[0] for v in LINKS.values()])[link],
        "up_mbps": np.array([v[1] for v in LINKS.values()])[link],
        "median_s": np.array([DEVICE_CLASSES[n][1] for n in names])[cls],
        "budget_mb": np.array([DEVICE_CLASSES[n][2] for n in names])[cls],
    })


def fleet_tables(clients: int = 10_000, rounds: int = 100, per_round: int = 1_000,
                 seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """(events, client_rounds, rounds, summary) of the synthetic run."""
    rng = np.random.default_rng(seed)
    fleet = _fleet(clients, rng)
    per_round = min(per_round, clients)
    chosen = np.stack([rng.choice(clients, per_round, replace=False) for _ in range(rounds)])  # (R, K)
    f = fleet.iloc[chosen.ravel()].reset_index(drop=True)
    shape = chosen.shape
    down_s = (ADAPTER_BYTES * 8 / (f["down_mbps"].to_numpy() * 1e6) * rng.uniform(1.0, 1.6, f.shape[0])).reshape(shape)
    up_s = (ADAPTER_BYTES * 8 / (f["up_mbps"].to_numpy() * 1e6) * rng.uniform(1.0, 1.6, f.shape[0])).reshape(shape)
    compute_s = (f["median_s"].to_numpy() * rng.lognormal(0.0, 0.35, f.shape[0])).reshape(shape)
    draw = rng.random(shape)
    outcome = np.where(draw < 0.005, "oom", np.where(draw < 0.035, "failed", "ok"))
    failed = outcome != "ok"
    fail_at = rng.uniform(0.1, 0.9, shape)
    compute_done = np.where(failed, compute_s * fail_at, compute_s)
    rel_end = down_s + compute_done + np.where(failed, 0.0, up_s)
    arrived_end = np.where(failed, -np.inf, rel_end)
    aggregate_s = 0.5
    duration = np.maximum(arrived_end.max(axis=1), rel_end.min(axis=1)) + aggregate_s
    round_start = np.concatenate([[0.0], np.cumsum(duration)[:-1]])
    start = np.broadcast_to(round_start[:, None], shape)
    rnd = np.broadcast_to(np.arange(1, rounds + 1)[:, None], shape)
    cause = np.where(outcome == "oom", "oom", np.where(failed, CAUSES[rng.integers(0, 3, shape)], ""))
    budget = f["budget_mb"].to_numpy().reshape(shape)
    peak = budget * np.where(outcome == "oom", rng.uniform(1.02, 1.2, shape), rng.uniform(0.35, 0.85, shape))
    no_power = (f["device"].to_numpy() == NO_POWER).reshape(shape)  # a device without a power figure
    compute_energy = np.where(no_power, np.nan, compute_done * 4.0)
    radio_energy = np.where(no_power, np.nan, (down_s + np.where(failed, 0.0, up_s)) * 1.2)
    bytes_up = np.where(failed, 0, ADAPTER_BYTES)
    client_rounds = pd.DataFrame({
        "round": rnd.ravel(), "client": chosen.ravel(), "device": f["name"], "link": f["link"],
        "outcome": outcome.ravel(), "cause": cause.ravel(), "n_samples": 64, "train_loss": np.nan,
        "host_compute_s": 0.0, "device_compute_s": compute_done.ravel(), "dilation_factor": 1.0,
        "bound": "compute", "peak_rss_mb": peak.ravel().round(1), "memory_budget_mb": f["budget_mb"],
        "over_memory_budget": outcome.ravel() == "oom", "bytes_down": ADAPTER_BYTES, "bytes_up": bytes_up.ravel(),
        "sim_start_s": start.ravel(), "sim_end_s": (start + rel_end).ravel(),
        "energy_j": (compute_energy + radio_energy).ravel(), "compute_energy_j": compute_energy.ravel(),
        "radio_energy_j": radio_energy.ravel(), "host": "node-1",
        "energy_note": np.where(no_power.ravel(), f"no power_w for {NO_POWER}", ""),
    })
    events = _events(client_rounds, down_s.ravel(), compute_done.ravel(), failed.ravel(), round_start, duration,
                     aggregate_s)
    arrived_ok = np.where(failed, np.nan, start + rel_end)
    last = np.nanargmax(arrived_ok, axis=1)
    selected = [" ".join(map(str, row)) for row in np.sort(chosen, axis=1)]
    n_failed = failed.sum(axis=1)
    table = pd.DataFrame({
        "round": np.arange(rounds + 1), "sim_start_s": np.r_[0.0, round_start],
        "sim_end_s": np.r_[0.0, round_start + duration], "sim_duration_s": np.r_[0.0, duration],
        "selected": ["", *selected], "participants": np.r_[0, per_round - n_failed], "failures": np.r_[0, n_failed],
        "discarded": 0, "straggler": pd.array([pd.NA, *chosen[np.arange(rounds), last]], dtype="Int64"),
        "train_loss": np.nan, "eval_loss": np.nan, "accuracy": np.nan,
        "bytes_up": np.r_[0, bytes_up.sum(axis=1)], "bytes_down": np.r_[0, np.full(rounds, per_round * ADAPTER_BYTES)],
    })
    summary = {
        "scenario": f"fleet-{clients}", "framework": "fedllm", "model": "SmolLM2-135M", "status": "completed",
        "seed": seed, "rounds_completed": rounds, "sim_wall_clock_s": float(round_start[-1] + duration[-1]),
        "clients": [{"client": int(c), "name": n, "device": d, "link": {"name": lk}, "memory_budget_mb": float(b)}
                    for c, n, d, lk, b in zip(fleet["client"], fleet["name"], fleet["device"], fleet["link"],
                                              fleet["budget_mb"])],
    }
    return events, client_rounds, table, summary


def _events(cr: pd.DataFrame, down_s: np.ndarray, compute_s: np.ndarray, failed: np.ndarray,
            round_start: np.ndarray, duration: np.ndarray, aggregate_s: float) -> pd.DataFrame:
    """adapter_down, compute and (unless failed) adapter_up per client-round, and one aggregate
    per round, ordered by round."""
    start = cr["sim_start_s"].to_numpy()
    wire = int(ADAPTER_BYTES * WIRE_OVERHEAD)
    base = {"round": cr["round"].to_numpy(), "client": cr["client"].to_numpy()}
    down = pd.DataFrame({**base, "kind": "adapter_down", "payload_bytes": ADAPTER_BYTES, "wire_bytes": wire,
                         "sim_start_s": start, "sim_end_s": start + down_s, "host_s": 0.0, "device_s": 0.0,
                         "status": "ok"})
    comp = pd.DataFrame({**base, "kind": "compute", "payload_bytes": 0, "wire_bytes": 0,
                         "sim_start_s": start + down_s, "sim_end_s": start + down_s + compute_s, "host_s": 0.0,
                         "device_s": compute_s, "status": np.where(failed, "failed", "ok")})
    ok = ~failed
    up = pd.DataFrame({"round": base["round"][ok], "client": base["client"][ok], "kind": "adapter_up",
                       "payload_bytes": ADAPTER_BYTES, "wire_bytes": wire,
                       "sim_start_s": (start + down_s + compute_s)[ok], "sim_end_s": cr["sim_end_s"].to_numpy()[ok],
                       "host_s": 0.0, "device_s": 0.0, "status": "ok"})
    rounds = np.arange(1, len(round_start) + 1)
    end = round_start + duration
    agg = pd.DataFrame({"round": rounds, "client": -1, "kind": "aggregate", "payload_bytes": 0, "wire_bytes": 0,
                        "sim_start_s": end - aggregate_s, "sim_end_s": end, "host_s": 0.01, "device_s": 0.0,
                        "status": "ok"})
    events = pd.concat([down, comp, up, agg], ignore_index=True)
    events = events.sort_values(["round", "sim_start_s"], kind="stable", ignore_index=True)
    return events.assign(detail="")


def write_fleet_run(folder: Path | str, *, clients: int = 10_000, rounds: int = 100, per_round: int = 1_000,
                    seed: int = 0, parquet: bool = True) -> Path:
    """Write the synthetic run folder (events, client_rounds and rounds as CSV, and as Parquet
    with ``parquet``; summary.json; scenario.yaml); returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    events, client_rounds, table, summary = fleet_tables(clients, rounds, per_round, seed)
    for name, df in (("events", events), ("client_rounds", client_rounds), ("rounds", table)):
        df.to_csv(folder / f"{name}.csv", index=False)
        if parquet:
            df.to_parquet(folder / f"{name}.parquet", index=False)
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "scenario.yaml").write_text(
        f"name: fleet-{clients}\nframework: {{name: fedllm, rounds: {rounds}, clients_per_round: {per_round}}}\n"
        "emulation: {compute: predicted}\n")
    return folder


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--per-round", type=int, default=1_000)
    parser.add_argument("--no-parquet", action="store_true")
    args = parser.parse_args()
    write_fleet_run(args.out, clients=args.clients, rounds=args.rounds, per_round=args.per_round,
                    parquet=not args.no_parquet)
    print(args.out)
