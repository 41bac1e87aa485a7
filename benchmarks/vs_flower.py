"""The same federated workload in Flower's simulation and in the testbed, measured alike.

SmolLM2-135M, LoRA r=8 (alpha 16) on q_proj/v_proj, BBC News at 96 tokens, 4 clients with a
Dirichlet(0.5) partition (seed 0), 8 local AdamW steps (lr 5e-4) of batch 8, 3 rounds of
FedAvg weighted by samples, the global adapter evaluated on 250 held-out articles after each
round (benchmarks/vs_flower.yaml). Both systems train and evaluate with the testbed's own
functions (frameworks.fedllm.train_local, testbed.ml.task.evaluate), so the comparison is of the
systems around the model compute, not of the compute.

Flower runs from its own virtual environment, .venv-flower (created once: requirements.txt
less its rich pin, the `flower` extra of pyproject.toml, then this project with --no-deps),
by benchmarks/flower_workload.py. Systems run one after another as fresh subprocesses, each
in its own session; every 0.2 s a sampler sums PSS over every process of the run (its session,
and every process whose environment carries the run's marker: Ray's daemons and workers).
Definitions of the columns: benchmarks/README.md.

    python benchmarks/vs_flower.py                    # flower fp32, testbed bf16, testbed fp32
    python benchmarks/vs_flower.py --quick            # tiny model, 1 round: a smoke test
    python benchmarks/vs_flower.py --systems flower-fp32,testbed-fp32,plain-fp32 --repeats 2
    python benchmarks/vs_flower.py --setup-only       # just build .venv-flower
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from flower_workload import QUICK_SETS  # noqa: E402  (--quick's scenario overrides, shared)

BENCH = REPO / "benchmarks"
FLOWER_VENV = REPO / ".venv-flower"
FLOWER_PY = FLOWER_VENV / "bin" / "python"
STAMP = FLOWER_VENV / ".installed"
SCENARIO = BENCH / "vs_flower.yaml"
# requirements.txt pins that the Flower extra overrides (flwr 1.42 requires rich>=14,<15).
DROPPED_PINS = ("rich",)
SAMPLE_S = 0.2  # RSS of the run's processes, every this often
PSS_EVERY_S = 5.0  # PSS at least this often...
PSS_NEW_HIGH = 0.005  # ...and whenever the tree's RSS passes its peak by this share,
PSS_MIN_GAP_S = 0.5  # but not more often than this
DEFAULT_SYSTEMS = ("flower-fp32", "testbed-bf16", "testbed-fp32")


# --------------------------------------------------------------------------- the Flower venv

def flower_requirements() -> list[str]:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return list(extras["flower"])


def _filtered_requirements() -> str:
    keep = []
    for line in (REPO / "requirements.txt").read_text().splitlines():
        name = line.split("#")[0].strip().split("==")[0].split(">")[0].split("<")[0].strip().lower()
        if name and name in DROPPED_PINS:
            continue
        keep.append(line)
    return "\n".join(keep) + "\n"


def _install_key() -> str:
    h = hashlib.sha256()
    h.update(_filtered_requirements().encode())
    h.update("\n".join(flower_requirements()).encode())
    return h.hexdigest()


def ensure_flower_venv(log=print) -> None:
    """Create .venv-flower once; the stamp holds a hash of what it was built from."""
    key = _install_key()
    if FLOWER_PY.exists() and STAMP.exists() and STAMP.read_text().strip() == key:
        return
    log(f"building {FLOWER_VENV.name} (once; several minutes) ...")
    STAMP.unlink(missing_ok=True)
    if not FLOWER_PY.exists():
        base = getattr(sys, "_base_executable", None) or "python3"
        subprocess.run([base, "-m", "venv", str(FLOWER_VENV)], check=True)
    reqs = FLOWER_VENV / "requirements-flower.txt"
    reqs.write_text(_filtered_requirements())
    pip = [str(FLOWER_PY), "-m", "pip", "install", "--quiet"]
    install_log = FLOWER_VENV / "install.log"
    with install_log.open("w") as fh:
        def step(cmd: list[str]) -> None:
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
            if subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT).returncode != 0:
                fh.close()
                tail = install_log.read_text().splitlines()[-15:]
                raise SystemExit(f"{FLOWER_VENV.name}: install failed (full log: {install_log}):\n" + "\n".join(tail))

        step([*pip, "--upgrade", "pip"])
        # torch stays pinned in the same install as transformers/peft and flwr (an unpinned
        # resolve would pull a CUDA build of torch).
        step([*pip, "-r", str(reqs), *flower_requirements()])
        step([*pip, "--no-deps", "-e", str(REPO)])
    freeze = subprocess.run([str(FLOWER_PY), "-m", "pip", "freeze", "--exclude-editable"],
                            check=True, capture_output=True, text=True).stdout
    (FLOWER_VENV / "freeze.txt").write_text(freeze)
    STAMP.write_text(key + "\n")
    log(f"{FLOWER_VENV.name} ready")


def flower_versions() -> dict[str, str]:
    out = subprocess.run(
        [str(FLOWER_PY), "-c", "import importlib.metadata as m, json; "
         "print(json.dumps({p: m.version(p) for p in ('flwr', 'ray', 'torch', 'transformers', 'peft')}))"],
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


# --------------------------------------------------------------------------- measurement

class TreeSampler(threading.Thread):
    """Every SAMPLE_S, the summed PSS (RSS where PSS can't be read) and the count of every
    process of one run: those in its session, and those whose environment carries the run's
    marker (which every descendant inherits, also one that starts its own session or is
    reparented to init, as Ray's daemons and workers are)."""

    def __init__(self, root_pid: int, marker: str) -> None:
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.root_pid, self.sid, self.marker = root_pid, os.getsid(root_pid), marker
        self._members: dict[int, object] = {}  # pid -> psutil.Process of the run
        self._others: set[int] = set()  # pids seen and found not to belong to the run
        self._halt = threading.Event()
        self.peak_pss = 0
        self.peak_rss = 0
        self.max_procs = 0
        self.rss_fallback = False
        self.names: set[str] = set()
        self.trace: list[tuple] = []  # (unix time, processes, pss bytes or "" where not read, rss bytes)
        self._pss_at = -float("inf")  # monotonic time of the last PSS reading
        self.cpu_s = 0.0  # CPU seconds the sampler itself used (it shares the host with the run)

    def _belongs(self, pid: int) -> bool:
        if pid == self.root_pid:
            return True
        try:
            if os.getsid(pid) == self.sid:
                return True
            with open(f"/proc/{pid}/environ", "rb") as fh:
                return self.marker.encode() in fh.read()
        except OSError:
            return False

    def members(self) -> list:
        psutil = self.psutil
        for pid in psutil.pids():
            if pid in self._others:
                continue
            proc = self._members.get(pid)
            if proc is not None and not proc.is_running():  # gone (its pid reused): decide again
                del self._members[pid]
                proc = None
            if proc is None:
                if self._belongs(pid):
                    try:
                        self._members[pid] = psutil.Process(pid)
                    except psutil.Error:
                        pass
                else:
                    self._others.add(pid)
        return [p for p in self._members.values() if p.is_running()]

    def sample(self) -> None:
        """RSS of every member (cheap: statm) each tick; PSS (smaps_rollup: tens of ms for a
        process mapping GBs, and it holds the process's mmap lock) only when the tree's RSS
        reaches a new high, or PSS_EVERY_S after the last reading, since PSS moves with RSS."""
        psutil = self.psutil
        procs, rss = [], 0
        for proc in self.members():
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                rss += proc.memory_info().rss
                procs.append(proc)
                if len(self.names) < 64:
                    self.names.add(proc.name())
            except psutil.Error:
                continue
        now = time.monotonic()
        new_high = rss > self.peak_rss * (1 + PSS_NEW_HIGH)
        pss = None
        if (new_high and now - self._pss_at >= PSS_MIN_GAP_S) or now - self._pss_at >= PSS_EVERY_S:
            pss, self._pss_at = self._tree_pss(procs), now
            self.peak_pss = max(self.peak_pss, pss)
        self.peak_rss = max(self.peak_rss, rss)
        self.max_procs = max(self.max_procs, len(procs))
        self.trace.append((time.time(), len(procs), pss if pss is not None else "", rss))

    def _tree_pss(self, procs: list) -> int:
        psutil = self.psutil
        total = 0
        for proc in procs:
            try:
                total += _pss_rss(proc)[0]
            except (psutil.AccessDenied, AttributeError):
                total += proc.memory_info().rss
                self.rss_fallback = True
            except psutil.Error:
                continue
        return total

    def run(self) -> None:
        t0 = time.thread_time()
        while not self._halt.is_set():
            self.sample()
            self.cpu_s = time.thread_time() - t0
            self._halt.wait(SAMPLE_S)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def leftovers(self) -> list:
        return [p for p in self.members() if p.pid != self.root_pid]


def _pss_rss(proc) -> tuple[int, int]:
    """(PSS, RSS) bytes of a process: /proc/PID/smaps_rollup where the kernel has it (one
    pre-summed read, cheap enough to sample a dozen large processes five times a second
    without slowing the run measured), else psutil's full smaps walk."""
    try:
        text = Path(f"/proc/{proc.pid}/smaps_rollup").read_text()
    except FileNotFoundError:
        info = proc.memory_full_info()
        return info.pss, info.rss
    except OSError as e:  # gone, or not ours to read
        raise proc_error(proc) from e
    fields = {}
    for line in text.splitlines()[1:]:
        key, _, value = line.partition(":")
        if key in ("Pss", "Rss"):
            fields[key] = int(value.split()[0]) * 1024  # kB
    return fields["Pss"], fields["Rss"]


def proc_error(proc):
    import psutil

    return psutil.NoSuchProcess(proc.pid)


def interval_union_s(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of the union of [t0, t1) intervals, clipped to [lo, hi]."""
    spans = sorted((max(t0, lo), min(t1, hi)) for t0, t1 in intervals)
    total, cur0, cur1 = 0.0, None, None
    for t0, t1 in spans:
        if t1 <= t0:
            continue
        if cur1 is None or t0 > cur1:
            if cur1 is not None:
                total += cur1 - cur0
            cur0, cur1 = t0, t1
        else:
            cur1 = max(cur1, t1)
    if cur1 is not None:
        total += cur1 - cur0
    return total


@dataclass
class Row:
    system: str  # flower | testbed | plain
    precision: str
    repeat: int
    host_s: float = float("nan")
    peak_pss_mb: float = float("nan")
    peak_rss_mb: float = float("nan")
    processes: int = 0
    accuracy: list[float] = field(default_factory=list)
    compute_s: float = float("nan")
    outside_share: float = float("nan")
    rss_fallback: bool = False
    sampler_cpu_s: float = float("nan")  # CPU the memory sampler took from the host during the run
    status: str = "ok"
    detail: str = ""
    run_dir: str = ""
    t_start_unix: float = 0.0
    t_end_unix: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.system}-{self.precision}"


def run_measured(cmd: list[str], run_dir: Path, row: Row, timeout_s: float) -> int:
    """Run `cmd` in its own session with the sampler on; fills host_s, memory and processes."""
    import psutil

    marker = f"VS_FLOWER_RUN={run_dir.name}-{os.getpid()}-{time.time_ns()}"
    env = dict(os.environ, HF_HUB_OFFLINE="1", VS_FLOWER_RUN=marker.partition("=")[2],
               RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0")
    log = (run_dir / "output.log").open("wb")
    t0, w0 = time.time(), time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    sampler = TreeSampler(proc.pid, marker)
    sampler.start()
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
        row.status, row.detail = "timeout", f"killed after {timeout_s:.0f} s"
    except BaseException:  # Ctrl-C reaches only this process (the run has its own session): end the run
        for p in sampler.members():
            try:
                p.kill()
            except psutil.Error:
                pass
        sampler.stop()
        log.close()
        raise
    row.host_s, row.t_start_unix, row.t_end_unix = time.perf_counter() - w0, t0, time.time()
    # Processes of the run that outlive its main process (Ray daemons shutting down): sampled
    # until they exit (10 s at most), then ended; they count for memory, not for host_s.
    deadline = time.time() + 10
    while sampler.leftovers() and time.time() < deadline:
        time.sleep(SAMPLE_S)
    sampler.stop()
    left = sampler.leftovers()
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    log.close()
    row.peak_pss_mb, row.peak_rss_mb = sampler.peak_pss / 2**20, sampler.peak_rss / 2**20
    row.processes, row.rss_fallback = sampler.max_procs, sampler.rss_fallback
    row.sampler_cpu_s = sampler.cpu_s
    with (run_dir / "memory.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["t_unix", "processes", "pss_bytes", "rss_bytes"])
        w.writerows(sampler.trace)
    (run_dir / "processes.txt").write_text("\n".join(sorted(sampler.names)) + "\n"
                                           + (f"# ended {len(left)} leftover processes\n" if left else ""))
    if rc != 0 and row.status == "ok":
        row.status, row.detail = "failed", f"exit {rc}, see {run_dir / 'output.log'}"
    return rc


def _set_compute(row: Row, intervals: list[tuple[float, float]]) -> None:
    row.compute_s = interval_union_s(intervals, row.t_start_unix, row.t_end_unix)
    row.outside_share = 1.0 - row.compute_s / row.host_s


def run_workload(system: str, precision: str, repeat: int, args, out: Path) -> Row:
    """flower / plain: benchmarks/flower_workload.py (in .venv-flower / .venv)."""
    row = Row(system, precision, repeat)
    run_dir = out / "runs" / f"{row.label}-{repeat}"
    run_dir.mkdir(parents=True, exist_ok=True)
    row.run_dir = str(run_dir)
    result = run_dir / "result.json"
    result.unlink(missing_ok=True)
    python = FLOWER_PY if system == "flower" else Path(sys.executable)
    cmd = [str(python), str(BENCH / "flower_workload.py"), "--system", system, "--precision", precision,
           "--num-cpus", str(args.num_cpus), "--out", str(result)]
    if args.quick:
        cmd.append("--quick")
    if run_measured(cmd, run_dir, row, args.timeout) != 0 or not result.exists():
        return row
    res = json.loads(result.read_text())
    row.accuracy = res["accuracy"]
    _set_compute(row, [(iv[2], iv[3]) for iv in res["intervals"]])
    return row


def run_testbed(precision: str, repeat: int, args, out: Path) -> Row:
    import pandas as pd

    row = Row("testbed", precision, repeat)
    run_dir = out / "runs" / f"{row.label}-{repeat}"
    run_dir.mkdir(parents=True, exist_ok=True)
    row.run_dir = str(run_dir)
    tb_out = run_dir / "testbed"
    testbed = Path(sys.executable).with_name("testbed")
    launcher = ([str(testbed)] if testbed.exists()
                else [sys.executable, "-c", "import sys; from testbed.cli.main import main; sys.exit(main())"])
    cmd = [*launcher, "run", str(args.testbed_scenario), "--out", str(tb_out)]
    if precision != "auto":  # auto: the scenario's own setting
        cmd += ["--set", f"framework.precision={precision}"]
    for s in (QUICK_SETS if args.quick else ()):
        cmd += ["--set", s]
    if run_measured(cmd, run_dir, row, args.timeout) != 0:
        return row
    rounds = pd.read_csv(tb_out / "rounds.csv")
    rounds = rounds[(rounds["round"] >= 1) & rounds["accuracy"].notna()].sort_values("round")
    row.accuracy = [float(a) for a in rounds["accuracy"]]
    tl = pd.read_csv(tb_out / "host_timeline.csv")  # every interval of model compute on the host
    _set_compute(row, list(zip(tl["t0_unix"].astype(float), tl["t1_unix"].astype(float), strict=True)))
    return row


# --------------------------------------------------------------------------- report

def _flower_reference(row: Row, rows: list[Row]) -> list[Row]:
    flower = [r for r in rows if r.system == "flower" and r.status == "ok"]
    same = [r for r in flower if r.precision == row.precision]
    return same or flower


def ratios(row: Row, rows: list[Row]) -> tuple[float, float]:
    """(host s, peak PSS) of `row` over the mean of the Flower runs (same precision if any)."""
    ref = _flower_reference(row, rows)
    if row.system == "flower" or not ref or row.status != "ok":
        return float("nan"), float("nan")
    host = sum(r.host_s for r in ref) / len(ref)
    mem = sum(r.peak_pss_mb for r in ref) / len(ref)
    return row.host_s / host, row.peak_pss_mb / mem


def _fmt(v: float, f: str) -> str:
    return "-" if v != v else format(v, f)


def print_table(rows: list[Row], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    n_rounds = max((len(r.accuracy) for r in rows), default=0)
    mem_col = "peak RSS MB" if any(r.rss_fallback for r in rows) else "peak PSS MB"
    table = Table(title=title)
    for col in ("system", "run", "host s", mem_col, "procs", *[f"acc r{i + 1}" for i in range(n_rounds)],
                "outside compute", "host / Flower", "memory / Flower", "sampler CPU s", "status"):
        table.add_column(col, justify="left" if col in ("system", "status") else "right")
    for r in rows:
        host_ratio, mem_ratio = ratios(r, rows)
        accs = [_fmt(r.accuracy[i], ".3f") if i < len(r.accuracy) else "-" for i in range(n_rounds)]
        outside = _fmt(100 * r.outside_share, ".1f") + "%"
        table.add_row(r.label, str(r.repeat), _fmt(r.host_s, ".1f"), _fmt(r.peak_pss_mb, ".0f"), str(r.processes),
                      *accs, outside if r.outside_share == r.outside_share else "-",
                      _fmt(host_ratio, ".2f"), _fmt(mem_ratio, ".2f"), _fmt(r.sampler_cpu_s, ".1f"),
                      r.status if r.status == "ok" else f"{r.status}: {r.detail}")
    Console(width=160).print(table)


def median_rows(rows: list[Row]) -> list[Row]:
    """One row per system (label): the median of its completed runs (accuracy of the first)."""
    from statistics import median

    out = []
    for label in dict.fromkeys(r.label for r in rows):
        ok = [r for r in rows if r.label == label and r.status == "ok"]
        if not ok:
            continue
        m = Row(ok[0].system, ok[0].precision, len(ok), accuracy=ok[0].accuracy,
                rss_fallback=any(r.rss_fallback for r in ok))
        for name in ("host_s", "peak_pss_mb", "peak_rss_mb", "compute_s", "outside_share", "sampler_cpu_s"):
            setattr(m, name, median(getattr(r, name) for r in ok))
        m.processes = max(r.processes for r in ok)
        out.append(m)
    return out


def write_rows(rows: list[Row], out: Path, meta: dict) -> None:
    records = []
    for r in rows:
        host_ratio, mem_ratio = ratios(r, rows)
        records.append({**asdict(r), "label": r.label, "host_ratio_vs_flower": host_ratio,
                        "memory_ratio_vs_flower": mem_ratio})
    (out / "vs_flower.json").write_text(json.dumps({"meta": meta, "rows": records}, indent=1))
    cols = ["label", "system", "precision", "repeat", "host_s", "peak_pss_mb", "peak_rss_mb", "processes",
            "accuracy", "compute_s", "outside_share", "host_ratio_vs_flower",
            "memory_ratio_vs_flower", "rss_fallback", "status", "detail", "run_dir"]
    with (out / "vs_flower.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for rec in records:
            w.writerow({**rec, "accuracy": " ".join(f"{a:.4f}" for a in rec["accuracy"])})


# --------------------------------------------------------------------------- main

def parse_systems(text: str) -> list[tuple[str, str]]:
    out = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        system, _, precision = item.partition("-")
        precision = precision or "fp32"
        if system not in ("flower", "testbed", "plain") or precision not in ("fp32", "bf16", "auto") or (
                precision == "auto" and system != "testbed"):
            raise SystemExit(f"--systems: '{item}' is not one of flower|testbed|plain[-fp32|-bf16] or testbed-auto")
        out.append((system, precision))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                    help="comma-separated runs, in order: flower|testbed|plain with -fp32 or -bf16 "
                         f"(default {','.join(DEFAULT_SYSTEMS)})")
    ap.add_argument("--repeats", type=int, default=1, help="times the whole --systems sequence runs (alternating)")
    ap.add_argument("--num-cpus", type=int, default=2, help="Flower: CPUs per client (Ray client_resources)")
    ap.add_argument("--quick", action="store_true", help="tiny model, 1 round of 2 steps, 16 test articles")
    ap.add_argument("--out", default=None,
                    help="results folder (default runs/vs_flower; with --quick runs/vs_flower/quick)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds before a run is killed")
    ap.add_argument("--setup-only", action="store_true", help="build .venv-flower and exit")
    ap.add_argument("--testbed-scenario", type=Path, default=SCENARIO,
                    help="the testbed systems' scenario (default: this workload); e.g. scenarios/quickstart.yaml "
                         "with --systems testbed-auto to measure the quickstart alike")
    args = ap.parse_args()
    systems = parse_systems(args.systems)

    if any(s == "flower" for s, _ in systems) or args.setup_only:
        ensure_flower_venv(log=lambda m: print(m, flush=True))
    if args.setup_only:
        print(json.dumps(flower_versions()))
        return 0
    out = Path(args.out) if args.out else REPO / "runs" / "vs_flower" / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    meta = {"systems": args.systems, "repeats": args.repeats, "num_cpus": args.num_cpus, "quick": args.quick,
            "host_cpus": os.cpu_count(), "scenario": str(args.testbed_scenario),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sample_s": SAMPLE_S, "pss_every_s": PSS_EVERY_S,
            "pss_new_high": PSS_NEW_HIGH}
    if any(s == "flower" for s, _ in systems):
        meta["flower_versions"] = flower_versions()
        freeze = FLOWER_VENV / "freeze.txt"
        meta["flower_env"] = freeze.read_text().splitlines() if freeze.exists() else []

    rows: list[Row] = []
    for rep in range(1, args.repeats + 1):
        for system, precision in systems:
            print(f"[{rep}/{args.repeats}] {system}-{precision} ...", flush=True)
            row = (run_testbed(precision, rep, args, out) if system == "testbed"
                   else run_workload(system, precision, rep, args, out))
            rows.append(row)
            acc = " ".join(f"{a:.3f}" for a in row.accuracy)
            print(f"    {row.status}: {row.host_s:.1f} s, peak {row.peak_pss_mb:.0f} MB over {row.processes} "
                  f"processes, accuracy {acc or '-'}, outside compute {100 * row.outside_share:.1f}%", flush=True)
            write_rows(rows, out, meta)
    title = "vs_flower" + (" --quick (tiny model, 1 round)" if args.quick else "") + \
        f": Flower num_cpus={args.num_cpus} per client, {os.cpu_count()} host CPUs"
    print_table(rows, title)
    if args.repeats > 1:
        print_table(median_rows(rows), title + f": median of {args.repeats} runs (run = runs counted)")
    if any(r.rss_fallback for r in rows):
        print("memory: PSS unreadable for some processes; their RSS was counted instead")
    print(f"rows: {out / 'vs_flower.csv'}, {out / 'vs_flower.json'}")
    return 0 if all(r.status == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
