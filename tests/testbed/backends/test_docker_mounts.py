"""What a client container sees (testbed.backends.docker): the asset cache read-only, its own
folder of the run read-write, the endpoint on 127.0.0.1 over host networking.

The first tests read the ``containers.run`` arguments (no engine needed); the ``docker``-marked
one starts a container with them and tries the writes from inside.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from testbed.backends import docker as dk
from testbed.backends.endpoint import Endpoint
from testbed.config.scenario import load_scenario
from testbed.protocol import ClientSpec

SMOKE = Path(__file__).resolve().parents[3] / "scenarios" / "smoke.yaml"
IMAGE = "fedge-testbed:latest"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A small asset cache of its own: a model folder and a token-id file."""
    root = (tmp_path / "cache").resolve()
    (root / "models" / "m").mkdir(parents=True)
    (root / "models" / "m" / "config.json").write_text("{}")
    (root / "encoded").mkdir()
    (root / "encoded" / "abc-32.json").write_text('{"k": [1, 2]}')
    monkeypatch.setenv("TESTBED_CACHE", str(root))
    monkeypatch.delenv("TESTBED_DERIVED", raising=False)
    return root


def _kwargs(cache: Path, run_id: str = "mounts-test-0001", cid: int = 2) -> dict:
    spec = ClientSpec(client_id=cid, scenario=load_scenario(SMOKE, ["emulation.backend=docker"]),
                      model_dir=str(cache / "models" / "m"), train_indices=(1, 2), threads=1)
    requested = dk.requested_limits(1, 1.0, None, "0")
    return dk.client_container(IMAGE, run_id, spec, 1, ("http://127.0.0.1:1", "token"), requested)


def _mount_of(volumes: dict, path: Path) -> tuple[str, str] | None:
    """(source, mode) of the deepest mount that holds `path` inside the container."""
    holding = [(src, v["mode"]) for src, v in volumes.items() if path == Path(v["bind"]) or Path(v["bind"]) in path.parents]
    return max(holding, key=lambda m: len(Path(m[0]).parts), default=None)


def test_the_cache_is_read_only_and_only_the_clients_run_folder_is_writable(cache):
    kwargs = _kwargs(cache)
    volumes = kwargs["volumes"]
    derived = cache / "runs" / "mounts-test-0001" / "client-2"
    assert derived.is_dir()  # made by the host before the container starts
    assert kwargs["environment"]["TESTBED_DERIVED"] == str(derived)
    assert kwargs["environment"]["TESTBED_CACHE"] == str(cache)
    assert [src for src, v in volumes.items() if v["mode"] != "ro"] == [str(derived)]
    for inside in (cache, cache / "models" / "m", cache / "encoded" / "abc-32.json", cache / "runs",
                   cache / "runs" / "mounts-test-0001" / "client-1"):
        assert _mount_of(volumes, inside)[1] == "ro", inside
    assert _mount_of(volumes, derived / "encoded" / "x.json") == (str(derived), "rw")
    assert all(v["bind"] == src for src, v in volumes.items())  # the same paths inside
    assert kwargs["network_mode"] == "host" and kwargs["cap_drop"] == ["ALL"]


def test_the_run_folders_go_with_the_run(cache):
    _kwargs(cache, cid=0)
    _kwargs(cache, cid=1)
    _kwargs(cache, run_id="another-run", cid=0)
    assert sorted(p.name for p in (cache / "runs" / "mounts-test-0001").iterdir()) == ["client-0", "client-1"]
    dk.remove_run_folders("mounts-test-0001")
    assert not (cache / "runs" / "mounts-test-0001").exists() and (cache / "runs" / "another-run").is_dir()


def test_removing_a_runs_clients_removes_their_folders(cache):
    class NoContainers:
        class containers:  # noqa: N801 (the docker SDK's attribute)
            @staticmethod
            def list(**_):
                return []

    _kwargs(cache, run_id="gone-run", cid=0)
    dk.remove_run_containers(NoContainers(), "gone-run", role="server")
    assert (cache / "runs" / "gone-run" / "client-0").is_dir()  # only the server went
    dk.remove_run_containers(NoContainers(), "gone-run")  # the host's clean-up of a whole run
    assert not (cache / "runs" / "gone-run").exists()


def test_a_worker_reads_token_ids_from_the_cache_and_writes_them_to_its_own_folder(cache, tmp_path, monkeypatch):
    from testbed.ml.assets import derived_dir
    from testbed.ml.tokencache import TokenCache

    mine = tmp_path / "mine"
    monkeypatch.setenv("TESTBED_DERIVED", str(mine))
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text("{}")
    shared = TokenCache.for_tokenizer(cache, tokenizer, 7)
    shared.ids(["a"], lambda texts: [[5] for _ in texts])  # the host's earlier run filled the cache
    before = shared.path.read_text()
    tc = TokenCache.for_tokenizer(derived_dir(), tokenizer, 7, seed_dir=cache)
    asked = []
    assert tc.ids(["a", "b"], lambda texts: asked.extend(texts) or [[9] for _ in texts]) == [[5], [9]]
    assert asked == ["b"]  # "a" came from the cache
    assert shared.path.read_text() == before and tc.path.parent.parent == mine and tc.path.is_file()


def test_the_endpoint_listens_on_127_0_0_1_by_default():
    with Endpoint() as ep:
        assert ep.host == "127.0.0.1" and ep._server.server_address[0] == "127.0.0.1"


# --- in a real container --------------------------------------------------------------------------

_PROBE = """
import errno, json, os, pathlib, sys
from testbed.ml.assets import cache_dir, derived_dir
out = {"cache_dir": str(cache_dir()), "derived_dir": str(derived_dir())}
for name, path in (("cache", cache_dir() / "x.txt"), ("encoded", cache_dir() / "encoded" / "abc-32.json"),
                   ("derived", derived_dir() / "y.txt")):
    try:
        path.write_text("written inside")
        out[name] = "ok"
    except OSError as exc:
        out[name] = errno.errorcode.get(exc.errno, str(exc.errno))
print(json.dumps(out))
"""


def _engine_problem() -> str | None:
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        client.images.get(IMAGE)
    except Exception as exc:  # no SDK, no engine, no image
        return f"no Docker engine with {IMAGE}: {exc}"
    return None


@pytest.mark.docker
def test_inside_the_container_the_cache_refuses_writes_and_the_run_folder_takes_them(cache):
    problem = _engine_problem()
    if problem is not None:
        if os.environ.get("TESTBED_REQUIRE_DOCKER") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    import docker

    client = docker.from_env(timeout=60)
    run_id = dk.new_run_id("mounts-test")
    kwargs = _kwargs(cache, run_id=run_id)
    kwargs.update(command=[sys.executable, "-c", _PROBE], detach=True)
    container = client.containers.run(**kwargs)
    try:
        assert container.wait(timeout=120)["StatusCode"] == 0, container.logs().decode()
        import json

        seen = json.loads(container.logs(stdout=True, stderr=False).decode().strip().splitlines()[-1])
    finally:
        container.remove(force=True)
    derived = cache / "runs" / run_id / "client-2"
    assert seen == {"cache_dir": str(cache), "derived_dir": str(derived), "cache": "EROFS", "encoded": "EROFS",
                    "derived": "ok"}
    assert (derived / "y.txt").read_text() == "written inside"  # the host sees what the client wrote there
    assert not (cache / "x.txt").exists() and (cache / "encoded" / "abc-32.json").read_text() == '{"k": [1, 2]}'
    dk.remove_run_folders(run_id)
    assert not (cache / "runs" / run_id).exists()
