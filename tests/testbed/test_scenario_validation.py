"""Each rule of scenario validation (issue 17), through `testbed validate` as a user calls it:
exit 2 and exactly one line ``error: <file>: <field>: <problem>`` naming the file at fault (the
scenario, or the trace, dataset, availability file or config.json it names). `testbed run`
refuses the same input before it starts anything; every bundled scenario still validates."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from testbed.cli.main import main
from testbed.config.scenario import ScenarioError, load_scenario
from testbed.ml import preflight
from testbed.ml.memory_need import fleet_memory
from tests.fuzzing import SCENARIOS, SMOKE, run_cli

HOST_RAM_MB = 16_384.0


@pytest.fixture(autouse=True)
def host_with_16_gib(monkeypatch: pytest.MonkeyPatch, assets) -> None:
    """The same host RAM everywhere, so the fleet's memory message reads the same."""
    monkeypatch.setattr(preflight, "host_ram_mb", lambda: HOST_RAM_MB)


def refused(*argv: str) -> str:
    """The one stderr line of a refused `testbed ...` (exit 2)."""
    outcome = run_cli(list(argv))
    assert outcome.crash is None and outcome.code == 2, outcome
    assert outcome.err.count("\n") == 1 and outcome.err.endswith("\n"), outcome.err
    return outcome.err.rstrip("\n")


def smoke_set(*overrides: str) -> str:
    return refused("validate", str(SMOKE), *[f"--set={o}" for o in overrides])


def tiny_config(assets) -> Path:
    return assets.tiny / "config.json"


S = str(SMOKE)


# ---------------------------------------------------------------------------------------------
# Numbers: finite, in range, not booleans


@pytest.mark.parametrize(("override", "line"), [
    ("fleet.0.link={down_mbps: 5, up_mbps: 5, rtt_ms: .inf}",
     f"error: {S}: fleet.0.link.rtt_ms: Input should be a finite number (got inf)"),
    ("server.link.rate_mbps=.inf", f"error: {S}: server.link.rate_mbps: Input should be a finite number (got inf)"),
    ("framework.lr=.nan", f"error: {S}: framework.lr: Input should be a finite number (got nan)"),
    ("framework.lr=0", f"error: {S}: framework.lr: Input should be greater than 0 (got 0)"),
    ("network.outages=[[0, .inf]]", f"error: {S}: network.outages.0.1: Input should be a finite number (got inf)"),
    ("seed=-1", f"error: {S}: seed: Input should be greater than or equal to 0 (got -1)"),
    ("seed=4294967296", f"error: {S}: seed: Input should be less than or equal to 4294967295 (got 4294967296)"),
    ("fleet.0.count=true", f"error: {S}: fleet.0.count: the boolean true is not a valid value here"),
    ("framework.lr=true", f"error: {S}: framework.lr: the boolean true is not a valid value here"),
    ("emulation.parallel_clients=false",
     f"error: {S}: emulation.parallel_clients: the boolean false is not a valid value here"),
    ("fleet.0.count=100000000000000000000000000",
     f"error: {S}: fleet.0.count: an integer of 87 bits is outside the 64-bit range"),
    ('name="a\\x00b"', f"error: {S}: name: 'a\\x00b' contains control characters"),  # YAML's escape of a NUL
])
def test_nonsense_numbers_and_values_are_refused_naming_the_field(override: str, line: str) -> None:
    assert smoke_set(override) == line


def test_flags_still_take_booleans_and_rates_still_take_integers() -> None:
    scenario = load_scenario(SMOKE, ["emulation.enforce_memory=false", "framework.lr=1", "seed=4294967295"])
    assert scenario.emulation.enforce_memory is False and scenario.framework.lr == 1.0


# ---------------------------------------------------------------------------------------------
# Memory: limits below a client's model, fleets beyond this host


def test_a_memory_limit_below_the_models_weights_is_refused_with_the_need(assets) -> None:
    # tiny-llama: 3,392,064 parameters x 4 B = 12.9 MiB; LoRA r=4 on q,v of 4 blocks: 4 x 4 x ((64 + 64) +
    # (64 + 32)) = 3,584 parameters x 16 B = 0.05 MiB
    need = (f"13.0 MiB a client's model needs at least: 3,392,064 parameters of {tiny_config(assets)} (4 of 4 blocks) "
            "as fp32 weights, 12.9 MiB, + 3,584 LoRA parameters' training state, 0.1 MiB")
    assert smoke_set("fleet.2.memory_limit_mb=1") == f"error: {S}: fleet.2.memory_limit_mb: 1 MiB is below the {need}"
    assert smoke_set("emulation.memory_limit_mb=12.5") == f"error: {S}: emulation.memory_limit_mb: 12.5 MiB is below the {need}"
    assert main(["validate", S, "--set", "fleet.2.memory_limit_mb=14"]) == 0


def test_a_quantized_split_client_needs_less(assets) -> None:
    # split, cut 2, int8 blocks: embeddings 3,145,728 x 4 B + norm + 2 blocks x 61,568 x 1 B
    line = smoke_set("framework.name=split", "framework.split.quantization=int8", "fleet.0.memory_limit_mb=5")
    assert line.startswith(f"error: {S}: fleet.0.memory_limit_mb: 5 MiB is below the 12.1 MiB a client's model "
                           f"needs at least: 3,268,928 parameters of {tiny_config(assets)} (2 of 4 blocks) as fp32 "
                           "(embeddings) and quantized block weights, 12.1 MiB")
    assert main(["validate", S, "--set", "framework.name=split", "--set", "framework.split.quantization=int8",
                 "--set", "fleet.0.memory_limit_mb=12.5"]) == 0


def test_a_fleet_beyond_this_hosts_ram_is_refused_with_the_estimate() -> None:
    # 1,000,000,002 worker processes x 100 MiB + as many clients x (0.05 MiB of records + 3,584 x 16 B of
    # LoRA state) + 12.9 MiB of weights = 100,104,687,713 MiB
    assert smoke_set("fleet.0.count=1000000000") == (
        f"error: {S}: fleet.0.count: a fleet of 1,000,000,002 clients needs at least 100,104,687,713 MiB "
        "(13 MiB of shared model weights + 1,000,000,002 worker processes x 100 MiB of runtime + 1,000,000,002 "
        "clients x 0.10 MiB of their own weights, LoRA state and records), more than this host's 16,384 MiB of RAM")
    # the entry with most clients is named
    assert smoke_set("fleet.1.count=300", "emulation.backend=inproc") == (  # memory fits in one process, data not
        f"error: {S}: fleet.1.count: the scenario needs 2,456 examples (test_size 40 + public_size 0 + 302 clients x "
        "min_per_client 8), more than the 2,225 of dataset bbc-news")


def test_a_batch_whose_activations_exceed_this_host_is_refused() -> None:
    # 10^9 x (32 + 7) tokens x 64 (hidden) x 4 blocks x 4 B = 38,085,938 MiB
    assert smoke_set("framework.batch_size=1000000000") == (
        f"error: {S}: framework.batch_size: a batch of 1,000,000,000 x (32 + 7) tokens needs at least 38,085,938 MiB "
        "of activations (hidden size 64 x 4 blocks x 4 B a token), more than this host's 16,384 MiB of RAM")
    assert smoke_set("dataset.max_tokens=10000000000").startswith(f"error: {S}: dataset.max_tokens: a batch of 4 x ")
    assert main(["validate", S, "--set=framework.batch_size=512"]) == 0  # 78 MiB


def test_the_fleet_bound_is_a_function_of_the_compute_mode() -> None:
    """A future `emulation.compute: predicted` trains nowhere: 10,000 clients must then fit."""
    scenario = load_scenario(SMOKE, ["fleet.0.count=9998", "emulation.backend=inproc"])
    facts = preflight.model_facts(scenario, S)
    predicted = scenario.model_copy(update={"emulation": SimpleNamespace(compute="predicted")})
    assert fleet_memory(predicted, facts, compute="predicted").total_mb == pytest.approx(12.94 + 10_000 * 0.05, abs=0.01)
    preflight.check_fleet_memory(predicted, facts, S, ram_mb=4096)  # valid
    measured = load_scenario(SMOKE, ["fleet.0.count=9998"])
    with pytest.raises(ScenarioError, match=r"fleet.0.count: a fleet of 10,000 clients needs at least 1,001,060 MiB"):
        preflight.check_fleet_memory(measured, facts, S, ram_mb=4096)


# ---------------------------------------------------------------------------------------------
# The model: LoRA targets, blocks, vocabulary, its config.json


def test_lora_targets_must_be_modules_of_the_model(assets) -> None:
    names = "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head, embed_tokens"
    assert smoke_set("framework.lora.targets=[q_proj, qkv]") == (
        f"error: {S}: framework.lora.targets.1: 'qkv' is not a module LoRA can adapt in this model "
        f"({tiny_config(assets)} (llama, 4 blocks), 4 on the client); names: {names}")
    assert smoke_set("framework.lora.targets=[mlp]").startswith(f"error: {S}: framework.lora.targets.0: 'mlp' is not")
    assert smoke_set("framework.lora.targets=[layers.7.self_attn.q_proj]").startswith(
        f"error: {S}: framework.lora.targets.0: 'layers.7.self_attn.q_proj' is not")  # 4 blocks: 0..3
    assert smoke_set("framework.lora.targets=[layers.03.self_attn.q_proj]").startswith(
        f"error: {S}: framework.lora.targets.0: 'layers.03.self_attn.q_proj' is not")  # peft matches names exactly
    for fine in ("[layers.3.self_attn.q_proj]", "[model.layers.0.mlp.up_proj]", "[self_attn.o_proj]",
                 "[gate_proj, up_proj, down_proj, lm_head]", "[embed_tokens]", "[model.embed_tokens]"):
        assert main(["validate", S, f"--set=framework.lora.targets={fine}"]) == 0, fine


def test_split_and_kd_options_are_checked_against_the_models_blocks_and_vocabulary(assets) -> None:
    kd = ("framework.name=kd", "framework.kd.public_batch=8", "dataset.public_size=20")
    assert smoke_set("framework.name=split", "framework.split.cut_layer=4") == (
        f"error: {S}: framework.split.cut_layer: 4 leaves no block on the server: the model has 4 "
        f"({tiny_config(assets)} (llama, 4 blocks)); give at most 3")
    assert smoke_set(*kd, "framework.kd.student_layers=first:9") == (
        f"error: {S}: framework.kd.student_layers: 'first:9': the model has 4 blocks ({tiny_config(assets)})")
    assert smoke_set(*kd, "framework.kd.top_k=100000") == (
        f"error: {S}: framework.kd.top_k: 100000 is more than the model's vocabulary of 49,152 tokens "
        f"({tiny_config(assets)})")
    assert smoke_set(*kd, "framework.kd.student_targets=[attn]").startswith(
        f"error: {S}: framework.kd.student_targets.0: 'attn' is not a module LoRA can adapt")


def test_the_model_must_be_found_and_its_config_readable(tmp_path: Path, assets) -> None:
    assert smoke_set("model=./nope") == (  # a --set path is relative to the current directory
        f"error: {S}: model: model path '{Path.cwd() / 'nope'}' does not exist (known names: smollm2-135m, "
        "tiny-llama)")
    assert smoke_set("model=org/none") == (
        f"error: {S}: model: 'org/none' is neither a bundled model (smollm2-135m, tiny-llama), a local folder, "
        "nor in the Hugging Face cache, and the hub is offline (HF_HUB_OFFLINE=1)")
    config = json.loads(tiny_config(assets).read_text())
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": -5}))
    assert smoke_set(f"model={folder}") == (
        f"error: {folder / 'config.json'}: hidden_size: expected a whole number in 1..131,072, got -5 "
        f"(from {S} model)")
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": True}))
    assert smoke_set(f"model={folder}").startswith(f"error: {folder / 'config.json'}: num_hidden_layers: expected")
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 2**31 - 1}))  # was a hang
    assert smoke_set(f"model={folder}") == (f"error: {folder / 'config.json'}: num_hidden_layers: expected a whole "
                                            f"number in 1..1,024, got 2147483647 (from {S} model)")
    (folder / "config.json").write_bytes(b"\xff{}")
    assert smoke_set(f"model={folder}") == (f"error: {folder / 'config.json'}: (file): not UTF-8 text (line 1, byte 0: "
                                            f"invalid start byte) (from {S} model)")
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["validate", S, f"--set=model={folder}"]) == 0  # no weights needed


# ---------------------------------------------------------------------------------------------
# Data: the file's columns, types and rows; the bundled set's size


def _data(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_dataset_needs_its_columns_right_types_and_enough_rows(tmp_path: Path) -> None:
    csv = _data(tmp_path, "d.csv", "body,topic\nx,a\n")
    assert smoke_set(f"dataset={{path: {csv}, test_size: 20}}") == (
        f"error: {csv}: (header): missing text column 'text'; columns found: ['body', 'topic'] (from {S} dataset.path)")
    jsonl = _data(tmp_path, "d.jsonl", '{"text": "a", "label": "x"}\n{"text": 5, "label": "y"}\n')
    assert smoke_set(f"dataset={{path: {jsonl}, test_size: 20}}") == (
        f"error: {jsonl}: line 2: text in column 'text' must be a string, got int (from {S} dataset.path)")
    jsonl.write_text('{"text": "a", "label": ["x"]}\n')
    assert smoke_set(f"dataset={{path: {jsonl}, test_size: 20}}") == (
        f"error: {jsonl}: line 1: label in column 'label' must be a string or a number, got list "
        f"(from {S} dataset.path)")
    rows = _data(tmp_path, "r.csv", "text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(43)))
    assert smoke_set(f"dataset={{path: {rows}, test_size: 20}}") == (
        f"error: {rows}: (rows): 43 rows, fewer than the 44 the scenario needs (test_size 20 + public_size 0 + "
        f"3 clients x min_per_client 8) (from {S} dataset.path)")
    rows.write_text(rows.read_text() + "t43,a\n")
    assert main(["validate", S, f"--set=dataset={{path: {rows}, test_size: 20}}"]) == 0


def test_a_generative_dataset_is_read_for_its_kind_and_counted(tmp_path: Path) -> None:
    alpaca = _data(tmp_path, "i.jsonl", "".join(json.dumps({"instruction": f"do {i}", "output": "done"}) + "\n"
                                                for i in range(43)))
    instruction = ("task.kind=instruction", f"dataset={{path: {alpaca}, test_size: 20}}")
    assert smoke_set(*instruction) == (
        f"error: {alpaca}: (rows): 43 rows, fewer than the 44 the scenario needs (test_size 20 + public_size 0 + "
        f"3 clients x min_per_client 8) (from {S} dataset.path)")
    assert smoke_set("task.kind=language_modeling", f"dataset={{path: {alpaca}, test_size: 20}}") == (
        f"error: {alpaca}: line 1: missing text column 'text' (task.kind language_modeling reads one text column; "
        f"dataset.columns.text names another); columns found: ['instruction', 'output'] (from {S} dataset.path)")
    chat = _data(tmp_path, "c.jsonl", '{"messages": [{"role": "user", "content": "q"}, '
                                      '{"role": "robot", "content": "a"}]}\n')
    assert smoke_set("task.kind=instruction", f"dataset={{path: {chat}, test_size: 20}}") == (
        f"error: {chat}: line 1: column 'messages': message 2: unknown role 'robot'; roles: system, user, assistant "
        f"(from {S} dataset.path)")
    alpaca.write_text(alpaca.read_text() + '{"instruction": "one more", "output": "done"}\n')
    assert main(["validate", S, *[f"--set={o}" for o in instruction]]) == 0
    lm = f"--set=dataset={{path: {alpaca}, test_size: 20, columns: {{text: instruction}}}}"
    assert main(["validate", S, "--set=task.kind=language_modeling", lm]) == 0


def test_the_bundled_headlines_bound_test_set_and_clients() -> None:
    assert smoke_set("task.kind=instruction", "dataset.name=bbc-headlines", "dataset.test_size=2300") == (
        f"error: {S}: dataset.test_size: the scenario needs 2,324 examples (test_size 2300 + public_size 0 + "
        "3 clients x min_per_client 8), more than the 2,225 of dataset bbc-headlines")
    assert main(["validate", S, "--set=task.kind=instruction", "--set=dataset.name=bbc-headlines"]) == 0


def test_a_chat_template_is_needed_for_template_chat(tmp_path: Path, assets) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(tiny_config(assets).read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 2048}))
    chat = ("task.kind=instruction", "dataset.name=bbc-headlines", "task.template=chat")
    assert smoke_set(*chat, f"model={folder}") == (
        f"error: {S}: task.template: the model has no chat template ({folder} has no chat_template.jinja, nor a "
        "chat_template in tokenizer_config.json); use template: plain")
    for template in ("plain", "auto"):
        assert main(["validate", S, *[f"--set={o}" for o in chat[:2]], f"--set=task.template={template}",
                     f"--set=model={folder}"]) == 0
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    assert main(["validate", S, *[f"--set={o}" for o in chat], f"--set=model={folder}"]) == 0
    (folder / "tokenizer_config.json").unlink()
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    assert main(["validate", S, *[f"--set={o}" for o in chat], f"--set=model={folder}"]) == 0
    assert main(["validate", S, *[f"--set={o}" for o in chat]]) == 0  # tiny-llama has one


def test_the_bundled_dataset_bounds_test_set_and_clients() -> None:
    assert smoke_set("dataset.test_size=2300") == (
        f"error: {S}: dataset.test_size: the scenario needs 2,324 examples (test_size 2300 + public_size 0 + "
        "3 clients x min_per_client 8), more than the 2,225 of dataset bbc-news")
    assert smoke_set("dataset.name=imdb") == (
        f"error: {S}: dataset.name: unknown dataset 'imdb'; known: bbc-news, bbc-headlines (or give `path` to a "
        "CSV/JSONL/JSON/Parquet file)")


# ---------------------------------------------------------------------------------------------
# Files: the scenario itself, traces, availability


def test_files_that_are_no_scenario_are_refused_naming_the_file(tmp_path: Path) -> None:
    raw = _data(tmp_path, "raw.yaml", "")
    raw.write_bytes(b"name: caf\xe9\n")
    assert refused("validate", str(raw)) == f"error: {raw}: (file): not UTF-8 text (line 1, byte 9: invalid continuation byte)"
    listed = _data(tmp_path, "list.yaml", "- 1\n- 2\n")
    assert refused("validate", str(listed)) == f"error: {listed}: (top level): expected a mapping of scenario fields, got a list"
    deep = _data(tmp_path, "deep.yaml", "[" * 300 + "]" * 300)
    assert refused("validate", str(deep)) == f"error: {deep}: line 1: nested deeper than 200 levels; no scenario field is"
    bomb = _data(tmp_path, "bomb.yaml", "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)] + ["fleet: *a8"]))
    assert refused("validate", str(bomb)) == (f"error: {bomb}: (file): more than 100,000 values (aliases expanding?); "
                                              "a scenario has a few dozen")
    tagged = _data(tmp_path, "tag.yaml", "seed: !!int abc\n")
    assert refused("validate", str(tagged)) == (
        f"error: {tagged}: (file): not valid YAML: ValueError: invalid literal for int() with base 10: 'abc'")


@pytest.mark.parametrize(("path", "problem"), [
    ("{tmp}", "is a folder, expected a file"),
    ("/dev/zero", "is not a regular file (a device, pipe or socket)"),
    ("{tmp}/nope.yaml", "file not found"),
    ("~nosuchuser/s.yaml", "cannot expand '~' (no such user)"),
])
def test_odd_paths_are_refused_naming_the_path(tmp_path: Path, path: str, problem: str) -> None:
    path = path.format(tmp=tmp_path)
    assert refused("validate", path) == f"error: {path}: (file): {problem}"
    assert refused("validate", f"{tmp_path}/a\x00b.yaml") == f"error: '{tmp_path}/a\\x00b.yaml': (file): the path contains a NUL byte"


def test_set_values_and_keys_are_checked_like_the_file() -> None:
    assert smoke_set("fleet") == f"error: {S}: --set: expected key=value, got 'fleet'"
    assert smoke_set("framework..lr=1") == f"error: {S}: --set: empty key component in 'framework..lr' (expected key.sub=value)"
    assert smoke_set("framework.lr=[") == f"error: {S}: framework.lr: not valid YAML: expected the node content, but found '<stream end>'"
    assert smoke_set("framework.bogus=1") == f"error: {S}: framework.bogus: unknown key"
    assert smoke_set("fleet.\u00b2.count=1") == f"error: {S}: fleet.\u00b2.count: --set: '\u00b2' is not an index of a list of length 3"
    assert smoke_set("seed.x=1") == f"error: {S}: seed.x: --set: cannot set 'x' inside a value that is not a mapping or list"
    assert smoke_set("seed.x.y=1") == f"error: {S}: seed.x.y: --set: 'x' is inside a value that is not a mapping or list"
    assert smoke_set("name=" + "[" * 5000) == f"error: {S}: name: nested deeper than 200 levels; no scenario field is"


def test_traces_past_int64_and_missing_traces_are_refused(tmp_path: Path) -> None:
    trace = _data(tmp_path, "t.up", "5\n9223372036854775808\n")
    assert smoke_set(f"fleet.0.link={{down_mbps: 5, trace_up: {trace}}}") == (
        f"error: {trace}: line 2: timestamp 9223372036854775808 ms is past 9007199254740992 ms (2^53), the largest "
        f"this model replays (from {S} fleet.0.link.trace_up)")
    assert smoke_set("fleet.0.link={down_mbps: 5, trace_up: /nope.up}") == (
        f"error: {S}: fleet.0.link.trace_up: file not found: /nope.up")


@pytest.mark.parametrize(("content", "problem"), [
    ('[{"active": [0], "inactive": [5]}]',
     "(top level): expected a non-empty object {client_id: {active, inactive, finish_time}}, got a JSON list"),
    ('{"1": {"active": [NaN], "inactive": [5]}}', "(file): NaN is not a number of seconds"),
    ('{"1": {"active": [0], "inactive": [1' + "0" * 400 + "]}}", "client 1: 'inactive' holds a number too large for seconds"),
    ('{"1": {"active": [0], "inactive": [5], "finish_time": "abc"}}',
     "client 1: 'finish_time' must hold numbers of seconds, got str"),
    ('{"1": {"active": [0], "inactive": [0.5], "finish_time": 0.5}}',
     "client 1: 'finish_time' must be at least 1 s (the length of the repeating period), got 0.5"),
    ('{"1": {"active": [true], "inactive": [5]}}', "client 1: 'active' must hold numbers of seconds, got bool"),
    ("[" * 100_000, "(file): JSON nested too deeply; expected {client_id: {active, inactive, finish_time}}"),
])
def test_availability_files_of_the_wrong_shape_are_refused_naming_the_file(tmp_path: Path, content: str,
                                                                           problem: str) -> None:
    avail = _data(tmp_path, "a.json", content)
    assert smoke_set("availability.kind=fedscale", f"availability.path={avail}") == (
        f"error: {avail}: {problem} (from {S} availability.path)")


def test_a_broken_catalog_profile_is_refused_naming_the_profile(tmp_path: Path) -> None:
    import shutil

    from tests.fuzzing import PROFILES, catalog_at

    for sub in ("devices", "links"):
        shutil.copytree(PROFILES / sub, tmp_path / sub)
    pixel = tmp_path / "devices" / "pixel-7.yaml"
    pixel.write_text(pixel.read_text().replace("cpu_gflops: 128.8", "cpu_gflops: .inf"))
    with catalog_at(tmp_path):
        line = refused("validate", S)
    assert line == (f"error: {pixel}: cpu_gflops: Input should be a finite number (got inf) "
                    f"(from {S} fleet.0.device)")


# ---------------------------------------------------------------------------------------------
# The command: run refuses the same, the guard is a last resort, the bundled scenarios pass


def test_run_refuses_the_same_before_starting_anything(tmp_path: Path) -> None:
    out = tmp_path / "run"
    for override in ("fleet.0.link={down_mbps: 5, up_mbps: 5, rtt_ms: .inf}", "fleet.0.memory_limit_mb=1",
                     "fleet.0.count=1000000000", "framework.lora.targets=[qkv]"):
        expected = smoke_set(override)
        assert refused("run", S, "--out", str(out), "--quiet", f"--set={override}") == expected
    assert not out.exists()


def test_an_unexpected_exception_while_loading_is_exit_2_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import testbed.config.scenario as scenario_module

    def boom(*_: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(scenario_module, "load_scenario", boom)
    assert refused("validate", S) == (f"error: {S}: (internal): checking this input failed unexpectedly "
                                      "(RuntimeError: boom second line); please report it")


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_bundled_scenario_still_validates(path: Path) -> None:
    outcome = run_cli(["validate", str(path)])
    assert (outcome.code, outcome.err) == (0, ""), outcome
    assert outcome.out.startswith(f"{path}: ok (")
    raw = yaml.safe_load(path.read_text())
    assert load_scenario(path).n_clients == sum(e.get("count", 1) for e in raw["fleet"])


def test_validate_checks_the_model_without_loading_it() -> None:
    """config.json is all `testbed validate` reads of a model: torch and transformers stay unimported."""
    import subprocess
    import sys

    code = ("import sys; from testbed.cli.main import main; "
            "assert main(['validate', 'scenarios/quickstart.yaml', '--set=fleet.0.memory_limit_mb=600']) == 0; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'safetensors') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=SMOKE.parents[1], capture_output=True, text=True, check=False,
                          timeout=120, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize(("content", "words"), [
    (b'{"instruction": "a", "output": ""}\n', ["line 1", "empty"]),
    (b'{"instruction": "caf\xe9", "output": "b"}\n', ["line 1", "UTF-8"]),
    (b'{"question": "a", "answer": "b"}\n', ["columns found", "question", "answer"]),
    (b'{"messages": [{"role": "user", "content": "q"}]}\n', ["line 1", "assistant"]),
])
def test_validate_refuses_bad_instruction_files_in_one_line(tmp_path: Path, content: bytes, words: list[str]) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content * 50)
    line = smoke_set("task.kind=instruction", f"dataset.path={path}", "dataset.test_size=10")
    assert line.startswith(f"error: {path}: ") and "\n" not in line, line
    for word in words:
        assert word in line, (word, line)
