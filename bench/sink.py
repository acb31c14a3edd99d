"""A fast webhook receiver for the benchmarks: ``python bench/sink.py --port P``.

``POST <any path>`` answers ``200 ok`` (after ``--delay`` seconds, for a "never answers" sink
use a delay longer than the sender's timeout) and counts it. Control routes:

- ``GET /_stats``    {"count", "first", "last"} (epoch seconds of the first / last arrival)
- ``GET /_arrivals`` {webhook-id: epoch arrival} (only with ``--record``)
- ``GET /_first``    headers and body of the first request (to verify the signature)
- ``POST /_reset``   forget everything
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiohttp import web


def make_app(delay: float, record: bool) -> web.Application:
    state: dict = {"count": 0, "first": None, "last": None, "arrivals": {}, "first_req": None}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        if delay:
            await asyncio.sleep(delay)
        state["count"] += 1
        state["last"] = now
        if state["first"] is None:
            state["first"] = now
            state["first_req"] = {
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body.decode("utf-8", "replace"),
            }
        if record:
            state["arrivals"].setdefault(request.headers.get("webhook-id", ""), now)
        return web.Response(text="ok")

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(
            {"count": state["count"], "first": state["first"], "last": state["last"]}
        )

    async def arrivals(_request: web.Request) -> web.Response:
        return web.json_response(state["arrivals"])

    async def first(_request: web.Request) -> web.Response:
        return web.json_response(state["first_req"])

    async def reset(_request: web.Request) -> web.Response:
        state.update(count=0, first=None, last=None, arrivals={}, first_req=None)
        return web.json_response(True)

    app = web.Application(client_max_size=1 << 20)
    app.router.add_get("/_stats", stats)
    app.router.add_get("/_arrivals", arrivals)
    app.router.add_get("/_first", first)
    app.router.add_post("/_reset", reset)
    app.router.add_post("/{tail:.*}", hook)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    web.run_app(
        make_app(args.delay, args.record),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        backlog=1024,
    )


if __name__ == "__main__":
    main()
