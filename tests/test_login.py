"""The login: one STUDIO_AUTH grammar (read the same by app.py and on a Space), a throttle on
failed attempts per client and per user, and no start on a reachable address without a login."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from fastapi import HTTPException

import app as app_module
from studio.login import AuthFormatError, LoginGuard, LoginThrottle, _client, parse_auth
from studio.space import space_settings
from test_security import App, request

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- the grammar


def test_one_grammar_for_app_and_space(tmp_path, monkeypatch):
    value = "alice:pw-one, bob:pw:two"
    expected = [("alice", "pw-one"), ("bob", "pw:two")]
    assert parse_auth(value) == expected
    assert app_module.parse_auth(value) == expected            # --auth
    monkeypatch.setenv("STUDIO_AUTH", value)
    assert app_module.parse_auth(None) == expected             # STUDIO_AUTH, as app.py reads it
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\n")
    assert space_settings({"SPACE_ID": "a/b", "STUDIO_AUTH": value}, str(mounts)).auth == expected
    # on a Space, app.py launches with the Space's accounts: the same two users
    args = app_module.parse_args(["--data-dir", str(tmp_path / "d")])
    monkeypatch.setenv("SPACE_ID", "alice/studio")
    monkeypatch.setenv("STUDIO_DATA", str(tmp_path / "d"))
    monkeypatch.setenv(app_module.TRAINING_REFUSED, "")   # restored afterwards, should the call set it
    assert app_module.apply_space_settings(args, app_module.parse_auth(None)) == expected
    assert parse_auth("") == [] and parse_auth(None) == [] and parse_auth(" , ") == []


@pytest.mark.parametrize("value, message", [
    ("alice", "entry 1 is not 'user:password'"),
    ("alice:pw,bob", "entry 2 is not 'user:password'"),
    ("alice:pw,:pw2", "entry 2"),
    ("alice:", "entry 1"),
    ("alice:pw,alice:other", "'alice' more than once"),
])
def test_bad_values_are_refused_without_echoing_a_password(value, message):
    with pytest.raises(AuthFormatError, match=message) as info:
        parse_auth(value)
    assert "pw" not in str(info.value).replace("password", "") and "other" not in str(info.value)
    with pytest.raises(SystemExit) as exited:
        app_module.parse_auth(value)
    assert message.split("'")[0] in str(exited.value)


# --------------------------------------------------------------------------- the throttle


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def attempt(guard: LoginGuard, client: str, user: str, password: str):
    """True / False as gradio sees it, or the HTTP status the guard raised."""
    token = _client.set(client)
    try:
        return guard(user, password)
    except HTTPException as exc:
        return exc.status_code
    finally:
        _client.reset(token)


def test_repeated_failures_lock_the_client_and_the_user(caplog):
    caplog.set_level(logging.WARNING, logger="studio.login")
    clock = Clock()
    guard = LoginGuard([("alice", "right-pw"), ("bob", "bob-pw")], LoginThrottle(clock))
    results = [attempt(guard, "10.0.0.1", "alice", f"wrong-{i}") for i in range(30)]
    assert results[:5] == [False] * 5 and set(results[6:]) == {429}
    assert attempt(guard, "10.0.0.1", "alice", "right-pw") == 429        # the right password, not at once
    assert attempt(guard, "10.0.0.2", "alice", "right-pw") == 429        # the user is locked from anywhere
    assert attempt(guard, "10.0.0.1", "bob", "bob-pw") == 429            # the client is locked for any user
    assert attempt(guard, "10.0.0.3", "bob", "bob-pw") is True           # others are not affected
    clock.now += 1.5   # six failures earn a 1 s lock; refusals while locked do not add to it
    assert attempt(guard, "10.0.0.1", "alice", "right-pw") is True
    assert attempt(guard, "10.0.0.1", "alice", "wrong") is False         # a success starts the count again

    # the lock grows with every failure past the free ones: 1, 2, 4, 8 s
    locks = []
    for _ in range(4 + 5):
        clock.now += 100
        attempt(guard, "10.0.0.9", "carol", "x")
        locks.append(guard.throttle.wait("client:10.0.0.9"))
    assert locks[:4] == [0] * 4 and locks[4:] == [0, 1.0, 2.0, 4.0, 8.0]

    text = caplog.text
    assert "login failed for user 'alice' from 10.0.0.1" in text and "locked for" in text
    assert "an unknown user name from 10.0.0.9" in text and "carol" not in text
    assert not any(secret in text for secret in ("wrong-", "right-pw", "bob-pw"))


def test_guard_does_not_show_passwords():
    guard = LoginGuard([("alice", "right-pw")])
    assert "right-pw" not in repr(guard) and "right-pw" not in str(guard)


def test_throttle_forgets_idle_keys():
    clock = Clock()
    throttle = LoginThrottle(clock)
    throttle.failure("user:x")
    clock.now += 4000
    throttle.failure("user:y")
    assert set(throttle._records) == {"user:y"}


# --------------------------------------------------------------------------- through app.py


def login(app: App, user: str, password: str) -> tuple[int, bytes]:
    body = urllib.parse.urlencode({"username": user, "password": password}).encode()
    status, _, data = request(app.port, "POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
    return status, data


def test_app_with_two_accounts_and_a_throttled_login(tmp_path):
    app = App("login", tmp_path, ["--no-worker"], env={"STUDIO_AUTH": "alice:pw-one,bob:pw:two"})
    app.start()
    try:
        app.wait_ready()
        assert login(app, "alice", "pw-one")[0] == 200
        assert login(app, "bob", "pw:two")[0] == 200                    # a colon inside a password
        assert login(app, "alice", "pw-one,bob:pw:two")[0] == 400        # not one user with a long password
        statuses = [login(app, "alice", f"guess-{i}")[0] for i in range(30)]
        assert statuses[0] == 400 and statuses[-1] == 429
        status, body = login(app, "alice", "pw-one")
        assert status == 429 and b"try again in" in body                # 30 wrong, then right: not at once
        time.sleep(0.5)
        output = app.output()
    finally:
        app.stop()
    assert "login failed for user 'alice' from 127.0.0.1" in output and "login refused" in output
    assert "guess-" not in output and "pw-one" not in output and "pw:two" not in output


# --------------------------------------------------------------------------- reachable without a login


@pytest.mark.parametrize("flags", [["--host", "0.0.0.0"], ["--host", "192.168.1.20"], ["--share"]])
def test_reachable_address_without_login_refuses_to_start(tmp_path, flags):
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("STUDIO_AUTH", "SPACE_ID")}
    done = subprocess.run([sys.executable, "app.py", *flags, "--no-worker", "--data-dir", str(tmp_path / "d")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "refusing to start" in done.stderr and "STUDIO_AUTH" in done.stderr and "--unsafe-no-login" in done.stderr
    assert not (tmp_path / "d").exists()   # nothing was started or written


def test_exposure_rules(monkeypatch):
    monkeypatch.delenv("STUDIO_AUTH", raising=False)

    def problem(*argv, accounts=()):
        return app_module.exposure_problem(app_module.parse_args(list(argv)), list(accounts))

    for host in ("127.0.0.1", "127.0.0.5", "localhost", "::1", "[::1]"):
        assert problem("--host", host) is None, host
    assert "--host 0.0.0.0" in problem("--host", "0.0.0.0")
    assert "--host ::" in problem("--host", "::")
    assert problem("--host", "0.0.0.0", accounts=[("a", "b")]) is None
    assert problem("--host", "0.0.0.0", "--share", "--unsafe-no-login") is None
    helptext = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
    assert "--unsafe-no-login" in helptext and "UNSAFE" in helptext


def test_a_space_listens_where_its_proxy_connects_and_starts_without_a_login(tmp_path, monkeypatch):
    """A Space's proxy reaches the app on GRADIO_SERVER_NAME (0.0.0.0): 127.0.0.1 would leave the
    page unreachable. Without STUDIO_AUTH a Space still starts, and training is refused instead."""
    for name in ("STUDIO_AUTH", "STUDIO_HOST", "STUDIO_PRIVATE_SPACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPACE_ID", "alice/studio")
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("STUDIO_DATA", str(tmp_path / "d"))
    monkeypatch.setenv(app_module.TRAINING_REFUSED, "")   # restored afterwards
    args = app_module.parse_args([])
    accounts = app_module.apply_space_settings(args, app_module.parse_auth(None))
    assert args.host == "0.0.0.0" and not accounts
    assert app_module.exposure_problem(args, accounts) is None
    assert "STUDIO_AUTH" in __import__("os").environ[app_module.TRAINING_REFUSED]
    # Off a Space the same defaults stay on this computer.
    monkeypatch.delenv("SPACE_ID")
    args = app_module.parse_args([])
    app_module.apply_space_settings(args, [])
    assert args.host == "127.0.0.1"
