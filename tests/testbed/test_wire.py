"""The wire codec: every protocol value survives safetensors bytes exactly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from safetensors.numpy import load

from testbed.backends import messages
from testbed.backends.messages import (
    AskLimits,
    Calibrate,
    Calibrated,
    Call,
    Died,
    Done,
    Exited,
    Limits,
    Raised,
    Ready,
    SetupError,
    Started,
    Stop,
    WorkerSetup,
)
from testbed.backends.wire import WireError, decode, encode
from testbed.config.scenario import load_scenario
from testbed.host.calibration import HostCalibration
from testbed.ml.workload import Workload
from testbed.protocol import ClientSpec, ComputeSpan, Failure, FitIns, FitRes, Payload, StepRes

SMOKE = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml"

SPAN = ComputeSpan("train", 0.123456789012345, Workload(flops=3.5e9, bytes_moved=1.25e8))
VALUES = [
    FitIns(round=2, payloads=(Payload("adapter_down", bytes(range(256)) * 3), Payload("empty", b"")), seed=17,
           config={"lr": 1e-3, "steps": 4, "nested": {"a": [1, 2.5, None], 3: (True, "x")}}),
    FitRes(client_id=1, round=2, payloads=(Payload("adapter_up", b"\x00" * 1000),), n_samples=452,
           metrics={"train_loss": 10.645897388458252, "tokens": 1024.0}, spans=(SPAN, SPAN),
           peak_rss_bytes=465_000_000),
    StepRes(payloads=(Payload("activations", b"\x01\x02"),), spans=(SPAN,), peak_rss_bytes=1),
    StepRes(),
    Failure(client_id=0, round=1, cause="oom", detail="worker killed by SIGKILL", host_s=0.5, peak_rss_bytes=2**30),
    SPAN,
    Workload(flops=1.0, bytes_moved=3.0),
    ("call", ("backward", (b"\xff" * 7,))),
    ("error", ("ValueError: x", 0.25, 0)),
    {0: "int key", "s": "str key", (1, 2): "tuple key"},
    [1, [2, [3, b"deep"]]],
    "", 0, -1, 2**62, 0.1, 1e-300, True, None,
]
MESSAGES = [
    Call(3, "backward", (b"\xff" * 7,)),
    Calibrate(0.5), AskLimits(), Stop(),
    Ready(setup_s=1.25, rss_bytes=300_000_000, pid=7, limits={"cpus": [0, 1], "cpu_quota_cores": None}),
    Ready(setup_s=0.5, rss_bytes=1),
    SetupError("Traceback (most recent call last):\n  ...\nRuntimeError: no model"),
    Started(7), Started(7, 123_456),
    Done(VALUES[1]), Done(None),
    Raised("ValueError: x", 0.25, 0),
    Calibrated({"threads": 1, "gemm_gflops_fp32": 51.2, "gemm_gflops_bf16": None}),
    Limits({"memory_limit_bytes": 2**30, "cpus": [3]}),
    Died(-9, 157_286_400, 1), Died(1),
    Exited(137, True, ""), Exited(None, False, "container gone: 404"),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_every_protocol_value_round_trips_exactly(value):
    back = decode(encode(value))
    assert back == value
    assert type(back) is type(value)


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_as_its_registered_class(message):
    data = encode(message)
    back = decode(data)
    assert back == message and type(back) is type(message)
    assert b"testbed.backends.messages" not in data  # named by its registered name, never its module


def test_every_message_class_is_registered_and_exercised():
    assert {type(m) for m in MESSAGES} | {WorkerSetup} == set(messages.MESSAGE_TYPES)


def test_a_message_name_that_is_not_registered_is_refused():
    forged = encode(Stop()).replace(b'\\"name\\":\\"Stop\\"', b'\\"name\\":\\"Exec\\"')  # the same length
    assert forged != encode(Stop())
    with pytest.raises(WireError, match="unknown type 'Exec'"):
        decode(forged)


def test_payload_bytes_are_tensors_of_the_safetensors_file():
    data = bytes(range(200))
    tensors = load(encode(FitIns(1, (Payload("adapter_down", data),), seed=0)))
    assert [t.tobytes() for t in tensors.values()] == [data]
    assert all(t.dtype.name == "uint8" for t in tensors.values())


def test_floats_keep_their_exact_value_and_specials():
    values = (math.pi, 1 / 3, float("inf"), float("-inf"), 5e-324)
    assert decode(encode(values)) == values
    nan = decode(encode(float("nan")))
    assert math.isnan(nan)


def test_tuples_lists_and_int_keys_keep_their_types():
    back = decode(encode({1: (1, [2, (3,)])}))
    assert back == {1: (1, [2, (3,)])}
    assert isinstance(back[1], tuple) and isinstance(back[1][1], list) and isinstance(back[1][1][1], tuple)


def test_a_client_spec_carries_its_scenario_exactly():
    scenario = load_scenario(SMOKE, ["emulation.backend=docker", "fleet.0.count=2"])
    spec = ClientSpec(client_id=2, scenario=scenario, model_dir="/models/tiny", train_indices=(5, 1, 9), threads=1)
    back = decode(encode(spec))
    assert back == spec
    assert back.scenario.model_dump() == scenario.model_dump()
    assert back.scenario.emulation.docker == scenario.emulation.docker
    setup = WorkerSetup("frameworks.fedllm.client:FedLLMClient", spec, threads=1)
    assert decode(encode(setup)) == setup


def test_host_calibration_round_trips():
    cal = HostCalibration(threads=1, gemm_gflops_fp32=51.2, gemm_gflops_bf16=None, mem_bandwidth_gbps=9.75,
                          measured_at="2026-01-01T00:00:00+00:00", torch_version="2.13.0", cpu_model="x",
                          seconds_spent=1.0)
    assert decode(encode(cal)) == cal


class _Foreign:
    pass


@pytest.mark.parametrize("value", [_Foreign(), {"x": {1, 2}}, (1, object()), 1 + 2j])
def test_unknown_types_are_refused_with_where_they_sit(value):
    with pytest.raises(WireError, match="cannot encode"):
        encode(value)


def test_a_class_that_is_not_registered_is_refused_on_both_sides():
    from dataclasses import dataclass

    @dataclass
    class Local:
        x: int

    Local.__module__ = "somewhere.else"
    with pytest.raises(WireError, match="not a registered wire type"):
        encode(Local(1))
    original = b'\\"name\\":\\"Payload\\"'
    assert original in encode(Payload("k", b""))
    forged = encode(Payload("k", b"")).replace(original, b'\\"name\\":\\"Popen\\"  '.ljust(len(original)))
    with pytest.raises(WireError, match="unknown type 'Popen'"):
        decode(forged)


def test_bytes_that_are_not_a_wire_message_are_refused():
    with pytest.raises(WireError):
        decode(b"\x05\x00\x00\x00\x00\x00\x00\x00{}xyz")
    with pytest.raises(WireError):
        decode(b"garbage")
