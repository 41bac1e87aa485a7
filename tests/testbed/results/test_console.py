"""The run console: outside a terminal, tables in full width whatever $COLUMNS says."""

from __future__ import annotations

import io

from testbed.results.console import RunConsole
from testbed.sim.session import final_table

ROWS = [{"round": 0, "sim_end_s": 0.0, "participants": 0, "failures": 0, "train_loss": None, "eval_loss": 2.3,
         "accuracy": 0.25, "bytes_up": 0},
        {"round": 1, "sim_end_s": 31.0, "participants": 2, "failures": 0, "train_loss": 1.2, "eval_loss": 2.1,
         "accuracy": 0.3, "bytes_up": 2e6}]


def _printed(console_kwargs: dict, env: dict) -> tuple[str, RunConsole]:
    out = io.StringIO()
    console = RunConsole(file=out, _environ=env, **console_kwargs)
    console.print(final_table(ROWS))
    console.print("after")
    return out.getvalue(), console


def test_a_table_outside_a_terminal_prints_in_full_width():
    text, console = _printed({}, {"COLUMNS": "80"})
    header = next(line for line in text.splitlines() if "round" in line and "up MB" in line)
    assert "accuracy" in header and "participants" in header and "…" not in text
    assert len(header) == 91  # the table's natural width, over the 80 columns
    assert console.width == 80  # other lines keep the console's width
    long_line = "run directory: /" + "x" * 100
    out = io.StringIO()
    RunConsole(file=out, _environ={"COLUMNS": "80"}).print(long_line)
    assert out.getvalue() == long_line + "\n"  # not broken at 80


def test_on_a_terminal_the_table_fits_the_terminal():
    text, _ = _printed({"force_terminal": True, "color_system": None}, {"COLUMNS": "80"})
    assert max(len(line) for line in text.splitlines()) == 80 and "accura…" in text
    out = io.StringIO()
    RunConsole(file=out, _environ={"COLUMNS": "80"}, force_terminal=True).print("x" * 100)
    assert out.getvalue() == "x" * 80 + "\n" + "x" * 20 + "\n"  # a terminal wraps as it would
