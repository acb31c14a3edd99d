"""myapp: the seed's order service as a py4web app (webhook receiver, orders API, status page)."""

from . import controllers  # noqa: F401 - importing registers the actions
