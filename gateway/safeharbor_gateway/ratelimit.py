"""Per-IP and per-user request limits at the gateway.

Fixed one-second-aligned windows. With Redis configured the counters are shared by every worker and
replica (a request's IP and user counters in one pipelined round trip); without it, or while Redis is
unreachable, each worker counts for itself (the limit then applies per worker: a documented, conservative
degradation).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

_log = logging.getLogger("safeharbor.gateway.ratelimit")


@dataclass(frozen=True)
class Limit:
    requests: int
    window_s: int


@dataclass(frozen=True)
class Verdict:
    wait: int | None  # None: allowed; else seconds until the longest exceeded window resets
    refusals: int  # how many requests this window has refused so far, this one included (0 if allowed)


class LocalCounter:
    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, window_s: int) -> tuple[int, int]:
        """(count in the current window, seconds until it resets)."""
        now = int(time.time())
        window = now - now % window_s
        with self._lock:
            start, count = self._counts.get(key, (window, 0))
            if start != window:
                start, count = window, 0
            count += 1
            self._counts[key] = (start, count)
            if len(self._counts) > 100_000:
                self._counts = {k: v for k, v in self._counts.items() if v[0] == window}
        return count, window + window_s - now


class RedisCounter:
    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2)
        self._retry_at = 0.0

    def hit_all(self, keys: list[tuple[str, int]]) -> list[tuple[int, int]] | None:
        """Counts a hit on every (key, window) in one round trip; None while Redis is unreachable."""
        if time.monotonic() < self._retry_at:
            return None
        now = int(time.time())
        windows = [now - now % window_s for _, window_s in keys]
        try:
            pipe = self._client.pipeline(transaction=False)
            for (key, window_s), window in zip(keys, windows, strict=True):
                redis_key = f"safeharbor:rl:{key}:{window}"
                pipe.incr(redis_key)
                pipe.expire(redis_key, window_s + 1)
            replies = pipe.execute()
        except Exception:  # noqa: BLE001 - fall back to local counting, retry Redis shortly
            self._retry_at = time.monotonic() + 2.0
            _log.warning("rate-limit store unreachable; counting locally")
            return None
        return [(int(replies[2 * i]), window + window_s - now)
                for i, ((_, window_s), window) in enumerate(zip(keys, windows, strict=True))]


class RateLimiter:
    def __init__(self, *, per_ip: Limit, per_user: Limit, redis_url: str | None = None) -> None:
        self.per_ip = per_ip
        self.per_user = per_user
        self._local = LocalCounter()
        self._redis = RedisCounter(redis_url) if redis_url else None

    def check(self, scope: str, subject: str, limit: Limit) -> int | None:
        """None when allowed, else the seconds to wait."""
        return self.check_all([(scope, subject, limit)])

    def check_all(self, hits: list[tuple[str, str, Limit]]) -> int | None:
        """None when every (scope, subject, limit) allows one more request, else the longest wait."""
        return self.count(hits).wait

    def count(self, hits: list[tuple[str, str, Limit]]) -> Verdict:
        """Counts one request against every (scope, subject, limit) at once (one Redis round trip)."""
        keys = [(f"{scope}:{subject}", limit.window_s) for scope, subject, limit in hits]
        results = self._redis.hit_all(keys) if self._redis else None
        if results is None:
            results = [self._local.hit(key, window_s) for key, window_s in keys]
        over = [(max(1, resets_in), count - limit.requests)
                for (count, resets_in), (_, _, limit) in zip(results, hits, strict=True) if count > limit.requests]
        if not over:
            return Verdict(None, 0)
        return Verdict(max(wait for wait, _ in over), max(refused for _, refused in over))
