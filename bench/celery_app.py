"""The Celery baseline: one task per delivery doing ``requests.post`` with ``autoretry_for``.

Started by ``delivery_throughput.py`` as
``celery -A celery_app worker --pool=prefork --concurrency=K`` (cwd ``bench/``) with the broker
URL in ``BENCH_BROKER_URL``. The task signs like hookline does (Standard Webhooks v1 with the
same secret, at send time) so both sides do the same work per request. This is the textbook
task: no ``requests.Session`` (a new connection per POST), results ignored, default (early) ack.
"""

from __future__ import annotations

import os
import time

import requests
from celery import Celery

from hookline import signing

app = Celery(
    "hookline_bench", broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")
)
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(
    name="bench.deliver",
    autoretry_for=(requests.RequestException,),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=8,
)
def deliver(url: str, msg_id: str, body: str, secret: str) -> int:
    data = body.encode("utf-8")
    headers = signing.outbound_headers(msg_id, int(time.time()), data, secrets=[secret])
    headers["Content-Type"] = "application/json"
    response = requests.post(url, data=data, headers=headers, timeout=(5, 15))
    response.raise_for_status()
    return response.status_code
