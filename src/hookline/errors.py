"""The one exception tree of hookline.

Every error the engine raises on purpose is a ``HooklineError``. A ``RequestRefused`` carries
the HTTP status that answers it and a reason that is safe to show, so the web layer turns any of
them into a deliberate answer without knowing them one by one::

    HooklineError
    ├── ConfigError                  bad HOOKLINE_* settings (at start-up, never per request)
    └── RequestRefused               a request is answered with ``status`` and a reason
        ├── ServiceUnavailable       503 a transient condition (database busy); retry
        └── ClientError              the caller sent something wrong -> 4xx
            ├── BadRequest           400 malformed body (bad JSON, bad encoding)
            ├── Unauthorized         401 missing, wrong or revoked credentials
            ├── NotFound             404 no such resource
            ├── Conflict             409 the resource's state does not allow this
            │   └── StaleWrite       409 a concurrent change to the same record won
            ├── PayloadTooLarge      413 body over the configured limit
            ├── UnsupportedMediaType 415 content type we do not parse
            └── ValidationFailed     422 invalid fields (``errors`` names them)
                └── InvalidEvent     422 an event that ``outbox.publish`` refuses
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "ClientError",
    "ConfigError",
    "Conflict",
    "HooklineError",
    "InvalidEvent",
    "NotFound",
    "PayloadTooLarge",
    "RequestRefused",
    "ServiceUnavailable",
    "StaleWrite",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationFailed",
]


class HooklineError(Exception):
    """Base of every error hookline raises on purpose."""


class ConfigError(HooklineError):
    """A setting is missing or malformed."""


class RequestRefused(HooklineError):
    """A request is refused with ``status`` and a reason safe to show to the caller."""

    status = 400

    def __init__(self, message: str, *, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = dict(errors or {})

    def as_dict(self) -> dict[str, object]:
        """The JSON body that answers this error."""
        body: dict[str, object] = {"status": "error", "message": self.message}
        if self.errors:
            body["errors"] = self.errors
        return body


class ClientError(RequestRefused):
    """The caller sent something wrong; ``status`` is the 4xx that answers it."""


class BadRequest(ClientError):
    """The body cannot be read (malformed JSON, invalid encoding, ...)."""

    status = 400


class Unauthorized(ClientError):
    """Credentials are missing, wrong or revoked."""

    status = 401


class NotFound(ClientError):
    """The named resource does not exist."""

    status = 404


class Conflict(ClientError):
    """The resource's current state does not allow the change."""

    status = 409


class StaleWrite(Conflict):
    """A concurrent change to the same record won; re-read and retry."""


class PayloadTooLarge(ClientError):
    """The body is larger than the configured limit."""

    status = 413


class UnsupportedMediaType(ClientError):
    """The body's content type is not one hookline reads."""

    status = 415


class ValidationFailed(ClientError):
    """The body is well-formed but its fields are invalid; ``errors`` maps field -> reason."""

    status = 422


class InvalidEvent(ValidationFailed):
    """``outbox.publish`` refused an event: unknown type, non-JSON data or too large."""


class ServiceUnavailable(RequestRefused):
    """A transient condition (the database is busy or unreachable): the caller should retry."""

    status = 503
