"""Max-min fair rates by progressive filling, checked against the bottleneck property."""

import math
import random

import pytest

from network import max_min_rates, max_min_shares


def test_single_link_is_split_equally() -> None:
    assert max_min_rates([["s"], ["s"], ["s"], ["s"]], {"s": 10.0}) == [2.5] * 4


def test_flow_limited_elsewhere_leaves_its_share_to_the_others() -> None:
    # A is held to 2 by its own link, so B takes the remaining 8 of the shared 10.
    rates = max_min_rates([["a", "s"], ["b", "s"]], {"a": 2.0, "b": 100.0, "s": 10.0})

    assert rates == pytest.approx([2.0, 8.0])


def test_parking_lot() -> None:
    # Long flow crosses both links; one short flow on each. Link 1 (cap 6) is tighter:
    # long and short1 get 3 each; short2 gets 10 - 3 = 7.
    rates = max_min_rates([["l1", "l2"], ["l1"], ["l2"]], {"l1": 6.0, "l2": 10.0})

    assert rates == pytest.approx([3.0, 3.0, 7.0])


def test_empty_path_is_rejected() -> None:
    with pytest.raises(ValueError, match='"paths"'):
        max_min_rates([[]], {"s": 1.0})


def _random_instance(rng: random.Random) -> tuple[list[list[int]], dict[int, float]]:
    capacity = {link: rng.uniform(1.0, 20.0) for link in range(rng.randint(1, 5))}
    paths = [
        rng.sample(sorted(capacity), rng.randint(1, len(capacity)))
        for _ in range(rng.randint(1, 8))
    ]
    return paths, capacity


def _has_bottleneck(
    i: int, paths: list[list[int]], capacity: dict[int, float], rates: list[float]
) -> bool:
    """Flow i crosses a saturated link on which no flow gets more than it does."""
    for link in paths[i]:
        on_link = [rates[j] for j, path in enumerate(paths) if link in path]
        saturated = sum(on_link) >= capacity[link] * (1 - 1e-9)
        if saturated and rates[i] >= max(on_link) * (1 - 1e-9):
            return True
    return False


@pytest.mark.parametrize("seed", range(40))
def test_random_allocations_are_feasible_and_max_min_fair(seed: int) -> None:
    paths, capacity = _random_instance(random.Random(seed))

    rates = max_min_rates(paths, capacity)

    for link, cap in capacity.items():
        assert sum(r for r, path in zip(rates, paths) if link in path) <= cap * (1 + 1e-9)
    assert all(_has_bottleneck(i, paths, capacity, rates) for i in range(len(paths)))


def test_limits_act_as_private_links_and_bottlenecks_are_reported() -> None:
    # Flow 0 is held to 2 by its own limit; flows 1 and 2 split the remaining 8 of "s".
    shares = max_min_shares([["s"], ["s"], ["s", "t"]], {"s": 10.0, "t": 100.0}, [2.0, 50.0, 50.0])

    assert [s.rate for s in shares] == pytest.approx([2.0, 4.0, 4.0])
    assert [s.bottleneck for s in shares] == [None, "s", "s"]


def test_parking_lot_bottlenecks() -> None:
    shares = max_min_shares([["l1", "l2"], ["l1"], ["l2"]], {"l1": 6.0, "l2": 10.0})

    assert [s.bottleneck for s in shares] == ["l1", "l1", "l2"]


def test_link_with_no_capacity_freezes_its_flows_at_zero() -> None:
    shares = max_min_shares([["down", "s"], ["s"]], {"down": 0.0, "s": 10.0})

    assert [s.rate for s in shares] == [0.0, 10.0]


def test_star_with_many_clients_matches_the_water_level() -> None:
    # 20_000 clients, each behind its own link of 1..20, all into one server of 60_000.
    rng = random.Random(0)
    own = [rng.uniform(1.0, 20.0) for _ in range(20_000)]
    capacity = {("own", i): c for i, c in enumerate(own)} | {"server": 60_000.0}
    paths = [[("own", i), "server"] for i in range(len(own))]

    rates = max_min_rates(paths, capacity)

    level = _water_level(own, 60_000.0)
    assert rates == pytest.approx([min(c, level) for c in own], rel=1e-9)


def _water_level(caps: list[float], total: float) -> float:
    """The level L with sum(min(c, L)) = total (caps sorted and filled in turn)."""
    left, ordered = total, sorted(caps)
    for k, cap in enumerate(ordered):
        if cap * (len(ordered) - k) >= left:
            return left / (len(ordered) - k)
        left -= cap
    return math.inf
