"""Imported first by the workers' forkserver (testbed.host.forkserver.PRELOAD): pauses
Python's cyclic garbage collector while the forkserver imports torch, transformers and peft.

Python's recipe for a process that forks without exec (the `gc.freeze` documentation):
`gc.disable()` early in the parent, `gc.freeze()` right before fork, `gc.enable()` early in
the child. Here the parent is the forkserver; a worker freezes and re-enables at its start
(testbed.backends.process.worker_main). The imports allocate some 380,000 tracked objects
and each full collection walks all of them: 0.7-0.9 s of a 4.5 s import on this host, on
every run's start-up critical path. A frozen heap is also never written by a child's
collections, so its pages stay shared.
"""

from __future__ import annotations

import gc

gc.disable()
