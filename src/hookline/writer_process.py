"""``hookline serve``'s ingest writer process: started, watched and restarted, stopped."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hookline.groupcommit import WAIT_SECONDS
from hookline.writer_wire import SOCKET_ENV

__all__ = ["WriterProcess", "stop_process"]

log = logging.getLogger("hookline.writer")


def stop_process(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM ``process`` (a child of ``hookline serve``: it finishes what it holds, then
    exits), wait up to ``timeout`` seconds, then SIGKILL it; a process already gone is left."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class WriterProcess:
    """``hookline serve``'s writer: started before the web processes, restarted if it dies,
    stopped (after its batch in hand) when the server stops."""

    def __init__(self, command: list[str], *, preexec_fn: Callable[[], None] | None = None):
        """``command`` runs ``python -m hookline.writer`` (the socket path comes from here)."""
        self._directory = Path(tempfile.mkdtemp(prefix="hookline-writer-"))  # 0700: ours only
        self.path = self._directory / "ingest.sock"
        self._command = command
        self._preexec_fn = preexec_fn
        self._process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        """The running writer's process id."""
        return self._process.pid if self._process is not None else None

    def start(self, ready_timeout: float = 30.0) -> bool:
        """Start the writer and wait until it listens; False (and stopped) if it does not."""
        self._spawn()
        if not self._wait_ready(ready_timeout):
            self.stop()
            return False
        self._watcher = threading.Thread(target=self._watch, name="hookline-writer", daemon=True)
        self._watcher.start()
        return True

    def stop(self, timeout: float = WAIT_SECONDS) -> None:
        """Stop the writer (SIGTERM: it answers what it holds, then exits) and clean up."""
        self._stopping.set()
        if self._process is not None:
            stop_process(self._process, timeout)
        shutil.rmtree(self._directory, ignore_errors=True)

    def _spawn(self) -> None:
        env = {**os.environ, SOCKET_ENV: str(self.path)}
        self._process = subprocess.Popen(self._command, env=env, preexec_fn=self._preexec_fn)

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(self.path))
                return True
            time.sleep(0.05)
        return False

    def _watch(self) -> None:
        # While it is down the web processes answer 503 (nothing is accepted, so nothing is
        # lost); a writer that keeps failing is retried at most once a second.
        while not self._stopping.is_set():
            process = self._process
            assert process is not None
            code = process.wait()
            if self._stopping.is_set():
                return
            log.warning("the ingest writer exited (%s); starting it again", code)
            print(f"hookline: the ingest writer exited ({code}); restarting", file=sys.stderr)
            self.restarts += 1
            time.sleep(1.0)
            if not self._stopping.is_set():
                self._spawn()
