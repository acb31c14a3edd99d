"""CPU per delivery: the raw aiohttp loop against the hookline worker, on the same sink.

The two take turns, --rounds times: --deliveries signed bodies POSTed by the raw loop of
``delivery_throughput.py`` (concurrency 64), then the same number of pre-published events sent
by an in-process ``Worker`` (concurrency 64, one endpoint with ``max_in_flight`` 64) on a fresh
database. Around each run: the sending process's CPU (``getrusage``), its event-loop thread's
(``time.thread_time``), the sink process's (``/proc/<pid>/stat``) and the machine's busy share
(``/proc/stat``). Prints one line per run; no goal of its own, it explains the throughput ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchDB, Sink, create_endpoint, publish_events
from delivery_throughput import _raw, bodies

CONCURRENCY = 64
_TICKS = os.sysconf("SC_CLK_TCK")


def _machine() -> tuple[int, int]:
    """(all jiffies, idle + iowait jiffies) since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values), values[3] + values[4]


def _process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measured(sink: Sink, n: int, run: Callable[[], Any]) -> dict[str, float]:
    """``run()`` with the CPU each side spent, per delivery (µs)."""
    machine, sink_cpu, own = _machine(), _process_cpu(sink.proc.pid), _own_cpu()
    loop, started = time.thread_time(), time.perf_counter()
    run()
    elapsed = time.perf_counter() - started
    loop = time.thread_time() - loop
    machine_after = _machine()
    busy = 1 - (machine_after[1] - machine[1]) / (machine_after[0] - machine[0])
    return {
        "rate": n / elapsed,
        "sender_us": (_own_cpu() - own) / n * 1e6,
        "loop_us": loop / n * 1e6,
        "sink_us": (_process_cpu(sink.proc.pid) - sink_cpu) / n * 1e6,
        "busy": busy * 100,
    }


def raw_run(sink: Sink, n: int) -> dict[str, float]:
    items = bodies(n)
    sink.reset()
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    return measured(sink, n, lambda: asyncio.run(_raw(sink.url, items, secret, CONCURRENCY)))


def worker_run(sink: Sink, n: int, engine: str) -> dict[str, float]:
    from hookline.worker import Worker

    with BenchDB(engine) as bdb:
        create_endpoint(bdb, sink.url, max_in_flight=CONCURRENCY)
        publish_events(bdb, n)
        sink.reset()
        worker = Worker(bdb.settings, concurrency=CONCURRENCY, max_deliveries=n)
        return measured(sink, n, lambda: asyncio.run(worker.run()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-n", "--deliveries", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--engine", default="sqlite", choices=("sqlite", "postgres"))
    args = p.parse_args()
    with Sink() as sink:
        for _ in range(args.rounds):
            for name, result in (
                ("raw loop", raw_run(sink, args.deliveries)),
                (f"worker ({args.engine})", worker_run(sink, args.deliveries, args.engine)),
            ):
                print(
                    f"{name:17s} {result['rate']:6,.0f} /s  sender {result['sender_us']:4.0f} µs"
                    f" (event loop {result['loop_us']:4.0f})  sink {result['sink_us']:4.0f} µs"
                    f"  machine busy {result['busy']:3.0f} %",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
