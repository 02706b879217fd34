"""Per-IP and per-user request limits at the gateway.

Fixed one-second-aligned windows. With Redis configured the counters are shared by every worker and
replica; without it, or while Redis is unreachable, each worker counts for itself (the limit then applies per
worker: a documented, conservative degradation).

Sharing through Redis without a round trip per request: a worker gathers the hits on a counter for at most
`SYNC_INTERVAL` and sends them together (INCRBY, which answers the shared total). A counter whose known total
has passed `EXACT_FROM` of its limit is sent on every hit, so refusals near the limit are decided on the
shared count. What the limit can miss is bounded in time: the hits other workers gathered in their last
`SYNC_INTERVAL` (a redis-py round trip costs the gateway 150-250 µs of CPU; docs/PERFORMANCE.md).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
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


SYNC_INTERVAL = 0.05  # seconds a worker may gather hits on a counter before sending them
EXACT_FROM = 0.5  # share of a limit beyond which every hit is sent at once


@dataclass
class _Tally:
    """One worker's view of one shared counter in one window."""

    window: int
    known: int = 0  # the shared total when last sent
    pending: int = 0  # hits counted here and not yet sent
    sent_at: float = float("-inf")


class RedisCounter:
    def __init__(self, url: str, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2)
        self._retry_at = 0.0
        self._clock = clock
        self._monotonic = monotonic
        self._tallies: dict[str, _Tally] = {}
        self._lock = threading.Lock()

    def hit_all(self, keys: list[tuple[str, int, int]]) -> list[tuple[int, int]] | None:
        """Counts a hit on every (key, window, limit); (count, seconds to reset) each, or None while Redis is
        unreachable. At most one round trip, and none while every counter is gathering."""
        mono = self._monotonic()
        if mono < self._retry_at:
            return None
        now = int(self._clock())
        counts: list[int] = []
        due: list[tuple[int, str, int, _Tally, int]] = []  # (position, redis key, window_s, tally, hits)
        with self._lock:
            for position, (key, window_s, limit) in enumerate(keys):
                window = now - now % window_s
                tally = self._tallies.get(key)
                if tally is None or tally.window != window:
                    tally = self._tallies[key] = _Tally(window)
                tally.pending += 1
                counts.append(tally.known + tally.pending)
                if tally.known + tally.pending > limit * EXACT_FROM or mono - tally.sent_at >= SYNC_INTERVAL:
                    due.append((position, f"safeharbor:rl:{key}:{window}", window_s, tally, tally.pending))
                    tally.pending, tally.sent_at = 0, mono
            if len(self._tallies) > 100_000:
                self._tallies = {k: t for k, t in self._tallies.items() if t.window + 3600 > now}
        if due:
            try:
                totals = self._send([(redis_key, window_s, hits) for _, redis_key, window_s, _, hits in due])
            except Exception:  # noqa: BLE001 - fall back to local counting, retry Redis shortly
                with self._lock:
                    for _, _, _, tally, hits in due:
                        tally.pending += hits
                self._retry_at = mono + 2.0
                _log.warning("rate-limit store unreachable; counting locally")
                return None
            with self._lock:
                for (position, _, _, tally, _), total in zip(due, totals, strict=True):
                    tally.known = max(tally.known, total)
                    counts[position] = total + tally.pending
        return [(count, now - now % window_s + window_s - now)
                for count, (_, window_s, _) in zip(counts, keys, strict=True)]

    def _send(self, batches: list[tuple[str, int, int]]) -> list[int]:
        """One round trip: adds each batch of hits, answers the shared totals."""
        pipe = self._client.pipeline(transaction=False)
        for redis_key, window_s, hits in batches:
            pipe.incrby(redis_key, hits)
            pipe.expire(redis_key, window_s + 1)
        replies = pipe.execute()
        return [int(replies[2 * i]) for i in range(len(batches))]


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
        """Counts one request against every (scope, subject, limit) at once (at most one Redis round trip)."""
        keys = [(f"{scope}:{subject}", limit.window_s, limit.requests) for scope, subject, limit in hits]
        results = self._redis.hit_all(keys) if self._redis else None
        if results is None:
            results = [self._local.hit(key, window_s) for key, window_s, _ in keys]
        over = [(max(1, resets_in), count - limit.requests)
                for (count, resets_in), (_, _, limit) in zip(results, hits, strict=True) if count > limit.requests]
        if not over:
            return Verdict(None, 0)
        return Verdict(max(wait for wait, _ in over), max(refused for _, refused in over))
