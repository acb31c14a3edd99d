"""Secrets encrypted at rest (``hookline.secretbox``): Fernet tokens, key rotation, the key file."""

from __future__ import annotations

import base64
import multiprocessing
import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from hookline import secretbox
from hookline.errors import ConfigError, HooklineError, RequestRefused
from hookline.secretbox import (
    KEY_FILE_NAME,
    SecretBox,
    SecretDecryptError,
    generate_key,
    load_secret_box,
)

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------- SecretBox


@pytest.mark.parametrize(
    "plaintext",
    ["", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "Grüße, 世界 🔑", "x" * 10_000, "a,b\nc"],
    ids=["empty", "whsec", "unicode", "long", "separators"],
)
def test_roundtrip(plaintext):
    box = SecretBox([KEY_A])
    token = box.encrypt(plaintext)
    assert isinstance(token, str) and token.isascii()
    assert plaintext == "" or plaintext not in token
    assert box.decrypt(token) == plaintext
    assert SecretBox([KEY_A]).decrypt(token) == plaintext  # another box with the same key


def test_same_plaintext_gives_different_tokens():
    box = SecretBox([KEY_A])
    assert box.encrypt("same") != box.encrypt("same")


def _tamper(token: str, index: int) -> str:
    replacement = "A" if token[index] != "A" else "B"
    return token[:index] + replacement + token[index + 1 :]


@pytest.mark.parametrize(
    "make_bad",
    [
        lambda t: _tamper(t, len(t) // 2),
        lambda t: _tamper(t, 20),
        lambda t: t[:-5],
        lambda t: base64.urlsafe_b64encode(base64.urlsafe_b64decode(t) + b"\0").decode(),
        lambda t: "not-a-token",
        lambda t: "",
        lambda t: "é" + t,
        lambda t: None,
    ],
    ids=[
        "flip-middle",
        "flip-header",
        "truncated",
        "extended",
        "garbage",
        "empty",
        "non-ascii",
        "none",
    ],
)
def test_tampered_or_malformed_token_raises_secret_decrypt_error(make_bad):
    box = SecretBox([KEY_A])
    token = box.encrypt("whsec_secret")
    with pytest.raises(SecretDecryptError) as info:
        box.decrypt(make_bad(token))
    assert "whsec_secret" not in str(info.value)


def test_wrong_key_raises_secret_decrypt_error():
    token = SecretBox([KEY_A]).encrypt("s3cret")
    with pytest.raises(SecretDecryptError) as info:
        SecretBox([KEY_B]).decrypt(token)
    assert isinstance(info.value, HooklineError)
    assert not isinstance(info.value, RequestRefused)  # a server fault, never a 4xx


def test_rotation_old_tokens_still_decrypt_and_new_ones_use_the_first_key():
    old_box = SecretBox([KEY_A])
    old_token = old_box.encrypt("old secret")
    rotating = SecretBox([KEY_B, KEY_A])
    assert rotating.decrypt(old_token) == "old secret"
    new_token = rotating.encrypt("new secret")
    assert SecretBox([KEY_B]).decrypt(new_token) == "new secret"
    with pytest.raises(SecretDecryptError):
        old_box.decrypt(new_token)
    # rotate() re-encrypts with the first key, so the old key can then be dropped
    rotated = rotating.rotate(old_token)
    assert SecretBox([KEY_B]).decrypt(rotated) == "old secret"
    with pytest.raises(SecretDecryptError):
        old_box.decrypt(rotated)
    with pytest.raises(SecretDecryptError):
        SecretBox([KEY_B]).rotate(old_token)


def test_repr_does_not_show_keys():
    assert KEY_A not in repr(SecretBox([KEY_A, KEY_B]))
    assert "2" in repr(SecretBox([KEY_A, KEY_B]))


@pytest.mark.parametrize("keys", [[], ["nope"], [KEY_A, ""]], ids=["none", "bad", "empty-item"])
def test_secretbox_refuses_bad_keys(keys):
    with pytest.raises(ConfigError):
        SecretBox(keys)


def test_generate_key_is_a_fernet_key():
    key = generate_key()
    assert SecretBox([key]).decrypt(SecretBox([key]).encrypt("x")) == "x"
    assert generate_key() != key


# ---------------------------------------------------------------- load_secret_box: env value


def test_env_value_wins_and_no_file_is_created(tmp_path):
    box = load_secret_box(KEY_A, tmp_path)
    assert SecretBox([KEY_A]).decrypt(box.encrypt("x")) == "x"
    assert not (tmp_path / KEY_FILE_NAME).exists()


def test_env_value_with_several_keys_encrypts_with_the_first(tmp_path):
    old_token = SecretBox([KEY_B]).encrypt("old")
    box = load_secret_box(f" {KEY_A} , {KEY_B} ", tmp_path)
    assert box.decrypt(old_token) == "old"
    assert SecretBox([KEY_A]).decrypt(box.encrypt("new")) == "new"


@pytest.mark.parametrize(
    "value",
    [
        "not-a-key",
        KEY_A[:-2],
        KEY_A + ",",
        "," + KEY_A,
        f"{KEY_A},,{KEY_B}",
        f"{KEY_A},garbage",
        KEY_A.replace("=", "") + "é",
        ",",
    ],
    ids=[
        "garbage",
        "truncated",
        "trailing-comma",
        "leading-comma",
        "double-comma",
        "second-bad",
        "non-ascii",
        "only-comma",
    ],
)
def test_invalid_env_value_is_a_config_error(tmp_path, value):
    with pytest.raises(ConfigError) as info:
        load_secret_box(value, tmp_path)
    message = str(info.value)
    assert "HOOKLINE_SECRET_KEY" in message
    assert KEY_A not in message and KEY_A[:-2] not in message
    assert not (tmp_path / KEY_FILE_NAME).exists()


@pytest.mark.parametrize("value", [None, "", "   "], ids=["unset", "empty", "blank"])
def test_unset_or_empty_env_value_uses_the_key_file(tmp_path, value):
    box = load_secret_box(value, tmp_path)
    assert (tmp_path / KEY_FILE_NAME).exists()
    assert load_secret_box(None, tmp_path).decrypt(box.encrypt("x")) == "x"


# ---------------------------------------------------------------- load_secret_box: key file


def test_key_file_is_created_once_with_mode_0600(tmp_path):
    data_dir = tmp_path / "var" / "nested"  # created on demand
    box = load_secret_box(None, data_dir)
    path = data_dir / KEY_FILE_NAME
    assert _mode(path) == 0o600
    key = path.read_text().strip()
    assert SecretBox([key]).decrypt(box.encrypt("secret")) == "secret"
    token = box.encrypt("kept")
    # the next start reads the same key instead of making a new one
    assert load_secret_box(None, data_dir).decrypt(token) == "kept"
    assert path.read_text().strip() == key
    assert sorted(p.name for p in data_dir.iterdir()) == [KEY_FILE_NAME]  # no temp files left


def test_key_file_is_0600_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        load_secret_box(None, tmp_path)
    finally:
        os.umask(old)
    assert _mode(tmp_path / KEY_FILE_NAME) == 0o600


def test_key_file_with_several_keys_supports_rotation(tmp_path):
    path = tmp_path / KEY_FILE_NAME
    path.write_text(f"{KEY_B},{KEY_A}\n")
    path.chmod(0o600)
    old_token = SecretBox([KEY_A]).encrypt("old")
    box = load_secret_box(None, tmp_path)
    assert box.decrypt(old_token) == "old"
    assert SecretBox([KEY_B]).decrypt(box.encrypt("new")) == "new"


@pytest.mark.parametrize(
    "content", ["garbage\n", "\n", b"\xff\xfe"], ids=["bad", "empty", "binary"]
)
def test_unusable_key_file_is_a_config_error_naming_the_file(tmp_path, monkeypatch, content):
    monkeypatch.setattr(secretbox, "_READ_WAIT_SECONDS", 0.05)
    path = tmp_path / KEY_FILE_NAME
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        load_secret_box(None, tmp_path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o666])
def test_key_file_readable_by_others_is_refused(tmp_path, mode):
    path = tmp_path / KEY_FILE_NAME
    path.write_text(KEY_A + "\n")
    path.chmod(mode)
    with pytest.raises(ConfigError) as info:
        load_secret_box(None, tmp_path)
    assert "chmod 600" in str(info.value)
    assert KEY_A not in str(info.value)


def test_losing_the_race_keeps_the_winners_key(tmp_path):
    path = tmp_path / KEY_FILE_NAME
    path.write_text(KEY_A + "\n")
    path.chmod(0o600)
    secretbox._create_key_file(path)  # a second creator arriving late
    assert path.read_text().strip() == KEY_A
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE_NAME]


def test_without_hard_links_the_file_is_created_in_place(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(secretbox.os, "link", no_links)
    box = load_secret_box(None, tmp_path)
    path = tmp_path / KEY_FILE_NAME
    assert _mode(path) == 0o600
    assert SecretBox([path.read_text().strip()]).decrypt(box.encrypt("x")) == "x"
    secretbox._create_key_file(path)  # loser in place: keeps the first key
    assert load_secret_box(None, tmp_path).decrypt(box.encrypt("y")) == "y"
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE_NAME]


def _race_worker(data_dir: str, barrier, results) -> None:
    barrier.wait()
    box = load_secret_box(None, Path(data_dir))
    results.put(box.encrypt(f"from {os.getpid()}"))


@pytest.mark.timeout(60)
def test_concurrent_first_use_by_several_processes_yields_one_key(tmp_path):
    ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    workers = 8
    for round_ in range(3):
        data_dir = tmp_path / f"round{round_}"
        barrier = ctx.Barrier(workers)
        results = ctx.Queue()
        procs = [
            ctx.Process(target=_race_worker, args=(str(data_dir), barrier, results))
            for _ in range(workers)
        ]
        for proc in procs:
            proc.start()
        tokens = [results.get(timeout=30) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
            assert proc.exitcode == 0
        path = data_dir / KEY_FILE_NAME
        key = path.read_text()
        assert key.count("\n") == 1
        only_key = SecretBox([key.strip()])
        # every process encrypted with the one key now on disk
        assert sorted(only_key.decrypt(t) for t in tokens) == sorted(
            f"from {proc.pid}" for proc in procs
        )
        assert _mode(path) == 0o600
        assert sorted(p.name for p in data_dir.iterdir()) == [KEY_FILE_NAME]


def test_reader_waits_for_a_racing_in_place_writer(tmp_path):
    path = tmp_path / KEY_FILE_NAME
    path.touch(mode=0o600)  # created by O_EXCL in place, not yet written
    path.chmod(0o600)
    timer = threading.Timer(0.2, lambda: path.write_text(KEY_A + "\n"))
    timer.start()
    try:
        box = load_secret_box(None, tmp_path)
    finally:
        timer.join()
    assert SecretBox([KEY_A]).decrypt(box.encrypt("x")) == "x"
