"""The numbers behind the report's plots, computed from a run folder's tables: timeline spans
(activity and waiting), failure marks, straggler attribution and bytes per exchange kind."""

from __future__ import annotations

import pandas as pd

from testbed.results.recorder import FAILED_OUTCOMES

SERVER = -1  # the client id events.csv gives the server
SPAN_COLUMNS = ["round", "client", "category", "start_s", "end_s"]
STRAGGLER_COLUMNS = ["round", "straggler", "straggler_end_s", "runner_up", "runner_up_end_s", "held_back_s"]


def event_category(kind: str, status: str) -> str:
    """Timeline category of an events.csv row: compute, failed compute, upload (``*_up``),
    download (``*_down``), server work (``server_compute``), aggregate or other."""
    if kind == "compute":
        return "failed compute" if status == "failed" else "compute"
    if kind.endswith("_up"):
        return "upload"
    if kind.endswith("_down"):
        return "download"
    return {"server_compute": "server work", "aggregate": "aggregate"}.get(kind, "other")


def activity_spans(events: pd.DataFrame) -> pd.DataFrame:
    """One span per event: round, client (-1 = server), category, start_s, end_s."""
    categories = [event_category(str(k), str(s)) for k, s in zip(events["kind"], events["status"])]
    spans = pd.DataFrame({"round": events["round"], "client": events["client"], "category": categories,
                          "start_s": events["sim_start_s"], "end_s": events["sim_end_s"]}, columns=SPAN_COLUMNS)
    return spans.dropna(subset=["start_s", "end_s"])


def _merged(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping or touching (start, end) intervals merged, sorted by start."""
    merged: list[tuple[float, float]] = []
    for start_s, end_s in sorted(intervals):
        if merged and start_s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end_s))
        else:
            merged.append((start_s, end_s))
    return merged


def waiting_spans(spans: pd.DataFrame, round_end_s: dict[int, float], failed: set[tuple[int, int]]) -> pd.DataFrame:
    """A client's idle time in a round: the gaps between its activities (from its first start
    to its last end) and, unless it failed, from its last end to the round's end."""
    rows = []
    clients = spans[spans["client"] != SERVER]
    for (rnd, client), group in clients.groupby(["round", "client"]):
        merged = _merged(list(zip(group["start_s"], group["end_s"])))
        gaps = [(a_end, b_start) for (_, a_end), (b_start, _) in zip(merged, merged[1:])]
        end_s = round_end_s.get(int(rnd))
        if end_s is not None and (int(rnd), int(client)) not in failed and end_s > merged[-1][1]:
            gaps.append((merged[-1][1], end_s))
        rows += [(rnd, client, "waiting", a, b) for a, b in gaps]
    return pd.DataFrame(rows, columns=SPAN_COLUMNS)


def failures(client_rounds: pd.DataFrame) -> pd.DataFrame:
    """Failed clients per round: round, client, t_s (when it failed), cause."""
    failed = client_rounds[client_rounds["outcome"].isin(FAILED_OUTCOMES)]
    return pd.DataFrame({"round": failed["round"], "client": failed["client"], "t_s": failed["sim_end_s"],
                         "cause": failed["cause"].fillna("failed").astype(str)})


def timeline_spans(events: pd.DataFrame, rounds: pd.DataFrame, client_rounds: pd.DataFrame) -> pd.DataFrame:
    """Activity spans and waiting spans of every client in every round."""
    spans = activity_spans(events)
    round_end_s = {int(r): float(t) for r, t in zip(rounds["round"], rounds["sim_end_s"]) if pd.notna(t)}
    marks = failures(client_rounds)
    failed = {(int(r), int(c)) for r, c in zip(marks["round"], marks["client"])}
    waiting = waiting_spans(spans, round_end_s, failed)
    return pd.concat([df for df in (waiting, spans) if not df.empty] or [spans], ignore_index=True)


def straggler_attribution(rounds: pd.DataFrame, client_rounds: pd.DataFrame) -> pd.DataFrame:
    """Per round with a straggler (rounds.csv): the client that finished last, its end, the
    second-latest client and by how long the straggler held the round back (0 s if it was the
    only client to arrive). Only arrived (not failed) clients count."""
    arrived = client_rounds[~client_rounds["outcome"].isin(FAILED_OUTCOMES)]
    rows = []
    for rnd, straggler in zip(rounds["round"], rounds["straggler"]):
        ends_s = arrived[arrived["round"] == rnd].set_index("client")["sim_end_s"]
        if pd.isna(straggler) or int(straggler) not in ends_s.index:
            continue
        straggler_end_s = float(ends_s[int(straggler)])
        others_s = ends_s.drop(int(straggler))
        if others_s.empty:
            rows.append((rnd, int(straggler), straggler_end_s, pd.NA, float("nan"), 0.0))
            continue
        runner_up = int(others_s.idxmax())
        rows.append((rnd, int(straggler), straggler_end_s, runner_up, float(others_s.max()),
                     straggler_end_s - float(others_s.max())))
    df = pd.DataFrame(rows, columns=STRAGGLER_COLUMNS)
    return df.astype({"round": "Int64", "straggler": "Int64", "runner_up": "Int64"})


def bytes_by_kind(events: pd.DataFrame) -> pd.DataFrame:
    """Per exchange kind (``*_up`` / ``*_down``): exchanges, payload_bytes and wire_bytes summed."""
    transfers = events[events["kind"].astype(str).str.endswith(("_up", "_down"))]
    grouped = transfers.groupby("kind", sort=True)
    return pd.DataFrame({"exchanges": grouped.size(), "payload_bytes": grouped["payload_bytes"].sum(),
                         "wire_bytes": grouped["wire_bytes"].sum()}).reset_index()
