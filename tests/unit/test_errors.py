"""Unit tests for ``hookline.errors``: the exception tree, statuses and the JSON body shape."""

from __future__ import annotations

import pytest

from hookline import errors
from hookline.errors import (
    BadRequest,
    ClientError,
    ConfigError,
    Conflict,
    HooklineError,
    InvalidEvent,
    NotFound,
    PayloadTooLarge,
    RequestRefused,
    ServiceUnavailable,
    StaleWrite,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (BadRequest, 400),
        (Unauthorized, 401),
        (NotFound, 404),
        (Conflict, 409),
        (StaleWrite, 409),
        (PayloadTooLarge, 413),
        (UnsupportedMediaType, 415),
        (ValidationFailed, 422),
        (InvalidEvent, 422),
        (ServiceUnavailable, 503),
    ],
)
def test_documented_status(cls: type[RequestRefused], status: int) -> None:
    assert cls.status == status
    assert cls("boom").status == status


@pytest.mark.parametrize(
    ("cls", "parents"),
    [
        (ConfigError, (HooklineError,)),
        (RequestRefused, (HooklineError,)),
        (ServiceUnavailable, (RequestRefused, HooklineError)),
        (ClientError, (RequestRefused, HooklineError)),
        (BadRequest, (ClientError,)),
        (Unauthorized, (ClientError,)),
        (NotFound, (ClientError,)),
        (Conflict, (ClientError,)),
        (StaleWrite, (Conflict, ClientError)),
        (PayloadTooLarge, (ClientError,)),
        (UnsupportedMediaType, (ClientError,)),
        (ValidationFailed, (ClientError,)),
        (InvalidEvent, (ValidationFailed, ClientError)),
    ],
)
def test_hierarchy(cls: type[Exception], parents: tuple[type[Exception], ...]) -> None:
    for parent in parents:
        assert issubclass(cls, parent)


@pytest.mark.parametrize("cls", [ServiceUnavailable, ConfigError])
def test_not_client_errors(cls: type[Exception]) -> None:
    assert not issubclass(cls, ClientError)


def test_every_client_error_subclass_is_4xx() -> None:
    subclasses = [
        obj
        for name in errors.__all__
        if isinstance(obj := getattr(errors, name), type)
        and issubclass(obj, ClientError)
        and obj is not ClientError
    ]
    assert len(subclasses) == 9
    for cls in subclasses:
        assert 400 <= cls.status < 500, cls


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (BadRequest("bad body"), {"status": "error", "message": "bad body"}),
        (
            ValidationFailed("invalid", errors={"quantity": "must be a whole number"}),
            {
                "status": "error",
                "message": "invalid",
                "errors": {"quantity": "must be a whole number"},
            },
        ),
        (NotFound("gone", errors={}), {"status": "error", "message": "gone"}),
        (ServiceUnavailable("busy"), {"status": "error", "message": "busy"}),
    ],
)
def test_as_dict(error: RequestRefused, expected: dict[str, object]) -> None:
    assert error.as_dict() == expected


def test_message_and_errors_are_kept_and_copied() -> None:
    given = {"a": "b"}
    error = Conflict("nope", errors=given)
    given["c"] = "d"
    assert error.message == "nope"
    assert str(error) == "nope"
    assert error.errors == {"a": "b"}
    assert Conflict("x").errors == {}
