"""Split-FedLLM: clients run embeddings + the first k blocks, the server the backbone.

Per micro-batch: client forward -> cut activations (+ attention mask and labels) serialised,
optionally compressed -> uplink -> server forward/backward on its blocks, queued on the
server -> gradient of the cut activations on the downlink -> client backward and step.
The client's frozen blocks may be weight-only quantized (QLoRA-like); its LoRA adapters are
averaged every round (FedAvg). Server-side adapters: v1 keeps one per client and averages
them each round; v2 keeps one shared adapter, trained in the clients' arrival order.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import torch

from frameworks.aggregate import fedavg, mean_metrics
from frameworks.divergence import Diverged, diverged_failure, finite_global, weights_diverged
from frameworks.split.model import (
    ClientPart,
    CutActivations,
    ServerPart,
    pack_activations,
    pack_tensor,
    server_label_loss,
    unpack_activations,
    unpack_tensor,
)
from frameworks.training import batch_order, model_mb, quantize_blocks, seeded_draws, task_encoder
from testbed.config.scenario import Scenario, ScenarioError
from testbed.ml.modeling import (
    AdapterState,
    OptimizerSpec,
    adapter_state,
    attach_lora,
    deserialize,
    load_adapter_state,
    load_base_model,
    serialize,
    server_device,
)
from testbed.ml.statefile import load_optimizer, optimizer_tensors, prefixed, unprefixed
from testbed.ml.task import Encoder, training_batch
from testbed.ml.taskdata import build_task_data
from testbed.ml.tasks import evaluate_model
from testbed.ml.workload import forward_workload
from testbed.protocol import (
    Client,
    ClientCall,
    ComputeSpan,
    Failure,
    FitIns,
    FitRes,
    Framework,
    FrameworkState,
    Payload,
    Send,
    ServerCall,
    StepRes,
    client_round_seed,
)

_LAYER = re.compile(r"\.layers\.(\d+)\.")


def step_seed(round_seed: int, step: int, side: str) -> int:
    """The seed of one split step's random draws (dropout) on one side of the cut."""
    return (round_seed * 4099 + step * 2 + (side == "server")) % 2**63


def layer_of(key: str) -> int:
    match = _LAYER.search(key)
    if match is None:
        raise ValueError(f"adapter key without a layer index: {key}")
    return int(match.group(1))


def client_side(state: AdapterState, cut_layer: int) -> AdapterState:
    return {k: v for k, v in state.items() if layer_of(k) < cut_layer}


def server_side(state: AdapterState, cut_layer: int) -> AdapterState:
    return {k: v for k, v in state.items() if layer_of(k) >= cut_layer}


def _encoder(scenario: Scenario, model_dir: str, data) -> Encoder:
    return task_encoder(scenario, model_dir, data)


class SplitClient(Client):
    """Holds only embeddings + blocks [0, k) (loaded alone, not cut from a full copy)."""

    def setup(self) -> None:
        scenario = self.spec.scenario
        opts = scenario.framework.split
        data = build_task_data(scenario)
        self.encoder = _encoder(scenario, self.spec.model_dir, data)
        idx = self.spec.train_indices
        self.examples = self.encoder.encode_examples(data.at(idx))
        base = load_base_model(self.spec.model_dir, num_hidden_layers=opts.cut_layer)
        self.block_params = sum(p.numel() for p in base.get_decoder().layers.parameters())
        quantize_blocks(base, opts.quantization)
        self.model = attach_lora(base, scenario.framework.lora, seed=scenario.seed)
        self.model_mb = model_mb(self.model)
        self.part = ClientPart(self.model, opts.cut_layer)
        self.hidden: torch.Tensor | None = None

    def begin(self, ins: FitIns) -> StepRes:
        fw = self.spec.scenario.framework
        self.rnd = ins.round
        load_adapter_state(self.model, deserialize(ins.payload("adapter_down").data))
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = OptimizerSpec(fw.optimizer, fw.lr, fw.weight_decay).build(params)
        self.order = batch_order(len(self.examples), fw.local_steps * fw.batch_size, ins.seed)
        self.seed = ins.seed
        self.model.train()
        return StepRes()

    def forward(self, step: int) -> StepRes:
        fw = self.spec.scenario.framework
        t0 = time.perf_counter()
        picked = self.order[step * fw.batch_size:(step + 1) * fw.batch_size]
        batch = training_batch(self.encoder, [self.examples[i] for i in picked])
        with seeded_draws(step_seed(self.seed, step, "client")):  # dropout: a function of round and step
            acts = self.part(batch["input_ids"], batch["attention_mask"])  # hidden (B, T, C)
        self.hidden = acts.hidden
        message = CutActivations(acts.hidden.detach(), acts.attention_mask, acts.position_ids, batch["labels"])
        data = pack_activations(message, dtype=fw.split.compression)
        tokens = int(batch["attention_mask"].sum())
        span = ComputeSpan("client_forward", time.perf_counter() - t0,
                           forward_workload(n_params=self.block_params, tokens=tokens))
        self.tokens = tokens
        return StepRes(payloads=(Payload("activations_up", data),), spans=(span,))

    def backward(self, grad_data: bytes) -> StepRes:
        t0 = time.perf_counter()
        grad = unpack_tensor(grad_data).to(self.hidden.dtype)  # (B, T, C)
        self.hidden.backward(grad)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.hidden = None
        work = forward_workload(n_params=self.block_params, tokens=self.tokens)  # activation grads ~ forward
        return StepRes(spans=(ComputeSpan("client_backward", time.perf_counter() - t0, work),))

    def abandon(self, detail: str) -> Failure:
        """The server found the loss on this client's batch not finite (Diverged): its round fails."""
        self.hidden = None
        self.model.eval()
        return diverged_failure(self.spec.client_id, self.rnd, detail)

    def finish(self) -> FitRes | Failure:
        self.model.eval()
        detail = weights_diverged(self.model)
        if detail is not None:
            return diverged_failure(self.spec.client_id, self.rnd, detail)
        up = Payload("adapter_up", serialize(adapter_state(self.model)))
        return FitRes(self.spec.client_id, 0, (up,), n_samples=len(self.examples),
                      metrics={"client_model_mb": self.model_mb}, spans=())


class SplitFedLLM(Framework):
    name = "split"
    client_class = SplitClient
    client_autocast = False  # the cut layers run in fp32 (or quantized blocks)

    def setup(self) -> None:
        scenario = self.ctx.scenario
        self.opts = scenario.framework.split
        data = build_task_data(scenario)
        self.encoder = _encoder(scenario, self.ctx.model_dir, data)
        test = data.splits.test
        self.test_examples = self.encoder.encode_examples(data.at(test))
        base = load_base_model(self.ctx.model_dir)
        n_layers = len(base.get_decoder().layers)
        if self.opts.cut_layer >= n_layers:
            raise ScenarioError(f"framework.split.cut_layer={self.opts.cut_layer}: the model has {n_layers} "
                                f"blocks; choose 1..{n_layers - 1}")
        # the deployed model's first k blocks are the clients' (quantized) ones: evaluate those
        quantize_blocks_first(base, self.opts.cut_layer, self.opts.quantization)
        self.model = attach_lora(base, scenario.framework.lora, seed=scenario.seed)
        self.device = server_device(scenario.server.device)
        self.model.to(self.device)
        self.part = ServerPart(self.model, self.opts.cut_layer)
        state = adapter_state(self.model)
        self.global_client = client_side(state, self.opts.cut_layer)
        self.global_server = server_side(state, self.opts.cut_layer)
        self.server_params = {n: p for n, p in self.model.named_parameters()
                              if p.requires_grad and layer_of(n) >= self.opts.cut_layer}
        fw = scenario.framework
        self.opt_spec = OptimizerSpec(fw.optimizer, fw.lr, fw.weight_decay)
        self.shared_opt = self.opt_spec.build(list(self.server_params.values()))

    # -- a round ---------------------------------------------------------------------------
    def configure_fit(self, rnd: int, client_ids: list[int]) -> dict[int, FitIns]:
        down = Payload("adapter_down", serialize(self.global_client))
        seed = self.ctx.scenario.seed
        self.step_losses: dict[int, list[float]] = {cid: [] for cid in client_ids}
        self.client_server_state = {cid: dict(self.global_server) for cid in client_ids}
        self.client_opts = {cid: self.opt_spec.build(list(self.server_params.values())) for cid in client_ids}
        self.client_seeds = {cid: client_round_seed(seed, rnd, cid) for cid in client_ids}
        return {cid: FitIns(round=rnd, payloads=(down,), seed=self.client_seeds[cid]) for cid in client_ids}

    def prefetch(self, rnd: int, cid: int, ins: FitIns) -> ClientCall | None:
        return None  # every step waits for the server: nothing to start ahead

    def client_script(self, rnd: int, cid: int, ins: FitIns):
        yield Send(ins.payload("adapter_down"), "down")
        yield ClientCall("begin", (ins,))
        for step in range(self.ctx.scenario.framework.local_steps):
            out = yield ClientCall("forward", (step,))
            yield Send(out.payload("activations_up"), "up")
            grad = yield ServerCall(self.server_step, (cid, out.payload("activations_up").data), label="backbone")
            if isinstance(grad, Diverged):  # the client's round ends at the Failure abandon() answers
                return (yield ClientCall("abandon", (grad.detail,)))
            yield Send(Payload("gradients_down", grad), "down")
            yield ClientCall("backward", (grad,))
        res = yield ClientCall("finish", ())
        yield Send(res.payload("adapter_up"), "up")
        return res

    def server_step(self, cid: int, data: bytes) -> bytes | Diverged:
        """Forward/backward of blocks [k, L) on the received activations; returns the
        serialised gradient of the cut activations, or Diverged (nothing stepped) where the
        loss is not finite."""
        acts = unpack_activations(data)
        v1 = self.opts.variant == "v1"
        if v1:
            load_adapter_state(self.model, self.client_server_state[cid])
        opt = self.client_opts[cid] if v1 else self.shared_opt
        hidden = acts.hidden.to(self.device, self.part.dtype).requires_grad_(True)  # (B, T, C)
        batch = {"attention_mask": acts.attention_mask, "labels": acts.labels, "position_ids": acts.position_ids}
        self.model.train()
        with seeded_draws(step_seed(self.client_seeds[cid], len(self.step_losses[cid]), "server")):
            loss = server_label_loss(self.part, hidden, batch)
        if not math.isfinite(value := float(loss.detach())):
            self.model.eval()
            return Diverged(f"training loss is {value} at step {len(self.step_losses[cid])}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.model.eval()
        self.step_losses[cid].append(value)
        if v1:
            self.client_server_state[cid] = server_side(adapter_state(self.model), self.opts.cut_layer)
        return pack_tensor(hidden.grad.detach().cpu(), dtype=self.opts.compression)

    def aggregate_fit(self, rnd: int, results: list[FitRes], failures: list[Failure]) -> dict[str, float]:
        if not results:
            return {}
        results = sorted(results, key=lambda r: r.client_id)
        weights = [float(r.n_samples) for r in results]
        states = [client_side(deserialize(r.payload("adapter_up").data), self.opts.cut_layer) for r in results]
        self.global_client = finite_global(fedavg(states, weights), rnd, "global client adapter")
        if self.opts.variant == "v1":
            server = fedavg([self.client_server_state[r.client_id] for r in results], weights)
        else:
            server = server_side(adapter_state(self.model), self.opts.cut_layer)
        self.global_server = finite_global(server, rnd, "server part")
        losses = [x for r in results for x in self.step_losses.get(r.client_id, [])]
        metrics = mean_metrics(results, ("client_model_mb",))
        if losses:
            metrics["train_loss"] = sum(losses) / len(losses)
        return metrics

    def evaluate(self, rnd: int) -> dict[str, float]:
        load_adapter_state(self.model, {**self.global_client, **self.global_server})
        return evaluate_model(self.model, self.encoder, self.test_examples, self.ctx.scenario)

    def save(self, out_dir: Path) -> None:
        from safetensors.torch import save_file

        save_file({**self.global_client, **self.global_server}, str(out_dir / "global_adapter.safetensors"))

    def final_adapter(self) -> AdapterState:
        return {**self.global_client, **self.global_server}

    def checkpoint(self) -> FrameworkState:
        """Both global halves, and v2's shared server optimizer (v1 builds one per client and round)."""
        opt_tensors, opt_meta = optimizer_tensors(self.shared_opt, "shared_opt")
        return FrameworkState({**prefixed(self.global_client, "client"), **prefixed(self.global_server, "server"),
                               **opt_tensors}, {"shared_opt": opt_meta})

    def restore(self, state: FrameworkState, rnd: int) -> None:
        self.global_client = unprefixed(state.tensors, "client")
        self.global_server = unprefixed(state.tensors, "server")
        load_adapter_state(self.model, {**self.global_client, **self.global_server})
        load_optimizer(self.shared_opt, state.tensors, state.meta["shared_opt"], "shared_opt")


def quantize_blocks_first(model, cut_layer: int, scheme: str) -> None:
    """Quantize blocks [0, cut_layer) of a full model, as the clients hold them."""
    if scheme == "none":
        return
    from testbed.ml.quantize import quantize_model

    for block in list(model.get_decoder().layers)[:cut_layer]:
        quantize_model(block, scheme)

