"""The checks a valid scenario passes before anything starts, beyond its schema and names:
against its model's config.json (LoRA targets, blocks, vocabulary, the memory a client needs)
and this host (the memory the fleet needs), its dataset's content, and the chat template an
instruction task's `template: chat` needs. Nothing is loaded but config.json (and the
tokenizer's config, for a chat template) and the data file, so `testbed validate` runs them
in a fraction of a second and `testbed run` runs the same before it starts a worker
(testbed.cli.common.load).

`check_scenario(scenario, source)` raises ScenarioError with one ``file: field: problem`` line.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from testbed.config.emulation import PROBE_MAX_CLIENTS
from testbed.config.files import FileProblem, read_text
from testbed.config.node import ScenarioError, problem_line
from testbed.config.references import from_file
from testbed.config.scenario import Scenario
from testbed.config.student_layers import student_layers
from testbed.ml.extras_check import check_extras
from testbed.ml.memory_need import activation_mb, client_blocks, client_need, fleet_memory, host_ram_mb
from testbed.ml.model_facts import ModelConfigError, ModelFacts, find_model_config, read_model_facts


def check_scenario(scenario: Scenario, source: str, *, ram_mb: float | None = None) -> None:
    """Every check of this module, in order; the first problem raises ScenarioError."""
    check_extras(scenario, source)  # first: the extras it needs are installed (testbed.ml.extras_check)
    facts = model_facts(scenario, source)
    known = facts if facts is not None and facts.known else None
    ram = host_ram_mb() if ram_mb is None else ram_mb
    if known is not None:
        _check_structure(scenario, known, source)
        _check_memory_limits(scenario, known, source)
        _check_batch(scenario, known, source, ram)
    check_fleet_memory(scenario, known, source, ram_mb=ram)
    check_chat_template(scenario, source)
    check_dataset(scenario, source)


def model_facts(scenario: Scenario, source: str) -> ModelFacts | None:
    """The model's facts, or None where its config.json cannot be known here."""
    try:
        path = find_model_config(scenario.model)
        return None if path is None else _read_facts(str(path), *_stamp(path))
    except ModelConfigError as exc:
        if exc.path is None:
            raise ScenarioError.at(source, "model", str(exc)) from None
        raise ScenarioError(from_file(str(exc), source, "model")) from None


def _stamp(path: Path) -> tuple[int, int]:
    try:
        info = path.stat()
    except OSError:
        return 0, 0
    return info.st_mtime_ns, info.st_size


@functools.lru_cache(maxsize=16)
def _read_facts(path: str, mtime_ns: int, size: int) -> ModelFacts:
    return read_model_facts(Path(path))


_MODULE_PATHS = (("model", "embed_tokens"), ("lm_head",),
                 *(("model", "layers", "#", "self_attn", n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")),
                 *(("model", "layers", "#", "mlp", n) for n in ("gate_proj", "up_proj", "down_proj")))


def is_module(target: str, blocks: int) -> bool:
    """Whether a LoRA target names a module of a Llama-family model of `blocks` decoder blocks:
    the target is a module path, or the end of one at a dot (peft's rule), `#` a block index."""
    parts = target.split(".")
    for path in _MODULE_PATHS:
        if len(parts) <= len(path) and all(
                p == q or (q == "#" and p.isascii() and p.isdigit() and str(int(p)) == p and int(p) < blocks)
                for p, q in zip(parts, path[len(path) - len(parts):])):
            return True
    return False


def _check_structure(scenario: Scenario, facts: ModelFacts, source: str) -> None:
    fw = scenario.framework
    where = f"{facts.config_path} ({facts.model_type}, {facts.n_blocks} blocks)"
    if fw.name == "split" and fw.split.cut_layer >= facts.n_blocks:
        raise ScenarioError.at(source, "framework.split.cut_layer", f"{fw.split.cut_layer} leaves no block on the "
                               f"server: the model has {facts.n_blocks} ({where}); give at most {facts.n_blocks - 1}")
    if fw.name == "kd":
        try:
            student_layers(fw.kd.student_layers, facts.n_blocks)
        except ValueError as exc:
            raise ScenarioError.at(source, "framework.kd.student_layers", f"{exc} ({facts.config_path})") from None
        if fw.kd.top_k > facts.vocab_size:
            raise ScenarioError.at(source, "framework.kd.top_k", f"{fw.kd.top_k} is more than the model's vocabulary "
                                   f"of {facts.vocab_size:,} tokens ({facts.config_path})")
    blocks, _, targets = client_blocks(scenario, facts)
    field = "framework.kd.student_targets" if fw.name == "kd" and fw.kd.student_targets else "framework.lora.targets"
    for i, target in enumerate(targets):
        if not is_module(target, blocks):
            raise ScenarioError.at(source, f"{field}.{i}", f"{target!r} is not a module LoRA can adapt in this model "
                                   f"({where}, {blocks} on the client); names: {', '.join(facts.module_names)}")


def _check_memory_limits(scenario: Scenario, facts: ModelFacts, source: str) -> None:
    need = client_need(scenario, facts)
    precision = "fp32" if need.shared else "fp32 (embeddings) and quantized block"
    limits = [(f"fleet.{i}.memory_limit_mb", e.memory_limit_mb) for i, e in enumerate(scenario.fleet)]
    limits.append(("emulation.memory_limit_mb", scenario.emulation.memory_limit_mb))
    for field, limit in limits:
        if limit is not None and limit < need.total_mb:
            raise ScenarioError.at(source, field, f"{limit:g} MiB is below the {need.total_mb:,.1f} MiB a client's "
                                   f"model needs at least: {need.describe(facts, precision)}")


def _check_batch(scenario: Scenario, facts: ModelFacts, source: str, ram_mb: float) -> None:
    """A training batch whose activations alone exceed this host's RAM is no batch."""
    need = activation_mb(scenario, facts)
    if need > ram_mb:
        fw, ds = scenario.framework, scenario.dataset
        field = "dataset.max_tokens" if ds.max_tokens * 8 > fw.batch_size * 96 else "framework.batch_size"
        raise ScenarioError.at(source, field, f"a batch of {fw.batch_size:,} x ({ds.max_tokens:,} + 7) tokens needs at "
                               f"least {need:,.0f} MiB of activations (hidden size {facts.hidden_size:,} x "
                               f"{client_blocks(scenario, facts)[0]} blocks x 4 B a token), more than this host's "
                               f"{ram_mb:,.0f} MiB of RAM")


def check_fleet_memory(scenario: Scenario, facts: ModelFacts | None, source: str, *,
                       ram_mb: float | None = None) -> None:
    """The fleet's least memory (memory_need.fleet_memory, by `emulation.compute` where a
    scenario has one) must fit this host's RAM; the fleet entry with most clients is named."""
    compute = getattr(scenario.emulation, "compute", "measured")
    estimate = fleet_memory(scenario, facts, compute=compute)
    ram = host_ram_mb() if ram_mb is None else ram_mb
    if estimate.total_mb > ram:
        i = max(range(len(scenario.fleet)), key=lambda k: scenario.fleet[k].count)
        raise ScenarioError.at(source, f"fleet.{i}.count", f"a fleet of {scenario.n_clients:,} clients needs at least "
                               f"{estimate.total_mb:,.0f} MiB ({estimate.explanation}), more than this host's "
                               f"{ram:,.0f} MiB of RAM")


def rows_needed(scenario: Scenario) -> tuple[int, str]:
    """Examples the scenario's splits need at least, and how that is made up."""
    ds, part, n = scenario.dataset, scenario.partition, scenario.n_clients
    if scenario.emulation.compute == "predicted":  # only the probe's clients get data (testbed.sim.probe)
        n = min(n, PROBE_MAX_CLIENTS)
    public = ds.public_size or 0
    train = max(2, n * part.min_per_client)
    return ds.test_size + public + train, (f"test_size {ds.test_size} + public_size {public} + {n:,} clients x "
                                           f"min_per_client {part.min_per_client}")


def check_dataset(scenario: Scenario, source: str) -> None:
    """The data file loads for the task's kind (columns, types, labels, chat lists), and holds
    enough rows for the splits."""
    from testbed.ml.data import DATASETS, DataError, load_table

    need, parts = rows_needed(scenario)
    ds = scenario.dataset
    if ds.path is None and ds.name not in DATASETS:
        raise ScenarioError.at(source, "dataset.name", f"unknown dataset {ds.name!r}; known: {', '.join(DATASETS)} "
                                                       "(or give `path` to a CSV/JSONL/JSON/Parquet file)")
    if ds.path is not None:
        try:
            rows = len(load_table(ds.path, text=ds.text, label=ds.label, kind=scenario.task.kind, columns=ds.columns))
        except DataError as exc:
            raise ScenarioError(from_file(str(exc), source, "dataset.path")) from None
        if rows < need:
            raise ScenarioError(from_file(problem_line(ds.path, "(rows)", f"{rows:,} rows, fewer than the {need:,} "
                                                       f"the scenario needs ({parts})"), source, "dataset.path"))
        return
    rows = bundled_rows(ds.name)
    if rows is not None and rows < need:
        field = "dataset.test_size" if ds.test_size + (ds.public_size or 0) + 2 > rows else (
            f"fleet.{max(range(len(scenario.fleet)), key=lambda k: scenario.fleet[k].count)}.count")
        raise ScenarioError.at(source, field, f"the scenario needs {need:,} examples ({parts}), more than the "
                               f"{rows:,} of dataset {ds.name}")


def check_chat_template(scenario: Scenario, source: str) -> None:
    """An instruction task rendered with `template: chat` needs the model's chat template:
    chat_template.jinja, or a `chat_template` in tokenizer_config.json (no weights loaded)."""
    task = scenario.task
    if task.kind != "instruction" or task.template != "chat":
        return
    try:
        config = find_model_config(scenario.model)
    except ModelConfigError:
        return  # model_facts reports it
    if config is None or has_chat_template(config.parent):
        return
    raise ScenarioError.at(source, "task.template", f"the model has no chat template ({config.parent} has no "
                           "chat_template.jinja, nor a chat_template in tokenizer_config.json); use template: plain")


def has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file():
        return True
    try:
        tokenizer = json.loads(read_text(folder / "tokenizer_config.json", max_bytes=64 * 2**20))
    except (FileProblem, ValueError, RecursionError):
        return False
    return isinstance(tokenizer, dict) and bool(tokenizer.get("chat_template"))


@functools.cache
def bundled_rows(name: str | None) -> int | None:
    """Examples of a bundled dataset where it is built (one file per article), else None."""
    from testbed.ml.assets import cache_dir

    if name not in ("bbc-news", "bbc-headlines"):  # both: one example per article (none has an empty body)
        return None
    root = cache_dir() / "data" / "bbc-news"
    return sum(1 for _ in root.glob("*/*.txt")) if root.is_dir() else None
