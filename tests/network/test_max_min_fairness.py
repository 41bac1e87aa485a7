"""Max-min fair rates by progressive filling, checked against the bottleneck property."""

import random

import pytest

from network import max_min_rates


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
