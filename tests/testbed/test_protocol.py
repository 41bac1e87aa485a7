"""The protocol's messages: payloads found by their exchange kind."""

from __future__ import annotations

import pytest

from testbed.protocol import FitIns, Payload, StepRes, client_round_seed


def test_a_payload_is_found_by_its_kind_and_a_missing_one_is_named():
    ins = FitIns(round=1, payloads=(Payload("logits_down", b"ab"), Payload("adapter_down", b"xyz")), seed=3)
    assert ins.payload("adapter_down").data == b"xyz"
    assert ins.maybe_payload("logits_down").payload_bytes == 2
    assert StepRes().maybe_payload("activations_up") is None
    with pytest.raises(KeyError, match=r"no 'adapter_up' payload; this message carries \['logits_down', 'adapter_down'\]"):
        ins.payload("adapter_up")


def test_the_client_round_seed_is_distinct_per_round_and_client():
    seeds = {client_round_seed(7, rnd, cid) for rnd in range(1, 50) for cid in range(100)}
    assert len(seeds) == 49 * 100
    assert client_round_seed(0, 1, 2) == 1009 + 2
