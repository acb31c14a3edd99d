"""`hookline serve` as a process tree: the delivery worker it starts does not outlive it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _children(pid: int) -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid:
            found.append((int(entry.name), cmdline))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose (its parent, now gone, cannot reap it; init will).
    return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_a_killed_serve_takes_its_delivery_worker_with_it(own_server):
    serve = own_server.process
    workers = [pid for pid, cmd in _children(serve.pid) if "hookline worker" in cmd]
    assert len(workers) == 1, _children(serve.pid)

    os.kill(serve.pid, signal.SIGKILL)  # no chance to stop its children itself
    serve.wait(timeout=10)

    deadline = time.monotonic() + 20
    while _alive(workers[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(workers[0]), "the delivery worker outlived `hookline serve`"
