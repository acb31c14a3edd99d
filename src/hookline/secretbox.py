"""Secrets encrypted at rest (endpoint signing secrets, ed25519 keys) with Fernet.

A ``SecretBox`` holds one or more Fernet keys: the first encrypts, all of them decrypt, so a key
is rotated by putting the new key first and keeping the old one until every stored token has
been re-encrypted (``SecretBox.rotate``). The keys come from ``HOOKLINE_SECRET_KEY`` (comma
separated) or, when that is unset or empty, from ``<data dir>/secret.key``, which is created on
first use with a fresh key and mode 0600. The file is published atomically (written to a private
temporary file, then hard-linked into place, which fails if it exists), so when two processes
start at once both end up with the one key that won.

Errors: ``ConfigError`` for a malformed key (the message never repeats the key),
``SecretDecryptError`` for a token that the keys cannot open (wrong key, tampered, not a token).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from hookline.errors import ConfigError, HooklineError

__all__ = [
    "ENV_VAR",
    "KEY_FILE_NAME",
    "SecretBox",
    "SecretDecryptError",
    "generate_key",
    "load_secret_box",
    "parse_keys",
]

ENV_VAR = "HOOKLINE_SECRET_KEY"
KEY_FILE_NAME = "secret.key"
_READ_WAIT_SECONDS = 5.0  # how long a reader waits for a racing writer's key to appear


class SecretDecryptError(HooklineError):
    """A token cannot be decrypted: wrong key, tampered or not a token at all."""


def generate_key() -> str:
    """A fresh Fernet key (url-safe base64 of 32 random bytes)."""
    return Fernet.generate_key().decode("ascii")


def parse_keys(value: str, source: str = ENV_VAR) -> list[Fernet]:
    """The Fernet keys in a comma-separated ``value``; ``ConfigError`` naming ``source`` if bad."""
    items = [item.strip() for item in value.split(",")]
    if not any(items):
        raise ConfigError(f"{source} holds no key")
    fernets = []
    for position, item in enumerate(items, start=1):
        if not item:
            raise ConfigError(f"{source}: key {position} of {len(items)} is empty")
        try:
            fernets.append(Fernet(item.encode("ascii")))
        except (ValueError, UnicodeEncodeError, TypeError):
            raise ConfigError(
                f"{source}: key {position} of {len(items)} is not a Fernet key "
                "(url-safe base64 of 32 bytes; make one with "
                '`python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())"`)'
            ) from None
    return fernets


class SecretBox:
    """Encrypts and decrypts short secrets; the first key encrypts, every key decrypts."""

    def __init__(self, keys: Sequence[str]) -> None:
        if isinstance(keys, str):
            keys = [keys]
        if not keys:
            raise ConfigError("a SecretBox needs at least one key")
        self._fernet = MultiFernet(parse_keys(",".join(keys), "SecretBox key"))
        self.key_count = len(keys)

    def encrypt(self, plaintext: str) -> str:
        """The Fernet token (ASCII) that holds ``plaintext``, made with the first key."""
        if not isinstance(plaintext, str):
            raise TypeError("SecretBox.encrypt takes a str")
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        """The plaintext in ``token``; ``SecretDecryptError`` if no key opens it."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError, AttributeError, TypeError, ValueError):
            raise SecretDecryptError("cannot decrypt secret: wrong key or damaged token") from None

    def rotate(self, token: str) -> str:
        """``token`` re-encrypted with the first key (for finishing a key rotation)."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError, AttributeError, TypeError, ValueError):
            raise SecretDecryptError("cannot decrypt secret: wrong key or damaged token") from None

    def __repr__(self) -> str:
        return f"SecretBox(<{self.key_count} key(s)>)"


def _read_key_file(path: Path) -> str:
    """The key file's text, waiting briefly if a racing writer has not filled it yet."""
    deadline = time.monotonic() + _READ_WAIT_SECONDS
    while True:
        try:
            info = path.stat()
            text = path.read_text(encoding="ascii").strip()
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not a key file (not ASCII)") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        if text or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path} is readable by other users (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run `chmod 600 {path}`"
        )
    return text


def _create_key_file(path: Path) -> None:
    """Write a fresh key to ``path`` unless it exists; never leaves a partial file there."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(generate_key() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # atomic; FileExistsError when another process won the race
        except FileExistsError:
            pass
        except OSError:
            # No hard links here (some network/overlay file systems): create in place.
            _create_in_place(path, tmp.read_text(encoding="ascii"))
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _create_in_place(path: Path, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def load_secret_box(env_value: str | None, data_dir: Path) -> SecretBox:
    """The ``SecretBox`` for this installation.

    ``env_value`` (``HOOKLINE_SECRET_KEY``: one or more comma-separated Fernet keys, first one
    encrypts) wins when set and non-empty; otherwise the key comes from ``data_dir/secret.key``,
    created on first use. ``ConfigError`` when a key is malformed or the file is unusable.
    """
    if env_value is not None and env_value.strip():
        return _box_from_text(env_value, ENV_VAR)
    path = Path(data_dir) / KEY_FILE_NAME
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _create_key_file(path)
        except OSError as exc:
            raise ConfigError(f"cannot create {path}: {exc.strerror or exc}") from None
    return _box_from_text(_read_key_file(path), str(path))


def _box_from_text(text: str, source: str) -> SecretBox:
    parse_keys(text, source)  # the error names the source (env var or file), never the key
    return SecretBox([key.strip() for key in text.split(",")])
