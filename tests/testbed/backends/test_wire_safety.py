"""The wire decodes only what the registry names: a message can never make the receiver import
or call anything (testbed.backends.wire, testbed.config.wiretypes).

The attack: a node that names ``<module>:subprocess.run`` (or ``os.system``, ...) as the class
to rebuild, where <module> is any module of the project that imports ``subprocess`` or ``os``.
A decoder that imports classes by the name it reads calls that function with the message's
fields. Here every such module is found by parsing the project's sources, every callable of
``subprocess`` and ``os`` that runs a program is replaced by a recorder, and each forged
message must end in a WireError with nothing recorded.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest

from testbed.backends import wire
from testbed.backends.messages import MESSAGE_TYPES, Call, Stop
from testbed.backends.wire import FORMAT, WireError, decode, encode
from testbed.config import wiretypes
from testbed.protocol import Payload

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("testbed", "frameworks", "network", "device_profiles")
RUNNERS = {  # what a forged node may try to call, by the module that has it
    "subprocess": ("run", "Popen", "call", "check_call", "check_output", "getoutput", "getstatusoutput"),
    "os": ("system", "popen", "execv", "execvp", "execl", "spawnv", "spawnl", "posix_spawn", "remove",
           "unlink", "rmdir", "kill", "_exit"),
}


def envelope(tree: object) -> bytes:
    """A valid safetensors file of no tensors whose wire metadata is `tree` (as JSON)."""
    meta = {"format": FORMAT, "testbed-wire": json.dumps(tree)}
    header = json.dumps({"__metadata__": meta}).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header


def importers() -> dict[str, set[str]]:
    """Module name -> the program-running callables it reaches through subprocess / os (as
    "subprocess.run", or "run" where it did `from subprocess import run`), for every module of
    the project that imports either, at its top or inside a function."""
    found: dict[str, set[str]] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            names = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names |= {f"{a.asname or a.name}.{fn}" for a in node.names if a.name in RUNNERS
                              for fn in RUNNERS[a.name]}
                elif isinstance(node, ast.ImportFrom) and node.module in RUNNERS:
                    names |= {a.asname or a.name for a in node.names if a.name in RUNNERS[node.module]}
            if names:
                module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                found[module] = names
    return found


IMPORTERS = importers()


@pytest.fixture
def calls(monkeypatch) -> list[tuple]:
    """Every program-running callable of subprocess and os replaced by a recorder."""
    recorded: list[tuple] = []
    for module in (subprocess, os):
        for name in RUNNERS[module.__name__]:
            if hasattr(module, name):
                def record(*args, _name=f"{module.__name__}.{name}", **kwargs):
                    recorded.append((_name, args, kwargs))
                monkeypatch.setattr(module, name, record)
    return recorded


def forged_nodes(target: str) -> list[dict]:
    """Every way a node could name `target` ("module:qualname") as a class to rebuild."""
    fields = {"args": ["touch", "/tmp/pwned"], "shell": False}
    return [
        {"$": "dataclass", "class": target, "fields": fields},  # the codec's former form
        {"$": "model", "class": target, "json": "{}"},
        {"$": "dataclass", "name": target, "fields": fields},
        {"$": "model", "name": target, "json": "{}"},
        {"$": "message", "name": target, "fields": fields},
        {"$": "dataclass", "name": target.rpartition(":")[2], "fields": fields},  # a bare name
    ]


def test_the_project_has_modules_that_import_subprocess_and_os():
    assert sum("subprocess.run" in v for v in IMPORTERS.values()) >= 3
    assert sum("os.system" in v for v in IMPORTERS.values()) >= 10
    assert "subprocess.Popen" in IMPORTERS["testbed.backends.http_worker"]


def test_naming_subprocess_run_through_a_project_module_runs_nothing(calls):
    for target in ("testbed.backends.http_worker:subprocess.run", "testbed.ml.assets:subprocess.run",
                   "testbed.sim.session:subprocess.check_output", "testbed.cli.main:os.system"):
        for node in forged_nodes(target):
            with pytest.raises(WireError):
                decode(envelope(node))
    assert calls == []


@pytest.mark.parametrize("module", sorted(IMPORTERS))
def test_no_module_of_the_project_lends_its_subprocess_or_os_to_a_message(module, calls):
    for name in sorted(IMPORTERS[module]):
        for node in forged_nodes(f"{module}:{name}"):
            for tree in (node, [node], {"$": "tuple", "items": [node]}, {"$": "dict", "items": [[1, node]]},
                         {"$": "dataclass", "name": "Done", "fields": {"result": node}}):
                with pytest.raises(WireError):
                    decode(envelope(tree))
    assert calls == []


def test_a_forged_class_inside_a_registered_message_is_refused_and_nothing_runs(calls):
    inner = {"$": "dataclass", "class": "testbed.cli.run:subprocess.run", "fields": {"args": ["true"]}}
    with pytest.raises(WireError):
        decode(envelope({"$": "message", "name": "Call",
                         "fields": {"client_id": 0, "method": "fit", "args": {"$": "tuple", "items": [inner]}}}))
    assert calls == []


def test_decoding_never_imports_a_module_a_message_names(monkeypatch):
    import importlib
    import sys

    imported: list[str] = []
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name, *a: imported.append(name) or real(name, *a))
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    for node in forged_nodes("colorsys:hls_to_rgb"):
        with pytest.raises(WireError):
            decode(envelope(node))
    assert "colorsys" not in sys.modules and "colorsys" not in imported


# --- the registry ----------------------------------------------------------------------------

REGISTERED = {
    "Payload", "ComputeSpan", "FitIns", "FitRes", "StepRes", "Failure", "ClientSpec", "Workload", "Scenario",
    "HostCalibration", *(cls.__name__ for cls in MESSAGE_TYPES),
}


def test_every_type_that_crosses_is_registered_under_a_stable_tag():
    wire.load_registry()
    tags = wiretypes.registered()
    assert REGISTERED <= set(tags)
    for tag, cls in tags.items():
        assert tag == cls.__name__  # a tag is a name, never a module path
        assert wiretypes.tag_of(cls) == tag and wiretypes.type_of(tag) is cls
        assert cls.__module__ in wire.DEFINING_MODULES or cls.__module__.startswith(ABOVE_THE_WIRE) \
            or cls.__module__.startswith("tests."), cls


def _registering_modules() -> set[str]:
    found = set()
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            text = path.read_text()
            if "@wire_type(" in text or "register_wire_type(" in text:
                found.add(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found - {"testbed.config.wiretypes"}


# where types are registered that cross no container boundary (the clock's ledger of a run,
# a framework's server-side answers kept in it): decoded only by processes that import them
ABOVE_THE_WIRE = ("testbed.sim.", "testbed.results.", "testbed.cli.", "frameworks.")


def test_every_module_that_registers_a_type_is_loaded_by_the_decoder():
    """The decoder loads a fixed list of defining modules (never one a message names): every
    module of the layers below the backends that registers a type must be on it. The clock's
    ledger and the frameworks register their own types and import them before decoding them."""
    registering = {m for m in _registering_modules() if not m.startswith(ABOVE_THE_WIRE)}
    assert {"testbed.protocol", "testbed.backends.messages", "testbed.config.schema"} <= registering
    assert registering == set(wire.DEFINING_MODULES)


def test_a_tag_is_registered_once():
    @wiretypes.wire_type("WireSafetyProbe")
    class Probe:
        pass

    class Other:
        pass

    try:
        with pytest.raises(ValueError, match="already registered"):
            wiretypes.register_wire_type(Other, "WireSafetyProbe")
        with pytest.raises(ValueError, match="already registered"):
            wiretypes.register_wire_type(Probe, "AnotherName")
        with pytest.raises(ValueError, match="not a valid tag"):
            wiretypes.register_wire_type(Other, "testbed.protocol:Payload")
    finally:
        wiretypes._unregister("WireSafetyProbe")


def test_an_unregistered_dataclass_of_the_project_is_refused_on_encoding():
    from testbed.protocol import Send

    with pytest.raises(WireError, match="not a registered wire type"):
        encode(Send(Payload("k", b""), "up"))


def test_a_message_carries_tags_not_module_paths():
    data = encode(Call(1, "fit", (Payload("adapter_down", b"x"),)))
    assert b"testbed." not in data and b":Payload" not in data
    assert decode(data) == Call(1, "fit", (Payload("adapter_down", b"x"),))
    assert decode(encode(Stop())) == Stop()


def _samples() -> dict[str, object]:
    """One value of every type registered by the decoder's defining modules."""
    from testbed.backends import messages as m
    from testbed.config.scenario import load_scenario
    from testbed.host.calibration import HostCalibration
    from testbed.ml.workload import Workload
    from testbed.protocol import ClientSpec, ComputeSpan, Failure, FitIns, FitRes, StepRes

    span = ComputeSpan("train", 0.25, Workload(flops=2.0, bytes_moved=3.0), precision="bf16", t_end_unix=1.5)
    scenario = load_scenario(ROOT / "scenarios" / "smoke.yaml")
    spec = ClientSpec(client_id=1, scenario=scenario, model_dir="/m", train_indices=(3, 1), threads=2)
    fit_res = FitRes(1, 2, (Payload("adapter_up", b"\x00\x01"),), 5, {"loss": 0.5}, (span,), 7)
    values = [
        Payload("k", b"\xff"), span, FitIns(1, (Payload("d", b"x"),), 3, {"a": (1, 2)}), fit_res,
        StepRes((Payload("g", b""),), (span,), 4), Failure(0, 1, "oom", "killed", 0.5, 9), spec,
        Workload(flops=1.0, bytes_moved=2.0), scenario,
        HostCalibration(threads=1, gemm_gflops_fp32=1.0, gemm_gflops_bf16=None, mem_bandwidth_gbps=2.0,
                        measured_at="2026-01-01T00:00:00+00:00", torch_version="x", cpu_model="y", seconds_spent=0.1),
        m.WorkerSetup("frameworks.fedllm:FedLLMClient", spec, 1), m.Call(1, "fit", (b"x",)), m.Calibrate(0.5),
        m.AskLimits(), m.Stop(), m.Ready(1.0, 2, 3, {"cpus": [0]}), m.SetupError("tb"), m.Started(1, 2),
        m.Done(fit_res), m.Raised("E", 0.1, 3), m.Calibrated({"threads": 1}), m.Limits({"cpus": [1]}),
        m.Died(-9, 10, 1), m.Exited(137, True, "gone"),
    ]
    return {type(v).__name__: v for v in values}


def test_every_registered_type_round_trips_as_itself():
    wire.load_registry()
    samples = _samples()
    defined = {tag for tag, cls in wiretypes.registered().items() if cls.__module__ in wire.DEFINING_MODULES}
    assert defined == set(samples)  # a newly registered type needs a sample here
    for tag, value in samples.items():
        back = decode(encode(value))
        assert back == value and type(back) is type(value), tag
