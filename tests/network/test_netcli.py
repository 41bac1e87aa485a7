"""``testbed net``: JSON answers on stdout, bad input named on stderr with exit 2."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from network import load_5g_throughput
from testbed.cli import net as netcli

REPO = Path(__file__).resolve().parents[2]
TPUT_CSV = REPO.parent / "shared" / "data" / "5g" / "5g_tput.csv"


def _net(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict, str]:
    code = netcli.main(["net", *argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out else {}), err


def test_constant_rate_transfer_prints_the_flow(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _net(
        capsys, "transfer", "--bytes", "1000000", "--rate-mbps", "10", "--rtt-ms", "40"
    )

    assert (code, err) == (0, "")
    assert out == {
        "flows": [
            {"start_s": 0.0, "end_s": 0.84192, "payload_bytes": 1_000_000, "wire_bytes": 1_027_400}
        ]
    }  # 0.02 s one-way + 1_027_400 B * 8 / 10 Mbit/s


def test_trace_transfer_ends_on_its_last_opportunity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "cell.down"
    trace.write_text("".join(f"{ms}\n" for ms in (3, 3, 7, 8, 20)))
    # Opportunities after 1.004 s (lap 50 starts at 1000 ms): 1007, 1008, 1020, 1023, 1023, ...
    code, out, _ = _net(
        capsys, "transfer", "--bytes", "6000", "--trace", str(trace), "--overhead", "none",
        "--start-s", "1.004",
    )

    assert code == 0
    assert out["flows"][0] == {
        "start_s": 1.004, "end_s": 1.023, "payload_bytes": 6000, "wire_bytes": 6000,
    }
    assert math.ceil(6000 / 1500) == 4


def test_k_flows_share_the_link(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _net(
        capsys, "transfer", "--bytes", "125000", "--rate-mbps", "1", "--flows", "4",
        "--overhead", "none", "--start-s", "2",
    )

    assert code == 0
    assert [f["end_s"] for f in out["flows"]] == [6.0] * 4
    assert {f["start_s"] for f in out["flows"]} == {2.0}


def test_outage_and_loss_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _net(
        capsys, "transfer", "--bytes", "1000000", "--rate-mbps", "8", "--overhead", "none",
        "--loss", "0.2", "--outage", "0.5:1.0",
    )

    assert code == 0
    assert out["flows"][0]["end_s"] == pytest.approx(1.75)  # 1.25 s of serving + 0.5 s down


def test_failed_transfer_still_prints_json_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _net(
        capsys, "transfer", "--bytes", "1000000", "--rate-mbps", "8", "--outage", "0.5:1.0",
        "--on-outage", "fail",
    )

    assert code == 1
    assert out["flows"][0]["end_s"] == 0.5
    assert "flow 0: failed at 0.5 s" in err


@pytest.mark.skipif(not TPUT_CSV.exists(), reason="5Gophers data not present")
def test_5g_run_as_the_link(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _net(
        capsys, "transfer", "--bytes", "20000000", "--tput-csv", str(TPUT_CSV), "--carrier",
        "VERIZON", "--run", "81", "--overhead", "none", "--rtt-ms", "50",
    )

    trace = load_5g_throughput(TPUT_CSV, carrier="VERIZON", run=81)
    assert code == 0
    assert out["flows"][0]["end_s"] == pytest.approx(trace.time_for_bytes(2e7) + 0.025, abs=1e-9)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--bytes", "-1", "--rate-mbps", "1"], "--bytes"),
        (["--bytes", "10", "--rate-mbps", "0"], "--rate-mbps"),
        (["--bytes", "10", "--rate-mbps", "1", "--flows", "0"], "--flows"),
        (["--bytes", "10", "--rate-mbps", "1", "--rtt-ms", "-5"], "--rtt-ms"),
        (["--bytes", "10", "--rate-mbps", "1", "--loss", "1"], "--loss"),
        (["--bytes", "10", "--rate-mbps", "1", "--outage", "3"], "--outage"),
        (["--bytes", "10", "--rate-mbps", "1", "--outage", "3:2"], "--outage"),
        (["--bytes", "10", "--trace", "/no/such/trace"], "/no/such/trace"),
        (["--bytes", "10", "--rate-mbps", "1", "--carrier", "VERIZON"], "--carrier"),
    ],
)
def test_bad_input_names_the_flag_and_exits_2(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _net(capsys, "transfer", *argv)

    assert (code, out) == (2, {})
    assert named in err


def test_malformed_trace_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "bad.up"
    trace.write_text("5\n4\n")

    code, _, err = _net(capsys, "transfer", "--bytes", "10", "--trace", str(trace))

    assert code == 2
    assert f"{trace}: line 2: timestamp 4 decreases" in err


def test_argparse_errors_exit_2_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        netcli.main(["net", "transfer", "--bytes", "ten", "--rate-mbps", "1"])

    assert caught.value.code == 2
    assert "--bytes" in capsys.readouterr().err


def test_trace_subcommand_writes_a_seeded_mahimahi_trace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["net", "trace", "--rates-mbps", "1.2,12", "--duration-s", "5", "--seed", "4"]

    assert netcli.main(argv) == 0
    first = capsys.readouterr().out
    assert netcli.main(argv) == 0
    stamps = [int(line) for line in first.splitlines()]

    assert capsys.readouterr().out == first
    assert stamps == sorted(stamps)
    assert stamps[-1] == 5000


def test_module_runs_as_a_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "testbed.cli.net", "net", "transfer", "--bytes", "1500",
         "--rate-mbps", "12", "--overhead", "none"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["flows"][0]["end_s"] == 0.001
