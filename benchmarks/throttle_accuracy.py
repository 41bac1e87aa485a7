"""How closely a cgroup CPU quota (CFS bandwidth control) gives a worker its target CPU share.

For each quota (default 0.1, 0.25, 0.5, 0.75, 1.0 cores, and 1.5 cores for a 2-process
worker where two cores are available) a child process running a fixed busy workload is put
into a fresh ``ClientCgroup`` with that quota and runs for ``--seconds`` of wall time.
Reported per quota:

    share       CPU seconds the worker used / wall seconds (target: the quota)
    throughput  work items per wall second / the same workload's unthrottled rate, measured
                in this run (target: quota / worker processes)
    nr_thr      periods in which the group was throttled (cpu.stat nr_throttled)

Every run is pinned with ``os.sched_setaffinity`` (one core for 1-process workers, two cores
for the 2-process one) so throttled and unthrottled runs are comparable. Then the median and
worst absolute error.

A short-job section runs fixed amounts of CPU work (0.2, 0.5, 1, 3 s, iteration counts
calibrated from the unthrottled rate) under one quota (0.25) and prints the wall time against
the ideal work / quota: CFS hands out quota in 100 ms periods, and a job's last period is only
partly spent, so short jobs finish early relative to the ideal (their share lands above the
quota, i.e. throttled time lands under target). That matters for the testbed's
``time: throttle`` mode, which measures device time under a quota.

    sudo .venv/bin/python benchmarks/throttle_accuracy.py [--workload python|torch]
        [--seconds 3] [--quotas 0.1,0.25,...] [--short-quota 0.25] [--short-work 0.2,0.5,1,3]
        [--no-short] [--json rows.json]

Workloads: ``python`` is a tight pure-Python arithmetic loop; ``torch`` is a loop of 1-thread
256x256 float32 matmuls. Without writable cgroups (not root, no cpu controller) it prints
``skipped: ...`` and exits 0. Every cgroup it makes is removed on exit, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed.host.cgroups import ClientCgroup, detect  # noqa: E402

# The child: prepares its workload, prints "ready", waits for "go" on stdin (so the parent
# can put it into the cgroup and pin it first), forks extra worker processes, runs either
# until a wall-clock deadline or for a fixed number of work items, and prints one JSON line.
CHILD = r"""
import json, os, sys, time
workload, mode, amount, workers = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
if workload == "torch":
    import torch
    torch.set_num_threads(1)
    def make():
        a = torch.randn(256, 256)
        def item():
            torch.mm(a, a)
        return item
else:
    def make():
        def item():
            x = 1
            for i in range(2000):
                x = (x * 31 + i) % 1000003
        return item
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
t0 = time.monotonic()

def work(share):
    item = make()
    item()  # first item (allocations) is counted too
    c0 = time.process_time()
    n = 1
    if mode == "wall":
        deadline = t0 + amount
        while True:
            for _ in range(8):
                item()
            n += 8
            if time.monotonic() >= deadline:
                break
    else:
        for _ in range(int(share) - 1):
            item()
        n = int(share)
    return n, time.process_time() - c0, time.monotonic()

pipes = []
for k in range(workers - 1):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        n, cpu, t1 = work(amount / workers)
        os.write(w, json.dumps([n, cpu, t1]).encode())
        os._exit(0)
    os.close(w)
    pipes.append((pid, r))
results = [work(amount / workers)]
for pid, r in pipes:
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.waitpid(pid, 0)
    results.append(json.loads(data))
t1 = max(r[2] for r in results)
print(json.dumps({"items": sum(r[0] for r in results), "cpu_s": sum(r[1] for r in results),
                  "wall_s": t1 - t0}))
sys.stdout.flush()
os._exit(0)  # skip interpreter teardown (slow under a small quota with torch loaded)
"""

_live: list[tuple[subprocess.Popen, ClientCgroup | None]] = []  # for cleanup on any exit


@dataclass
class Run:
    items: int
    cpu_s: float
    wall_s: float
    nr_periods: int = 0
    nr_throttled: int = 0
    throttled_s: float = 0.0


def _cpu_stat(cg: ClientCgroup) -> dict[str, int]:
    for group in cg.paths:
        f = group / "cpu.stat"
        if f.exists():
            out = {}
            for line in f.read_text().splitlines():
                key, _, value = line.partition(" ")
                if value.strip().isdigit():
                    out[key] = int(value)
            return out
    return {}


def run_child(
    workload: str, mode: str, amount: float, workers: int, cores: set[int], quota: float | None,
    name: str,
) -> Run:
    """One child run: ``mode`` "wall" (amount = seconds) or "items" (amount = work items)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, workload, mode, repr(amount), str(workers)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    cg = ClientCgroup(name, memory_limit_bytes=None, cpu_quota_cores=quota) if quota else None
    _live.append((proc, cg))
    try:
        assert proc.stdout is not None and proc.stdin is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"child failed to start (exit {proc.wait()})")
        os.sched_setaffinity(proc.pid, cores)
        if cg is not None:
            cg.create()
            cg.add(proc.pid)
            time.sleep(0.25)  # start on a fresh period's full quota, like a newly placed client
        proc.stdin.write("go\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if proc.wait() != 0 or not line:
            raise RuntimeError(f"child exited {proc.returncode} without a result")
        data = json.loads(line)
        run = Run(data["items"], data["cpu_s"], data["wall_s"])
        if cg is not None:
            stat = _cpu_stat(cg)
            run.nr_periods = stat.get("nr_periods", 0)
            run.nr_throttled = stat.get("nr_throttled", 0)
            run.throttled_s = stat.get("throttled_time", stat.get("throttled_usec", 0) * 1000) / 1e9
        return run
    finally:
        _cleanup(proc, cg)


def _cleanup(proc: subprocess.Popen, cg: ClientCgroup | None) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if cg is not None:
        cg.remove()
    if (proc, cg) in _live:
        _live.remove((proc, cg))


def _pct(achieved: float, target: float) -> float:
    return (achieved / target - 1) * 100


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["python", "torch"], default="python")
    ap.add_argument("--seconds", type=float, default=3.0, help="wall time per quota run")
    ap.add_argument("--quotas", default="0.1,0.25,0.5,0.75,1.0",
                    help="1-process quotas; 1.5 (2 processes) is added where 2 cores are free")
    ap.add_argument("--short-quota", type=float, default=0.25)
    ap.add_argument("--short-work", default="0.2,0.5,1,3", help="CPU seconds per short job")
    ap.add_argument("--short-repeats", type=int, default=3, help="runs of each job <= 1 s")
    ap.add_argument("--no-short", action="store_true", help="skip the short-job section")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()

    support = detect()
    if not support.cpu_writable:
        print(f"skipped: cannot make CPU-quota cgroups: {support.reason}")
        return 0

    allowed = sorted(os.sched_getaffinity(0))
    one = {allowed[-1]}
    two = set(allowed[-2:]) if len(allowed) >= 2 else None
    cases: list[tuple[float, int]] = [(float(q), 1) for q in args.quotas.split(",") if q.strip()]
    if two is not None:
        cases.append((1.5, 2))
    tag = f"thr-{os.getpid()}"
    print(f"cgroup v{support.version}, workload {args.workload}, {args.seconds:g} s per run, "
          f"cores {sorted(one)} (1 process) / {sorted(two) if two else '-'} (2 processes)")

    def unthrottled(workers: int, seconds: float) -> Run:
        return run_child(args.workload, "wall", seconds, workers, one if workers == 1 else two,
                         None, f"{tag}-base{workers}")

    # The host's speed drifts by several % between runs (VM, frequency), so each quota run is
    # compared with unthrottled runs of half its length just before and after it.
    base_rates: dict[int, list[float]] = {}  # workers -> every unthrottled items/s seen
    base_cpu_rate: list[float] = []  # 1 process: items per CPU second, for the short jobs
    rows = []
    header = (f"{'quota':>6} {'procs':>5} {'share':>7} {'err%':>7} {'thruput':>8} {'target':>7} "
              f"{'err%':>7} {'nr_thr':>7} {'periods':>7} {'thr_s':>6}")
    print("\n" + header)
    for quota, workers in cases:
        before = unthrottled(workers, args.seconds / 2)
        r = run_child(args.workload, "wall", args.seconds, workers, one if workers == 1 else two,
                      quota, f"{tag}-q{quota}")
        after = unthrottled(workers, args.seconds / 2)
        rates = [b.items / b.wall_s for b in (before, after)]
        base_rates.setdefault(workers, []).extend(rates)
        if workers == 1:
            base_cpu_rate.extend(b.items / b.cpu_s for b in (before, after))
        share = r.cpu_s / r.wall_s
        ratio = (r.items / r.wall_s) / statistics.mean(rates)
        target_ratio = min(quota / workers, 1.0)
        row = dict(quota=quota, workers=workers, share=share, share_err_pct=_pct(share, quota),
                   throughput_ratio=ratio, throughput_target=target_ratio,
                   throughput_err_pct=_pct(ratio, target_ratio), **asdict(r))
        rows.append(row)
        print(f"{quota:>6.2f} {workers:>5} {share:>7.3f} {row['share_err_pct']:>+7.1f} {ratio:>8.3f} "
              f"{target_ratio:>7.3f} {row['throughput_err_pct']:>+7.1f} {r.nr_throttled:>7} "
              f"{r.nr_periods:>7} {r.throttled_s:>6.2f}")
    for key, label in (("share_err_pct", "share"), ("throughput_err_pct", "throughput")):
        errs = [abs(row[key]) for row in rows]
        print(f"{label:>10}: median |error| {statistics.median(errs):.1f}%, worst {max(errs):.1f}%"
              f" (aim: within 5%)")
    for workers, rates in sorted(base_rates.items()):
        print(f"unthrottled, {workers} process(es): {statistics.median(rates):,.0f} items/s median, "
              f"spread {min(rates):,.0f}..{max(rates):,.0f} ({(max(rates) / min(rates) - 1) * 100:.1f}%: "
              f"the noise floor of the throughput ratio)")

    short_rows = []
    if not args.no_short:
        q = args.short_quota
        rate = statistics.median(base_cpu_rate)  # items per CPU second, unthrottled
        print(f"\nshort jobs at quota {q:g} (CFS period 100 ms; ideal wall = CPU work / quota)")
        print(f"{'work_s':>6} {'items':>8} {'cpu_s':>6} {'wall_s':>7} {'ideal_s':>7} {'wall/ideal':>10} "
              f"{'share':>6} {'nr_thr':>6}")
        works = [float(w) for w in args.short_work.split(",") if w.strip()]
        for work in [w for w in works for _ in range(args.short_repeats if w <= 1 else 1)]:
            items = max(1, round(rate * work))
            r = run_child(args.workload, "items", items, 1, one, q, f"{tag}-short{work}")
            ideal = r.cpu_s / q
            row = dict(quota=q, work_s=work, ideal_s=ideal, wall_over_ideal=r.wall_s / ideal,
                       **asdict(r))
            short_rows.append(row)
            print(f"{work:>6.2f} {items:>8} {r.cpu_s:>6.3f} {r.wall_s:>7.3f} {ideal:>7.3f} "
                  f"{r.wall_s / ideal:>10.3f} {r.cpu_s / r.wall_s:>6.3f} {r.nr_throttled:>6}")

    if args.json:
        Path(args.json).write_text(json.dumps({"quotas": rows, "short": short_rows}, indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        for proc, cg in list(_live):
            _cleanup(proc, cg)
