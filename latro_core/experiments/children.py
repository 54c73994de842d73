"""Child ``latro`` processes, the one pool the notebooks' runs and the studies' cells share.

    with ChildProcesses(threads=1) as children:
        children.run(["train", ...], log)                       # one run, blocking
        children.run_all([(args, log), ...], parallel=2, what="the demo's runs")
        children.each(run_one_cell, cells, parallel=2)            # functions that start children

Each child runs ``python -m latro_core.cli <args>`` in its own process group with ``threads`` torch
threads, its output in its log. Inside the ``with``: SIGTERM to this process stops every child (each
saves its checkpoint at the end of its current step) and raises KeyboardInterrupt here; Ctrl-C does
the same; on leaving, the SIGTERM handler that was there before is put back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import LatroError


class ChildProcesses:
    """``threads`` torch threads per child; ``cwd`` their working folder (logs are relative to it)."""

    def __init__(self, threads: int = 1, cwd: str | Path | None = None):
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.cwd = cwd
        self.live: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.previous_handler = None
        self.stopping = False

    def __enter__(self) -> "ChildProcesses":
        if threading.current_thread() is threading.main_thread():
            self.previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:          # interrupted or failed: no child outlives the pool
            self.stop()
        if self.previous_handler is not None:
            signal.signal(signal.SIGTERM, self.previous_handler)
            self.previous_handler = None

    def _on_sigterm(self, *_):
        self.stop()
        raise KeyboardInterrupt

    def stop(self) -> None:
        """SIGTERM to every running child's process group; wait for them. No child starts after it."""
        with self.lock:
            self.stopping = True
            live = list(self.live)
        for proc in live:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in live:
            proc.wait()

    def run(self, args: list[str], log: str | Path) -> None:
        """``latro <args>``, output to ``log``; LatroError naming the log when it fails."""
        path = Path(self.cwd or ".", log)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as out:
            with self.lock:
                if self.stopping:
                    raise LatroError(f"{str(log).removesuffix('.log')} (not started: the runs were stopped)")
                proc = subprocess.Popen([sys.executable, "-m", "latro_core.cli", *args], cwd=self.cwd, env=self.env,
                                        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
                self.live.add(proc)
            try:
                code = proc.wait()
            finally:
                with self.lock:
                    self.live.discard(proc)
        if code != 0:
            raise LatroError(f"{str(log).removesuffix('.log')} (exit {code}, see {log})")

    def each(self, function, items: list, parallel: int) -> list:
        """``function(item)`` for each of ``items`` (each may start children), ``parallel`` at a time
        in threads; Ctrl-C or SIGTERM stops the running children and starts no more."""
        pool = ThreadPoolExecutor(max(1, parallel))
        try:
            results = list(pool.map(function, items))
        except BaseException:
            self.stop()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        return results

    def run_all(self, jobs: list[tuple[list[str], str | Path]], parallel: int, what: str) -> None:
        """Each ``(args, log)`` of ``jobs``, ``parallel`` at a time; after all have ended, one
        LatroError naming every failed run's log."""
        def one(job):
            try:
                self.run(*job)
            except LatroError as e:
                return str(e)
            return None

        failed = [f for f in self.each(one, jobs, parallel) if f]
        if failed:
            raise LatroError(f"{what} failed: " + "; ".join(failed))
