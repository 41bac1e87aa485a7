"""Capacity traces: mahimahi parsing and replay arithmetic, 5Gophers rates, synthetic traces."""

from pathlib import Path

import pytest

from network import (
    OpportunityTrace,
    RateTrace,
    TraceError,
    load_5g_throughput,
    load_mahimahi,
    markov_rate_trace,
    parse_mahimahi,
    synthetic_trace,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
MAHIMAHI = DATA / "traces" / "mahimahi"
TPUT_CSV = DATA / "5g" / "5g_tput.csv"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- mahimahi files -----------------------------------------------------------------------
def test_mahimahi_file_with_repeated_timestamps(tmp_path: Path) -> None:
    path = _write(tmp_path, "cell.up", "0\n2\n2\n2\n5\n")

    trace = load_mahimahi(path)

    assert trace.timestamps_ms == (0, 2, 2, 2, 5)
    assert trace.period_ms == 5
    assert trace.mean_bytes_per_s == 5 * 1500 / 0.005  # 1.5 MB/s
    assert trace.mean_rate_mbps == pytest.approx(12.0)


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("1\n2\n1\n", 3, "timestamp 1 decreases"),
        ("1\n-4\n", 2, "negative timestamp -4"),
        ("3\n4.5\n", 2, "not an integer ms timestamp: '4.5'"),
        ("3\nabc\n6\n", 2, "not an integer ms timestamp: 'abc'"),
        ("3\n\n6\n", 2, "empty line"),
        ("", 1, "empty trace"),
        ("0\n0\n", 2, "trace must last > 0 ms"),
    ],
)
def test_malformed_mahimahi_names_file_and_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = _write(tmp_path, "bad.trace", text)

    with pytest.raises(TraceError) as caught:
        load_mahimahi(path)

    assert str(caught.value).startswith(f"{path}: line {line}: ")
    assert problem in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_missing_mahimahi_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="nope.trace: \\(file\\): cannot read trace: No such file"):
        load_mahimahi(tmp_path / "nope.trace")


def test_in_memory_trace_is_checked_too() -> None:
    with pytest.raises(TraceError, match="^<trace>:3: timestamp 3 is before 5$"):
        OpportunityTrace((1, 5, 3))


# -- replay arithmetic ----------------------------------------------------------------------
def test_opportunities_wrap_with_the_last_timestamp_as_period() -> None:
    # Opportunities at 0, 2, 2, 5 | 5, 7, 7, 10 | 10, 12, ... (the leading 0 meets the period end)
    trace = OpportunityTrace((0, 2, 2, 5))

    times_ms = [round(trace.opportunity_time_s(n) * 1000) for n in range(1, 11)]

    assert times_ms == [0, 2, 2, 5, 5, 7, 7, 10, 10, 12]
    assert [trace.opportunities_until(t_ms / 1000) for t_ms in (0, 1, 2, 5, 6, 7, 10)] == [
        1, 1, 3, 5, 5, 7, 9,
    ]


def test_served_bytes_count_opportunities_strictly_after_the_start() -> None:
    trace = OpportunityTrace((1, 2, 3, 4))

    assert trace.served_bytes(0.002, 0.004) == 2 * 1500  # the ones at 3 and 4 ms
    assert trace.time_to_serve(0.002, 1) == pytest.approx(0.003)
    assert trace.time_to_serve(0.002, 3001) == pytest.approx(0.005)  # wraps: 4 + 1


def test_rate_trace_integrates_and_inverts_with_wrap() -> None:
    trace = RateTrace((8.0, 0.0, 16.0), step_s=1.0)  # 1 MB, 0, 2 MB per second; period 3 s

    assert trace.mean_bytes_per_s == pytest.approx(1e6)
    assert trace.bytes_until(0.5) == pytest.approx(5e5)
    assert trace.bytes_until(1.7) == pytest.approx(1e6)
    assert trace.bytes_until(2.5) == pytest.approx(2e6)
    assert trace.bytes_until(3.5) == pytest.approx(3.5e6)
    assert trace.time_for_bytes(1e6) == pytest.approx(1.0)  # reached before the idle second
    assert trace.time_for_bytes(1.5e6) == pytest.approx(2.25)
    assert trace.time_to_serve(2.5, 2e6) == pytest.approx(3.0 + 1.0)


def test_rate_trace_as_opportunities_keeps_rate_and_period() -> None:
    trace = RateTrace((12.0,), step_s=1.0)  # 1.5 MB/s: one packet per ms

    opportunities = trace.to_opportunities()

    assert opportunities.timestamps_ms == tuple(range(1, 1001))


def test_rate_trace_rejects_all_zero_rates() -> None:
    with pytest.raises(TraceError, match="every rate is 0"):
        RateTrace((0.0, 0.0))


# -- synthetic traces -----------------------------------------------------------------------
def test_markov_trace_is_seeded_and_uses_its_states() -> None:
    def make(seed: int) -> RateTrace:
        return markov_rate_trace(rates_mbps=[1.0, 6.0, 24.0], duration_s=200, seed=seed)

    a, b, c = make(7), make(7), make(8)

    assert a.rates_mbps == b.rates_mbps
    assert a.rates_mbps != c.rates_mbps
    assert set(a.rates_mbps) == {1.0, 6.0, 24.0}
    stays = sum(x == y for x, y in zip(a.rates_mbps, a.rates_mbps[1:])) / 199
    assert stays == pytest.approx(0.9, abs=0.06)


def test_synthetic_trace_is_mahimahi_text_that_parses_back(tmp_path: Path) -> None:
    trace = synthetic_trace(rates_mbps=[2.0, 12.0], duration_s=20, seed=1)
    rates = markov_rate_trace(rates_mbps=[2.0, 12.0], duration_s=20, seed=1)
    path = tmp_path / "synthetic.up"

    trace.write(path)
    again = load_mahimahi(path)

    assert again.timestamps_ms == trace.timestamps_ms
    assert trace.period_ms == 20_000
    assert len(trace.timestamps_ms) == round(rates.mean_bytes_per_s * 20 / 1500)


def test_parse_mahimahi_reads_text() -> None:
    assert parse_mahimahi("4\n4\n9\n").timestamps_ms == (4, 4, 9)


# -- 5Gophers -------------------------------------------------------------------------------
HEADER = "protocol,carrier,num_tcp_conn,server_location,run_num,seq_num,throughput_mbps\n"


def test_5g_run_becomes_per_second_rates_with_gaps_filled(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "tput.csv",
        HEADER
        + "TCP,VERIZON,1,US-East,7,1,20.0\n"
        + "TCP,VERIZON,1,US-East,7,0,10.0\n"
        + "TCP,SPRINT,1,US-East,8,0,99.0\n"
        + "TCP,VERIZON,1,US-East,7,3,40.0\n",  # second 2 is missing: repeats 20
    )

    trace = load_5g_throughput(path, carrier="verizon", run=7)

    assert trace.rates_mbps == (10.0, 20.0, 20.0, 40.0)
    assert trace.step_s == 1.0
    assert trace.mean_rate_mbps == pytest.approx(22.5)


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ("TCP,VERIZON,1,US-East,7,x,1.0\n", ":2: run_num and seq_num must be ints"),
        ("TCP,VERIZON,1,US-East,7,0,-1\n", ":2: seq_num must be >= 0 and throughput_mbps >= 0"),
        ("TCP,VERIZON,1,US-East,7,0,1\nTCP,VERIZON,1,US-East,7,0,2\n", ":3: seq_num 0 repeats"),
        ("TCP,VERIZON\n", ":2: expected 7 fields"),
    ],
)
def test_malformed_5g_csv_names_file_and_line(tmp_path: Path, rows: str, problem: str) -> None:
    path = _write(tmp_path, "tput.csv", HEADER + rows)

    with pytest.raises(TraceError) as caught:
        load_5g_throughput(path, carrier="VERIZON", run=7)

    assert str(caught.value).startswith(str(path))
    assert problem in str(caught.value)


def test_5g_csv_without_columns_or_run_is_rejected(tmp_path: Path) -> None:
    no_column = _write(tmp_path, "a.csv", "carrier,run_num\nVERIZON,1\n")
    no_run = _write(tmp_path, "b.csv", HEADER + "TCP,VERIZON,1,US-East,7,0,1.0\n")

    with pytest.raises(TraceError, match=r"a\.csv:1: missing columns \['protocol'"):
        load_5g_throughput(no_column, carrier="VERIZON", run=1)
    no_run_message = r"b\.csv: no TCP samples .* run 9; runs of that carrier: \[7\]"
    with pytest.raises(TraceError, match=no_run_message):
        load_5g_throughput(no_run, carrier="VERIZON", run=9)


@pytest.mark.skipif(not TPUT_CSV.exists(), reason="5Gophers data not present")
def test_real_5g_run_has_its_mean_throughput() -> None:
    rows = [line.split(",") for line in TPUT_CSV.read_text().splitlines()[1:]]
    samples = [float(r[6]) for r in rows if r[1] == "VERIZON" and r[4] == "81"]

    trace = load_5g_throughput(TPUT_CSV, carrier="VERIZON", run=81)

    assert len(trace.rates_mbps) == len(samples) == 60
    assert trace.mean_rate_mbps == pytest.approx(sum(samples) / 60, rel=1e-12)


# -- the mahimahi traces shipped with the shared data ----------------------------------------
@pytest.mark.skipif(not MAHIMAHI.is_dir(), reason="mahimahi traces not present")
@pytest.mark.parametrize(
    ("name", "mean_mbps"),
    [
        ("ATT-LTE-driving.up", 0.83),
        ("ATT-LTE-driving-2016.up", 1.91),
        ("TMobile-UMTS-driving.down", 2.02),
        ("Verizon-LTE-short.down", 5.03),
    ],
)
def test_real_mahimahi_traces_have_their_published_mean_rate(name: str, mean_mbps: float) -> None:
    trace = load_mahimahi(MAHIMAHI / name)

    assert trace.mean_rate_mbps == pytest.approx(mean_mbps, abs=0.006)
