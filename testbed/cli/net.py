"""``testbed net``: one-off questions to the network simulator.

``testbed net transfer --bytes N (--rate-mbps R | --trace FILE | --tput-csv FILE ...)``
times K equal transfers started together on one link and prints JSON on stdout only:
``{"flows": [{"start_s", "end_s", "payload_bytes", "wire_bytes"}]}`` in absolute simulated
seconds. ``testbed net trace`` writes a synthetic mahimahi trace to stdout.
Bad input: a message on stderr naming the flag or file, exit 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_NOT_DELIVERED = 1
TIME_DECIMALS = 9  # simulated times are printed to the nanosecond


class BadInput(ValueError):
    """Input the command cannot use; the message names the flag or file."""


def add_parser(subparsers: Any) -> None:
    """Add ``net`` (subcommands ``transfer`` and ``trace``) to the ``testbed`` command."""
    net = subparsers.add_parser("net", help="ask the network simulator one-off questions")
    sub = net.add_subparsers(dest="net_command", required=True)
    _add_transfer(sub)
    _add_trace(sub)


def _add_transfer(sub: Any) -> None:
    t = sub.add_parser("transfer", help="time K equal transfers on one link (JSON on stdout)")
    t.add_argument("--bytes", type=int, required=True, help="payload bytes of each transfer")
    cap = t.add_mutually_exclusive_group(required=True)
    cap.add_argument("--rate-mbps", type=float, help="constant link rate, Mbit/s")
    cap.add_argument("--trace", help="mahimahi trace file (1500-byte delivery opportunities)")
    cap.add_argument("--tput-csv", help="5Gophers 5g_tput.csv (with --carrier and --run)")
    t.add_argument("--carrier", help="5Gophers carrier, e.g. VERIZON (with --tput-csv)")
    t.add_argument("--run", type=int, help="5Gophers run_num (with --tput-csv)")
    t.add_argument("--rtt-ms", type=float, default=0.0, help="round-trip time, ms (default 0)")
    t.add_argument("--start-s", type=float, default=0.0, help="simulated start time (default 0)")
    t.add_argument("--flows", type=int, default=1, help="equal flows started together (default 1)")
    t.add_argument("--overhead", choices=("tcp", "none"), default="tcp",
                   help="per-packet TCP/IPv4 headers (default) or none")
    t.add_argument("--loss", type=float, default=0.0, help="packet loss probability (default 0)")
    t.add_argument("--jitter-ms", type=float, default=0.0, help="jitter scale, ms (default 0)")
    t.add_argument("--jitter", choices=("uniform", "exponential", "normal"), default="uniform",
                   help="jitter distribution (default uniform)")
    t.add_argument("--seed", type=int, default=0, help="jitter seed (default 0)")
    t.add_argument("--outage", action="append", default=[], metavar="T1:T2",
                   help="link down over [T1, T2) seconds (repeatable)")
    t.add_argument("--on-outage", choices=("stall", "fail"), default="stall",
                   help="transfers wait for the link (default) or fail")
    t.add_argument("--timeout-s", type=float, default=math.inf,
                   help="a stall longer than this fails the transfer (default: never)")


def _add_trace(sub: Any) -> None:
    g = sub.add_parser("trace", help="write a synthetic Markov-modulated mahimahi trace")
    g.add_argument("--rates-mbps", required=True, help="comma-separated state rates, Mbit/s")
    g.add_argument("--duration-s", type=float, required=True, help="trace period, seconds")
    g.add_argument("--step-s", type=float, default=1.0, help="time per state step (default 1)")
    g.add_argument("--stay-prob", type=float, default=0.9, help="chance to keep the state")
    g.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")


def run(args: argparse.Namespace) -> int:
    """Run ``testbed net ...``; 0 on success, 1 if a transfer failed, 2 on bad input."""
    try:
        if args.net_command == "trace":
            return _run_trace(args)
        return _run_transfer(args)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _run_transfer(args: argparse.Namespace) -> int:
    import simpy

    from network import NO_OVERHEAD, TCP_IP, Network, OutagePolicy

    _check_transfer_args(args)
    env = simpy.Environment()
    policy = OutagePolicy(action=args.on_outage, timeout_s=args.timeout_s)
    net = Network(env, overhead=NO_OVERHEAD if args.overhead == "none" else TCP_IP,
                  outage_policy=policy)
    link = _link(net, args)
    procs = [_start_at(env, net, args.start_s, args.bytes, link, i) for i in range(args.flows)]
    env.run()
    records = [p.value for p in procs]
    print(json.dumps({"flows": [_flow_json(r) for r in records]}))
    failed = [r for r in records if r.status != "ok"]
    for r in failed:
        print(f"{r.label}: {r.status} at {round(r.end_s, TIME_DECIMALS)} s", file=sys.stderr)
    return EXIT_NOT_DELIVERED if failed else 0


def _check_transfer_args(args: argparse.Namespace) -> None:
    """Reject values argparse lets through; each message names its flag."""
    _require(args.bytes >= 0, f"--bytes must be >= 0, got {args.bytes}")
    _require(args.flows >= 1, f"--flows must be >= 1, got {args.flows}")
    for flag, value in (("--rtt-ms", args.rtt_ms), ("--start-s", args.start_s),
                        ("--jitter-ms", args.jitter_ms)):
        _require(math.isfinite(value) and value >= 0, f"{flag} must be >= 0, got {value}")
    if args.rate_mbps is not None:
        _require(math.isfinite(args.rate_mbps) and args.rate_mbps > 0,
                 f"--rate-mbps must be > 0, got {args.rate_mbps}")
    _require(0 <= args.loss < 1, f"--loss must be in [0, 1), got {args.loss}")
    _require(args.timeout_s > 0, f"--timeout-s must be > 0, got {args.timeout_s}")
    _require(args.seed >= 0, f"--seed must be >= 0, got {args.seed}")
    if args.tput_csv is not None:
        _require(args.carrier is not None and args.run is not None,
                 "--tput-csv needs --carrier and --run")
    else:
        _require(args.carrier is None and args.run is None,
                 "--carrier and --run go with --tput-csv")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise BadInput(message)


def _link(net: Any, args: argparse.Namespace) -> Any:
    """The one pipe every flow crosses, built from the flags."""
    from network import Jitter

    jitter = None
    if args.jitter_ms > 0:
        jitter = Jitter(args.jitter, args.jitter_ms / 1000, seed=args.seed)
    rate_mbps = args.rate_mbps
    trace = _trace(args) if rate_mbps is None else None
    return net.pipe("link", rate_mbps=rate_mbps, trace=trace, delay_s=args.rtt_ms / 2000,
                    jitter=jitter, loss_rate=args.loss, outages=_outages(args.outage))


def _trace(args: argparse.Namespace) -> Any:
    """The capacity trace named by --trace or --tput-csv; its errors name the file."""
    from network import TraceError, load_5g_throughput, load_mahimahi

    try:
        if args.trace is not None:
            return load_mahimahi(args.trace)
        return load_5g_throughput(args.tput_csv, carrier=args.carrier, run=args.run)
    except TraceError as exc:
        raise BadInput(str(exc)) from None


def _outages(specs: list[str]) -> list[Any]:
    """--outage T1:T2 values as sorted outages."""
    from network import Outage

    outages = []
    for spec in specs:
        start, sep, end = spec.partition(":")
        try:
            if not sep:
                raise ValueError("expected T1:T2")
            outages.append(Outage(float(start), float(end)))
        except ValueError as exc:
            raise BadInput(f"--outage {spec!r}: {exc}") from None
    outages.sort(key=lambda o: o.start_s)
    for before, after in zip(outages, outages[1:]):
        _require(after.start_s >= before.end_s, f"--outage {after.start_s}: overlaps another")
    return outages


def _start_at(env: Any, net: Any, at_s: float, payload_bytes: int, link: Any, i: int) -> Any:
    """A process that starts one transfer at `at_s`; its value is the TransferRecord."""

    def flow() -> Any:
        yield env.timeout(at_s)
        return (yield net.transfer(payload_bytes, [link], label=f"flow {i}"))

    return env.process(flow())


def _flow_json(record: Any) -> dict[str, Any]:
    return {
        "start_s": round(record.start_s, TIME_DECIMALS),
        "end_s": round(record.end_s, TIME_DECIMALS),
        "payload_bytes": record.payload_bytes,
        "wire_bytes": record.wire_bytes,
    }


def _run_trace(args: argparse.Namespace) -> int:
    from network import synthetic_trace

    try:
        rates = [float(r) for r in args.rates_mbps.split(",")]
    except ValueError:
        raise BadInput(f"--rates-mbps must be comma-separated numbers, got {args.rates_mbps!r}")
    _require(all(math.isfinite(r) and r >= 0 for r in rates), "--rates-mbps must be >= 0")
    _require(sum(rates) > 0, "--rates-mbps must hold a rate > 0")
    _require(args.seed >= 0, f"--seed must be >= 0, got {args.seed}")
    _require(0 <= args.stay_prob <= 1, f"--stay-prob must be in [0, 1], got {args.stay_prob}")
    _require(math.isfinite(args.step_s) and args.step_s > 0,
             f"--step-s must be > 0, got {args.step_s}")
    steps = args.duration_s / args.step_s
    _require(math.isfinite(steps) and steps >= 1 and math.isclose(steps, round(steps)),
             f"--duration-s must be a whole number (>= 1) of --step-s, got {args.duration_s}")
    try:
        trace = synthetic_trace(rates_mbps=rates, duration_s=args.duration_s, seed=args.seed,
                                step_s=args.step_s, stay_prob=args.stay_prob)
    except ValueError as exc:
        raise BadInput(f"--rates-mbps: {exc}") from None
    sys.stdout.write(trace.to_mahimahi())
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m testbed.cli.net net transfer ...``, as ``testbed net transfer ...``."""
    parser = argparse.ArgumentParser(prog="testbed")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
