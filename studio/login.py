"""The studio's login: one grammar for the accounts, and a throttle on failed attempts.

Accounts come from `--auth` or the `STUDIO_AUTH` environment variable (a Space secret), both
read by `parse_auth` with one grammar:

    user:password[,user2:password2 ...]

Entries are separated by commas; each splits at its first colon, so a password may contain
':' but not ','; spaces around an entry are ignored; a user name appears once.

Gradio's built-in login has no rate limit. `LoginGuard` is the `launch(auth=...)` callable:
it compares in constant time, and it slows down repeated failures both per client address and
per user name. After `FREE_FAILURES` failures in a row a key is locked for 1 s, then 2, 4, …
up to `MAX_LOCK_SECONDS`; while locked, even the right password is refused with HTTP 429 and
"try again in N s" (and does not count as another failure). A success clears the user's and the client's record. Failures are logged
with the client address and the user name (only if it is one of the accounts, since people do
type a password into the name field), never with the password.

Gradio hands the auth callable only (user, password); `ClientAddress`, an ASGI middleware
passed through `launch(app_kwargs=...)`, puts the client's address where the guard reads it.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("studio.login")

FREE_FAILURES = 5            # failures in a row before the first lock
MAX_LOCK_SECONDS = 900.0     # the longest lock (15 min)
FORGET_AFTER_SECONDS = 3600.0
MAX_TRACKED = 10_000         # keys kept in memory (user names are chosen by whoever knocks)

_client: contextvars.ContextVar[str] = contextvars.ContextVar("studio_login_client", default="unknown")


class AuthFormatError(ValueError):
    """STUDIO_AUTH / --auth does not follow the grammar; the message never quotes the value."""


def parse_auth(value: str | None) -> list[tuple[str, str]]:
    """`user:password[,user2:password2]` → [(user, password), ...]; '' or None → []."""
    accounts: list[tuple[str, str]] = []
    for number, item in enumerate((value or "").split(","), start=1):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        user = user.strip()
        if not sep or not user or not password:
            # Never echo the value: it holds passwords.
            raise AuthFormatError(f"STUDIO_AUTH / --auth entry {number} is not 'user:password'. The format is "
                                  "user:password, several separated by commas (a password may contain ':' "
                                  "but not ',').")
        if any(user == known for known, _ in accounts):
            raise AuthFormatError(f"STUDIO_AUTH / --auth names the user '{user}' more than once.")
        accounts.append((user, password))
    return accounts


# ---------------------------------------------------------------------------------- throttle


@dataclass
class _Record:
    failures: int = 0
    locked_until: float = 0.0
    last_seen: float = 0.0


class LoginThrottle:
    """Failures in a row per key ("client:<address>", "user:<name>") and the lock they earn."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, free_failures: int = FREE_FAILURES,
                 max_lock: float = MAX_LOCK_SECONDS):
        self.clock, self.free_failures, self.max_lock = clock, free_failures, max_lock
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()

    def wait(self, *keys: str) -> float:
        """Seconds until every key may try again (0 when none is locked)."""
        now = self.clock()
        with self._lock:
            return max([0.0] + [r.locked_until - now for k in keys if (r := self._records.get(k))])

    def failure(self, *keys: str) -> tuple[int, float]:
        """Count a failure for each key; returns (most failures in a row, lock seconds now)."""
        now = self.clock()
        worst, lock = 0, 0.0
        with self._lock:
            self._forget(now)
            for key in keys:
                record = self._records.setdefault(key, _Record())
                record.failures += 1
                record.last_seen = now
                over = record.failures - self.free_failures
                if over > 0:
                    seconds = min(self.max_lock, 2.0 ** (over - 1))
                    record.locked_until = max(record.locked_until, now + seconds)
                worst = max(worst, record.failures)
                lock = max(lock, record.locked_until - now)
        return worst, lock

    def success(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._records.pop(key, None)

    def _forget(self, now: float) -> None:
        stale = [k for k, r in self._records.items()
                 if now - r.last_seen > FORGET_AFTER_SECONDS and r.locked_until <= now]
        for key in stale:
            del self._records[key]
        if len(self._records) >= MAX_TRACKED:  # under a flood keep the most recent half
            for key, _ in sorted(self._records.items(), key=lambda kv: kv[1].last_seen)[: MAX_TRACKED // 2]:
                del self._records[key]


class LoginGuard:
    """`launch(auth=LoginGuard(accounts))`: constant-time check, throttled per client and user."""

    def __init__(self, accounts: list[tuple[str, str]], throttle: LoginThrottle | None = None):
        if not accounts:
            raise ValueError("LoginGuard needs at least one account")
        self._accounts = [(u.encode(), p.encode()) for u, p in accounts]
        self._names = {u for u, _ in accounts}
        self.throttle = throttle or LoginThrottle()

    def __repr__(self) -> str:  # never show passwords in a traceback or a debugger
        return f"LoginGuard({len(self._accounts)} account(s))"

    def __call__(self, username: str, password: str) -> bool:
        client = _client.get()
        user = (username or "").strip()
        keys = (f"client:{client}", f"user:{user}")
        shown = f"user {user!r}" if user in self._names else "an unknown user name"
        wait = self.throttle.wait(*keys)
        if wait > 0:
            from fastapi import HTTPException  # gradio's login route answers it as it stands

            seconds = max(1, math.ceil(wait))
            log.warning("login refused for %s from %s: locked for %d more s after repeated failures",
                        shown, client, seconds)
            raise HTTPException(status_code=429, detail=f"Too many failed logins: try again in {seconds} s.",
                                headers={"Retry-After": str(seconds)})
        given_user, given_password = user.encode(), (password or "").encode()
        ok = False
        for known_user, known_password in self._accounts:  # every account compared, in constant time
            ok |= hmac.compare_digest(given_user, known_user) & hmac.compare_digest(given_password, known_password)
        if ok:
            self.throttle.success(*keys)
            return True
        failures, lock = self.throttle.failure(*keys)
        log.warning("login failed for %s from %s (%d in a row%s)", shown, client, failures,
                    f"; locked for {math.ceil(lock)} s" if lock > 0 else "")
        return False


# ---------------------------------------------------------------------------------- client address


class ClientAddress:
    """ASGI middleware: records the client's address where the guard reads it.

    Behind Hugging Face's proxy (SPACE_ID set) every request comes from the proxy, so there the
    first X-Forwarded-For address is the client; elsewhere that header is the visitor's own
    say-so and is ignored.
    """

    def __init__(self, app, trust_forwarded: bool | None = None):
        self.app = app
        self.trust_forwarded = bool(os.environ.get("SPACE_ID")) if trust_forwarded is None else trust_forwarded

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        token = _client.set(self._address(scope))
        try:
            return await self.app(scope, receive, send)
        finally:
            _client.reset(token)

    def _address(self, scope) -> str:
        if self.trust_forwarded:
            for name, value in scope.get("headers") or []:
                if name == b"x-forwarded-for":
                    first = value.decode("latin-1").split(",")[0].strip()
                    if first:
                        return first[:64]
        client = scope.get("client")
        return client[0] if client else "unknown"


def launch_settings(accounts: list[tuple[str, str]], throttle: LoginThrottle | None = None) -> dict:
    """What `launch()` needs for a login: {} without accounts, else auth and the middleware."""
    if not accounts:
        return {}
    from starlette.middleware import Middleware

    return {"auth": LoginGuard(accounts, throttle), "app_kwargs": {"middleware": [Middleware(ClientAddress)]}}
