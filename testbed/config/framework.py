"""Scenario section `framework`: rounds, the optimizer, LoRA, and the split and kd options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from testbed.config.node import Node


class LoraConfig(Node):
    r: int = Field(8, gt=0)  # adapter rank
    alpha: float = Field(16, gt=0)  # scaling numerator (scale = alpha / r)
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: tuple[str, ...] = ("q_proj", "v_proj")  # module names that get adapters

    @field_validator("targets")
    @classmethod
    def _non_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("needs at least one target module name")
        return v


class SplitOptions(Node):
    """Split-FedLLM: the client holds embeddings + blocks [0, cut_layer), the server the rest."""

    cut_layer: int = Field(2, ge=1)  # blocks on the client (must leave at least one on the server)
    compression: Literal["fp32", "fp16", "bf16", "int8"] = "fp32"  # activations up / gradients down
    quantization: Literal["none", "int8", "int4"] = "none"  # the client's frozen weights (QLoRA-like)
    variant: Literal["v1", "v2"] = "v2"  # v1: a server-side adapter per client; v2: one shared


class KDOptions(Node):
    """KD-FedLLM: clients' students share top-k logits on public data; the server's model
    (the teacher) distils from their aggregate and sends its own logits back."""

    student_layers: str = "every:1"  # blocks of the server model the student keeps (first:N, every:N, 0-7,29)
    student_quantization: Literal["none", "int8", "int4"] = "int8"  # the student's frozen blocks (weight-only)
    student_targets: tuple[str, ...] = ()  # the student's LoRA targets (empty: framework.lora.targets)
    student_lr: float | None = Field(None, gt=0)  # the student's learning rate (null: framework.lr)
    student_checkpointing: bool = True  # activation checkpointing: ~1.2 GB less at ~1.3x the training time
    top_k: int = Field(8, ge=0)  # logits kept per position (0: the full vocabulary)
    positions: Literal["answer", "all"] = "answer"  # the answer position of each public prompt, or every token
    temperature: float = Field(2.0, gt=0)  # distillation temperature (both directions)
    public_batch: int = Field(32, gt=0)  # public examples per round (seeded choice from the public set)
    weighting: Literal["samples", "confidence"] = "samples"  # client weight in the aggregate
    server_steps: int = Field(8, ge=0)  # teacher distillation steps per round (batches of framework.batch_size)
    client_distill_steps: int = Field(2, ge=0)  # student steps on the teacher's logits per round
    client_distill_from_round: int = Field(2, ge=1)  # first round whose clients get the teacher's logits
    onnx: bool = True  # students produce their logits with onnxruntime (else torch)
    onnx_int8: bool = False  # int8 dynamic quantization of the exported student
    onnx_optimize: bool = False  # ORT graph optimizations (faster, but folds quantized weights to fp32 copies)
    eval_students: bool = True  # students evaluate themselves on the test set in evaluation rounds

    @field_validator("student_layers")
    @classmethod
    def _layer_spec(cls, v: str) -> str:
        from testbed.config.student_layers import student_layers

        student_layers(v, 10**6)  # the syntax; the block count is checked against the model at set-up
        return v


class FrameworkConfig(Node):
    name: str = "fedllm"  # fedllm | kd | split
    rounds: int = Field(3, gt=0)
    clients_per_round: int = Field(4, gt=0)  # K clients selected each round (seeded)
    local_steps: int = Field(8, gt=0)  # optimizer steps per client per round
    batch_size: int = Field(8, gt=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1.0e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lora: LoraConfig = LoraConfig()
    fedprox_mu: float = Field(0.0, ge=0)  # FedProx proximal term (0 = FedAvg)
    # autocast dtype of client and server compute; auto = bf16 where this CPU has native bf16
    # and a training step of this model measured faster in it (testbed.host.precision), at run start
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    split: SplitOptions = SplitOptions()
    kd: KDOptions = KDOptions()
