"""Peak resident memory of the current process while a piece of work runs."""

from __future__ import annotations

import threading

import psutil


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
