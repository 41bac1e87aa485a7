"""FedLLM: clients fine-tune LoRA adapters locally; the server averages them.

FedAvg weighted by local sample counts, with an optional FedProx proximal term
(``framework.fedprox_mu``). Only adapter tensors travel, serialised with safetensors.
"""

from __future__ import annotations

import time
import weakref
from pathlib import Path

import numpy as np

from frameworks.aggregate import buffered_step, fedavg, mean_metrics, staleness_weight
from frameworks.divergence import fails_on_divergence, finite_global
from frameworks.training import load_lora_task, model_mb, train_local
from testbed.ml import dataparallel
from testbed.ml.modeling import (
    AdapterState,
    OptimizerSpec,
    adapter_state,
    count_parameters,
    deserialize,
    load_adapter_state,
    serialize,
    server_device,
)
from testbed.ml.statefile import prefixed, unprefixed
from testbed.ml.task import EncodedExample
from testbed.ml.taskdata import build_task_data
from testbed.ml.tasks import evaluate_model
from testbed.ml.workload import lora_training_workload
from testbed.protocol import (
    Client,
    ComputeSpan,
    Failure,
    FitIns,
    FitRes,
    Framework,
    FrameworkState,
    Payload,
    client_round_seed,
)

_RANK_MODELS: dict[str, object] = {}  # model dir -> the model a data-parallel rank's clients share
_TRAINED: weakref.WeakSet = weakref.WeakSet()  # models a fit has changed (no longer the fresh adapter)


class FedLLMClient(Client):
    data_parallel = True  # train_local splits its batches across the group's ranks

    def setup(self) -> None:
        # A data-parallel rank hosts every client and runs one call at a time, and fit() starts by
        # loading its adapter: its clients share one model (set-up is on every run's critical path).
        in_group = dataparallel.group()[1] > 1
        shared = _RANK_MODELS.get(self.spec.model_dir) if in_group else None
        task = load_lora_task(self.spec.scenario, self.spec.model_dir, lambda _data: self.spec.train_indices,
                              model=shared)
        if in_group:
            _RANK_MODELS[self.spec.model_dir] = task.model
        self.encoder, self.examples, self.model = task.encoder, task.examples, task.model
        self.n_params, self.n_trainable = count_parameters(self.model)
        self.model_mb = model_mb(self.model)
        self._test_examples: list[EncodedExample] | None = None  # encoded on the first evaluate_global

    def initial_adapter(self) -> bytes:
        """The freshly built adapter (seeded by the scenario: the server's own would be the
        same), for a server that loads no model (FedLLM.client_initial_state)."""
        if self.model in _TRAINED:
            raise RuntimeError("initial_adapter: this model has trained already")
        return serialize(adapter_state(self.model))

    @fails_on_divergence
    def fit(self, ins: FitIns) -> FitRes:
        fw = self.spec.scenario.framework
        t0 = time.perf_counter()
        _TRAINED.add(self.model)
        load_adapter_state(self.model, deserialize(ins.payload("adapter_down").data))
        losses, tokens = train_local(
            self.model, self.encoder, self.examples, steps=fw.local_steps, batch_size=fw.batch_size,
            optimizer=OptimizerSpec(fw.optimizer, fw.lr, fw.weight_decay), seed=ins.seed,
            precision=fw.precision, prox_mu=fw.fedprox_mu,
        )
        up = Payload("adapter_up", serialize(adapter_state(self.model)))
        host_s = time.perf_counter() - t0
        work = lora_training_workload(n_params=self.n_params, n_trainable=self.n_trainable, tokens=tokens)
        return FitRes(
            client_id=self.spec.client_id, round=ins.round, payloads=(up,), n_samples=len(self.examples),
            metrics={"train_loss": float(np.mean(losses)), "tokens": float(tokens), "client_model_mb": self.model_mb},
            spans=(ComputeSpan("train", host_s, work, precision=fw.precision),),
        )

    def evaluate_global(self, adapter: bytes) -> dict:
        """The global adapter's held-out evaluation, this rank's contiguous share of the test
        set, the sums combined across the group (testbed.ml.dataparallel): FedLLM.evaluate's result."""
        scenario = self.spec.scenario
        if self._test_examples is None:
            data = build_task_data(scenario)
            self._test_examples = self.encoder.encode_examples(data.at(data.splits.test))
        rank, world = dataparallel.group()
        load_adapter_state(self.model, deserialize(adapter))
        return evaluate_model(self.model, self.encoder, self._test_examples, scenario, rank=rank, world=world)


class FedLLM(Framework):
    name = "fedllm"
    client_class = FedLLMClient

    def setup(self) -> None:
        self.model = None
        self.global_state: AdapterState | None = None
        if not self.ctx.clients_evaluate:  # else: loaded only if the group's evaluation fails
            self._load_model()

    def _load_model(self) -> None:
        """The LoRA-wrapped model and the encoded held-out set; the fresh adapter is the
        global state unless a client's (identical: same seed) came first."""
        task = load_lora_task(self.ctx.scenario, self.ctx.model_dir, lambda data: data.splits.test)
        self.encoder, self.test_examples, self.model = task.encoder, task.examples, task.model
        self.model.to(server_device(self.ctx.scenario.server.device))
        if self.global_state is None:
            self.global_state = adapter_state(self.model)

    def client_initial_state(self) -> tuple[str, tuple] | None:
        return ("initial_adapter", ()) if self.global_state is None else None

    def adopt_initial_state(self, answer: object | None) -> None:
        if answer is None:
            self._load_model()
        else:
            self.global_state = deserialize(answer)

    def configure_fit(self, rnd: int, client_ids: list[int]) -> dict[int, FitIns]:
        down = Payload("adapter_down", serialize(self.global_state))
        seed = self.ctx.scenario.seed
        return {cid: FitIns(round=rnd, payloads=(down,), seed=client_round_seed(seed, rnd, cid)) for cid in client_ids}

    def aggregate_fit(self, rnd: int, results: list[FitRes], failures: list[Failure]) -> dict[str, float]:
        if not results:
            return {}
        results = sorted(results, key=lambda r: r.client_id)
        states = [deserialize(r.payload("adapter_up").data) for r in results]
        weights = [float(r.n_samples) for r in results]
        self.global_state = finite_global(fedavg(states, weights), rnd)
        loss = sum(w * r.metrics["train_loss"] for w, r in zip(weights, results, strict=True)) / sum(weights)
        return {"train_loss": loss, **mean_metrics(results, ("client_model_mb",))}

    def aggregate_buffered(self, rnd: int, results: list[FitRes], starts: list[FitIns],
                           staleness: list[int]) -> dict[str, float]:
        """One FedBuff server step over the buffered updates (in arrival order); `starts` are the
        FitIns each client trained from (their adapter is its start state)."""
        exponent = self.ctx.scenario.policy.staleness_exponent
        weights = [staleness_weight(r.n_samples, s, exponent) for r, s in zip(results, staleness, strict=True)]
        self.global_state = finite_global(buffered_step(
            self.global_state, [deserialize(r.payload("adapter_up").data) for r in results],
            [deserialize(ins.payload("adapter_down").data) for ins in starts], weights,
        ), rnd)
        loss = sum(w * r.metrics["train_loss"] for w, r in zip(weights, results, strict=True)) / sum(weights)
        return {"train_loss": loss, **mean_metrics(results, ("client_model_mb",))}

    def client_evaluation(self, rnd: int) -> tuple[str, tuple]:
        return "evaluate_global", (serialize(self.global_state),)

    def evaluate(self, rnd: int) -> dict[str, float]:
        if self.model is None:  # the clients' group was to evaluate, and could not
            self._load_model()
        load_adapter_state(self.model, self.global_state)
        return evaluate_model(self.model, self.encoder, self.test_examples, self.ctx.scenario)

    def save(self, out_dir: Path) -> None:
        from safetensors.torch import save_file

        save_file(self.global_state, str(out_dir / "global_adapter.safetensors"))

    def final_adapter(self) -> AdapterState:
        return self.global_state

    def checkpoint(self) -> FrameworkState:
        """The global adapter: clients start every round from it, with a fresh optimizer."""
        return FrameworkState(prefixed(self.global_state, "global"))

    def restore(self, state: FrameworkState, rnd: int) -> None:
        self.global_state = unprefixed(state.tensors, "global")
