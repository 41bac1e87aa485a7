"""The client student's logit generator on ONNX Runtime.

The LoRA-wrapped student is exported once (dynamo exporter, opset 18, graph left
unoptimised so every weight keeps its parameter name); the graph ends in the distillation
temperature's log-softmax and a top-k, so only (N, k) values leave the session. The adapter
tensors are then made graph inputs as well as initializers, so every run feeds the
student's current LoRA weights: when they change, nothing is re-exported, re-quantized or
reloaded. In int8 mode the graph is quantized once (`quantize_dynamic`, frozen weights int8
per channel, activations quantized on the fly); the adapters stay fp32 inputs.

By default the session runs the graph as exported, without ORT's graph optimizations or its
memory arena: constant folding would turn the student's int8 weights back into fp32 copies
(measured on the bundled model, 32 prompts: 382 MiB session and 0.7 GiB peak instead of
1.5 GiB and 2.1 GiB, for ~1.5x the time). `optimize=True` (``kd.onnx_optimize``) trades back.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from frameworks.kd.logits import TopK, from_arrays
from testbed.ml.memory import release_freed_memory
from testbed.ml.task import causal_lm


def _owned_prefix(kind: str) -> str:
    """A temporary folder prefix recording this process as its owner, in the form
    testbed.host.ownership reads, so that a killed worker's folder is removed at the next start."""
    return f"testbed-{kind}-pid{os.getpid()}-{uuid.uuid4().hex[:8]}-"


@contextmanager
def _quiet():
    """Silence the exporter's notes (axis names, missing torchvision ops) and
    quantize_dynamic's per-tensor dumps of casts it leaves alone: warnings, not errors."""
    loggers = [logging.getLogger(name) for name in ("", "torch.onnx", "onnxruntime")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


class _LogitHead(torch.nn.Module):
    """input_ids, attention_mask, last_index -> top-k (or full) log-probs at the answer
    positions (`last_index` (B,)), at every position when `all_positions`, or with `span` at
    the positions `last_index` (B, P) lists for each row (a generative task's reference
    positions: the LM head runs on those rows only)."""

    def __init__(self, model, *, k: int, temperature: float, all_positions: bool, span: bool = False) -> None:
        super().__init__()
        self.model = model
        self.k = k
        self.temperature = temperature
        self.all_positions = all_positions
        self.span = span

    def forward(self, input_ids, attention_mask, last_index):
        lm = causal_lm(self.model)
        hidden = lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.span:
            hidden = hidden[torch.arange(hidden.shape[0]).unsqueeze(1), last_index]  # (B, P, C)
        elif not self.all_positions:
            hidden = hidden[torch.arange(hidden.shape[0]), last_index]  # (B, C)
        logp = torch.log_softmax(lm.get_output_embeddings()(hidden).float() / self.temperature, dim=-1)
        if self.k <= 0:
            return logp, torch.zeros_like(last_index)
        values, indices = torch.topk(logp, self.k, dim=-1)
        return values, indices


def _graph_folder(cache_key: str) -> str:
    """Where the graph of `cache_key` lives, relative to the asset cache (or the derived folder)."""
    return f"onnx/{cache_key}"


def graph_cached(cache_key: str) -> bool:
    """Whether the graph of `cache_key` was exported already (testbed.ml.assets.derived_once
    would open it rather than export)."""
    from testbed.ml.assets import cache_dir, derived_dir

    return any((root / _graph_folder(cache_key) / "student.onnx").is_file() for root in (cache_dir(), derived_dir()))


@dataclass(frozen=True)
class OrtTimings:
    export_s: float  # getting the graph (export, or loading a cached export) and opening the session
    refresh_s: float  # new session with the current adapter (and re-quantization)


class OrtStudent:
    """Runs a LoRA student's logits on onnxruntime; `refresh()` after its adapters change."""

    def __init__(self, model, *, k: int, temperature: float, all_positions: bool, int8: bool, threads: int,
                 cache_key: str | None = None, optimize: bool = False, span: bool = False) -> None:
        self.model = model
        self.cache_key = cache_key
        self.optimize = optimize
        self.k = k
        self.temperature = temperature
        self.all_positions = all_positions
        self.span = span  # topk(..., index=(B, P)): the positions of each row (generative tasks)
        self.int8 = int8
        self.threads = threads
        self.vocab_size = int(causal_lm(model).get_output_embeddings().weight.shape[0])
        self._proto = None
        self._session = None
        self._adapters: dict[str, np.ndarray] = {}

    # -- graph ---------------------------------------------------------------------------------
    def _export(self) -> None:
        head = _LogitHead(self.model, k=self.k, temperature=self.temperature, all_positions=self.all_positions,
                          span=self.span).eval()
        ids = torch.ones((2, 8), dtype=torch.long)
        mask = torch.ones((2, 8), dtype=torch.long)
        last = torch.tensor([[5, 6, 7], [4, 5, 6]], dtype=torch.long) if self.span else torch.full((2,), 7, dtype=torch.long)
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
        last_dims = {0: batch, 1: torch.export.Dim("span")} if self.span else {0: batch}
        with torch.no_grad(), _quiet():
            program = torch.onnx.export(
                head, (ids, mask, last), dynamo=True, opset_version=18, optimize=False, verbose=False,
                input_names=["input_ids", "attention_mask", "last_index"], output_names=["logprobs", "indices"],
                dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq},
                                "last_index": last_dims},
            )
        self._proto = program.model_proto
        names = {init.name for init in self._proto.graph.initializer}
        missing = [n for n in self._adapter_names if n not in names]
        if missing:
            raise RuntimeError(f"exported graph lacks adapter initializers, e.g. {missing[:2]}")

    def _adapter_arrays(self) -> dict[str, np.ndarray]:
        params = dict(self.model.named_parameters())
        return {graph_name: params[name].detach().cpu().float().numpy()
                for graph_name, name in self._adapter_names.items()}

    def _expose_adapters(self) -> None:
        """Make each adapter initializer a graph input too: its stored value stays the
        default, and a run that feeds the input overrides it (ORT never folds it away)."""
        from onnx import helper

        inits = {init.name: init for init in self._proto.graph.initializer}
        for name in self._adapter_names:
            init = inits[name]
            self._proto.graph.input.append(helper.make_tensor_value_info(name, init.data_type, list(init.dims)))

    def _session_bytes(self) -> bytes:
        if not self.int8:
            return self._proto.SerializeToString()
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with _quiet(), tempfile.TemporaryDirectory(prefix=_owned_prefix("kd-ort")) as tmp:
            out = Path(tmp) / "student.int8.onnx"
            quantize_dynamic(self._proto, out, weight_type=QuantType.QInt8, per_channel=True)
            return out.read_bytes()

    def _graph(self) -> bytes | str:
        """The session's model: exported once per architecture. With a `cache_key`, the
        first process to get here exports into the asset cache (under a lock; a docker
        client, whose cache is read-only, into its derived folder: testbed.ml.assets.derived_once)
        and every other one, in this run or a later one, opens that file (ORT reads it itself,
        so no copy of its bytes stays in Python)."""
        if self.cache_key is None:
            return self._build_graph()
        from testbed.ml.assets import derived_once

        folder = derived_once(_graph_folder(self.cache_key), f"onnx-{self.cache_key}",
                              lambda tmp: (tmp / "student.onnx").write_bytes(self._build_graph()))
        return str(folder / "student.onnx")

    def prepare(self) -> None:
        """Export the graph into the cache now, without opening a session (the server does
        this once at set-up, so no client exports inside its device's memory budget)."""
        if self.cache_key is None:
            raise ValueError("prepare() needs a cache_key: without one the graph lives only in its session")
        self._adapter_names = {f"model.{n}": n for n, p in self.model.named_parameters() if p.requires_grad}
        self._graph()

    def _build_graph(self) -> bytes:
        self._export()
        self._expose_adapters()
        graph = self._session_bytes()
        self._proto = None
        return graph

    def refresh(self) -> OrtTimings:
        """Take the student's current adapters; the first call gets the graph (export, or
        the cached export) and opens the session."""
        import onnxruntime as ort

        t0 = time.perf_counter()
        export_s = 0.0
        if self._session is None:
            self._adapter_names = {f"model.{n}": n for n, p in self.model.named_parameters() if p.requires_grad}
            graph = self._graph()
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            if not self.optimize:  # keep the weights as exported (int8/int4 stay packed), no arena
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                opts.enable_cpu_mem_arena = False
            self._session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
            del graph
            release_freed_memory()
            feedable = {i.name for i in (*self._session.get_inputs(), *self._session.get_overridable_initializers())}
            missing = [n for n in self._adapter_names if n not in feedable]
            if missing:
                raise RuntimeError(f"the student graph lacks adapter inputs, e.g. {missing[:2]}")
            export_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        self._adapters = self._adapter_arrays()
        return OrtTimings(export_s=export_s, refresh_s=time.perf_counter() - t1)

    # -- inference -------------------------------------------------------------------------------
    def topk(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, index: torch.Tensor | None = None) -> TopK:
        """Top-k log-probs at each row's last real token (or every real token); with `span`, at
        the (B, P) positions `index` lists, as (B * P) rows in row-major order."""
        if self._session is None:
            self.refresh()
        if self.span:
            if index is None:
                raise ValueError("a span student's topk needs the (B, P) positions")
            feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy(),
                    "last_index": index.numpy(), **self._adapters}
            values, indices = self._session.run(None, feed)
            flat = values.reshape(-1, values.shape[-1])
            return from_arrays(flat, indices.reshape(-1, indices.shape[-1]) if self.k > 0 else None,
                               self.vocab_size)
        last = attention_mask.sum(dim=1) - 1
        feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy(), "last_index": last.numpy(),
                **self._adapters}
        values, indices = self._session.run(None, feed)
        if self.all_positions:
            keep = attention_mask.bool().numpy()
            values = values[keep]
            indices = indices[keep] if self.k > 0 else None
        elif self.k <= 0:
            indices = None
        return from_arrays(values, indices, self.vocab_size)
