"""kd's server set-up exports the students' ONNX graph once: a later run builds no student for it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import frameworks.kd.framework as kd
from frameworks.kd.onnx_student import graph_cached
from testbed.config.scenario import load_scenario

SMOKE = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml"


def test_the_student_is_built_for_the_export_only_while_no_graph_is_cached(assets, tmp_path, monkeypatch):
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path))
    monkeypatch.delenv("TESTBED_DERIVED", raising=False)
    scenario = load_scenario(str(SMOKE), ["framework.name=kd"])
    model_dir = str(assets.tiny)
    key = kd.onnx_cache_key(model_dir, scenario.framework.kd, kd.student_lora(scenario))
    exported: list[str] = []

    class Exporter:  # stands in for OrtStudent: records the export it is asked for and writes its file
        def __init__(self, model, sc, md, *, threads):
            self.model = model

        def prepare(self):
            exported.append(self.model)
            folder = tmp_path / "onnx" / key
            folder.mkdir(parents=True)
            (folder / "student.onnx").write_bytes(b"graph")

    monkeypatch.setattr(kd, "build_student", lambda sc, md: "the student")
    monkeypatch.setattr(kd, "ort_student", Exporter)
    server = SimpleNamespace(ctx=SimpleNamespace(scenario=scenario, model_dir=model_dir), opts=scenario.framework.kd)
    assert not graph_cached(key)
    kd.KDFedLLM._export_student_graph(server)
    assert exported == ["the student"] and graph_cached(key)
    kd.KDFedLLM._export_student_graph(server)  # a second run: the graph is there
    assert exported == ["the student"]
    # another architecture (other adapters) is exported anew
    other = load_scenario(str(SMOKE), ["framework.name=kd", "framework.lora.r=8"])
    assert not graph_cached(kd.onnx_cache_key(model_dir, other.framework.kd, kd.student_lora(other)))
