"""The vs_flower workload in Flower's simulation (or in a plain loop), with the testbed's functions.

Run by benchmarks/vs_flower.py as a subprocess: `--system flower` with .venv-flower's python
(Flower 1.42's Message API: ServerApp + ClientApp through flwr.simulation.run_simulation on
the Ray backend, FedAvg weighted by samples, centralised evaluation on the server after each
round), `--system plain` with .venv's python (one process, the same calls in a loop).

Both build the data, the model, the client training and the evaluation exactly as the
testbed's FedLLM does: testbed.config.scenario.load_scenario on benchmarks/vs_flower.yaml,
frameworks.training.load_lora_task (testbed.ml.taskdata.build_task_data: same split, partition
and test set), frameworks.fedllm.train_local with the testbed's per-client-round seed and
the scenario's precision, testbed.ml.modeling.adapter_state / load_adapter_state, and
testbed.ml.task.evaluate. Each process keeps one model (a Ray actor serves clients in turn,
as a Flower ClientApp that caches its model would).

Writes --out (JSON): wall_s (from this process's start: imports, Ray start and shutdown
included), accuracy and eval loss per round, train loss per round, and the compute
intervals [who, kind, t0_unix, t1_unix]: each client's round (load the global adapter,
train_local, copy the adapter out: the span FedLLMClient.fit times, less its serialisation),
each aggregation, and each evaluation (load the adapter, evaluate), as the testbed's
host_timeline.csv records them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "benchmarks" / "vs_flower.yaml"
# --quick: the tiny model, one round of two steps, 16 test articles (shared with vs_flower.py).
QUICK_SETS = ("model=tiny-llama", "framework.rounds=1", "framework.local_steps=2", "dataset.test_size=16")

if str(REPO) not in sys.path:  # the testbed's packages, also when .venv-flower lacks the editable install
    sys.path.insert(0, str(REPO))


def scenario_overrides(precision: str, quick: bool) -> list[str]:
    return [f"framework.precision={precision}", *(QUICK_SETS if quick else ())]


def client_seed(scenario, rnd: int, cid: int) -> int:
    """FitIns.seed as frameworks.fedllm.FedLLM.configure_fit derives it."""
    return scenario.seed * 1_000_003 + rnd * 1009 + cid


# ------------------------------------------------------------------ per-process state

_STATE: dict = {}


def _scenario(overrides: list[str]):
    from testbed.config.scenario import load_scenario

    key = ("scenario", tuple(overrides))
    if key not in _STATE:
        _STATE[key] = load_scenario(SCENARIO, overrides)
    return _STATE[key]


def _model_dir(scenario) -> str:
    from testbed.ml.assets import resolve_model

    return resolve_model(scenario.model)


def client_task(overrides: list[str], cid: int):
    """(encoder, the client's examples, the model): one model per process, loaded at first use;
    other clients' examples are encoded with the same encoder on demand."""
    from frameworks.training import load_lora_task

    scenario = _scenario(overrides)
    if "client" not in _STATE:
        task = load_lora_task(scenario, _model_dir(scenario), lambda d: d.client_indices[cid])
        _STATE["client"] = task
        _STATE[("examples", cid)] = task.examples
    task = _STATE["client"]
    if ("examples", cid) not in _STATE:
        from testbed.ml.taskdata import build_task_data

        if "data" not in _STATE:
            _STATE["data"] = build_task_data(scenario)
        idx = _STATE["data"].client_indices[cid]
        _STATE[("examples", cid)] = task.encoder.encode_many(_STATE["data"].texts(idx), _STATE["data"].labels(idx))
    return task.encoder, _STATE[("examples", cid)], task.model


def client_train(overrides: list[str], cid: int, rnd: int, state: dict, log_path: str | None = None):
    """One client's round, as FedLLMClient.fit: load the global adapter, train_local, return
    (adapter state, n_samples, mean loss, interval)."""
    import numpy as np

    from frameworks.training import train_local
    from testbed.ml.modeling import OptimizerSpec, adapter_state, load_adapter_state

    scenario = _scenario(overrides)
    fw = scenario.framework
    encoder, examples, model = client_task(overrides, cid)
    t0 = time.time()  # the span FedLLMClient.fit times, less its safetensors (de)serialisation
    load_adapter_state(model, state)
    losses, _tokens = train_local(
        model, encoder, examples, steps=fw.local_steps, batch_size=fw.batch_size,
        optimizer=OptimizerSpec(fw.optimizer, fw.lr, fw.weight_decay), seed=client_seed(scenario, rnd, cid),
        precision=fw.precision, prox_mu=fw.fedprox_mu,
    )
    new_state = adapter_state(model)
    interval = [f"client{cid}", "train", t0, time.time()]
    if log_path:
        _append_interval(log_path, interval)
    return new_state, len(examples), float(np.mean(losses)), interval


def _append_interval(path: str, interval: list) -> None:
    line = (json.dumps(interval) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write per line with O_APPEND: lines from several actors don't mix
    finally:
        os.close(fd)


class Server:
    """The server's model and test set, as frameworks.fedllm.FedLLM.setup builds them."""

    def __init__(self, overrides: list[str]) -> None:
        from frameworks.training import load_lora_task
        from testbed.ml.modeling import adapter_state

        self.scenario = _scenario(overrides)
        task = load_lora_task(self.scenario, _model_dir(self.scenario), lambda data: data.splits.test)
        self.encoder, self.test_examples, self.model = task.encoder, task.examples, task.model
        self.initial_state = adapter_state(self.model)
        self.intervals: list[list] = []
        self.accuracy: dict[int, float] = {}
        self.eval_loss: dict[int, float] = {}

    def evaluate(self, rnd: int, state: dict) -> tuple[float, float]:
        from testbed.ml.modeling import load_adapter_state
        from testbed.ml.task import evaluate

        t0 = time.time()  # the span of FedLLM.evaluate
        load_adapter_state(self.model, state)
        res = evaluate(self.model, self.encoder, self.test_examples, batch_size=self.scenario.eval.batch_size,
                       precision=self.scenario.framework.precision)
        self.intervals.append(["server", "eval", t0, time.time()])
        self.accuracy[rnd], self.eval_loss[rnd] = res.accuracy, res.loss
        return res.accuracy, res.loss


# ------------------------------------------------------------------ Flower

def _flower_client_app():
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        import torch

        config = msg.content["config"]
        threads = int(config["threads"])
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)  # the CPUs Ray gives this client (num_cpus)
        overrides = json.loads(str(config["overrides"]))
        cid = int(context.node_config["partition-id"])
        rnd = int(config["server-round"])
        state = {k: v.contiguous() for k, v in msg.content["arrays"].to_torch_state_dict().items()}
        new_state, n, loss, _ = client_train(overrides, cid, rnd, state, str(config["intervals"]))
        reply = RecordDict({"arrays": ArrayRecord(new_state),
                            "metrics": MetricRecord({"num-examples": n, "train_loss": loss})})
        return Message(content=reply, reply_to=msg)

    return app


def _flower_server_app(server_box: dict, overrides: list[str], num_cpus: int, intervals_path: Path):
    from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        server = Server(overrides)
        server_box["server"] = server
        n = server.scenario.n_clients

        def evaluate_fn(rnd: int, arrays: ArrayRecord) -> MetricRecord | None:
            if rnd == 0:  # the scenario evaluates after every round, never before training
                return None
            acc, loss = server.evaluate(rnd, dict(arrays.to_torch_state_dict()))
            return MetricRecord({"accuracy": acc, "eval_loss": loss})

        class TimedFedAvg(FedAvg):
            """FedAvg with its aggregation timed (the testbed counts its own as model compute)."""

            def aggregate_train(self, server_round, replies):
                t0 = time.time()
                out = super().aggregate_train(server_round, replies)
                server.intervals.append(["server", "aggregate", t0, time.time()])
                return out

        strategy = TimedFedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n,
                               min_available_nodes=n, weighted_by_key="num-examples")
        result = strategy.start(
            grid=grid, initial_arrays=ArrayRecord(server.initial_state),
            num_rounds=server.scenario.framework.rounds,
            train_config=ConfigRecord({"overrides": json.dumps(overrides), "threads": num_cpus,
                                       "intervals": str(intervals_path)}),
            evaluate_fn=evaluate_fn,
        )
        server_box["train_loss"] = {int(r): float(m["train_loss"])
                                    for r, m in result.train_metrics_clientapp.items()}

    return app


def run_flower(overrides: list[str], num_cpus: int, work: Path) -> dict:
    import flower_workload  # by reference: Ray actors import this module instead of unpickling copies
    from flwr.simulation import run_simulation

    scenario = _scenario(overrides)
    host_cpus = os.cpu_count() or 1
    intervals_path = work / "client_intervals.jsonl"
    intervals_path.unlink(missing_ok=True)
    box: dict = {}
    run_simulation(
        server_app=flower_workload._flower_server_app(box, overrides, num_cpus, intervals_path),
        client_app=flower_workload._flower_client_app(),
        num_supernodes=scenario.n_clients,
        backend_config={
            "client_resources": {"num_cpus": num_cpus, "num_gpus": 0.0},
            "init_args": {"num_cpus": host_cpus, "num_gpus": 0, "include_dashboard": False,
                          "log_to_driver": True},
        },
    )
    server = box.get("server")
    if server is None or len(server.accuracy) < scenario.framework.rounds:
        raise RuntimeError("the Flower simulation ended without evaluating every round (see its log above)")
    client_intervals = [json.loads(line) for line in intervals_path.read_text().splitlines() if line.strip()]
    return {
        "accuracy": [server.accuracy[r] for r in sorted(server.accuracy)],
        "eval_loss": [server.eval_loss[r] for r in sorted(server.eval_loss)],
        "train_loss": [box.get("train_loss", {}).get(r) for r in sorted(server.accuracy)],
        "intervals": sorted(client_intervals + server.intervals, key=lambda iv: iv[2]),
        "num_cpus_per_client": num_cpus, "host_cpus": host_cpus,
    }


# ------------------------------------------------------------------ plain loop

def run_plain(overrides: list[str]) -> dict:
    from frameworks.aggregate import fedavg

    server = Server(overrides)
    scenario = server.scenario
    state, intervals, train_loss = server.initial_state, [], []
    for rnd in range(1, scenario.framework.rounds + 1):
        results = [client_train(overrides, cid, rnd, state) for cid in range(scenario.n_clients)]
        intervals += [r[3] for r in results]
        weights = [float(r[1]) for r in results]
        t0 = time.time()
        state = fedavg([r[0] for r in results], weights)
        intervals.append(["server", "aggregate", t0, time.time()])
        train_loss.append(sum(w * r[2] for w, r in zip(weights, results, strict=True)) / sum(weights))
        server.evaluate(rnd, state)
    return {
        "accuracy": [server.accuracy[r] for r in sorted(server.accuracy)],
        "eval_loss": [server.eval_loss[r] for r in sorted(server.eval_loss)],
        "train_loss": train_loss,
        "intervals": sorted(intervals + server.intervals, key=lambda iv: iv[2]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", choices=("flower", "plain"), default="flower")
    ap.add_argument("--num-cpus", type=int, default=2, help="Flower: CPUs per client (Ray client_resources)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--quick", action="store_true", help="tiny model, 1 round of 2 steps, 16 test articles")
    ap.add_argument("--out", required=True, help="JSON file for the results")
    args = ap.parse_args()

    import psutil

    started = psutil.Process().create_time()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    overrides = scenario_overrides(args.precision, args.quick)
    if args.system == "flower":
        res = run_flower(overrides, args.num_cpus, out.parent)
        from importlib.metadata import version

        res["versions"] = {p: version(p) for p in ("flwr", "ray", "torch", "transformers", "peft")}
    else:
        res = run_plain(overrides)
    ended = time.time()
    res.update(system=args.system, precision=args.precision, quick=args.quick, overrides=overrides,
               t_start_unix=started, t_end_unix=ended, wall_s=ended - started, pid=os.getpid())
    out.write_text(json.dumps(res, indent=1))
    print(f"{args.system}: {res['wall_s']:.1f} s, accuracy per round {[round(a, 3) for a in res['accuracy']]}")
    return 0


if __name__ == "__main__":
    import flower_workload  # run as that module (not __main__) so Ray pickles its functions by reference

    sys.exit(flower_workload.main())
