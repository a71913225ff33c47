"""Peak resident memory of a benchmark's child process, sampled in a thread.

Every benchmark runs each contender in its own subprocess (design decision 15) and reports the
peak RSS the parent saw; this is that sampler, shared so that every script measures the same way.
"""

from __future__ import annotations

import threading
import time


class PeakRSS:
    """``with PeakRSS(proc.pid) as rss: proc.communicate()`` then ``rss.peak`` (bytes).

    ``tree=True`` adds the RSS of every descendant (contenders that spawn workers) and keeps each
    descendant's own peak in ``peaks`` (pid -> bytes) with its command line in ``cmd`` and its
    parent's pid in ``parent``;
    ``interval`` is the sampling period in seconds. A process that has exited simply stops the
    sampling.
    """

    def __init__(self, pid: int, *, interval: float = 0.02, tree: bool = False):
        self.pid, self.interval, self.tree = pid, interval, tree
        self.peak = 0
        self.peaks: dict[int, int] = {}
        self.cmd: dict[int, str] = {}
        self.parent: dict[int, int] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._done.is_set():
            try:
                total = root.memory_info().rss
                if self.tree:
                    for child in root.children(recursive=True):
                        try:
                            rss = child.memory_info().rss
                            cmd = " ".join(child.cmdline())  # the latest: a fork shows its parent's until exec
                            if cmd:
                                self.cmd[child.pid] = cmd
                            self.parent.setdefault(child.pid, child.ppid())
                        except psutil.Error:  # a child exiting mid-walk is not the root exiting
                            continue
                        total += rss
                        self.peaks[child.pid] = max(self.peaks.get(child.pid, 0), rss)
                self.peak = max(self.peak, total)
            except psutil.NoSuchProcess:
                return
            except psutil.Error:
                pass  # a child exiting mid-sum: try again next period
            time.sleep(self.interval)
