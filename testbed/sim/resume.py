"""Checkpoints on the clock: one after every completed round (every FedBuff server version),
and, in a resumed run, the switch from replaying the ledger to running live at the round the
checkpoint was taken after (testbed.sim.ledger, testbed.sim.checkpoint)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import torch

from testbed.backends import Backend
from testbed.protocol import Client, Failure, FitIns, Framework, FrameworkState
from testbed.results.generations import keep_rounds_through
from testbed.results.recorder import RunRecorder
from testbed.sim.checkpoint import Checkpoint, RoundsJson, write_checkpoint
from testbed.sim.ledger import Ledger, ResumeError

SIGKILL_ROUND_ENV = "TESTBED_FAULT_SIGKILL_ROUND"  # fault injection: SIGKILL the run in this round


def sigkill_if_asked(rnd: int) -> None:
    """Fault injection for resume tests and drills (docs/reliability.md): with
    TESTBED_FAULT_SIGKILL_ROUND=r, the run kills itself with SIGKILL at its first server work of
    round (FedBuff: server version) r, after round r-1's checkpoint: no handler runs, nothing
    is flushed, as with a power cut."""
    if os.environ.get(SIGKILL_ROUND_ENV) == str(rnd):
        os.kill(os.getpid(), signal.SIGKILL)


OpenWork = list[tuple[int, int, FitIns, int]]  # (configure_fit call index, client, FitIns, submit round)


class Checkpoints:
    """Writes the run's checkpoint after each round; switches a resumed run to live."""

    def __init__(self, out_dir: Path, *, framework: Framework, backend: Backend, recorder: RunRecorder,
                 ledger: Ledger, facts: Callable[[], dict], clock: Callable[[], float], rounds: int,
                 resume: Checkpoint | None = None, progress: Callable[[str], None] = lambda _m: None) -> None:
        self.out_dir = Path(out_dir)
        self.framework = framework
        self.backend = backend  # the real one: client states are asked for off the ledger
        self.recorder = recorder
        self.ledger = ledger
        self.facts = facts  # calibration, bf16 speed-up and CPU quotas, as the clock uses them
        self.clock = clock
        self.rounds = rounds
        self.resume = resume
        self.progress = progress
        self.host_s = 0.0  # host seconds spent writing checkpoints
        self.enabled = True  # False once the framework says it cannot be checkpointed
        self._rounds_json = RoundsJson()  # the rounds rows' JSON, each row encoded once

    def restore_clients(self) -> None:
        """Give the client workers back what they carried (before anything runs)."""
        if self.resume is None:
            return
        futures = [self.backend.submit(cid, self.resume.round, "restore_state", (data,))
                   for cid, data in sorted(self.resume.clients.items()) if data]
        for fut in futures:
            outcome = fut.result()
            if isinstance(outcome, Failure):
                raise ResumeError(f"client {outcome.client_id}: restoring its state failed: {outcome.cause}: "
                                  f"{outcome.detail}")

    def after_round(self, rnd: int, open_work: OpenWork = ()) -> None:
        """Round (server version) `rnd` is complete. `open_work`: (configure_fit call index,
        client, FitIns, submit round) of work begun and not yet accounted (FedBuff), whose
        calls have all been answered (their outcomes are kept whole)."""
        if self.ledger.replaying:
            if self.resume is not None and rnd == self.resume.round:
                self._go_live()
            return
        if rnd >= self.rounds or not self.enabled:  # complete: its final artefacts are what is left
            return
        t0 = time.perf_counter()
        try:
            framework_state = self.framework.checkpoint()
        except NotImplementedError as exc:  # a framework that cannot be checkpointed: the run goes on
            self.enabled = False
            self.progress(f"no checkpoints in this run ({exc}): --resume will start it over")
            return
        self._write(rnd, list(open_work), framework_state)
        self.host_s += time.perf_counter() - t0

    def _write(self, rnd: int, open_work: OpenWork, framework_state: FrameworkState) -> None:
        open_ins: dict[int, dict[int, FitIns]] = {}
        for index, cid, ins, _ in open_work:
            open_ins.setdefault(index, {})[cid] = ins
        self.ledger.keep_whole(open_ins, {(submit_rnd, cid) for _, cid, _, submit_rnd in open_work})
        facts = self.facts()
        write_checkpoint(self.out_dir, Checkpoint(
            round=rnd, sim_now_s=self.clock(), calibration=facts["calibration"],
            bf16_step_speedup=facts["bf16_step_speedup"], precision=facts["precision"], throttled=facts["throttled"],
            rounds=list(self.recorder.rounds), marks=self.recorder.marks(),
            framework=framework_state, clients=self._client_states(rnd), ledger=self.ledger,
            torch_rng=torch.get_rng_state(),
        ), self._rounds_json)

    def _client_states(self, rnd: int) -> dict[int, bytes]:
        if self.backend.client_class.checkpoint_state is Client.checkpoint_state:  # carries nothing
            return {}
        futures = {cid: self.backend.submit(cid, rnd, "checkpoint_state", ()) for cid in sorted(self.backend.specs)}
        states = {}
        for cid, fut in futures.items():
            data = fut.result()
            if not isinstance(data, (bytes, bytearray)):
                raise ResumeError(f"client {cid}: its state could not be read for the checkpoint ({data})")
            states[cid] = bytes(data)
        return states

    def _go_live(self) -> None:
        """The replay has reached the checkpoint: from here on the run is live."""
        ckpt = self.resume
        now = self.clock()
        if abs(now - ckpt.sim_now_s) > 1e-9 * max(1.0, abs(ckpt.sim_now_s)):
            raise ResumeError(f"the replay reached round {ckpt.round} at {now!r} s of simulated time, the "
                              f"checkpoint at {ckpt.sim_now_s!r} s: the run diverged from the one it resumes")
        self.framework.restore(ckpt.framework, ckpt.round)
        torch.set_rng_state(ckpt.torch_rng)
        self.recorder.restore(ckpt.rounds, ckpt.marks)
        keep_rounds_through(self.recorder.out_dir, ckpt.round)
        self.ledger.replaying = False
        self.progress(f"resumed after round {ckpt.round} (simulated {now:.1f} s)")
