"""The numbers behind the report's per-client resource plots, from client_rounds.csv: each
client's peak memory against its budget, and its energy (compute and radio) over the run; for
fleets, summarised per device class. Missing figures (an older run, a device without a power
figure) stay NaN and are counted, never filled in."""

from __future__ import annotations

import numpy as np
import pandas as pd

from testbed.results.report.analysis import device_class

MEMORY_COLUMNS = ["client", "who", "peak_rss_mb", "memory_budget_mb", "over_rounds", "rounds"]
ENERGY_COLUMNS = ["who", "clients", "energy_j", "compute_energy_j", "radio_energy_j", "rounds", "nan_rounds"]


def _who(client_rounds: pd.DataFrame, names: dict[int, str], by_class: bool) -> pd.Series:
    """Per row, the bar it belongs to: ``c<id> <name>``, or with ``by_class`` its device class."""
    ids = client_rounds["client"].astype(int)
    name = ids.map(names).astype("string")
    if "device" in client_rounds:
        name = name.fillna(client_rounds["device"].astype("string"))
    name = name.fillna("")
    if by_class:
        return device_class(name).replace("", "unknown")
    return "c" + ids.astype(str) + (" " + name).where(name != "", "")


def memory_by_client(client_rounds: pd.DataFrame, names: dict[int, str]) -> pd.DataFrame:
    """Per client: who (``c<id> <name>``), its device class, the highest peak_rss_mb of its
    rounds, its memory budget (the highest given), the rounds over budget and its rounds. Empty
    when client_rounds.csv has no peak_rss_mb."""
    cr = client_rounds
    if "peak_rss_mb" not in cr or not cr["peak_rss_mb"].notna().any():
        return pd.DataFrame(columns=[*MEMORY_COLUMNS, "device_class"])
    over = cr["over_memory_budget"].astype("boolean").fillna(False) if "over_memory_budget" in cr else False
    budget = cr.get("memory_budget_mb", np.nan)
    df = pd.DataFrame({"client": cr["client"].astype(int), "who": _who(cr, names, False),
                       "device_class": _who(cr, names, True), "peak_rss_mb": cr["peak_rss_mb"].astype(float),
                       "memory_budget_mb": pd.Series(budget, index=cr.index, dtype=float), "over": over})
    out = df.groupby("client", sort=True).agg(who=("who", "last"), device_class=("device_class", "last"),
                                              peak_rss_mb=("peak_rss_mb", "max"),
                                              memory_budget_mb=("memory_budget_mb", "max"),
                                              over_rounds=("over", "sum"), rounds=("who", "size"))
    return out.reset_index()


def energy_by(client_rounds: pd.DataFrame, names: dict[int, str], by_class: bool) -> pd.DataFrame:
    """Per client (or with ``by_class`` per device class, as the mean per client): the joules
    of the run, split into compute and radio; rounds counted and the rounds without an energy
    figure (NaN energy_j). Sums skip NaN. Empty when client_rounds.csv has no energy_j."""
    cr = client_rounds
    if "energy_j" not in cr or cr.empty:
        return pd.DataFrame(columns=ENERGY_COLUMNS)
    cols = {c: (cr[c].astype(float) if c in cr else pd.Series(np.nan, index=cr.index))
            for c in ("energy_j", "compute_energy_j", "radio_energy_j")}
    df = pd.DataFrame({"client": cr["client"].astype(int), "who": _who(cr, names, by_class), **cols,
                       "nan": cols["energy_j"].isna()})
    g = df.groupby(["who", "client"], sort=False)  # sums in one vectorised pass (no Python per client)
    per_client = g[["energy_j", "compute_energy_j", "radio_energy_j"]].sum(min_count=1).join(
        g["nan"].agg(rounds="size", nan_rounds="sum")).reset_index()
    out = per_client.groupby("who", sort=True).agg(
        clients=("client", "size"), energy_j=("energy_j", "mean"), compute_energy_j=("compute_energy_j", "mean"),
        radio_energy_j=("radio_energy_j", "mean"), rounds=("rounds", "sum"), nan_rounds=("nan_rounds", "sum"))
    if not by_class:
        out = out.reindex(sorted(out.index, key=lambda w: int(w.split()[0][1:])))
    return out.reset_index()[ENERGY_COLUMNS]


def energy_gaps(client_rounds: pd.DataFrame) -> str:
    """A sentence on the client-rounds without an energy figure and why (energy_note), or ''."""
    if "energy_j" not in client_rounds:
        return "client_rounds.csv has no energy columns (a run from before energy was recorded)."
    missing = client_rounds[client_rounds["energy_j"].isna()]
    if missing.empty:
        return ""
    notes = missing["energy_note"].dropna().astype(str) if "energy_note" in missing else pd.Series(dtype=str)
    notes = notes[notes != ""].value_counts()
    why = "; ".join(f"{note} ({n:,})" for note, n in notes.head(3).items())
    return (f"{len(missing):,} of {len(client_rounds):,} client-rounds have no energy figure (NaN), left out of "
            f"the sums" + (f": {why}" if why else "") + ".")
