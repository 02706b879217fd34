"""Issue 14, finding 5: the attempt is reserved atomically before the password is checked (a burst of parallel
guesses cannot slip past the lockout), the per-address layer keys on the gateway's client address with IPv6
bucketed by /64, and the global ceiling slows logins without refusing them all."""
from __future__ import annotations

import threading
import time
from typing import Any

from flask import Flask

from .conftest import PASSWORD, AppFactory, Factory, Peers, error_code


def _count_password_checks(app: Flask) -> list[int]:
    passwords = app.extensions["auth"].passwords
    calls = [0]
    lock = threading.Lock()
    real_verify, real_dummy = passwords.verify, passwords.verify_dummy

    def verify(*args: Any) -> bool:
        with lock:
            calls[0] += 1
        return bool(real_verify(*args))

    def dummy(*args: Any) -> None:
        with lock:
            calls[0] += 1
        real_dummy(*args)

    passwords.verify, passwords.verify_dummy = verify, dummy
    return calls


def test_fifty_parallel_wrong_guesses_count_fifty_and_only_the_allowed_few_are_evaluated(
    make_app: AppFactory,
) -> None:
    app = make_app(LOGIN_USER_MAX_FAILURES="5", LOGIN_IP_MAX_FAILURES="1000")
    factory = Factory(app)
    account = factory.user(role="billing")
    checks = _count_password_checks(app)
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(50)

    def guess() -> None:
        client = app.test_client()
        start.wait()
        response = client.post("/v1/auth/login", json={"username": account.username, "password": "Nope-nope-123"})
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=guess) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(statuses) == 50
    assert statuses.count(401) <= 5 and statuses.count(429) >= 45, statuses
    assert checks[0] <= 5
    throttler = app.extensions["auth"].throttler
    failures, _, _ = throttler.store.reserve(f"user:{account.username}", now=time.time(), max_failures=5,
                                             policy=throttler.policy)
    assert failures == 51  # all fifty were counted (and this probe)
    # Locked: even the right password is not evaluated.
    response = factory.client.post("/v1/auth/login", json={"username": account.username, "password": PASSWORD})
    assert response.status_code == 429 and error_code(response) == "locked_out"


def test_ipv6_is_bucketed_by_64() -> None:
    from safeharbor_auth.throttle import LoginThrottler

    key = LoginThrottler.ip_key
    assert key("2001:db8:1:2::1") == key("2001:db8:1:2:ffff:ffff:ffff:9") == "ip:2001:db8:1:2::/64"
    assert key("2001:db8:1:3::1") != key("2001:db8:1:2::1")
    assert key("203.0.113.7") == "ip:203.0.113.7"
    assert key("::ffff:203.0.113.7") == "ip:203.0.113.7"
    assert key(None) == "ip:unknown"


def _gateway_login(factory: Factory, peers: Peers, *, ip: str, username: str, password: str) -> Any:
    headers = {**peers.gateway_headers(), "X-SafeHarbor-Client-IP": ip}
    return factory.client.post("/v1/auth/login", json={"username": username, "password": password}, headers=headers)


def test_address_layer_keys_on_the_gateway_header_and_a_whole_ipv6_64(make_app: AppFactory, peers: Peers) -> None:
    factory = Factory(make_app(LOGIN_IP_MAX_FAILURES="3", LOGIN_USER_MAX_FAILURES="100"))
    for i in range(3):
        response = _gateway_login(factory, peers, ip=f"2001:db8:aa:bb::{i + 1}", username=f"spray-{i}",
                                  password="Nope-nope-123")
        assert response.status_code == 401
    # Another address of the same /64: the same bucket, locked.
    locked = _gateway_login(factory, peers, ip="2001:db8:aa:bb:1:2:3:4", username="spray-x", password="Nope-nope-1")
    assert locked.status_code == 429 and error_code(locked) == "locked_out"
    # Another client behind the same gateway (same socket address) is not affected.
    other = _gateway_login(factory, peers, ip="2001:db8:aa:cc::1", username="spray-y", password="Nope-nope-123")
    assert other.status_code == 401


def test_forwarded_for_is_never_read_by_auth(make_app: AppFactory) -> None:
    factory = Factory(make_app(LOGIN_IP_MAX_FAILURES="2", LOGIN_USER_MAX_FAILURES="100"))
    for i in range(2):
        factory.client.post("/v1/auth/login", json={"username": f"xff-{i}", "password": "Nope-nope-123"},
                            headers={"X-Forwarded-For": f"198.51.100.{i}", "X-SafeHarbor-Client-IP": f"10.0.0.{i}"})
    # Neither X-Forwarded-For nor an unvouched client-IP header moved the caller to a fresh bucket.
    response = factory.client.post("/v1/auth/login", json={"username": "xff-9", "password": "Nope-nope-123"},
                                   headers={"X-Forwarded-For": "198.51.100.99", "X-SafeHarbor-Client-IP": "10.0.0.99"})
    assert response.status_code == 429 and error_code(response) == "locked_out"


def test_global_ceiling_slows_logins_but_never_refuses_them_all(make_app: AppFactory, peers: Peers) -> None:
    app = make_app(LOGIN_GLOBAL_MAX_FAILURES_PER_MINUTE="3", LOGIN_USER_MAX_FAILURES="100",
                   LOGIN_IP_MAX_FAILURES="100")
    factory = Factory(app)
    account = factory.user(role="patient")
    throttler = app.extensions["auth"].throttler
    for i in range(5):
        throttler.record_failure(username=f"g{i}", ip=f"10.1.0.{i}")
    # Over the ceiling, a user who is not hammering still gets in at once...
    ok = _gateway_login(factory, peers, ip="192.0.2.10", username=account.username, password=account.password)
    assert ok.status_code == 200
    # ...while a name (or an address) tried again at once is slowed, not shut out: a short Retry-After.
    first = _gateway_login(factory, peers, ip="192.0.2.20", username="stuffed", password="Nope-nope-123")
    assert first.status_code == 401
    again = _gateway_login(factory, peers, ip="192.0.2.21", username="stuffed", password="Nope-nope-123")
    assert again.status_code == 429 and error_code(again) == "rate_limited"
    assert 1 <= int(again.headers["Retry-After"]) <= 5
    same_address = _gateway_login(factory, peers, ip="192.0.2.20", username="other-name", password="Nope-nope-1")
    assert same_address.status_code == 429 and error_code(same_address) == "rate_limited"
