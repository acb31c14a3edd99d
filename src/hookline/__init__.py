"""hookline: webhooks done right for the web2py family.

The engine: a transactional outbox (``publish``), an order service that uses it, a receiver that
stores before it answers, and API keys; all on any pydal ``db``. The py4web app that serves them
lives in ``hookline.web`` (the only place that imports py4web).
"""

from __future__ import annotations

from hookline.config import Settings
from hookline.database import connect, migrate
from hookline.errors import ClientError, HooklineError, InvalidEvent
from hookline.outbox import EVENT_TYPES, publish
from hookline.receiver import receive_order_webhook
from hookline.webio import Request, Response

__version__ = "0.1.0"

__all__ = [
    "EVENT_TYPES",
    "ClientError",
    "HooklineError",
    "InvalidEvent",
    "Request",
    "Response",
    "Settings",
    "__version__",
    "connect",
    "migrate",
    "publish",
    "receive_order_webhook",
]
