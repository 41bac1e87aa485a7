"""What a resumed run replays to get back to its checkpoint: the ledger of every exchange.

The simulated clock is a function of what entered it: each FitIns sent, each client call's
outcome (its measured spans, its payload sizes, its failure), each server call's measured
seconds and answer size, each aggregation's seconds. The ledger keeps these, hollowed:
payload bytes become their sizes, so it stays small. A resumed run re-runs the simulation
from its start in *replay* mode, in which the ledger answers instead of the backend, the
server and the framework, and nothing trains; at the checkpointed round it switches to live
mode (the framework restored, the tables taken from the checkpoint) and goes on. Everything
the discrete-event simulation carries across rounds — flows still in flight, a FedBuff
client halfway through its upload, a straggler past a deadline, the network's jitter draws,
the availability windows — is rebuilt exactly, because it is recomputed the same way.

Work still open at the checkpoint (a FedBuff client that started before it and arrives after)
needs its real FitIns and outcomes: those are kept whole (`full`).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from testbed.backends import Backend
from testbed.config.wiretypes import wire_type
from testbed.protocol import FitIns, Payload

CallKey = tuple[int, int, str, int]  # (round, client, method, n-th such submit)


class ResumeError(RuntimeError):
    """The replayed run does not follow its ledger (the code or the inputs changed)."""


@wire_type("Hollow")
@dataclass(frozen=True)
class Hollow:
    """A value with its payload bytes taken out: `sizes` holds their lengths, in order."""

    value: Any
    sizes: tuple[int, ...] = ()


def hollow(value: Any) -> Any:
    """`value` without its bytes: payloads (FitIns, FitRes, StepRes) keep their kind and size."""
    if isinstance(value, (bytes, bytearray)):
        return Hollow(None, (len(value),))
    payloads = getattr(value, "payloads", None)
    if dataclasses.is_dataclass(value) and isinstance(payloads, tuple):
        sizes = tuple(p.payload_bytes for p in payloads)
        return Hollow(dataclasses.replace(value, payloads=tuple(Payload(p.kind, b"") for p in payloads)), sizes)
    return value


def filled(value: Any) -> Any:
    """The value a hollow one stands for, with zero bytes of the recorded sizes."""
    if not isinstance(value, Hollow):
        return value
    if value.value is None:
        return bytes(value.sizes[0])
    payloads = tuple(Payload(p.kind, bytes(n)) for p, n in zip(value.value.payloads, value.sizes, strict=True))
    return dataclasses.replace(value.value, payloads=payloads)


@wire_type("ServerEntry")
@dataclass(frozen=True)
class ServerEntry:
    """One server call (split's backbone step, KD's ingest) or aggregation, as the clock saw it."""

    rnd: int
    client: int
    label: str
    host_s: float
    value: Any = None  # hollowed answer; an aggregation's metrics


@dataclass
class Ledger:
    """Recorded in live mode, answered from in replay mode (`replaying`)."""

    fit_ins: list[dict[int, Any]] = field(default_factory=list)  # per configure_fit call, hollowed
    calls: dict[CallKey, Any] = field(default_factory=dict)  # client call outcomes, hollowed
    server: list[ServerEntry] = field(default_factory=list)  # server calls and aggregations, in order
    full_fit_ins: dict[int, dict[int, FitIns]] = field(default_factory=dict)  # open work: call index -> FitIns
    full_calls: dict[CallKey, Any] = field(default_factory=dict)  # outcomes of calls still of use whole
    replaying: bool = False
    # False: nothing is recorded, and a replay runs everything again (a predicted run: its
    # work is a deterministic function of its cost table, cheaper to redo than to keep)
    kept: bool = True
    _fit_ins_at: int = 0  # replay: the next configure_fit call
    _server_at: int = 0  # replay: the next server entry
    _submits: Counter = field(default_factory=Counter)  # (round, client, method) -> submits so far
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- FitIns ------------------------------------------------------------------------------
    @property
    def answers(self) -> bool:
        """Whether recorded entries answer instead of the backend, the server and the framework."""
        return self.replaying and self.kept

    def configure_fit(self, make, rnd: int, client_ids: list[int]) -> tuple[int, dict[int, FitIns]]:
        """(call index, FitIns per client): made by `make(rnd, client_ids)` and recorded, or
        in replay the recorded ones (whole for work still open at the checkpoint)."""
        if not self.kept:
            self._fit_ins_at += 1
            return self._fit_ins_at - 1, make(rnd, client_ids)
        if not self.replaying:
            ins = make(rnd, client_ids)
            self.fit_ins.append({cid: hollow(i) for cid, i in ins.items()})
            return len(self.fit_ins) - 1, ins
        index = self._fit_ins_at
        self._fit_ins_at += 1
        if index >= len(self.fit_ins):
            raise ResumeError(f"round {rnd}: the run configures more rounds than its ledger holds")
        recorded = self.fit_ins[index]
        if sorted(recorded) != sorted(client_ids):
            raise ResumeError(f"round {rnd}: clients {sorted(client_ids)} selected, the ledger has "
                              f"{sorted(recorded)}: the run diverged from the one it resumes")
        whole = self.full_fit_ins.get(index, {})
        return index, {cid: whole.get(cid) or filled(v) for cid, v in recorded.items()}

    # -- client calls ------------------------------------------------------------------------
    def next_key(self, rnd: int, cid: int, method: str) -> CallKey:
        with self._lock:
            n = self._submits[(rnd, cid, method)]
            self._submits[(rnd, cid, method)] += 1
        return (rnd, cid, method, n)

    def record_call(self, key: CallKey, outcome: Any) -> None:
        if not self.kept:
            return
        with self._lock:
            self.calls[key] = hollow(outcome)
            self.full_calls[key] = outcome

    def replay_call(self, key: CallKey) -> Future:
        """The recorded outcome of the call `key`, as a finished future (an exception if none)."""
        fut: Future = Future()
        if key in self.full_calls:
            fut.set_result(self.full_calls[key])
        elif key in self.calls:
            fut.set_result(filled(self.calls[key]))
        else:
            fut.set_exception(ResumeError(f"round {key[0]}: client {key[1]}'s call {key[2]} #{key[3]} is not in "
                                          "the ledger: the run diverged from the one it resumes"))
        return fut

    # -- server work -------------------------------------------------------------------------
    def record_server(self, entry: ServerEntry) -> None:
        if not self.kept:
            return
        self.server.append(dataclasses.replace(entry, value=hollow(entry.value)))

    def replay_server(self, rnd: int, cid: int, label: str) -> ServerEntry:
        """The next recorded server entry, which must be this one."""
        if self._server_at >= len(self.server):
            raise ResumeError(f"round {rnd}: server work {label!r} is not in the ledger")
        entry = self.server[self._server_at]
        self._server_at += 1
        if (entry.rnd, entry.client, entry.label) != (rnd, cid, label):
            raise ResumeError(f"round {rnd}: server work ({cid}, {label!r}) where the ledger has "
                              f"({entry.rnd}, {entry.client}, {entry.label!r}): the run diverged")
        return dataclasses.replace(entry, value=filled(entry.value))

    # -- what a checkpoint keeps whole ---------------------------------------------------------
    def keep_whole(self, open_ins: dict[int, dict[int, FitIns]], open_calls: set[tuple[int, int]]) -> None:
        """Keep whole only what work still open needs: its FitIns (configure_fit call index ->
        FitIns per client) and its calls' outcomes ((submit round, client)); everything else
        is needed hollow only."""
        with self._lock:
            self.full_fit_ins = {i: dict(per) for i, per in open_ins.items()}
            self.full_calls = {k: v for k, v in self.full_calls.items() if (k[0], k[1]) in open_calls}

    def state(self) -> dict[str, Any]:
        """What a checkpoint stores (wire-encodable)."""
        with self._lock:
            return {"fit_ins": list(self.fit_ins), "calls": dict(self.calls), "server": list(self.server),
                    "full_fit_ins": dict(self.full_fit_ins), "full_calls": dict(self.full_calls), "kept": self.kept}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Ledger:
        return cls(fit_ins=list(state["fit_ins"]), calls=dict(state["calls"]), server=list(state["server"]),
                   full_fit_ins=dict(state["full_fit_ins"]), full_calls=dict(state["full_calls"]), replaying=True,
                   kept=bool(state.get("kept", True)))


class LedgerBackend:
    """The backend as the clock sees it: every call recorded in the ledger, or in replay
    answered from it without reaching a worker. A view of the real backend (which it does not
    start or close): anything else is the real one's."""

    def __init__(self, backend: Backend, ledger: Ledger) -> None:
        self.inner = backend
        self.ledger = ledger
        self.specs = backend.specs
        self.client_class = backend.client_class

    def submit(self, cid: int, rnd: int, method: str, args: tuple = (), *, kill: bool = False) -> Future:
        if not self.ledger.kept:
            return self.inner.submit(cid, rnd, method, args, kill=kill)
        key = self.ledger.next_key(rnd, cid, method)
        if self.ledger.answers:
            return self.ledger.replay_call(key)
        real = self.inner.submit(cid, rnd, method, args, kill=kill)
        mine: Future = Future()

        def settle(done: Future) -> None:  # recorded before anyone can read the result
            try:
                outcome = done.result()
            except BaseException as exc:  # noqa: BLE001 - handed on as it came
                mine.set_exception(exc)
                return
            self.ledger.record_call(key, outcome)
            mine.set_result(outcome)

        real.add_done_callback(settle)
        return mine

    def __getattr__(self, name: str) -> Any:  # workers, calibration, quotas: the real backend's
        return getattr(self.inner, name)
