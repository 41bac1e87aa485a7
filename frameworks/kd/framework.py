"""KD-FedLLM: knowledge travels as logits on public data, never as weights.

Each round r, on a seeded batch P_r of the public (unlabelled) set:

1. down (``logits_down``, from round ``kd.client_distill_from_round``): the teacher's top-k
   log-probabilities on P_r, with P_r's ids;
2. client: distil its student toward them (``kd.client_distill_steps``), LoRA-train it on
   its private data (``framework.local_steps``), then compute its own top-k on P_r with
   ONNX Runtime;
3. up (``logits_up``): those top-k; the server decodes each arrival in its queue;
4. server: aggregates the clients' sparse logits (union of indices, weighted), distils its
   model (the teacher, LoRA on the full LLM) toward the aggregate (``kd.server_steps``), and
   computes its top-k on P_{r+1} for the next round. That work is the round's aggregation
   step, timed on the clock.

Bytes per client-round depend on the public batch, k and the positions, not on any model's
size. The headline accuracy is the teacher's; students report theirs beside it.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from frameworks.aggregate import mean_metrics
from frameworks.divergence import fails_on_divergence, global_training
from frameworks.kd.logits import SparseTarget, TopK, aggregate, deserialize_topk, serialize_topk, top_k_of
from frameworks.kd.public import (
    all_positions,
    distill,
    encode_public,
    kd_tokens,
    pack_down,
    position_logits,
    prompt_batch,
    public_batch,
    unpack_down,
)
from frameworks.kd.student import load_student, student_layers
from frameworks.training import model_mb, quantize_blocks, task_encoder, train_local
from testbed.config.scenario import KDOptions, Scenario, ScenarioError
from testbed.config.extras import check, require
from testbed.ml.modeling import (
    AdapterState,
    OptimizerSpec,
    adapter_state,
    attach_lora,
    count_parameters,
    load_adapter_state,
    load_base_model,
    server_device,
)
from testbed.ml.statefile import prefixed, unprefixed
from testbed.ml.task import EncodedExample, Encoder, autocast, causal_lm
from testbed.ml.taskdata import build_task_data
from testbed.ml.tasks import evaluate_model
from testbed.ml.workload import forward_workload, lora_training_workload
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
    client_round_seed,
)


# -- the client ----------------------------------------------------------------------------------
class KDClient(Client):
    """A student (a subset of the server model's blocks) with LoRA, and its ORT twin."""

    def setup(self) -> None:
        scenario = self.spec.scenario
        fw, opts = scenario.framework, scenario.framework.kd
        self.opts = opts
        self.data, self.encoder, self.examples = task_examples(scenario, self.spec.model_dir,
                                                              lambda _data: self.spec.train_indices)
        self.model = build_student(scenario, self.spec.model_dir)
        if opts.student_checkpointing:  # recompute block activations in backward (measured, so on the clock)
            causal_lm(self.model).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.n_params, self.n_trainable = count_parameters(self.model)
        self.model_mb = model_mb(self.model)
        self.optimizer = OptimizerSpec(fw.optimizer, opts.student_lr or fw.lr, fw.weight_decay)
        self.ort = None
        self.export_s = 0.0
        if opts.onnx:
            self.ort = ort_student(self.model, scenario, self.spec.model_dir, threads=self.spec.threads)
            self.export_s = self.ort.refresh().export_s  # the server exported it; this loads it

    @fails_on_divergence
    def fit(self, ins: FitIns) -> FitRes:
        fw, opts = self.spec.scenario.framework, self.opts
        spans: list[ComputeSpan] = []
        metrics: dict[str, float] = {"client_model_mb": self.model_mb}
        down = ins.maybe_payload("logits_down")
        if down is not None:
            top, public_ids = unpack_down(down.data)
        else:
            public_ids = tuple(ins.config["public_ids"])
        public = encode_public(self.encoder, self.data.at(public_ids))
        if down is not None and opts.client_distill_steps:
            t0 = time.perf_counter()
            losses = distill(self.model, self.encoder, public, SparseTarget.from_topk(top), opts,
                             steps=opts.client_distill_steps, batch_size=fw.batch_size, optimizer=self.optimizer,
                             seed=ins.seed + 1, precision=fw.precision)
            tokens = kd_tokens(self.encoder, public) * opts.client_distill_steps * fw.batch_size // len(public)
            spans.append(ComputeSpan("distill", time.perf_counter() - t0, self._train_work(tokens), fw.precision))
            metrics["distill_loss"] = float(np.mean(losses))
        t0 = time.perf_counter()
        losses, tokens = train_local(self.model, self.encoder, self.examples, steps=fw.local_steps,
                                     batch_size=fw.batch_size, optimizer=self.optimizer, seed=ins.seed,
                                     precision=fw.precision)
        spans.append(ComputeSpan("train", time.perf_counter() - t0, self._train_work(tokens), fw.precision))
        metrics.update(train_loss=float(np.mean(losses)), tokens=float(tokens))
        t0 = time.perf_counter()
        mine = self._logits(public)
        spans.append(ComputeSpan("logits", time.perf_counter() - t0,
                                 forward_workload(n_params=self.n_params, tokens=kd_tokens(self.encoder, public))))
        if ins.config.get("evaluate"):
            metrics.update(self._evaluate(public))
        if ins.round == 1 and self.ort is not None:
            metrics["onnx_export_s"] = self.export_s
        up = Payload("logits_up", serialize_topk(mine))
        return FitRes(self.spec.client_id, ins.round, (up,), n_samples=len(self.examples), metrics=metrics,
                      spans=tuple(spans))

    def checkpoint_state(self) -> bytes:
        """The student's adapters: all a KD client carries from round to round."""
        return st_save(adapter_state(self.model))

    def restore_state(self, data: bytes) -> None:
        load_adapter_state(self.model, st_load(data))  # the ORT twin refreshes from it before use

    def _train_work(self, tokens: int):
        return lora_training_workload(n_params=self.n_params, n_trainable=self.n_trainable, tokens=tokens)

    def _logits(self, public: list[EncodedExample]) -> TopK:
        if self.ort is not None:
            self.ort.refresh()
            return ort_topk(self.ort, self.encoder, public, self.opts)
        with torch.no_grad():
            return top_k_of(position_logits(self.model, self.encoder, public, self.opts), self.opts.top_k,
                            self.opts.temperature)

    def _evaluate(self, public: list[EncodedExample]) -> dict[str, float]:
        """Not on the clock: the student on the test set, and ORT against torch on P_r."""
        scenario = self.spec.scenario
        test = self.encoder.encode_examples(self.data.at(self.data.splits.test))
        scores = self.encoder.score(self.model, test, batch_size=scenario.eval.batch_size,
                                    precision=scenario.framework.precision)  # no generations on a device
        out = {f"student_{k}": v for k, v in self.encoder.metrics(scores.sums).items()}
        if self.ort is not None:
            out.update(ort_agreement(self.ort, self.model, self.encoder, public, self.opts))
        return out


def task_examples(scenario: Scenario, model_dir: str, pick) -> tuple:
    """The scenario's data, its task encoder, and the examples `pick(data)` chose, encoded."""
    data = build_task_data(scenario)
    encoder = task_encoder(scenario, model_dir, data)
    idx = pick(data)
    return data, encoder, encoder.encode_examples(data.at(idx))


def student_lora(scenario: Scenario):
    fw = scenario.framework
    return fw.lora.model_copy(update={"targets": fw.kd.student_targets}) if fw.kd.student_targets else fw.lora


def build_student(scenario: Scenario, model_dir: str):
    """The LoRA student as every client starts it: the chosen blocks, quantized, fresh
    adapters seeded by the scenario."""
    opts = scenario.framework.kd
    student = load_student(model_dir, opts.student_layers)
    quantize_blocks(student, opts.student_quantization)
    return attach_lora(student, student_lora(scenario), seed=scenario.seed)


def ort_student(model, scenario: Scenario, model_dir: str, *, threads: int):
    """The student's ORT twin; its graph lives in the asset cache under a key of everything
    that shapes it, so it is exported once per architecture."""
    check("onnx", "framework.kd.onnx: true (kd's student on onnxruntime)")  # before torch.onnx's exporter
    from frameworks.kd.onnx_student import OrtStudent

    opts = scenario.framework.kd
    return OrtStudent(model, k=opts.top_k, temperature=opts.temperature, all_positions=opts.positions == "all",
                      span=scenario.task.generative,
                      int8=opts.onnx_int8, threads=threads, optimize=opts.onnx_optimize,
                      cache_key=onnx_cache_key(model_dir, opts, student_lora(scenario), scenario.task.generative))


def onnx_cache_key(model_dir: str, opts: KDOptions, lora, span: bool = False) -> str:
    """What makes two exported student graphs the same: the model's files, the student's
    blocks, quantization and adapters, the logit head, and the exporter's versions."""
    onnxruntime = require("onnxruntime", "framework.kd.onnx: true (kd's student on onnxruntime)")

    files = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in Path(model_dir).iterdir() if p.is_file())
    parts = [str(Path(model_dir).resolve()), files, opts.student_layers, opts.student_quantization, lora.r, lora.alpha,
             list(lora.targets), opts.top_k, opts.temperature, opts.positions, opts.onnx_int8, torch.__version__,
             onnxruntime.__version__] + (["span"] if span else [])
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def ort_topk(ort, encoder: Encoder, examples: list[EncodedExample], opts: KDOptions) -> TopK:
    """The ORT student's top-k at the distillation positions. Generative kinds: the graph gets
    each row's reference positions (padded by repeating the last) and runs the LM head on those
    alone; the padding rows are dropped, so the rows follow kd_rows' order."""
    ids, mask = prompt_batch(encoder, examples)
    if not all_positions(encoder):
        return ort.topk(ids, mask)
    spans = [encoder.kd_positions(ex, opts.positions) for ex in examples]
    width = max(len(s) for s in spans)
    index = torch.tensor([s + [s[-1]] * (width - len(s)) for s in spans], dtype=torch.long)  # (B, P)
    top = ort.topk(ids, mask, index)
    rows = np.asarray([b * width + j for b, s in enumerate(spans) for j in range(len(s))], dtype=np.int64)
    return TopK(top.logprobs[rows], None if top.indices is None else top.indices[rows], top.vocab_size)


def ort_agreement(ort_student, model, encoder: Encoder, examples: list[EncodedExample],
                  opts: KDOptions) -> dict[str, float]:
    """Top-1 agreement and mean KL(torch || ORT) over the ORT top-k support, per position."""
    fast = ort_topk(ort_student, encoder, examples, opts)
    with torch.no_grad():
        ref_logits = position_logits(model, encoder, examples, opts)
    ref = top_k_of(ref_logits, max(opts.top_k, 1), opts.temperature)
    agree = float(np.mean(ref.indices[:, 0].astype(np.int64) == _top1(fast)))
    logq = torch.from_numpy(fast.logprobs.astype(np.float32))
    logp_full = torch.log_softmax(ref_logits.float() / opts.temperature, dim=-1)
    logp = logp_full if fast.indices is None else logp_full.gather(1, torch.from_numpy(fast.indices.astype(np.int64)))
    kl = float((logp.exp() * (logp - logq)).sum(dim=1).mean())
    return {"ort_top1_agreement": agree, "ort_kl": kl}


def _top1(top: TopK) -> np.ndarray:
    best = top.logprobs.astype(np.float32).argmax(axis=1)
    if top.indices is None:
        return best
    return top.indices[np.arange(top.n_positions), best].astype(np.int64)


# -- the server ----------------------------------------------------------------------------------
class KDFedLLM(Framework):
    name = "kd"
    client_class = KDClient

    def setup(self) -> None:
        scenario = self.ctx.scenario
        self.fw, self.opts = scenario.framework, scenario.framework.kd
        self.data, self.encoder, self.test_examples = task_examples(scenario, self.ctx.model_dir,
                                                                   lambda data: data.splits.test)
        self.device = server_device(scenario.server.device)
        base = load_base_model(self.ctx.model_dir)
        try:
            student_layers(self.opts.student_layers, base.config.num_hidden_layers)
        except ValueError as exc:
            raise ScenarioError(f"framework.kd.student_layers: {exc}") from None
        self.model = attach_lora(base, self.fw.lora, seed=scenario.seed).to(self.device)
        self.optimizer = OptimizerSpec(self.fw.optimizer, self.fw.lr, self.fw.weight_decay)
        self.down: dict[int, bytes] = {}  # round -> logits_down payload (teacher on that round's batch)
        self._prepare_down(1)
        if self.opts.onnx:  # the deployment step: export the students' graph here, not in a device's memory
            self._export_student_graph()

    def _export_student_graph(self) -> None:
        """Export the students' ONNX graph into the asset cache, unless an earlier run did:
        then no student model is built here at all (it served the export alone)."""
        from frameworks.kd.onnx_student import graph_cached

        scenario, model_dir = self.ctx.scenario, self.ctx.model_dir
        check("onnx", "framework.kd.onnx: true (kd's student on onnxruntime)")
        if not graph_cached(onnx_cache_key(model_dir, self.opts, student_lora(scenario), scenario.task.generative)):
            ort_student(build_student(scenario, model_dir), scenario, model_dir, threads=1).prepare()

    @classmethod
    def phase_rounds(cls, scenario: Scenario) -> tuple[int, ...]:
        """Round 1, and the first round whose clients distil from the teacher's logits."""
        kd, rounds = scenario.framework.kd, scenario.framework.rounds
        later = kd.client_distill_from_round
        return (1, later) if kd.client_distill_steps and 1 < later <= rounds else (1,)

    def _public(self, rnd: int) -> tuple[tuple[int, ...], list[EncodedExample]]:
        ids = public_batch(self.ctx.scenario, self.data.splits.public, rnd)
        return ids, encode_public(self.encoder, self.data.at(ids))

    def _prepare_down(self, rnd: int) -> None:
        """The teacher's top-k on round `rnd`'s public batch, if that round sends any."""
        if rnd < self.opts.client_distill_from_round or rnd > self.fw.rounds:
            return
        ids, public = self._public(rnd)
        with torch.no_grad(), autocast(self.fw.precision, self.device.type):
            logits = position_logits(self.model, self.encoder, public, self.opts)
        self.down[rnd] = pack_down(top_k_of(logits, self.opts.top_k, self.opts.temperature), ids)

    def configure_fit(self, rnd: int, client_ids: list[int]) -> dict[int, FitIns]:
        ids, _ = self._public(rnd)
        payloads = (Payload("logits_down", self.down.pop(rnd)),) if rnd in self.down else ()
        scenario = self.ctx.scenario
        evaluate_now = self.opts.eval_students and (rnd % scenario.eval.every == 0 or rnd == self.fw.rounds)
        self.arrived: dict[int, TopK] = {}
        config = {"public_ids": ids, "evaluate": evaluate_now}
        return {cid: FitIns(round=rnd, payloads=payloads, seed=client_round_seed(scenario.seed, rnd, cid),
                            config=config) for cid in client_ids}

    def client_script(self, rnd: int, cid: int, ins: FitIns):
        for payload in ins.payloads:
            yield Send(payload, "down")
        res = yield ClientCall("fit", (ins,))
        for payload in res.payloads:
            yield Send(payload, "up")
        yield ServerCall(self.ingest, (cid, res.payload("logits_up").data), label="ingest_logits")
        return res

    def ingest(self, cid: int, data: bytes) -> None:
        self.arrived[cid] = deserialize_topk(data)

    def aggregate_fit(self, rnd: int, results: list[FitRes], failures: list[Failure]) -> dict[str, float]:
        if not results:
            return {}
        weights = [float(r.n_samples) for r in results]
        target = aggregate([self.arrived[r.client_id] for r in results], weights,
                           confidence=self.opts.weighting == "confidence")
        _, public = self._public(rnd)
        metrics = {"train_loss": float(np.average([r.metrics["train_loss"] for r in results], weights=weights))}
        if self.opts.server_steps:
            with global_training(rnd, self.model, "teacher"):  # a loss or weights not finite: ModelDiverged
                losses = distill(self.model, self.encoder, public, target, self.opts, steps=self.opts.server_steps,
                                 batch_size=self.fw.batch_size, optimizer=self.optimizer,
                                 seed=self.ctx.scenario.seed * 7919 + rnd, precision=self.fw.precision)
            metrics["teacher_distill_loss"] = float(np.mean(losses))
        self._prepare_down(rnd + 1)
        metrics.update(mean_metrics(results, ("student_accuracy", "student_perplexity", "student_eval_loss",
                                              "ort_top1_agreement", "ort_kl",
                                              "distill_loss", "onnx_export_s", "client_model_mb")))
        return metrics

    def evaluate(self, rnd: int) -> dict[str, float]:
        return evaluate_model(self.model, self.encoder, self.test_examples, self.ctx.scenario)

    def save(self, out_dir: Path) -> None:
        from safetensors.torch import save_file

        save_file(adapter_state(self.model), str(out_dir / "global_adapter.safetensors"))

    def final_adapter(self) -> AdapterState:
        return adapter_state(self.model)

    def checkpoint(self) -> FrameworkState:
        """The teacher's adapters (its optimizer is built afresh for every distillation)."""
        return FrameworkState(prefixed(adapter_state(self.model), "teacher"))

    def restore(self, state: FrameworkState, rnd: int) -> None:
        load_adapter_state(self.model, unprefixed(state.tensors, "teacher"))
        self.down = {}
        self._prepare_down(rnd + 1)  # as aggregate_fit(rnd) left it
