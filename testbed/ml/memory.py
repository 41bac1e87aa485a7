"""Resident memory of the current process: its peak while a piece of work runs, and
handing freed heap back to the OS."""

from __future__ import annotations

import threading

import psutil


def release_freed_memory() -> None:
    """Hand memory freed by Python back to the OS (glibc keeps it otherwise): a worker that
    quantized its weights is then charged for what it holds, and an idle worker or a server
    done evaluating holds its model, not its last call's activations."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


class PeakRssSampler:
    """Samples this process's RSS every `interval_s` in a background thread; a context manager."""

    def __init__(self, *, interval_s: float = 0.02) -> None:
        if interval_s <= 0:
            raise ValueError(f'"interval_s" must be > 0, got {interval_s}')
        self.interval_s = interval_s
        self.peak_rss_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        proc = psutil.Process()
        while True:
            self.peak_rss_bytes = max(self.peak_rss_bytes, proc.memory_info().rss)
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> PeakRssSampler:
        self.peak_rss_bytes = psutil.Process().memory_info().rss
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_rss_bytes = max(self.peak_rss_bytes, psutil.Process().memory_info().rss)
