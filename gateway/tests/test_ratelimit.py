"""Rate-limit counters: in memory, in Redis (one round trip per request), and Redis going away."""
from __future__ import annotations

import os
import uuid

import pytest
from safeharbor_gateway.ratelimit import Limit, RateLimiter

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
