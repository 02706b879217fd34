"""A worker's first requests, arriving together, must not find the revocation list empty and stale: they
wait for its first poll (found by gateway_overhead.py: a burst of 503s when a gevent worker's 32 first
requests raced the poll)."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, jsonify
from safeharbor_common.revocation import RevocationList
from safeharbor_common.service_identity import ServiceTokenSigner, generate_keypair, load_private_key
from werkzeug.serving import make_server


@pytest.fixture
def slow_feed() -> Iterator[str]:
    app = Flask("slow-feed")

    @app.get("/internal/v1/revocations")
    def feed() -> Any:
        time.sleep(0.3)  # auth-service under load
        return jsonify({"revoked": [], "retired": [], "cursor": "0"})

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/internal/v1/revocations"
    server.shutdown()


def test_concurrent_first_callers_wait_for_the_first_poll(slow_feed: str) -> None:
    seed, _ = generate_keypair()
    revocations = RevocationList(feed_url=slow_feed,
                                 signer=ServiceTokenSigner(name="gateway", private_key=load_private_key(seed)))
    fresh: list[bool] = []

    def first_request() -> None:
        revocations.ensure_started()
        fresh.append(revocations.is_fresh())

    callers = [threading.Thread(target=first_request) for _ in range(8)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=10)
    revocations.stop()
    assert fresh == [True] * 8


def test_an_instance_down_leaves_the_feed_to_the_next(slow_feed: str) -> None:
    """Several auth-service instances (issue 19's replicas): the feed of one that is down is read from
    another, so the list stays fresh and the revocations it lists still arrive."""
    seed, _ = generate_keypair()
    down = f"http://127.0.0.1:{_closed_port()}/internal/v1/revocations"
    revocations = RevocationList(feed_url=down, fallback_feed_urls=[down, slow_feed],
                                 signer=ServiceTokenSigner(name="gateway", private_key=load_private_key(seed)))
    assert revocations.poll_once() is False  # the first instance refuses: the next poll asks the other
    assert revocations.poll_once() is True
    assert revocations.is_fresh()


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
