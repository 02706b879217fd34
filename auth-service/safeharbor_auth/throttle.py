"""Layered brute-force protection for logins: per user name, per client address, and global.

Per user and per address it follows Keycloak's brute-force detector: failures count up; from the Nth
failure the key is locked for `increment * (failures // N)` seconds, capped at `max_wait`; a quiet period of
`reset` seconds since the last failure starts the count again; a successful login clears the user's count
(not the address's, so one good account cannot launder an address). The global layer counts failures per
minute across the service and refuses logins for the rest of the minute above a ceiling (credential
stuffing spread over many addresses and names).

State lives in the database, or in Redis when REDIS_URL is set, so it holds across workers and replicas.
Keys are the normalised user *name*, known or not, so lockout behaves the same for unknown users.
"""
from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .errors import LoginRateLimited, TooManyFailedLogins
from .models import LoginThrottle

_log = logging.getLogger("safeharbor.auth.throttle")


@dataclass(frozen=True)
class ThrottlePolicy:
    user_max_failures: int = 5
    ip_max_failures: int = 20
    increment: int = 60
    max_wait: int = 900
    reset: int = 3600
    global_max_per_minute: int = 1000


@dataclass(frozen=True)
class Lockout:
    layer: str  # "user" | "ip"
    retry_after: int
    failures: int


def lock_seconds(failures: int, *, max_failures: int, increment: int, max_wait: int) -> int:
    if failures < max_failures:
        return 0
    return min(max_wait, increment * (failures // max_failures))


class ThrottleStore(Protocol):
    def locked_until(self, key: str) -> float: ...
    def add_failure(self, key: str, *, now: float, max_failures: int, policy: ThrottlePolicy) -> tuple[int, float]: ...
    def clear(self, key: str) -> None: ...
    def count_global(self, minute: int) -> int: ...
    def add_global(self, minute: int) -> int: ...


class LoginThrottler:
    def __init__(self, store: ThrottleStore, policy: ThrottlePolicy) -> None:
        self.store = store
        self.policy = policy

    @staticmethod
    def user_key(username: str) -> str:
        return "user:" + username.strip().lower()[:150]

    @staticmethod
    def ip_key(ip: str | None) -> str:
        return "ip:" + (ip or "unknown")[:64]

    def check(self, *, username: str, ip: str | None, now: float | None = None) -> None:
        """Raises when this attempt must not even be evaluated."""
        now = time.time() if now is None else now
        minute = int(now // 60)
        if self.store.count_global(minute) >= self.policy.global_max_per_minute:
            raise LoginRateLimited(retry_after=math.ceil((minute + 1) * 60 - now))
        waits = [
            self.store.locked_until(self.user_key(username)) - now,
            self.store.locked_until(self.ip_key(ip)) - now,
        ]
        wait = max(waits)
        if wait > 0:
            raise TooManyFailedLogins(retry_after=math.ceil(wait))

    def record_failure(self, *, username: str, ip: str | None, now: float | None = None) -> list[Lockout]:
        now = time.time() if now is None else now
        self.store.add_global(int(now // 60))
        lockouts: list[Lockout] = []
        for layer, key, limit in (
            ("user", self.user_key(username), self.policy.user_max_failures),
            ("ip", self.ip_key(ip), self.policy.ip_max_failures),
        ):
            failures, locked_until = self.store.add_failure(key, now=now, max_failures=limit, policy=self.policy)
            if locked_until > now:
                lockouts.append(Lockout(layer=layer, retry_after=math.ceil(locked_until - now), failures=failures))
        return lockouts

    def record_success(self, *, username: str) -> None:
        self.store.clear(self.user_key(username))


class DatabaseThrottleStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _insert_ignore(self, key: str) -> Any:
        values = {"key": key, "failures": 0, "last_failure_at": 0.0, "locked_until": 0.0}
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(LoginThrottle).values(**values).on_conflict_do_nothing()
        return sqlite.insert(LoginThrottle).values(**values).on_conflict_do_nothing()

    def locked_until(self, key: str) -> float:
        with self._engine.connect() as conn:
            value = conn.execute(select(LoginThrottle.locked_until).where(LoginThrottle.key == key)).scalar()
        return float(value or 0.0)

    def add_failure(self, key: str, *, now: float, max_failures: int, policy: ThrottlePolicy) -> tuple[int, float]:
        with self._engine.begin() as conn:
            conn.execute(self._insert_ignore(key))
            row = conn.execute(
                select(LoginThrottle.failures, LoginThrottle.last_failure_at, LoginThrottle.locked_until)
                .where(LoginThrottle.key == key)
                .with_for_update()
            ).one()
            failures = 0 if now - row.last_failure_at > policy.reset else int(row.failures)
            failures += 1
            wait = lock_seconds(
                failures, max_failures=max_failures, increment=policy.increment, max_wait=policy.max_wait
            )
            locked_until = max(float(row.locked_until), now + wait) if wait else float(row.locked_until)
            conn.execute(
                update(LoginThrottle)
                .where(LoginThrottle.key == key)
                .values(failures=failures, last_failure_at=now, locked_until=locked_until)
            )
            if random.random() < 0.01:  # keep the table small: forget keys quiet for longer than reset
                conn.execute(
                    delete(LoginThrottle).where(
                        LoginThrottle.last_failure_at < now - policy.reset - policy.max_wait,
                        LoginThrottle.locked_until < now,
                    )
                )
        return failures, locked_until

    def clear(self, key: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(LoginThrottle).where(LoginThrottle.key == key))

    def count_global(self, minute: int) -> int:
        with self._engine.connect() as conn:
            value = conn.execute(
                select(LoginThrottle.failures).where(LoginThrottle.key == f"global:{minute}")
            ).scalar()
        return int(value or 0)

    def add_global(self, minute: int) -> int:
        key = f"global:{minute}"
        with self._engine.begin() as conn:
            conn.execute(self._insert_ignore(key))
            conn.execute(
                update(LoginThrottle)
                .where(LoginThrottle.key == key)
                .values(failures=LoginThrottle.failures + 1, last_failure_at=float(minute * 60))
            )
            count = conn.execute(select(LoginThrottle.failures).where(LoginThrottle.key == key)).scalar_one()
            conn.execute(
                delete(LoginThrottle).where(
                    LoginThrottle.key.like("global:%"), LoginThrottle.last_failure_at < float((minute - 2) * 60)
                )
            )
        return int(count)


# Atomic read-modify-write of one key in Redis, the same rule as the database store.
_ADD_FAILURE_LUA = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local max_failures = tonumber(ARGV[2])
local increment = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local reset = tonumber(ARGV[5])
local state = redis.call('HMGET', key, 'failures', 'last', 'locked')
local failures = tonumber(state[1]) or 0
local last = tonumber(state[2]) or 0
local locked = tonumber(state[3]) or 0
if now - last > reset then failures = 0 end
failures = failures + 1
if failures >= max_failures then
  local wait = increment * math.floor(failures / max_failures)
  if wait > max_wait then wait = max_wait end
  if now + wait > locked then locked = now + wait end
end
redis.call('HSET', key, 'failures', failures, 'last', tostring(now), 'locked', tostring(locked))
redis.call('EXPIRE', key, reset + max_wait + 60)
return {failures, tostring(locked)}
"""


class RedisThrottleStore:
    def __init__(self, client: Any, *, prefix: str = "safeharbor:auth:throttle:") -> None:
        self._redis = client
        self._prefix = prefix
        self._add_failure = client.register_script(_ADD_FAILURE_LUA)

    def locked_until(self, key: str) -> float:
        value = self._redis.hget(self._prefix + key, "locked")
        return float(value) if value else 0.0

    def add_failure(self, key: str, *, now: float, max_failures: int, policy: ThrottlePolicy) -> tuple[int, float]:
        failures, locked = self._add_failure(
            keys=[self._prefix + key],
            args=[repr(now), max_failures, policy.increment, policy.max_wait, policy.reset],
        )
        return int(failures), float(locked)

    def clear(self, key: str) -> None:
        self._redis.delete(self._prefix + key)

    def count_global(self, minute: int) -> int:
        value = self._redis.get(f"{self._prefix}global:{minute}")
        return int(value) if value else 0

    def add_global(self, minute: int) -> int:
        key = f"{self._prefix}global:{minute}"
        pipe = self._redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, 180)
        count, _ = pipe.execute()
        return int(count)


class FallbackThrottleStore:
    """Redis first; while Redis is unreachable, the database store (checked again after `retry_s`).

    Login must neither fail open nor fail with a 500 when Redis goes away: failures keep being counted and
    lockouts enforced, in the database. Lockouts recorded only in Redis are not seen until it returns.
    """

    def __init__(self, primary: ThrottleStore, fallback: ThrottleStore, *, retry_s: float = 5.0) -> None:
        self._primary = primary
        self._fallback = fallback
        self._retry_s = retry_s
        self._primary_down_until = 0.0

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if time.monotonic() >= self._primary_down_until:
            try:
                return getattr(self._primary, method)(*args, **kwargs)
            except Exception:  # noqa: BLE001 - any Redis failure: count in the database instead
                self._primary_down_until = time.monotonic() + self._retry_s
                _log.warning("login throttle store unreachable; using the database")
        return getattr(self._fallback, method)(*args, **kwargs)

    def locked_until(self, key: str) -> float:
        return float(self._call("locked_until", key))

    def add_failure(self, key: str, *, now: float, max_failures: int, policy: ThrottlePolicy) -> tuple[int, float]:
        result: tuple[int, float] = self._call("add_failure", key, now=now, max_failures=max_failures, policy=policy)
        return result

    def clear(self, key: str) -> None:
        self._call("clear", key)

    def count_global(self, minute: int) -> int:
        return int(self._call("count_global", minute))

    def add_global(self, minute: int) -> int:
        return int(self._call("add_global", minute))
