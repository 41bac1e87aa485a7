"""Fuzzing the testbed's inputs: hypothesis strategies for every kind of file a scenario names,
and the property every one of them must keep.

The property: ``testbed validate`` (called in-process, ``testbed.cli.main.main``) either
accepts (exit 0) or rejects with exit 2 and exactly one line ``error: <file>: <field>: <problem>``
on stderr, never any other exit and never an exception. The CLI's last-resort guard (an
unexpected exception while loading input becomes exit 2 naming ``(internal)``) counts as a
failure here: it must never be what answers.

The test modules (tests/testbed/test_fuzz_inputs.py, tests/network/test_trace_fuzz.py,
tests/device_profiles/test_profile_fuzz.py) run these under the hypothesis profiles of
tests/conftest.py; ``python -m tests.fuzzing --examples 2000`` runs a census instead: every
kind for that many examples, counting outcomes and distinct tracebacks (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((REPO / "scenarios").glob("*.yaml"))
SMOKE = REPO / "scenarios" / "smoke.yaml"
TRACES = REPO.parent / "shared" / "data" / "traces" / "mahimahi"
PROFILES = REPO / "device_profiles"
ERROR_LINE = re.compile(r"^error: [^\n]+?: [^\n]+?: [^\n]+$")
INTERNAL = ": (internal): "  # the CLI's last-resort guard: never the answer a fuzzed input gets


# ---------------------------------------------------------------------------------------------
# Running the command and judging its answer


@dataclass(frozen=True)
class Outcome:
    code: int | None  # exit code; None when an exception escaped
    out: str
    err: str
    crash: str | None = None  # "ExcType at file:line" of an escaped exception

    @property
    def problem(self) -> str | None:
        """Why this answer breaks the property, or None when it keeps it."""
        if self.crash is not None:
            return f"traceback: {self.crash}"
        if self.code == 0:
            return None
        if self.code != 2:
            return f"exit {self.code}: {self.err[-500:]!r}"
        lines = self.err.splitlines()
        if len(lines) != 1 or not ERROR_LINE.match(lines[0]) or self.err.count("\n") > 1:
            return f"not one 'error: file: field: problem' line: {self.err[:500]!r}"
        if INTERNAL in lines[0]:
            return f"answered by the last-resort guard: {lines[0][:500]!r}"
        return None


def run_cli(argv: list[str]) -> Outcome:
    """`testbed <argv>` in this process, its stdout and stderr captured."""
    from testbed.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # noqa: BLE001  (what the property is about)
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        return Outcome(None, out.getvalue(), err.getvalue(), f"{type(exc).__name__} at {where}: {str(exc)[:200]}")
    return Outcome(code, out.getvalue(), err.getvalue())


def validate(path: str | Path, *overrides: str) -> Outcome:
    argv = ["validate", str(path)]
    argv += [f"--set={assignment}" for assignment in overrides]  # the form that takes a value starting with '-'
    return run_cli(argv)


def assert_clean(outcome: Outcome, shown: object = "") -> None:
    assert outcome.problem is None, f"{outcome.problem}\ninput: {str(shown)[:2000]}"


# ---------------------------------------------------------------------------------------------
# Values of random types


EDGE_INTS = [0, 1, -1, 2, 3, 7, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63) - 1]
EDGE_FLOATS = [0.0, -0.0, 1e-300, 5e-324, 0.5, 1e9, 1e308, math.inf, -math.inf, math.nan, 1e-3, 0.999999]
EDGE_STRINGS = ["", " ", "auto", "lte", "wifi", "pixel-7", "jetson-nano", "fedllm", "kd", "split", "1e9", "1e-3",
                ".inf", "-.inf", ".nan", "q_proj", "v_proj", "lm_head", "mlp", "yes", "no", "~", "null", "/dev/zero",
                "/dev/null", "/", ".", "..", "~nosuchuser/x", "a\x00b", "\n", "tiny-llama", "smollm2-135m",
                "org/model", "every:0", "first:99", "0-99", "fp16", "int4", "none", "dirichlet", "iid",
                "always", "fedscale", "deadline", "fedbuff", "docker", "inproc", "pool", "data_parallel",
                "\u00e9\u00e8", "\U0001f600", "\u0663", "\u00b2", "x" * 300]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(EDGE_INTS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(EDGE_FLOATS),
    st.text(max_size=12),
    st.sampled_from(EDGE_STRINGS),
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _field_names() -> list[str]:
    """Every field name of the scenario's sections: added keys then land on real fields."""
    from pydantic import BaseModel

    from testbed.config.scenario import Scenario

    names: set[str] = set()
    todo: list[type[BaseModel]] = [Scenario]
    while todo:
        model = todo.pop()
        for name, info in model.model_fields.items():
            names.add(name)
            for arg in _types_in(info.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel) and arg not in todo:
                    todo.append(arg)
    return sorted(names)


def _types_in(annotation: Any) -> list[Any]:
    import typing

    found, todo = [], [annotation]
    while todo:
        a = todo.pop()
        found.append(a)
        todo.extend(typing.get_args(a))
    return found


FIELD_NAMES = _field_names()
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=10)


# ---------------------------------------------------------------------------------------------
# Scenarios: the bundled ones, mutated


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside a raw scenario (dict keys and list indices)."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _get(node: Any, path: tuple) -> Any:
    for part in path:
        node = node[part]
    return node


@st.composite
def mutated_scenario(draw: st.DrawFn) -> dict[str, Any]:
    """A bundled scenario with 1-4 random edits: a value replaced by one of another type, a key
    removed or added, a value wrapped in a list or mapping (nesting)."""
    base = yaml.safe_load(draw(st.sampled_from(SCENARIOS)).read_text())
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_paths(base)))
        op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "nest"]))
        if not path:
            if op == "add":
                base[draw(keys)] = draw(values)
            continue
        parent, last = _get(base, path[:-1]), path[-1]
        if op == "replace":
            parent[last] = draw(values)
        elif op == "delete":
            del parent[last]
        elif op == "add" and isinstance(parent[last], dict):
            parent[last][draw(keys)] = draw(values)
        elif op == "add" and isinstance(parent[last], list):
            parent[last].append(draw(values))
        elif op == "nest":
            parent[last] = draw(st.sampled_from([[parent[last]], {draw(keys): parent[last]}]))
    return base


def dump_yaml(raw: Any) -> str:
    return yaml.safe_dump(raw, allow_unicode=True, sort_keys=False)


# Whole files: text that is not a scenario at all
def _deep(depth: int, open_: str, close: str) -> str:
    return open_ * depth + close * depth


scenario_bytes = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from([
        b"\xff\xfe\x00n\x00a\x00m\x00e\x00", b"name: caf\xe9\n", b"", b"\n", b"---\n", b"- 1\n- 2\n", b"42\n",
        b"null\n", b"name: [unclosed\n", b"!!python/object/apply:os.system [echo hi]\n", b"a: &x 1\nb: *y\n",
        b"fleet: !!binary AAAA\n", b"\t- x", b"name: x\nname: y\nfleet: []\n", b"? [a, b]\n: c\n",
    ]),
    st.integers(1, 20_000).map(lambda d: _deep(d, "[", "]").encode()),
    st.integers(1, 20_000).map(lambda d: ("fleet: " + _deep(d, "{a: ", "}")).encode()),
    st.integers(1, 3000).map(lambda d: "".join(f"{' ' * i}k{i}:\n" for i in range(d)).encode()),
    st.integers(2, 9).map(lambda n: "\n".join(
        [f"a0: &a0 [{', '.join(['x'] * n)}]"]
        + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * n)}]" for i in range(1, n)]
        + [f"fleet: *a{n - 1}"]).encode()),
)


# ---------------------------------------------------------------------------------------------
# --set strings


@st.composite
def set_strings(draw: st.DrawFn) -> list[str]:
    """1-3 `--set key=value` strings: keys from the scenario's paths or made up, values YAML or not."""
    base = yaml.safe_load(SMOKE.read_text())
    known = [".".join(str(p) for p in path) for path in _paths(base) if path]
    out = []
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.one_of(
            st.sampled_from(known),
            st.lists(st.one_of(keys, st.integers(0, 5).map(str), st.sampled_from(["", "\u00b2", "\u0663", "-1", " 0"])),
                     min_size=1, max_size=4).map(".".join),
            st.text(max_size=15),
        ))
        value = draw(st.one_of(
            st.text(max_size=20),
            values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
            st.sampled_from(["[", "{a: b", "]", "*x", "&a", "!!python/name:os.system", ".inf", "1e9", "true",
                             "'", '"', "a: b: c", "- x", "%YAML 1.1", "\t", "{", "@x", "`x`", "1e-3", "-5",
                             "[" * 5000]),
        ))
        sep = draw(st.sampled_from(["=", "=", "=", "", "==", " = "]))
        out.append(f"{key}{sep}{value}")
    return out


# ---------------------------------------------------------------------------------------------
# Mahimahi traces: lines of the real ones, mutated


def real_trace_lines(limit: int = 400) -> dict[str, list[str]]:
    """The first `limit` lines of each mahimahi trace under ../shared/data/traces."""
    out = {}
    for path in sorted(TRACES.glob("*")):
        with open(path) as fh:
            out[path.name] = [line.rstrip("\n") for _, line in zip(range(limit), fh)]
    return out


TRACE_LINES = real_trace_lines() if TRACES.is_dir() else {}
trace_words = st.one_of(
    st.integers(-5, 10**6).map(str),
    st.sampled_from(EDGE_INTS).map(str),
    st.integers(2**63 - 5, 2**80).map(str),
    st.sampled_from(["", " ", "1.5", "1e3", "0x10", "1_000", "+5", "\u0663\u0663", "\u00b2", "nan", "inf", "12 13",
                     "abc", "\t7", "-0", "00", "\x00"]),
    st.text(max_size=6),
)


@st.composite
def trace_bytes(draw: st.DrawFn) -> bytes:
    """A trace file: a slice of a real trace with lines replaced, inserted, deleted or reordered,
    or raw bytes."""
    if not TRACE_LINES or draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200) | st.sampled_from([b"", b"\n", b"\xff\xfe1\n", b"1\r\n2\r\n"]))
    name = draw(st.sampled_from(sorted(TRACE_LINES)))
    lines = list(TRACE_LINES[name][: draw(st.integers(1, 400))])
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "swap"]))
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if op == "replace" and lines:
            lines[i] = draw(trace_words)
        elif op == "insert":
            lines.insert(i, draw(trace_words))
        elif op == "delete" and lines:
            del lines[i]
        elif op == "swap" and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    ending = draw(st.sampled_from(["\n", "\n", "\r\n", ""]))
    return (ending or "\n").join(lines).encode("utf-8", "surrogatepass") + ending.encode()


# ---------------------------------------------------------------------------------------------
# FedScale availability JSON


number_ish = st.one_of(st.integers(-10, 10**7), st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from([10**400, -(10**400), 2**63, 0, 1e308]), values)


@st.composite
def availability_bytes(draw: st.DrawFn) -> bytes:
    """A FedScale availability file: valid-looking entries with edits of random types, JSON of
    the wrong shape, numbers past float range, NaN/Infinity, deep nesting, or raw bytes."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=120) | st.sampled_from([b"", b"[]", b"{}", b"null", b"\xff{}", b"1"]))
    if kind == 1:
        depth = draw(st.integers(1, 50_000))
        return ("[" * depth + "]" * depth).encode()
    entries: dict[str, Any] = {}
    for cid in range(draw(st.integers(1, 4))):
        n = draw(st.integers(0, 4))
        starts = sorted(draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n, unique=True)))
        active = starts
        inactive = [s + draw(st.integers(1, 1000)) for s in starts]
        entry: dict[str, Any] = {"active": active, "inactive": inactive, "finish_time": 2 * 10**6}
        for _ in range(draw(st.integers(0, 3))):
            field = draw(st.sampled_from(["active", "inactive", "finish_time", "extra"]))
            op = draw(st.sampled_from(["value", "item", "delete"]))
            if op == "delete":
                entry.pop(field, None)
            elif op == "item" and isinstance(entry.get(field), list) and entry[field]:
                entry[field][draw(st.integers(0, len(entry[field]) - 1))] = draw(number_ish)
            else:
                entry[field] = draw(number_ish)
        entries[draw(st.sampled_from([str(cid), f"c{cid}", ""]))] = entry if draw(st.integers(0, 6)) else draw(values)
    text = json.dumps(draw(st.sampled_from([entries, entries, list(entries.values())])), allow_nan=True)
    return text.encode()


# ---------------------------------------------------------------------------------------------
# Datasets (CSV, TSV, JSON lines, JSON arrays)


cell = st.one_of(st.text(max_size=15), st.sampled_from(["", "NaN", "null", "business", "tech", "1", "\"", "a,b",
                                                          "line\nbreak", "\x00", "\u00e9"]))


@st.composite
def dataset_file(draw: st.DrawFn) -> tuple[str, bytes]:
    """(suffix, content) of a bring-your-own dataset, often nearly right: header with or without
    the needed columns, rows of text and labels, some cells of other types, or raw bytes."""
    suffix = draw(st.sampled_from([".csv", ".tsv", ".jsonl", ".json", ".ndjson", ".txt", ""]))
    if draw(st.integers(0, 9)) == 0:
        return suffix, draw(st.binary(max_size=200) | st.sampled_from([b"", b"\xff\xfe", b"[" * 5000, b"text,label\n"]))
    columns = draw(st.sampled_from([["text", "label"], ["label", "text", "x"], ["text"], ["body", "topic"], []])
                   | st.lists(st.text(max_size=6), max_size=3))
    n_rows = draw(st.integers(0, 400))
    labels = draw(st.lists(st.sampled_from(["business", "tech", "sport", "x", "1", ""]), min_size=1, max_size=4))
    rows = [{c: (f"article {i} about {labels[i % len(labels)]}" if c == "text" else labels[i % len(labels)])
             for c in columns} for i in range(n_rows)]
    for _ in range(draw(st.integers(0, 3))):
        if rows:
            row = rows[draw(st.integers(0, len(rows) - 1))]
            row[draw(st.sampled_from(columns or ["text"]))] = draw(cell | values)
    if suffix in (".jsonl", ".ndjson", ".txt", "") or (suffix == ".json" and draw(st.booleans())):
        text = "\n".join(json.dumps(r, allow_nan=True, default=str) for r in rows)
    elif suffix == ".json":
        text = json.dumps(rows, allow_nan=True, default=str)
    else:
        sep = "\t" if suffix == ".tsv" else ","
        text = "\n".join([sep.join(columns)] + [sep.join(str(r.get(c, "")) for c in columns) for r in rows])
    return suffix, text.encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------------------------------------
# Device and link profiles


@st.composite
def profile_text(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(kind, stem, content) of a device or link profile: a shipped one with fields replaced by
    values of random types, removed or added, or text that is not a profile at all."""
    kind = draw(st.sampled_from(["devices", "links"]))
    path = draw(st.sampled_from(sorted((PROFILES / kind).glob("*.yaml"))))
    if draw(st.integers(0, 9)) == 0:
        return kind, path.stem, draw(scenario_bytes)
    raw = yaml.safe_load(path.read_text())
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        field = draw(st.sampled_from(sorted(raw))) if raw else "name"
        if op == "replace":
            raw[field] = draw(values)
        elif op == "delete":
            raw.pop(field, None)
        else:
            raw[draw(keys)] = draw(values)
    return kind, path.stem, dump_yaml(raw).encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------------------------------------
# Model config.json files (what LoRA targets and memory needs are read from)


@st.composite
def model_config(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    raw = dict(base)
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(sorted(raw)))
        op = draw(st.sampled_from(["replace", "replace", "delete"]))
        if op == "delete":
            raw.pop(field)
        else:
            raw[field] = draw(number_ish | values)
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=60) | st.sampled_from([b"[]", b"null", b"{" * 3000]))
    return json.dumps(raw, allow_nan=True).encode()


# ---------------------------------------------------------------------------------------------
# One example of each kind, end to end: write the files, run `testbed validate`


def smoke_with(workdir: Path, **changes: Any) -> Path:
    """The smoke scenario with top-level `changes` (a callable gets the raw mapping), written
    to workdir/s.yaml."""
    raw = yaml.safe_load(SMOKE.read_text())
    for key, value in changes.items():
        if callable(value):
            value(raw)
        else:
            raw[key] = value
    path = workdir / "s.yaml"
    path.write_text(dump_yaml(raw))
    return path


def scenario_case(raw: dict[str, Any], workdir: Path) -> Outcome:
    path = workdir / "s.yaml"
    path.write_text(dump_yaml(raw), encoding="utf-8", errors="surrogatepass")
    return validate(path)


def scenario_bytes_case(content: bytes, workdir: Path) -> Outcome:
    path = workdir / "raw.yaml"
    path.write_bytes(content)
    return validate(path)


odd_paths = st.one_of(
    st.sampled_from(["/dev/zero", "/dev/null", "/", ".", "..", "/proc/self/mem", "a\x00b.yaml", "~nosuchuser/s.yaml",
                     "x" * 5000, "missing.yaml", "dir/", "s.yaml/", "\n", "\udcff.yaml"]),
    st.text(min_size=1, max_size=30).filter(lambda s: not s.startswith("-")),
)


def odd_path_case(name: str, workdir: Path) -> Outcome:
    (workdir / "dir").mkdir(exist_ok=True)
    return validate(name if name.startswith(("/", "~")) else str(workdir / name))


def set_case(assignments: list[str], workdir: Path) -> Outcome:
    return validate(SMOKE, *assignments)


def trace_case(content: bytes, direction: str, workdir: Path) -> Outcome:
    trace = workdir / f"t.{direction}"
    trace.write_bytes(content)
    link = {"down_mbps": 10.0, "up_mbps": 5.0, "rtt_ms": 40, f"trace_{direction}": str(trace)}
    return validate(smoke_with(workdir, fleet=lambda r: r["fleet"][0].update(link=link)))


def availability_case(content: bytes, workdir: Path) -> Outcome:
    path = workdir / "avail.json"
    path.write_bytes(content)
    return validate(smoke_with(workdir, availability={"kind": "fedscale", "path": str(path)}))


def dataset_case(example: tuple[str, bytes], workdir: Path) -> Outcome:
    suffix, content = example
    path = workdir / f"data{suffix}"
    path.write_bytes(content)
    return validate(smoke_with(workdir, dataset={"path": str(path), "max_tokens": 32, "test_size": 20}))


@contextlib.contextmanager
def catalog_at(folder: Path):
    """The device and link catalogs read from `folder`/devices and `folder`/links meanwhile."""
    from device_profiles import catalog

    saved = catalog.DEVICES_DIR, catalog.LINKS_DIR
    catalog.DEVICES_DIR, catalog.LINKS_DIR = folder / "devices", folder / "links"
    catalog._catalog.cache_clear()
    try:
        yield
    finally:
        catalog.DEVICES_DIR, catalog.LINKS_DIR = saved
        catalog._catalog.cache_clear()


def profile_case(example: tuple[str, str, bytes], workdir: Path) -> Outcome:
    """A fuzzed profile in a copy of the catalog, then `testbed validate` of the smoke scenario."""
    import shutil

    kind, stem, content = example
    for sub in ("devices", "links"):
        if not (workdir / sub).is_dir():
            shutil.copytree(PROFILES / sub, workdir / sub)
    target = workdir / kind / f"{stem}.yaml"
    original = (PROFILES / kind / f"{stem}.yaml").read_bytes()
    target.write_bytes(content)
    try:
        with catalog_at(workdir):
            return validate(SMOKE)
    finally:
        target.write_bytes(original)


def model_config_case(content: bytes, workdir: Path) -> Outcome:
    folder = workdir / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_bytes(content)
    return validate(smoke_with(workdir, model=str(folder)))


def tiny_config() -> dict[str, Any]:
    from testbed.ml.assets import tiny_llama_dir

    return json.loads((tiny_llama_dir() / "config.json").read_text())


def kinds() -> dict[str, tuple[Any, Any]]:
    """Input kind -> (strategy, case function taking the example and a work folder)."""
    return {
        "scenario": (mutated_scenario(), scenario_case),
        "scenario_bytes": (scenario_bytes, scenario_bytes_case),
        "odd_path": (odd_paths, odd_path_case),
        "set": (set_strings(), set_case),
        "trace": (st.tuples(trace_bytes(), st.sampled_from(["up", "down"])),
                  lambda ex, wd: trace_case(ex[0], ex[1], wd)),
        "availability": (availability_bytes(), availability_case),
        "dataset": (dataset_file(), dataset_case),
        "profile": (profile_text(), profile_case),
        "model_config": (model_config(tiny_config()), model_config_case),
    }


# ---------------------------------------------------------------------------------------------
# Census: many examples per kind, counting answers instead of stopping at the first bad one


class TimeLimit(BaseException):
    """An example that took longer than the census allows (a hang, counted apart)."""


@contextlib.contextmanager
def _time_limit(seconds: float):
    import signal

    def expire(signum: int, frame: Any) -> None:
        raise TimeLimit(f"no answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def census_of(strategy: Any, case: Any, examples: int, seed: int | None = None,
              timeout_s: float = 20.0) -> dict[str, Any]:
    """Run `examples` examples of one input kind through `case`, counting answers (accepted,
    rejected, tracebacks, hangs past `timeout_s`, bad answers) and keeping one example of each
    distinct failure."""
    import collections
    import tempfile

    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    counts: collections.Counter[str] = collections.Counter()
    distinct: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)

        @settings(max_examples=examples, database=None, deadline=None, derandomize=seed is None,
                  suppress_health_check=list(HealthCheck), phases=["generate"])
        @given(strategy)
        def run(example: Any) -> None:
            with _time_limit(timeout_s):
                outcome = case(example, workdir)
            problem = outcome.problem
            counts["examples"] += 1
            if problem is None:
                counts["accepted" if outcome.code == 0 else "rejected"] += 1
                return
            hung = outcome.crash is not None and outcome.crash.startswith(TimeLimit.__name__)
            counts["hangs" if hung else "tracebacks" if outcome.crash else "bad answers"] += 1
            distinct.setdefault((outcome.crash or problem)[:120], repr(example)[:300])

        (run if seed is None else hseed(seed)(run))()
    return {**counts, "distinct": distinct}


def census(examples: int, only: list[str] | None = None, seed: int | None = None) -> dict[str, dict[str, Any]]:
    """`census_of` every input kind (or those in `only`)."""
    return {name: census_of(strategy, case, examples, seed) for name, (strategy, case) in kinds().items()
            if not only or name in only}


def _main() -> None:
    import argparse
    import time

    p = argparse.ArgumentParser(description="fuzz census of testbed validate's inputs")
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--kinds", help="comma-separated (default: all)")
    p.add_argument("--seed", type=int)
    args = p.parse_args()
    for name in (args.kinds.split(",") if args.kinds else list(kinds())):
        t0 = time.perf_counter()
        result = census(args.examples, [name], args.seed)[name]
        distinct = result.pop("distinct")
        print(f"{name}: {json.dumps(result)} ({time.perf_counter() - t0:.0f} s)", flush=True)
        for key, example in distinct.items():
            print(f"    {key}\n        e.g. {example}", flush=True)


if __name__ == "__main__":
    _main()


def share(fraction: float):
    """Hypothesis settings running `fraction` of the loaded profile's examples (tests/conftest.py:
    `ci` by default, `long` under TESTBED_FUZZ=long), so each input kind's cost stays in budget."""
    from hypothesis import settings

    return settings(max_examples=max(10, int(settings.default.max_examples * fraction)))
