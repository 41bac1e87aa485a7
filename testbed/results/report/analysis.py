"""The numbers behind the report's plots, computed from a run folder's tables: timeline spans
(activity and waiting), failure marks, straggler attribution and bytes per exchange kind."""

from __future__ import annotations

import numpy as np
import pandas as pd

from testbed.results.recorder import FAILED_OUTCOMES

SERVER = -1  # the client id events.csv gives the server
SPAN_COLUMNS = ["round", "client", "category", "start_s", "end_s", "kind", "payload_bytes", "device_s"]
STRAGGLER_COLUMNS = ["round", "straggler", "straggler_end_s", "runner_up", "runner_up_end_s", "held_back_s"]


def event_category(kind: str, status: str) -> str:
    """Timeline category of an events.csv row: compute, failed compute, upload (``*_up``),
    download (``*_down``), server work (``server_compute``), aggregate or other."""
    return str(_categories(pd.Series([kind]), pd.Series([status]))[0])


def _categories(kinds: pd.Series, statuses: pd.Series) -> np.ndarray:
    """event_category of every row at once."""
    kind = kinds.astype(str)
    compute = (kind == "compute").to_numpy()
    return np.select(
        [compute & (statuses.astype(str) == "failed").to_numpy(), compute, kind.str.endswith("_up").to_numpy(),
         kind.str.endswith("_down").to_numpy(), (kind == "server_compute").to_numpy(), (kind == "aggregate").to_numpy()],
        ["failed compute", "compute", "upload", "download", "server work", "aggregate"], default="other")


def activity_spans(events: pd.DataFrame) -> pd.DataFrame:
    """One span per event: round, client (-1 = server), category, start_s, end_s, and for the
    timeline's hover its kind, payload_bytes and device_s (NaN where events.csv has none)."""
    device_s = events.get("device_s", np.nan)
    spans = pd.DataFrame({"round": events["round"], "client": events["client"],
                          "category": _categories(events["kind"], events["status"]),
                          "start_s": events["sim_start_s"], "end_s": events["sim_end_s"],
                          "kind": events["kind"].astype(str), "payload_bytes": events["payload_bytes"],
                          "device_s": device_s}, columns=SPAN_COLUMNS)
    return spans.dropna(subset=["start_s", "end_s"])


def waiting_spans(spans: pd.DataFrame, round_end_s: dict[int, float], failed: set[tuple[int, int]]) -> pd.DataFrame:
    """A client's idle time in a round: the gaps between its activities (from its first start
    to its last end) and, unless it failed, from its last end to the round's end."""
    clients = spans[spans["client"] != SERVER].sort_values(["round", "client", "start_s", "end_s"], kind="stable")
    if clients.empty:
        return pd.DataFrame(columns=SPAN_COLUMNS)
    keys = ["round", "client"]
    first = ~clients.duplicated(keys).to_numpy()
    reach = clients.groupby(keys, sort=False)["end_s"].cummax().to_numpy()  # the latest end so far
    before = np.r_[np.nan, reach[:-1]]
    start = clients["start_s"].to_numpy()
    gap = ~first & (start > before)  # a start after everything before it has ended
    gaps = pd.DataFrame({"round": clients["round"].to_numpy()[gap], "client": clients["client"].to_numpy()[gap],
                         "category": "waiting", "start_s": before[gap], "end_s": start[gap], "kind": "waiting"})
    last = clients.groupby(keys, sort=False)["end_s"].max().reset_index()
    end_s = last["round"].astype(int).map(round_end_s)
    alive = ~pd.MultiIndex.from_frame(last[keys].astype(int)).isin(list(failed))
    tail = last[alive & (end_s > last["end_s"]).to_numpy()]
    tails = pd.DataFrame({"round": tail["round"], "client": tail["client"], "category": "waiting",
                          "start_s": tail["end_s"], "end_s": end_s[tail.index], "kind": "waiting"})
    both = [df for df in (gaps, tails) if not df.empty]
    if not both:
        return pd.DataFrame(columns=SPAN_COLUMNS)
    return pd.concat(both, ignore_index=True).sort_values(["round", "client", "start_s"], ignore_index=True)


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
    arrived = client_rounds.loc[~client_rounds["outcome"].isin(FAILED_OUTCOMES), ["round", "client", "sim_end_s"]]
    named = rounds.loc[rounds["straggler"].notna(), ["round", "straggler"]]
    named = named.astype({"round": "int64", "straggler": "int64"})
    rows = arrived.astype({"round": "int64", "client": "int64"}).merge(named, on="round")
    own = rows["client"] == rows["straggler"]
    straggler_end = rows[own].groupby("round", as_index=False)["sim_end_s"].max()
    straggler_end = straggler_end.rename(columns={"sim_end_s": "straggler_end_s"})
    others = rows[~own & rows["sim_end_s"].notna()]
    latest = others.loc[others.groupby("round")["sim_end_s"].idxmax().to_numpy(), ["round", "client", "sim_end_s"]]
    latest = latest.rename(columns={"client": "runner_up", "sim_end_s": "runner_up_end_s"})
    df = named.merge(straggler_end, on="round").merge(latest, on="round", how="left")
    df["held_back_s"] = (df["straggler_end_s"] - df["runner_up_end_s"]).fillna(0.0)
    return df[STRAGGLER_COLUMNS].astype({"round": "Int64", "straggler": "Int64", "runner_up": "Int64",
                                         "runner_up_end_s": "float64", "held_back_s": "float64"})


def bytes_by_kind(events: pd.DataFrame) -> pd.DataFrame:
    """Per exchange kind (``*_up`` / ``*_down``): exchanges, payload_bytes and wire_bytes summed."""
    transfers = events[events["kind"].astype(str).str.endswith(("_up", "_down"))]
    grouped = transfers.groupby("kind", sort=True)
    return pd.DataFrame({"exchanges": grouped.size(), "payload_bytes": grouped["payload_bytes"].sum(),
                         "wire_bytes": grouped["wire_bytes"].sum()}).reset_index()


# -- fleets: device classes instead of single clients ------------------------------------------------
FLEET_CLIENTS = 50  # a run with more clients draws device-class lanes instead of one row per client
ROUND_TIME_COLUMNS = ["round", "client", "device_class", "outcome", "start_s", "end_s", "time_s"]
DELAY_COLUMNS = ["round", "arrivals", "median_end_s", "last_end_s", "delay_s"]


def device_class(names: pd.Series) -> pd.Series:
    """A client's device class: its device name less the fleet's ``#k`` suffix (pixel-7#12 ->
    pixel-7); missing names stay missing."""
    return names.astype("string").str.replace(r"#\d+$", "", regex=True)


def client_round_times(client_rounds: pd.DataFrame, events: pd.DataFrame, classes: pd.Series) -> pd.DataFrame:
    """One row per client-round: round, client, device_class, outcome, start_s, end_s and
    time_s (end - start). From client_rounds.csv's sim_start_s and sim_end_s; for a run without
    them, from events.csv (a client's first start to its last end in the round; outcome failed
    when a compute failed). ``classes``: client id -> device class, for rows without a device."""
    cr = client_rounds
    if {"sim_start_s", "sim_end_s"} <= set(cr.columns) and cr["sim_start_s"].notna().any():
        df = pd.DataFrame({"round": cr["round"], "client": cr["client"],
                           "outcome": cr["outcome"].fillna("unknown").astype(str),
                           "start_s": cr["sim_start_s"], "end_s": cr["sim_end_s"],
                           "device_class": device_class(cr["device"]) if "device" in cr else pd.NA})
    else:
        ev = events[(events["client"] != SERVER) & events["sim_start_s"].notna() & events["sim_end_s"].notna()]
        df = ev.assign(failed=(ev["kind"].astype(str) == "compute") & (ev["status"].astype(str) == "failed"))
        df = df.groupby(["round", "client"], as_index=False).agg(
            start_s=("sim_start_s", "min"), end_s=("sim_end_s", "max"), failed=("failed", "any"))
        df = df.assign(outcome=np.where(df["failed"], "failed", "ok"), device_class=pd.NA).drop(columns="failed")
    df = df.dropna(subset=["start_s", "end_s"])
    mapped = df["client"].map(classes) if len(classes) else pd.Series(pd.NA, index=df.index)
    df["device_class"] = df["device_class"].astype("string").fillna(mapped.astype("string")).fillna("unknown")
    df["time_s"] = df["end_s"] - df["start_s"]
    return df[ROUND_TIME_COLUMNS].reset_index(drop=True)


def straggler_delays(client_rounds: pd.DataFrame) -> pd.DataFrame:
    """Per round with an arrival: arrivals (clients that did not fail), the median and the last
    arrival's end, and delay_s = last minus median: how long the round waited for its slowest
    half after the typical client had arrived."""
    arrived = client_rounds[~client_rounds["outcome"].isin(FAILED_OUTCOMES) & client_rounds["sim_end_s"].notna()]
    if arrived.empty:
        return pd.DataFrame(columns=DELAY_COLUMNS)
    agg = arrived.groupby("round")["sim_end_s"].agg(["size", "median", "max"]).reset_index()
    agg.columns = ["round", "arrivals", "median_end_s", "last_end_s"]
    agg["delay_s"] = agg["last_end_s"] - agg["median_end_s"]
    return agg[DELAY_COLUMNS]


def class_sizes(classes: pd.Series, times: pd.DataFrame) -> pd.Series:
    """Clients per device class, largest first (then by name): the fleet's (``classes``) where
    known, else the distinct clients seen in ``times``."""
    seen = times.groupby("device_class")["client"].nunique()
    sizes = classes.value_counts() if len(classes) else pd.Series(dtype="int64")
    sizes = sizes.combine(seen, max, fill_value=0).astype("int64")
    order = sorted(sizes.index, key=lambda c: (-sizes[c], str(c)))
    return sizes[order]


def fewer_classes(times: pd.DataFrame, sizes: pd.Series, most: int) -> tuple[pd.DataFrame, pd.Series]:
    """(times, sizes) with at most ``most`` device classes: beyond that, the smallest classes
    become one, ``other (N classes)``, last."""
    if len(sizes) <= most:
        return times, sizes
    keep, rest = sizes.iloc[:most - 1], sizes.iloc[most - 1:]
    other = f"other ({len(rest)} classes)"
    times = times.assign(device_class=times["device_class"].where(times["device_class"].isin(keep.index), other))
    return times, pd.concat([keep, pd.Series({other: int(rest.sum())})])


def busy_share(times: pd.DataFrame, sizes: pd.Series, edges: np.ndarray) -> np.ndarray:
    """(classes x bins): the mean share of each class's clients inside a client-round span
    (start_s to end_s) over each time bin between ``edges``; exact, from the integral of the
    busy count (the started minus the ended) over each bin."""
    shares = np.zeros((len(sizes), len(edges) - 1))
    widths = np.diff(edges)
    for i, (cls, size) in enumerate(sizes.items()):  # one pass per class, not per row
        part = times[times["device_class"] == cls]
        if part.empty or size == 0:
            continue
        busy_time = _count_integral(part["start_s"].to_numpy(), edges) - _count_integral(part["end_s"].to_numpy(), edges)
        shares[i] = np.diff(busy_time) / widths / size
    return shares


def _count_integral(points: np.ndarray, t: np.ndarray) -> np.ndarray:
    """At each t, the integral from -inf to t of the count of points at or before it:
    sum over points p <= t of (t - p)."""
    points = np.sort(points.astype(float))
    k = np.searchsorted(points, t, side="right")
    return t * k - np.r_[0.0, np.cumsum(points)][k]
