"""Layered brute-force protection for logins: per user name, per client address, and global.

Per user and per address it follows Keycloak's brute-force detector: failures count up; from the Nth
failure the key is locked for `increment * (failures // N)` seconds, capped at `max_wait`; a quiet period of
`reset` seconds since the last failure starts the count again; a successful login clears the user's count
and gives back its own attempt to the address (never more, so one good account cannot launder an address).
Each attempt is *reserved* (counted) atomically before the password is checked, so parallel guesses cannot
all pass a check made before any of them is recorded: of a burst, only those before the lock are evaluated.
Addresses are the gateway's client address, IPv6 bucketed by /64 (one host owns a whole /64).

The global layer counts failures per minute across the service. Above its ceiling it slows logins instead of
refusing them all: each user name and each address gets one evaluated attempt per `slow_interval` seconds
(credential stuffing spread over many names and addresses is paced; a person trying once gets in).

State lives in the database, or in Redis when REDIS_URL is set, so it holds across workers and replicas.
Keys are the normalised user *name*, known or not, so lockout behaves the same for unknown users.
"""
from __future__ import annotations

import ipaddress
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .clock import Clock, SystemClock
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
    slow_interval: int = 2


@dataclass(frozen=True)
class Lockout:
    layer: str  # "user" | "ip"
    retry_after: int
    failures: int


@dataclass(frozen=True)
class Reservation:
    """An attempt counted before evaluation; `lockouts` are the locks this attempt set (audited if it fails)."""

    username: str
    ip: str | None
    lockouts: list[Lockout] = field(default_factory=list)


def lock_seconds(failures: int, *, max_failures: int, increment: int, max_wait: int) -> int:
    if failures < max_failures:
        return 0
    return min(max_wait, increment * (failures // max_failures))


class ThrottleStore(Protocol):
    def locked_until(self, key: str) -> float: ...
    def reserve(
        self, key: str, *, now: float, max_failures: int, policy: ThrottlePolicy
    ) -> tuple[int, float, float]: ...
    def release(self, key: str, *, max_failures: int) -> None: ...
    def clear(self, key: str) -> None: ...
    def pace(self, key: str, *, now: float, interval: float) -> float: ...
    def count_global(self, minute: int) -> int: ...
    def add_global(self, minute: int) -> int: ...


class LoginThrottler:
    def __init__(self, store: ThrottleStore, policy: ThrottlePolicy, *, clock: Clock | None = None) -> None:
        self.store = store
        self.policy = policy
        self._clock = clock or SystemClock()

    @staticmethod
    def user_key(username: str) -> str:
        return "user:" + username.strip().lower()[:150]

    @staticmethod
    def ip_key(ip: str | None) -> str:
        """One bucket per IPv4 address and per IPv6 /64 (an IPv4-mapped address counts as IPv4)."""
        if not ip:
            return "ip:unknown"
        try:
            address = ipaddress.ip_address(ip.strip())
        except ValueError:
            return "ip:" + ip[:64]
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                return f"ip:{address.ipv4_mapped}"
            return f"ip:{ipaddress.IPv6Network((address, 64), strict=False)}"
        return f"ip:{address}"

    def _layers(self, username: str, ip: str | None) -> tuple[tuple[str, str, int], ...]:
        return (
            ("user", self.user_key(username), self.policy.user_max_failures),
            ("ip", self.ip_key(ip), self.policy.ip_max_failures),
        )

    def reserve(self, *, username: str, ip: str | None, now: float | None = None) -> Reservation:
        """Counts this attempt (atomically, per layer) before the password is checked; raises when a layer
        was already locked, or when the global ceiling is passed and this name or address must wait."""
        now = self._clock.timestamp() if now is None else now
        minute = int(now // 60)
        if self.store.count_global(minute) >= self.policy.global_max_per_minute:
            interval = float(self.policy.slow_interval)
            wait = max(
                self.store.pace("pace:" + self.user_key(username), now=now, interval=interval),
                self.store.pace("pace:" + self.ip_key(ip), now=now, interval=interval),
            )
            if wait > 0:
                raise LoginRateLimited(retry_after=max(1, math.ceil(wait)))
        refused = 0.0
        lockouts: list[Lockout] = []
        for layer, key, limit in self._layers(username, ip):
            failures, before, after = self.store.reserve(key, now=now, max_failures=limit, policy=self.policy)
            if before > now:
                refused = max(refused, before - now)
            elif after > now:
                lockouts.append(Lockout(layer=layer, retry_after=math.ceil(after - now), failures=failures))
        if refused > 0:
            raise TooManyFailedLogins(retry_after=math.ceil(refused))
        return Reservation(username=username, ip=ip, lockouts=lockouts)

    def failed(self, reservation: Reservation, *, now: float | None = None) -> list[Lockout]:
        """The reserved attempt was a failure: it stays counted, and counts towards the global ceiling."""
        now = self._clock.timestamp() if now is None else now
        self.store.add_global(int(now // 60))
        return reservation.lockouts

    def succeeded(self, reservation: Reservation) -> None:
        """Right password (and factor): the user's count is cleared, the address gets its attempt back."""
        self.store.clear(self.user_key(reservation.username))
        self.store.release(self.ip_key(reservation.ip), max_failures=self.policy.ip_max_failures)

    def not_a_guess(self, reservation: Reservation) -> None:
        """Right password, second factor still to come: neither layer keeps the attempt."""
        for _, key, limit in self._layers(reservation.username, reservation.ip):
            self.store.release(key, max_failures=limit)

    def record_failure(self, *, username: str, ip: str | None, now: float | None = None) -> list[Lockout]:
        """Counts a failure outside a login (tests, drills); the locks it set."""
        now = self._clock.timestamp() if now is None else now
        self.store.add_global(int(now // 60))
        lockouts: list[Lockout] = []
        for layer, key, limit in self._layers(username, ip):
            failures, _, after = self.store.reserve(key, now=now, max_failures=limit, policy=self.policy)
            if after > now:
                lockouts.append(Lockout(layer=layer, retry_after=math.ceil(after - now), failures=failures))
        return lockouts


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

    def reserve(
        self, key: str, *, now: float, max_failures: int, policy: ThrottlePolicy
    ) -> tuple[int, float, float]:
        with self._engine.begin() as conn:
            # The insert comes first: it takes the write lock (SQLite) before the row is read.
            conn.execute(self._insert_ignore(key))
            row = conn.execute(
                select(LoginThrottle.failures, LoginThrottle.last_failure_at, LoginThrottle.locked_until)
                .where(LoginThrottle.key == key)
                .with_for_update()
            ).one()
            failures = 0 if now - row.last_failure_at > policy.reset else int(row.failures)
            failures += 1
            before = float(row.locked_until)
            wait = lock_seconds(
                failures, max_failures=max_failures, increment=policy.increment, max_wait=policy.max_wait
            )
            locked_until = max(before, now + wait) if wait else before
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
        return failures, before, locked_until

    def release(self, key: str, *, max_failures: int) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                update(LoginThrottle)
                .where(LoginThrottle.key == key, LoginThrottle.failures > 0)
                .values(failures=LoginThrottle.failures - 1)
            )
            # Below the threshold again: the lock came from reservations, one of which is given back.
            conn.execute(
                update(LoginThrottle)
                .where(LoginThrottle.key == key, LoginThrottle.failures < max_failures)
                .values(locked_until=0.0)
            )

    def pace(self, key: str, *, now: float, interval: float) -> float:
        with self._engine.begin() as conn:
            conn.execute(self._insert_ignore(key))
            next_at = float(conn.execute(
                select(LoginThrottle.locked_until).where(LoginThrottle.key == key).with_for_update()
            ).scalar_one())
            if next_at > now:
                return next_at - now
            conn.execute(
                update(LoginThrottle)
                .where(LoginThrottle.key == key)
                .values(last_failure_at=now, locked_until=now + interval)
            )
        return 0.0

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
local before = locked
if now - last > reset then failures = 0 end
failures = failures + 1
if failures >= max_failures then
  local wait = increment * math.floor(failures / max_failures)
  if wait > max_wait then wait = max_wait end
  if now + wait > locked then locked = now + wait end
end
redis.call('HSET', key, 'failures', failures, 'last', tostring(now), 'locked', tostring(locked))
redis.call('EXPIRE', key, reset + max_wait + 60)
return {failures, tostring(before), tostring(locked)}
"""

# Gives one reserved attempt back; below the threshold the lock it helped set goes too.
_RELEASE_LUA = """
local key = KEYS[1]
local max_failures = tonumber(ARGV[1])
local failures = tonumber(redis.call('HGET', key, 'failures') or '0') or 0
if failures > 0 then failures = failures - 1 end
if redis.call('EXISTS', key) == 1 then
  redis.call('HSET', key, 'failures', failures)
  if failures < max_failures then redis.call('HSET', key, 'locked', '0') end
end
return failures
"""


class RedisThrottleStore:
    def __init__(self, client: Any, *, prefix: str = "safeharbor:auth:throttle:") -> None:
        self._redis = client
        self._prefix = prefix
        self._add_failure = client.register_script(_ADD_FAILURE_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    def locked_until(self, key: str) -> float:
        value = self._redis.hget(self._prefix + key, "locked")
        return float(value) if value else 0.0

    def reserve(
        self, key: str, *, now: float, max_failures: int, policy: ThrottlePolicy
    ) -> tuple[int, float, float]:
        failures, before, locked = self._add_failure(
            keys=[self._prefix + key],
            args=[repr(now), max_failures, policy.increment, policy.max_wait, policy.reset],
        )
        return int(failures), float(before), float(locked)

    def release(self, key: str, *, max_failures: int) -> None:
        self._release(keys=[self._prefix + key], args=[max_failures])

    def pace(self, key: str, *, now: float, interval: float) -> float:
        name = self._prefix + key
        if self._redis.set(name, "1", nx=True, px=max(1, int(interval * 1000))):
            return 0.0
        remaining = int(self._redis.pttl(name))
        return max(remaining, 1) / 1000.0

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

    def reserve(
        self, key: str, *, now: float, max_failures: int, policy: ThrottlePolicy
    ) -> tuple[int, float, float]:
        result: tuple[int, float, float] = self._call(
            "reserve", key, now=now, max_failures=max_failures, policy=policy
        )
        return result

    def release(self, key: str, *, max_failures: int) -> None:
        self._call("release", key, max_failures=max_failures)

    def pace(self, key: str, *, now: float, interval: float) -> float:
        return float(self._call("pace", key, now=now, interval=interval))

    def clear(self, key: str) -> None:
        self._call("clear", key)

    def count_global(self, minute: int) -> int:
        return int(self._call("count_global", minute))

    def add_global(self, minute: int) -> int:
        return int(self._call("add_global", minute))
