"""The ceiling: ``POST /myapp/webhook`` that reads the body and answers, writing nothing.

Same server stack as hookline (py4web action under granian, same workers and threads), same
answer bytes, no database: what is left is the cost of HTTP + granian + py4web per request.
"""

from __future__ import annotations

import json

from py4web import HTTP, action, request, response

# json.dumps' default separators give the same bytes as hookline's json_response.
_SUCCESS = json.dumps({"status": "success", "message": "Webhook processed"})


@action("webhook", method=["GET", "POST"])
def webhook() -> str:
    """Read the whole body (as hookline's adapter does) and answer the seed's success JSON."""
    if request.method != "POST":
        raise HTTP(400, "Invalid request")
    # Read the WSGI stream by Content-Length, like hookline's adapter, so both pay the same read.
    length = request.content_length
    stream = request.environ["wsgi.input"]
    if length >= 0:
        stream.read(length)
    else:
        stream.read()
    response.headers["Content-Type"] = "application/json"
    return _SUCCESS
