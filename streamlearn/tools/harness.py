"""The process harness the demo, the benchmark and the tests share.

Child processes that die with their parent (even on kill -9 of the parent), waiting on
conditions with deadlines (never fixed sleeps), and reading a worker's ``/metrics``.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_PR_SET_PDEATHSIG = 1

# {family: {(sample name, sorted label items): value}}
Families = dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]


def die_with_parent() -> None:
    """``preexec_fn`` for children: the kernel sends SIGTERM when the parent dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    """Until something listens on ``127.0.0.1:port``; fails at once if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class ChildExited(RuntimeError):
    """A child process ended while the parent still needed it; the message ends with the last
    lines of its log (the reason, usually)."""


_ERROR_LINE = re.compile(r"^\s*(?:[\w.]+(?:Error|Exception|Exit)|streamlearn): ")


def log_tail(path: Path, lines: int = 12) -> str:
    """The end of a log file: from its last error line (``SomeError: ...``, a traceback's
    last line, possibly wrapped) if one is among the last ``lines`` non-blank lines, else
    those lines ('' if there is no log)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    last = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    at = next((i for i in range(len(last) - 1, -1, -1) if _ERROR_LINE.match(last[i])), None)
    return "\n".join(last if at is None else last[at:])


def wait_until(cond: Callable[[], T], timeout: float, what: str, interval: float = 0.05,
               check: Callable[[], None] | None = None) -> T:
    """Poll ``cond`` until it returns something truthy and return it; TimeoutError naming
    ``what`` at the deadline. ``check`` runs before each poll and may raise to stop waiting
    at once (e.g. :meth:`ChildProcess.check`: the process we wait on has died)."""
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class ChildProcess:
    """``python -m <module_args>`` as a subprocess that dies with this process; output to a log."""

    module_args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    cwd: Path | None = None  # where the child runs (Faust keeps its data directory there)

    def start(self) -> ChildProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *self.module_args], env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent, cwd=self.cwd)
        return self

    def check(self, during: str = "") -> None:
        """Raise :class:`ChildExited` (with its log's last lines) if the process has ended."""
        if self.proc is None or self.proc.poll() is None:
            return
        name = " ".join(self.module_args)
        tail = log_tail(self.log_path)
        raise ChildExited(f"{name} (pid {self.proc.pid}) exited with code {self.proc.returncode}"
                          + (f" {during}" if during else "") + f"; last lines of {self.log_path}:\n"
                          + "\n".join(f"  {line}" for line in tail.splitlines()))

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class WorkerProcess(ChildProcess):
    """A ``streamlearn worker`` subprocess with its own HTTP port."""

    def __init__(self, env: dict[str, str], log_path: Path, web_port: int | None = None,
                 cwd: Path | None = None) -> None:
        self.web_port = web_port or free_port()
        super().__init__(["streamlearn", "worker"], {**env, "STREAMLEARN_WEB_PORT": str(self.web_port)}, log_path,
                         cwd=cwd)

    def wait_web(self, timeout: float = 60.0) -> None:
        assert self.proc is not None
        wait_port(self.web_port, timeout, self.proc)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1): the value at rank ``int(q * n)`` of the sorted values; NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def quarter_p50s(values: Sequence[float]) -> list[float]:
    """The median of each quarter of ``values`` in the order given (arrival order): whether a
    latency stays level over a run or grows with it (on the embedded broker a partition's
    fetch scans its batches, so a paced run's delay grows with the partition).

    >>> quarter_p50s([1, 2, 3, 4, 10, 20, 30, 40])
    [2, 4, 20, 40]
    >>> quarter_p50s([5.0])  # fewer values than quarters: NaN where a quarter is empty
    [nan, nan, nan, 5.0]
    """
    n = len(values)
    return [percentile(values[k * n // 4:(k + 1) * n // 4], 0.5) for k in range(4)]


def scrape(port: int, timeout: float = 15.0) -> Families:
    """A worker's ``GET /metrics``, parsed: ``{family: {(sample, sorted label items): value}}``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    return {fam.name: {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fam.samples}
            for fam in text_string_to_metric_families(text)}


def sample_total(families: Families, sample: str, **labels: Any) -> float:
    """Sum of ``sample`` over the series whose labels include ``labels`` (0 if none)."""
    want = {k: str(v) for k, v in labels.items()}
    return sum(v for fam in families.values() for (name, items), v in fam.items()
               if name == sample and want.items() <= dict(items).items())
