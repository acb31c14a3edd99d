"""The ingest writer on both backends, over a real Unix socket, reached through ``WriterLink``
as the web processes reach it: many requests in flight on one connection are stored in shared
batches and each answered after its batch; a writer that is down, silent or gone mid-request
is a 503, and a restarted one is found again; a peer speaking nonsense is dropped without
disturbing the others; a signed orders source is sent back to the verifying path."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hookline import secretbox, sources
from hookline.groupcommit import GroupCommitter, connect_for
from hookline.receiver import ORDERS_SOURCE
from hookline.webio import Request, Response
from hookline.writer import IngestWriter
from hookline.writer_link import WriterLink

LIMIT = 64 * 1024


def _order(order_id: str, **headers: str) -> Request:
    body = json.dumps({"order_id": order_id, "product_name": "kettle"}).encode()
    return Request.build(
        "POST", "/myapp/webhook", {"Content-Type": "application/json", **headers}, body
    )


class Running:
    """A writer serving from a thread on ``path``."""

    def __init__(self, settings, path: Path) -> None:
        self.writer = IngestWriter(
            GroupCommitter(connect_for(settings)), path, max_body_bytes=LIMIT
        )
        self.thread = threading.Thread(target=self.writer.serve, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.writer.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def socket_path() -> Iterator[Path]:
    directory = tempfile.mkdtemp(prefix="hl-")  # Unix socket paths must stay short
    yield Path(directory) / "w.sock"
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def running(settings, socket_path) -> Iterator[Running]:
    running = Running(settings, socket_path)
    yield running
    running.stop()


def _stored_order_ids(other_db) -> list[str]:
    other_db.commit()
    return sorted(row[0] for row in other_db.executesql("SELECT order_id FROM hookline_order"))


def _receive(path: Path, request: Request, **options) -> Response | None:
    return asyncio.run(WriterLink(path, **options).receive(request))


def test_requests_in_flight_together_are_stored_once_each_in_shared_batches(running, other_db):
    loops, per_loop = 4, 60  # each loop: one link, one connection, 60 requests in flight

    async def send_all(n: int) -> dict[str, Response | None]:
        link = WriterLink(running.writer.path)
        order_ids = [f"t{n}-{i}" for i in range(per_loop)]
        answers = await asyncio.gather(*(link.receive(_order(o)) for o in order_ids))
        link.close()
        return dict(zip(order_ids, answers, strict=True))

    answers: dict[str, Response | None] = {}
    threads = [
        threading.Thread(target=lambda n=n: answers.update(asyncio.run(send_all(n))))
        for n in range(loops)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert len(answers) == loops * per_loop
    assert {answer.status for answer in answers.values() if answer} == {200}
    assert all(json.loads(a.body)["status"] == "success" for a in answers.values() if a)
    assert _stored_order_ids(other_db) == sorted(answers)
    committer = running.writer.committer
    assert committer.units == loops * per_loop
    assert committer.batches < committer.units / 4  # requests that arrived together shared one


def test_an_answer_means_the_request_is_committed(running, other_db):
    answer = _receive(running.writer.path, _order("o-1", **{"webhook-id": "msg-1"}))

    assert answer is not None and answer.status == 200
    # Another connection sees it at once: the answer came after the commit, not before.
    assert _stored_order_ids(other_db) == ["o-1"]
    other_db.commit()
    inbox = other_db.executesql("SELECT message_id, response_status FROM hookline_inbox")
    assert [tuple(row) for row in inbox] == [("msg-1", 200)]


def test_refusals_are_answered_by_the_writer_with_nothing_stored(running, other_db):
    path = running.writer.path
    json_type = {"Content-Type": "application/json"}

    wrong_method = _receive(path, Request.build("GET", "/myapp/webhook"))
    bad_json = _receive(path, Request.build("POST", "/myapp/webhook", json_type, b"{"))
    no_product = _receive(path, Request.build("POST", "/myapp/webhook", json_type, b"{}"))

    assert (wrong_method.status, wrong_method.body) == (400, b"Invalid request")
    assert bad_json.status == 400 and "malformed JSON" in json.loads(bad_json.body)["message"]
    assert no_product.status == 422
    assert _stored_order_ids(other_db) == []


def _assert_unavailable(answer: Response | None) -> None:
    assert answer is not None and answer.status == 503, answer
    assert answer.headers.get("Retry-After")


def test_a_writer_that_is_down_is_a_503_and_a_restarted_one_is_found_again(
    settings, socket_path, other_db
):
    async def scenario() -> list[Response | None]:
        link = WriterLink(socket_path, timeout=5)
        answers = [await link.receive(_order("early"))]  # nobody listens yet
        first = Running(settings, socket_path)
        answers.append(await link.receive(_order("first")))
        first.stop()  # the link's connection now leads nowhere
        await asyncio.sleep(0.2)  # what a restart takes at least (serve waits a second)
        second = Running(settings, socket_path)
        try:
            answers.append(await link.receive(_order("second")))  # on a new connection
        finally:
            second.stop()
        return answers

    early, first, second = asyncio.run(scenario())

    _assert_unavailable(early)
    assert first is not None and first.status == 200
    assert second is not None and second.status == 200
    assert _stored_order_ids(other_db) == ["first", "second"]


def test_a_writer_that_does_not_answer_in_time_is_a_503(socket_path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(str(socket_path))
        silent.listen()

        _assert_unavailable(_receive(socket_path, _order("late"), timeout=0.5))


def test_a_writer_that_goes_away_with_a_request_in_flight_is_a_503(socket_path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(socket_path))
        listener.listen()

        def read_then_hang_up() -> None:
            peer, _ = listener.accept()
            peer.recv(1 << 16)
            peer.close()

        dropping = threading.Thread(target=read_then_hang_up)
        dropping.start()
        _assert_unavailable(_receive(socket_path, _order("lost"), timeout=10))
        dropping.join(5)


def test_a_peer_speaking_nonsense_is_dropped_and_the_others_are_served(running, other_db):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as rogue:
        rogue.connect(str(running.writer.path))
        rogue.sendall((1).to_bytes(4, "big") + (5).to_bytes(4, "big") + bytes(4) + b"nope!")
        rogue.settimeout(5)
        assert rogue.recv(100) == b""  # closed by the writer, no answer

    answer = _receive(running.writer.path, _order("after"))

    assert answer is not None and answer.status == 200
    assert _stored_order_ids(other_db) == ["after"]


def test_a_signed_orders_source_is_sent_back_to_the_verifying_path(running, db, other_db):
    box = secretbox.SecretBox([secretbox.generate_key()])
    sources.rotate_secret(db, box, ORDERS_SOURCE)
    db.commit()

    answer = _receive(running.writer.path, _order("unsigned"))

    assert answer is None  # the web process verifies it, with the secret box
    assert _stored_order_ids(other_db) == []


def test_a_request_the_writer_cannot_handle_fails_alone(running, other_db, monkeypatch):
    from hookline import receiver

    prepare, start = receiver._prepare, receiver.start_grouped

    def failing_prepare(request, *args):
        if b"bad-prepare" in request.body:
            raise RuntimeError("a bug in preparing")
        return prepare(request, *args)

    def failing_start(request, **options):
        if b"bad-start" in request.body:
            raise RuntimeError("a bug in reading")
        return start(request, **options)

    monkeypatch.setattr(receiver, "_prepare", failing_prepare)
    monkeypatch.setattr(receiver, "start_grouped", failing_start)

    async def send_all() -> list[Response | None]:
        link = WriterLink(running.writer.path)
        names = ["ok-1", "bad-prepare", "ok-2", "bad-start", "ok-3"]
        return await asyncio.gather(*(link.receive(_order(name)) for name in names))

    answers = asyncio.run(send_all())

    assert [answer.status for answer in answers] == [200, 503, 200, 503, 200]
    assert _stored_order_ids(other_db) == ["ok-1", "ok-2", "ok-3"]
    assert _receive(running.writer.path, _order("later")).status == 200  # still serving


# PostgreSQL's COMMIT is durable by itself: there the writer syncs nothing of its own.
_SQLITE_ONLY = pytest.mark.parametrize("settings", ["sqlite"], indirect=True)


@_SQLITE_ONLY
def test_no_answer_leaves_before_the_sync_that_makes_it_durable(running, other_db, monkeypatch):
    syncing, release = threading.Event(), threading.Event()
    fdatasync = os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        syncing.set()
        release.wait(10)
        fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", slow_fdatasync)
    answers: list[Response | None] = []
    sender = threading.Thread(
        target=lambda: answers.append(_receive(running.writer.path, _order("synced")))
    )
    sender.start()

    assert syncing.wait(10)
    sender.join(0.5)
    assert answers == []  # committed, but not on disk yet: no answer
    release.set()
    sender.join(10)
    assert [answer.status for answer in answers] == [200]
    assert _stored_order_ids(other_db) == ["synced"]


@_SQLITE_ONLY
def test_a_failed_sync_answers_503_and_the_next_one_200(running, monkeypatch):
    fdatasync = os.fdatasync
    failures = [OSError(5, "Input/output error")]

    def failing_once(fd: int) -> None:
        if failures:
            raise failures.pop()
        fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", failing_once)

    first = _receive(running.writer.path, _order("unsure"))
    second = _receive(running.writer.path, _order("sure"))

    _assert_unavailable(first)  # maybe stored, maybe not: the sender retries
    assert second is not None and second.status == 200


def test_an_unreachable_writer_is_logged_once_in_a_while_not_per_request(socket_path, caplog):
    async def three() -> list[Response | None]:
        link = WriterLink(socket_path)
        return [await link.receive(_order(f"n{i}")) for i in range(3)]

    with caplog.at_level("WARNING", logger="hookline.writer"):
        answers = asyncio.run(three())

    for answer in answers:
        _assert_unavailable(answer)
    warnings = [r.getMessage() for r in caplog.records if r.name == "hookline.writer"]
    assert len(warnings) == 1, warnings
    assert "did not answer" in warnings[0]
