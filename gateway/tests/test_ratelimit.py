"""Rate-limit counters: in memory, in Redis (hits gathered per worker, sent together), and Redis going away."""
from __future__ import annotations

import os
import time
import uuid

import pytest
from safeharbor_gateway.ratelimit import EXACT_FROM, SYNC_INTERVAL, Limit, RateLimiter, RedisCounter

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/12")


def _redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=0.5).ping()
    except redis.RedisError:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            raise
        pytest.skip("Redis is not reachable")


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_ip_and_user_limits_counted_together(backend: str) -> None:
    if backend == "redis":
        _redis_or_skip()
    limiter = RateLimiter(per_ip=Limit(3, 60), per_user=Limit(2, 60),
                          redis_url=REDIS_URL if backend == "redis" else None)
    ip, user, other = (f"{name}-{uuid.uuid4().hex}" for name in ("ip", "user", "other"))
    both = [("ip", ip, limiter.per_ip), ("user", user, limiter.per_user)]
    assert limiter.check_all(both) is None
    assert limiter.check_all(both) is None
    wait = limiter.check_all(both)  # the user's third request in the window: over its limit of 2
    assert wait is not None and 1 <= wait <= 60
    # The IP has had 3: another user from it is refused now too, on the IP's limit.
    assert limiter.check_all([("ip", ip, limiter.per_ip), ("user", other, limiter.per_user)]) is not None
    assert limiter.check("user", other, limiter.per_user) is None  # that user alone still has room


def test_unreachable_redis_falls_back_to_counting_locally() -> None:
    limiter = RateLimiter(per_ip=Limit(1, 60), per_user=Limit(1, 60), redis_url="redis://127.0.0.1:9/0")
    key = uuid.uuid4().hex
    assert limiter.check("ip", key, limiter.per_ip) is None
    assert limiter.check("ip", key, limiter.per_ip) is not None  # counted in this worker, still enforced


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _counter(clock: _Clock, round_trips: list[int]) -> RedisCounter:
    counter = RedisCounter(REDIS_URL, monotonic=clock)
    send = counter._send

    def counted(batches: list[tuple[str, int, int]]) -> list[int]:
        round_trips.append(len(batches))
        return send(batches)

    counter._send = counted  # type: ignore[method-assign]
    return counter


def test_hits_far_below_the_limit_are_sent_together() -> None:
    """A round trip per request cost the gateway more than its forwarding: far below a limit, a worker sends
    its hits at most every SYNC_INTERVAL, and the shared total still counts every one of them."""
    _redis_or_skip()
    import redis

    clock, round_trips = _Clock(), []
    counter = _counter(clock, round_trips)
    key = f"ip:{uuid.uuid4().hex}"
    counts = [counter.hit_all([(key, 60, 1000)]) for _ in range(50)]
    assert round_trips == [1]  # the first hit learns the shared total; the next 49 are gathered
    assert [c[0][0] for c in counts if c] == list(range(1, 51))
    clock.now += SYNC_INTERVAL * 1.5
    assert counter.hit_all([(key, 60, 1000)])[0][0] == 51  # type: ignore[index]
    assert round_trips == [1, 1]
    now = int(time.time())
    stored = redis.Redis.from_url(REDIS_URL).get(f"safeharbor:rl:{key}:{now - now % 60}")
    assert stored is not None and int(stored) == 51


def test_workers_sharing_a_limit_refuse_on_the_shared_count() -> None:
    """Two workers taking turns: near the limit every hit is sent, so together they allow the limit and at
    most what the other gathered before the count passed EXACT_FROM of it."""
    _redis_or_skip()
    clock, round_trips = _Clock(), []
    workers = [_counter(clock, round_trips), _counter(clock, round_trips)]
    key, limit = f"ip:{uuid.uuid4().hex}", 40
    allowed = 0
    for turn in range(200):
        counted = workers[turn % 2].hit_all([(key, 60, limit)])
        assert counted is not None
        allowed += counted[0][0] <= limit
        clock.now += SYNC_INTERVAL / 10
    assert limit <= allowed <= limit + EXACT_FROM * limit / 2
    refused_tail = [workers[i % 2].hit_all([(key, 60, limit)]) for i in range(4)]
    assert all(c is not None and c[0][0] > limit for c in refused_tail)
