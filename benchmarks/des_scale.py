"""How fast the network simulator times a large federated run (timing only, no training).

    python benchmarks/des_scale.py                    # the issue's run: 10,000 clients x 100 rounds
    python benchmarks/des_scale.py --quick            # 1,000 clients x 10 rounds, a smoke run
    python benchmarks/des_scale.py --links constant   # constant-rate links only
    python benchmarks/des_scale.py --per-round 1000   # a 10% sample of clients per round
    python benchmarks/des_scale.py --gc default       # Python's garbage collector untouched

Each round, the participating clients download one adapter from the server, compute for a
seeded random device time, and upload one adapter back; the round ends when the last upload
has arrived (synchronous FL). The adapter is SmolLM2's LoRA r=8 on q/v: 460,800 fp32
parameters, 1,843,200 bytes. A client's downlink path is [server.out, client.down], its
uplink [client.up, server.in]; the server's pipes are shared by all and saturate when many
clients transfer at once.

Links: by default 70% of clients get a constant-rate class (lte, 5g, wifi), 30% a trace pipe
built from seeded synthetic traces (`synthetic_trace` opportunities and `markov_rate_trace`
rates, each client replaying from its own offset), plus the mahimahi files under
../shared/data/traces/mahimahi with `--mahimahi` when they are there.

It prints simulated exchanges (one client's download + compute + upload in one round) per
host CPU second, the same number of bare simpy timeouts (three per exchange: the least a
DES needs for it) timed alone, with the ratio of the two CPU times, and the same rounds with
each transfer a fixed timeout: what the client processes cost without any network model.
Only the rounds are timed. By default each finished round is frozen out of the garbage
collector (`--gc default` leaves it alone): a long run keeps millions of records, and
walking them at every full collection costs about as much as the simulation.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable, Generator
from pathlib import Path

import numpy as np
import simpy

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from network import Network, Pipe, ShiftedTrace, TransferRecord, load_mahimahi, markov_rate_trace, synthetic_trace  # noqa: E402

ADAPTER_PARAMS = 460_800  # SmolLM2-135M LoRA r=8 on q_proj and v_proj
ADAPTER_BYTES = ADAPTER_PARAMS * 4  # fp32
MAHIMAHI_DIR = REPO.parent / "shared" / "data" / "traces" / "mahimahi"

# (name, down Mbit/s, up Mbit/s, one-way delay s): the constant-rate classes
CONSTANT_CLASSES = (
    ("lte", 30.0, 10.0, 0.025),
    ("5g", 200.0, 50.0, 0.010),
    ("wifi", 100.0, 40.0, 0.005),
)
TRACE_SHARE = 0.3  # of clients, in --links mixed
TRACE_POOL = 8  # distinct synthetic traces of each kind, shared through offsets
TRACE_S = 120  # their length
TRACE_DELAY_S = 0.030
SERVER_DELAY_S = 0.001


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument(
        "--per-round", type=int, default=None, help="clients sampled per round (default: all)"
    )
    parser.add_argument("--links", choices=("mixed", "constant"), default="mixed")
    parser.add_argument("--server-gbps", type=float, default=10.0, help="server in/out pipes")
    parser.add_argument("--compute-s", type=float, default=60.0, help="median device time")
    parser.add_argument("--mahimahi", action="store_true", help="add ../shared mahimahi traces")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1,000 clients x 10 rounds")
    parser.add_argument(
        "--no-bare", action="store_true", help="skip the reference loops (bare, fixed-time)"
    )
    parser.add_argument(
        "--gc",
        choices=("freeze", "default"),
        default="freeze",
        help="freeze each finished round out of the garbage collector (default), or not",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.rounds = 1_000, 10
    if args.per_round is None:
        args.per_round = args.clients
    if not 1 <= args.per_round <= args.clients:
        parser.error("--per-round must be in [1, --clients]")
    return args


# -- the scenario ---------------------------------------------------------------------------
def trace_pool(seed: int, mahimahi: bool) -> list[object]:
    """Seeded synthetic traces (opportunities and rates), plus mahimahi files if asked."""
    pool: list[object] = []
    for k in range(TRACE_POOL):
        rates = (2.0, 8.0, 25.0, 60.0)
        pool.append(synthetic_trace(rates_mbps=rates, duration_s=TRACE_S, seed=seed * 100 + k))
        rate_seed = seed * 100 + 50 + k
        pool.append(markov_rate_trace(rates_mbps=rates, duration_s=TRACE_S, seed=rate_seed))
    if mahimahi and MAHIMAHI_DIR.is_dir():
        pool += [load_mahimahi(p) for p in sorted(MAHIMAHI_DIR.iterdir()) if p.is_file()]
    return pool


def build_clients(
    net: Network, args: argparse.Namespace, rng: np.random.Generator
) -> tuple[list[Pipe], list[Pipe], list[str]]:
    """Each client's down and up pipe, and its link kind."""
    pool = trace_pool(args.seed, args.mahimahi) if args.links == "mixed" else []
    downs, ups, kinds = [], [], []
    for c in range(args.clients):
        if pool and rng.random() < TRACE_SHARE:
            down_trace = pool[int(rng.integers(len(pool)))]
            up_trace = pool[int(rng.integers(len(pool)))]
            offset = float(rng.uniform(0, TRACE_S))
            down = ShiftedTrace(down_trace, offset)  # type: ignore[arg-type]
            up = ShiftedTrace(up_trace, offset)  # type: ignore[arg-type]
            downs.append(net.pipe(f"c{c}.down", trace=down, delay_s=TRACE_DELAY_S))
            ups.append(net.pipe(f"c{c}.up", trace=up, delay_s=TRACE_DELAY_S))
            kinds.append("trace")
        else:
            name, down_mbps, up_mbps, delay_s = CONSTANT_CLASSES[
                int(rng.integers(len(CONSTANT_CLASSES)))
            ]
            downs.append(net.pipe(f"c{c}.down", rate_mbps=down_mbps, delay_s=delay_s))
            ups.append(net.pipe(f"c{c}.up", rate_mbps=up_mbps, delay_s=delay_s))
            kinds.append(name)
    return downs, ups, kinds


def held_back(record: TransferRecord, client_pipe: Pipe) -> bool:
    """Whether the transfer took longer than alone on its client pipe: the server limited it."""
    capacity = client_pipe.capacity
    alone_s = capacity.time_to_serve(record.start_s, record.wire_bytes) - record.start_s
    alone_s += client_pipe.delay_s + SERVER_DELAY_S
    return record.duration_s > alone_s * (1 + 1e-9) + 1e-9


def count_held_back(net: Network, client_pipes: dict[str, tuple[str, Pipe]]) -> dict[str, int]:
    """Per server pipe, how many transfers it held back (labels name the client pipe)."""
    slowed = {"server.out": 0, "server.in": 0}
    for record in net.records:
        server, client_pipe = client_pipes[record.label]
        slowed[server] += held_back(record, client_pipe)
    return slowed


Client = Callable[[int, float], Generator[simpy.Event, object, None]]


Plan = Callable[[int], tuple[np.ndarray, np.ndarray]]  # round -> (its clients, their device seconds)


def timed_rounds(
    env: simpy.Environment, args: argparse.Namespace, rng: np.random.Generator, client: Client,
    plan: Plan | None = None,
) -> float:
    """Run the synchronous rounds, each waiting for all its clients; returns CPU seconds.
    Each round's clients and device seconds are drawn (seeded), or given by `plan`.

    With --gc freeze, whatever a round leaves (records, mostly) is frozen out of the garbage
    collector after it: otherwise every full collection walks the millions of records a long
    run keeps, and takes as long as the simulation itself.
    """
    speed = rng.lognormal(0.0, 0.5, args.clients)  # each device's own slowness

    def rounds() -> Generator[simpy.Event, object, None]:
        for rnd in range(args.rounds):
            if plan is not None:
                chosen, compute = plan(rnd)
            elif args.per_round == args.clients:
                chosen = np.arange(args.clients)
            else:
                chosen = rng.choice(args.clients, args.per_round, replace=False)
            if plan is None:
                compute = args.compute_s * speed[chosen] * rng.lognormal(0.0, 0.2, len(chosen))
            yield env.all_of(
                [env.process(client(int(c), float(s))) for c, s in zip(chosen, compute)]
            )
            if args.gc == "freeze":
                gc.freeze()

    if args.gc == "freeze":
        gc.freeze()  # the pipes and traces too
    cpu0 = time.process_time()
    env.run(env.process(rounds()))
    cpu_s = time.process_time() - cpu0
    gc.unfreeze()
    return cpu_s


def run_simulation(args: argparse.Namespace) -> tuple[Network, float, dict[str, int]]:
    """Build and run the scenario; returns the network, the CPU seconds of the rounds and,
    per server pipe, how many transfers it held back (took longer than alone on their
    client pipe), worked out afterwards from the records, whose labels name the client pipe.
    """
    env = simpy.Environment()
    net = Network(env)
    rng = np.random.default_rng(args.seed)
    server_rate = args.server_gbps * 1000
    server_out = net.pipe("server.out", rate_mbps=server_rate, delay_s=SERVER_DELAY_S)
    server_in = net.pipe("server.in", rate_mbps=server_rate, delay_s=SERVER_DELAY_S)
    downs, ups, _ = build_clients(net, args, rng)
    client_pipes = {d.name: ("server.out", d) for d in downs}
    client_pipes.update({u.name: ("server.in", u) for u in ups})

    client = exchange_client(env, net, (server_out, server_in), downs, ups, ADAPTER_BYTES, ADAPTER_BYTES)
    cpu_s = timed_rounds(env, args, rng, client)
    return net, cpu_s, count_held_back(net, client_pipes)


def exchange_client(env: simpy.Environment, net: Network, server: tuple[Pipe, Pipe], downs: list[Pipe],
                    ups: list[Pipe], down_bytes: int, up_bytes: int) -> Client:
    """One client's exchange: download across (server.out, its down pipe), compute, upload
    across (its up pipe, server.in)."""
    server_out, server_in = server

    def client(c: int, compute_s: float) -> Generator[simpy.Event, object, None]:
        yield net.transfer(down_bytes, [server_out, downs[c]], label=downs[c].name)
        yield env.timeout(compute_s)
        yield net.transfer(up_bytes, [ups[c], server_in], label=ups[c].name)

    return client


def replay_exchanges(links: list[tuple[float, float, float]], compute_s: np.ndarray, down_bytes: int,
                     up_bytes: int, server_mbps: float, server_delay_s: float) -> float:
    """CPU seconds for this network-only simulation timing exchanges given from elsewhere (a
    `testbed run`'s): client c on constant pipes `links[c]` (down Mbit/s, up Mbit/s, one-way
    delay s) behind the server's pipes, every client in every round, computing `compute_s[r, c]`
    device seconds in round r between its download and its upload of the given sizes."""
    env = simpy.Environment()
    net = Network(env, keep_records=False)
    server = (net.pipe("server.out", rate_mbps=server_mbps, delay_s=server_delay_s),
              net.pipe("server.in", rate_mbps=server_mbps, delay_s=server_delay_s))
    downs = [net.pipe(f"c{c}.down", rate_mbps=d, delay_s=delay_s) for c, (d, _, delay_s) in enumerate(links)]
    ups = [net.pipe(f"c{c}.up", rate_mbps=u, delay_s=delay_s) for c, (_, u, delay_s) in enumerate(links)]
    rounds, clients = compute_s.shape
    args = argparse.Namespace(rounds=rounds, clients=clients, per_round=clients, gc="freeze")
    everyone = np.arange(clients)
    return timed_rounds(env, args, np.random.default_rng(0), exchange_client(env, net, server, downs, ups, down_bytes,
                                                                               up_bytes),
                        plan=lambda rnd: (everyone, compute_s[rnd]))


def fixed_transfers_s(args: argparse.Namespace) -> float:
    """CPU seconds for the same rounds with each transfer a fixed 1 s timeout: the cost of
    the client processes alone, which no network model can go below."""
    env = simpy.Environment()

    def client(_c: int, compute_s: float) -> Generator[simpy.Event, object, None]:
        yield env.timeout(1.0)
        yield env.timeout(compute_s)
        yield env.timeout(1.0)

    return timed_rounds(env, args, np.random.default_rng(args.seed), client)


def bare_loop_s(n_timeouts: int) -> float:
    """CPU seconds for a bare simpy process doing `n_timeouts` timeouts."""
    env = simpy.Environment()

    def loop() -> Generator[simpy.Event, object, None]:
        for _ in range(n_timeouts):
            yield env.timeout(1.0)

    cpu0 = time.process_time()
    env.run(env.process(loop()))
    return time.process_time() - cpu0


# -- what it printed ------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exchanges = args.rounds * args.per_round
    print(
        f"config: {args.clients} clients x {args.rounds} rounds, {args.per_round} per round, "
        f"links {args.links}, server {args.server_gbps:g} Gbit/s in/out, adapter "
        f"{ADAPTER_BYTES:,} B each way, compute lognormal median {args.compute_s:g} s, "
        f"seed {args.seed}, gc {args.gc}"
    )
    net, cpu_s, slowed = run_simulation(args)
    end_s = max(r.end_s for r in net.records)
    print(
        f"simulated: {exchanges:,} exchanges ({len(net.records):,} transfers) "
        f"over {end_s / 3600:.1f} simulated hours"
    )
    for name, count in slowed.items():
        saturated = "saturated" if count else "never saturated"
        print(f"{name}: {saturated} ({count:,} transfers slower than alone on their link)")
    print(f"host CPU: {cpu_s:.2f} s, {exchanges / cpu_s:,.0f} exchanges/s")
    if not args.no_bare:
        bare_s = bare_loop_s(3 * exchanges)
        fixed_s = fixed_transfers_s(args)
        print(f"bare simpy loop: {3 * exchanges:,} timeouts in {bare_s:.2f} s CPU")
        print(
            f"same rounds, fixed-time transfers: {fixed_s:.2f} s CPU ({fixed_s / bare_s:.1f}x bare)"
        )
        print(f"ratio (simulated / bare CPU time): {cpu_s / bare_s:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
