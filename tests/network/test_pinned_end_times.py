"""End times pinned to the values the simulator gave before its event-handling rewrite.

The literals below were computed by the process-per-transfer implementation (before
transfers became callbacks on the simpy clock). Any later change to how the network keeps
its books must leave them alone, to float tolerance: a mixed FL run (constant links,
trace links, a shared trace cell, a saturated server) and shared pipes with loss, jitter
and outages under both outage policies.
"""

from __future__ import annotations

import random
from collections.abc import Generator

import pytest
import simpy

from network import TCP_IP, Jitter, Network, Outage, OutagePolicy, ShiftedTrace, markov_rate_trace, synthetic_trace

CONSTANT_CLASSES = ((30.0, 10.0, 0.025), (200.0, 50.0, 0.010), (100.0, 40.0, 0.005))
RATES_MBPS = (2.0, 8.0, 25.0, 60.0)


def _fl_rounds(clients: int = 50, rounds: int = 3) -> list[tuple[float, str]]:
    """Synchronous FL rounds: download, compute, upload; (end_s, status) in completion order.

    The downloads saturate server.out; a fifth of the clients also cross a shared trace
    cell; 30% have trace links of their own; uploads overlap on server.in.
    """
    rng = random.Random(7)
    env = simpy.Environment()
    net = Network(env, overhead=TCP_IP)
    server_out = net.pipe("server.out", rate_mbps=100.0, delay_s=0.001)
    server_in = net.pipe("server.in", rate_mbps=60.0, delay_s=0.001)
    cell_down = net.pipe(
        "cell.down", trace=synthetic_trace(rates_mbps=RATES_MBPS, duration_s=20, seed=3)
    )
    cell_up = net.pipe(
        "cell.up", trace=markov_rate_trace(rates_mbps=RATES_MBPS, duration_s=20, seed=4)
    )
    pool = [synthetic_trace(rates_mbps=RATES_MBPS, duration_s=20, seed=s) for s in range(3)]
    pool += [markov_rate_trace(rates_mbps=RATES_MBPS, duration_s=20, seed=s) for s in range(3)]
    down_paths, up_paths = [], []
    for c in range(clients):
        kind = rng.random()
        if kind < 0.3:
            offset_s = rng.uniform(0, 20)
            down = net.pipe(
                f"c{c}.down", trace=ShiftedTrace(rng.choice(pool), offset_s), delay_s=0.03
            )
            up = net.pipe(f"c{c}.up", trace=ShiftedTrace(rng.choice(pool), offset_s), delay_s=0.03)
        else:
            down_mbps, up_mbps, delay_s = rng.choice(CONSTANT_CLASSES)
            down = net.pipe(f"c{c}.down", rate_mbps=down_mbps, delay_s=delay_s)
            up = net.pipe(f"c{c}.up", rate_mbps=up_mbps, delay_s=delay_s)
        if kind > 0.8:
            down_paths.append([server_out, cell_down, down])
            up_paths.append([up, cell_up, server_in])
        else:
            down_paths.append([server_out, down])
            up_paths.append([up, server_in])
    results: list[tuple[float, str]] = []

    def client(c: int, compute_s: float) -> Generator[simpy.Event, object, None]:
        record = yield net.transfer(400_000 + 1000 * c, down_paths[c])
        results.append((record.end_s, record.status))
        yield env.timeout(compute_s)
        record = yield net.transfer(300_000, up_paths[c])
        results.append((record.end_s, record.status))

    def all_rounds() -> Generator[simpy.Event, object, None]:
        for _ in range(rounds):
            chosen = sorted(rng.sample(range(clients), clients * 4 // 5))
            yield env.all_of(
                [env.process(client(c, rng.lognormvariate(0.0, 1.0))) for c in chosen]
            )

    env.run(env.process(all_rounds()))
    return results


def _impaired(action: str) -> list[tuple[float, str]]:
    """40 transfers from 12 clients into one server: loss, jitter, outages; in start order."""
    rng = random.Random(11)
    env = simpy.Environment()
    net = Network(env, overhead=TCP_IP, outage_policy=OutagePolicy(action, timeout_s=0.8))
    server = net.pipe("server.in", rate_mbps=40.0, delay_s=0.002, outages=[Outage(3.0, 3.2)])
    trace = synthetic_trace(rates_mbps=RATES_MBPS, duration_s=10, seed=9)
    ups = []
    for c in range(12):
        outages = [Outage(rng.uniform(0, 2), rng.uniform(2.1, 3.5))] if c % 3 == 0 else []
        kind = ("uniform", "exponential", "normal")[c % 3]
        ups.append(
            net.pipe(
                f"c{c}.up",
                rate_mbps=None if c % 4 == 1 else rng.uniform(2, 30),
                trace=ShiftedTrace(trace, rng.uniform(0, 10)) if c % 4 == 1 else None,
                delay_s=rng.uniform(0.0, 0.04),
                loss_rate=rng.choice((0.0, 0.001, 0.02)),
                jitter=Jitter(kind, 0.01, seed=c) if c % 2 else None,  # type: ignore[arg-type]
                outages=outages,
            )
        )

    def later(at_s: float, n: int, c: int) -> Generator[simpy.Event, object, tuple[float, str]]:
        yield env.timeout(at_s)
        record = yield net.transfer(n, [ups[c], server])
        return record.end_s, record.status

    procs = []
    for k in range(40):
        at_s = rng.choice((0.0, 0.5, rng.uniform(0, 4)))
        procs.append(env.process(later(at_s, rng.randint(0, 900_000), k % 12)))
    env.run()
    return [p.value for p in procs]


def _assert_pinned(
    got: list[tuple[float, str]], end_s: list[float], not_ok: dict[str, list[int]]
) -> None:
    statuses = ["ok"] * len(end_s)
    for status, indices in not_ok.items():
        for i in indices:
            statuses[i] = status
    assert [s for _, s in got] == statuses
    assert [t for t, _ in got] == pytest.approx(end_s, rel=1e-9, abs=1e-12)


def test_fl_rounds_end_when_they_used_to() -> None:
    _assert_pinned(_fl_rounds(), FL_ROUNDS_END_S, {})


def test_impaired_transfers_that_stall_end_when_they_used_to() -> None:
    _assert_pinned(_impaired("stall"), STALL_END_S, {"timeout": STALL_TIMEOUT})


def test_impaired_transfers_that_fail_end_when_they_used_to() -> None:
    _assert_pinned(_impaired("fail"), FAIL_END_S, {"failed": FAIL_FAILED})


# -- the pinned values ----------------------------------------------------------------------
FL_ROUNDS_END_S = [
    1.341072, 1.3424736, 1.3443168, 1.35564,
    1.3556832, 1.360416, 1.3616784, 1.3627456,
    1.3646736, 1.3653024, 1.3680480000000002, 1.370608,
    1.3720687999999999, 1.3729824, 1.3741488, 1.37656,
    1.3781872, 1.38316, 1.389176, 1.3892832,
    1.3899055999999999, 1.3910688, 1.3917872, 1.392480665070729,
    1.3948128, 1.3959453005440696, 1.3964847999999999, 1.4001618402611533,
    1.4013216, 1.4016695660500542, 1.4035463886833512, 1.404059925406332,
    1.405494528235494, 1.4057556816631327, 1.406, 1.4077616,
    1.4104032, 1.423911613373792, 1.4428133071821911, 1.6072364379687532,
    1.737805346278674, 1.7440615024340262, 1.7780399030034975, 1.7826473231171085,
    1.84238148234923, 1.8557999999999943, 1.9634506071812188, 2.0054009612653583,
    2.033024314436238, 2.1256674630212644, 2.2415282206500966, 2.3441671719075106,
    2.366389753919078, 2.566031159548128, 2.5683708001836063, 2.5974899344001705,
    2.6899131869633868, 2.717918675035267, 2.7563915042859315, 2.76759825497708,
    2.8279544332595075, 2.8332437348819832, 2.8483407429537144, 3.035092760299994,
    3.075130639373183, 3.1823957652616603, 3.232543564295456, 3.274820841679773,
    3.2850812328330115, 3.3350984966886297, 3.413787271431642, 3.4769373898030733,
    4.189677915148954, 4.199911613373792, 4.809258487083908, 5.649251981013381,
    7.7975396683227745, 7.9058696916344475, 8.66253612588404, 22.870877275038463,
    24.211949275038464, 24.215194075038465, 24.224477275038463, 24.22651727503846,
    24.231866075038464, 24.232472475038463, 24.234362075038465, 24.23609647503846,
    24.23892527503846, 24.241565275038464, 24.24401167503846, 24.24625807503846,
    24.249227675038462, 24.249494875038465, 24.256334875038462, 24.25816527503846,
    24.26168207503846, 24.26333807503846, 24.264189275038465, 24.266194075038463,
    24.267498075038464, 24.268128475038463, 24.270413275038464, 24.27188047503846,
    24.27244952897641, 24.274137357138702, 24.274912475038462, 24.276494875038463,
    24.27834308506233, 24.28050060296209, 24.28151247503846, 24.282264803439418,
    24.282999999999998, 24.283206114827905, 24.28349251100929, 24.285549275038463,
    24.29918044786411, 24.65151924073641, 24.660917275038468, 24.670830482214214,
    24.687314633148635, 24.706813307182188, 24.726677275038476, 24.765290188351937,
    24.772982094254832, 24.86504433824775, 25.045588316722107, 25.118598679907098,
    25.209542605558863, 25.31373321740198, 25.32190503098779, 25.359749247347708,
    25.453122495071536, 25.511734043578375, 25.525900886250355, 25.533749681578637,
    25.593962852777913, 25.629128485549867, 25.685590911939986, 25.707870064932305,
    25.729691301850128, 25.730523447558408, 25.777294493339948, 25.779858762607063,
    25.84869347951102, 25.85618544022803, 26.010543564295453, 26.100633758108952,
    26.28153504417318, 26.411654776130696, 26.514238491958174, 26.736915538154225,
    27.0632664525132, 27.289433284928208, 27.325360844374448, 27.720513803862644,
    27.7635012051958, 27.93957293221165, 28.142473133732757, 29.928012013638885,
    31.269084013638885, 31.269829613638883, 31.272328813638886, 31.280490413638883,
    31.281448813638885, 31.282463213638884, 31.283568813638883, 31.287112813638885,
    31.289360813638883, 31.292189613638882, 31.292492013638885, 31.295071213638884,
    31.298682413638883, 31.299596013638883, 31.300762413638882, 31.303173613638883,
    31.309773613638885, 31.309783213638884, 31.315872813638883, 31.316309613638886,
    31.316519213638884, 31.317682413638884, 31.318647213638883, 31.319756013638884,
    31.321426413638886, 31.321618908089373, 31.323130115923977, 31.323674413638884,
    31.327433706783605, 31.327935213638884, 31.328763848241714, 31.330372553355968,
    31.330825219297207, 31.33175117115121, 31.332, 31.332,
    31.337509613638883, 31.34571357620689, 31.350911613373793, 31.355036013638887,
    31.587733814164498, 31.63037581480948, 31.668672205275605, 31.80372830838277,
    31.901324702649937, 31.92562426472771, 31.926838028540594, 31.949027183030314,
    32.00480375673272, 32.130401639119974, 32.1992717424141, 32.2118937352412,
    32.25479149735156, 32.27653655787885, 32.294415297396725, 32.412981087555806,
    32.44444758969914, 32.44659426117237, 32.5164163865193, 32.70428144618509,
    32.85068722271217, 32.85751040550744, 32.858828112820305, 32.882099359962695,
    32.95916773045357, 33.106360969104884, 33.60537956786317, 33.758091183594075,
    33.80518721616819, 33.88391161337379, 33.9406028182873, 33.96762463016105,
    33.98093758132455, 34.157694129353786, 34.24028210899268, 34.39636867081827,
    34.59299672675068, 34.8578740525279, 34.911677118037225, 36.46547773736987,
]

STALL_END_S = [
    1.7047591070196373, 0.6690018198453564, 1.217100013539632, 1.3,
    2.251439569071635, 1.0494826232679064, 2.100141947828145, 2.3054262266891468,
    3.4663727577193577, 2.484854257037064, 1.97526912214277, 2.3927148456591727,
    1.7047591070196373, 0.17292689710385079, 1.3479483339669587, 0.988246912458437,
    2.898910764233301, 2.3805255911124727, 2.100141947828145, 0.7610468914418129,
    0.5864778549067562, 2.484854257037064, 0.6432726604534674, 0.580903438534813,
    1.7047591070196373, 0.20416860983570445, 2.20606642612073, 1.7720516805502495,
    1.1463424333681798, 4.639343667545873, 2.100141947828145, 1.5067435542841552,
    2.2349341796524307, 2.484854257037064, 2.4335130968325096, 2.2670652658991584,
    0.37591951754147557, 1.479348040747928, 2.041142643711175, 1.827925593281248,
]
STALL_TIMEOUT = [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 39]  # status 'timeout'

FAIL_END_S = [
    0.9047591070196372, 0.6690018198453564, 1.217100013539632, 0.5,
    2.251439569071635, 1.0494826232679064, 1.300141947828145, 2.3054262266891468,
    3.0, 1.684854257037064, 1.97526912214277, 2.3927148456591727,
    0.9047591070196372, 0.17292689710385079, 1.3479483339669587, 0.18824691245843694,
    2.898910764233301, 2.3805255911124727, 1.300141947828145, 0.7610468914418129,
    0.5864778549067562, 1.684854257037064, 0.6432726604534674, 0.580903438534813,
    0.9047591070196372, 0.20416860983570445, 2.20606642612073, 0.9720516805502495,
    1.1463424333681798, 3.0, 1.300141947828145, 1.5067435542841552,
    2.2349341796524307, 1.684854257037064, 2.4335130968325096, 2.2670652658991584,
    0.37591951754147557, 1.479348040747928, 2.041142643711175, 1.0279255932812479,
]
FAIL_FAILED = [0, 3, 6, 8, 9, 12, 15, 18, 21, 24, 27, 29, 30, 33, 39]  # status 'failed'
