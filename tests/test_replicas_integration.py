"""Two instances of every service (issue 19): `pytest tests --backend=postgres --replicas 2`.

The gateway spreads its requests over the instances itself (its *_SERVICE_URL settings list them); the services
reach each other, and the suite reaches the two gateways, through loopback balancers (tools/devstack balancer.py,
the stand-in for a Kubernetes Service). What must still hold: the audit and keydir logs never fork (one
sequencer at a time: the database's lock on the log head), revocation reaches every gateway instance, the
periodic jobs run once per interval for the whole deployment, break-glass ends on time (and closes once), and
the stack keeps answering with one instance of every service down. Skipped when the stack runs one instance.
"""
from __future__ import annotations

import contextlib
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
import requests
from conftest import Api
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from safeharbor_devstack import Stack
from safeharbor_protocol import checkpoint as cp
from safeharbor_protocol import keyrecords as records
from safeharbor_protocol import merkle
from safeharbor_protocol.encoding import b64url_encode
from safeharbor_protocol.keydir import LogWatcher
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.owned_stack
SERVICES = ("auth", "keydir", "audit", "push", "gateway")
AUDIT_ORIGIN = "safeharbor.example/audit"
CHECKPOINT_INTERVAL = 1.0  # AUDIT_CHECKPOINT_INTERVAL of the replicas stack (tests/conftest.py)
DRIFT_INTERVAL = 1.0  # PUSH_DRIFT_INTERVAL of the suite's stack


@pytest.fixture(scope="module", autouse=True)
def _two_of_each(stack: Stack, replicas: int) -> None:
    if replicas < 2:
        pytest.skip("one instance of each service: run with --backend=postgres --replicas 2")


def _person(api: Api, admin_token: str, role: str = "patient") -> tuple[str, str, str]:
    username = f"rp-{secrets.token_hex(4)}"
    password = f"Tide-{secrets.token_hex(8)}-Pw!"
    response = api.call("POST", "/v1/users", token=admin_token,
                        json={"username": username, "name": "Replica Person", "role": role, "password": password})
    assert response.status_code == 201, response.text
    return str(response.json()["id"]), username, password


@contextlib.contextmanager
def _load(api: Api, tokens: list[str], *, seconds: float) -> Iterator[list[int]]:
    """Authenticated reads through the front balancer (both gateways) from a few threads for `seconds`,
    while the caller's block runs; yields the statuses list it fills."""
    statuses: list[int] = []
    stop = threading.Event()

    def reader(token: str) -> None:
        session = requests.Session()
        while not stop.is_set():
            try:
                statuses.append(session.get(api.base + "/v1/auth/me", timeout=10,
                                            headers={"Authorization": f"Bearer {token}"}).status_code)
            except requests.RequestException:
                statuses.append(0)

    threads = [threading.Thread(target=reader, args=(token,), daemon=True) for token in tokens]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    try:
        yield statuses
        time.sleep(max(0.0, deadline - time.monotonic()))
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)


def _requests_served(stack: Stack, instance: str) -> int:
    """Requests an instance's server logged (its access log lines, health checks excluded)."""
    lines = stack.log_path(instance).read_text(errors="replace").splitlines()
    return sum(1 for line in lines if '"msg":"request"' in line and '"route":"/readyz"' not in line)


def test_the_gateway_spreads_requests_over_every_instance(stack: Stack, api: Api) -> None:
    before = {i: _requests_served(stack, i) for s in ("auth", "keydir") for i in stack.instances(s)}
    token = api.token("sam")
    for _ in range(12):
        assert api.call("GET", "/v1/auth/me", token=token).status_code == 200
        assert api.call("GET", "/v1/keys?users=nobody", token=token).status_code == 200
    served = {i: _requests_served(stack, i) - before[i] for i in before}
    assert all(count >= 3 for count in served.values()), served
    front = stack.balancers["gateway"].connections
    assert all(count > 0 for count in front.values()), front


def test_revocation_reaches_every_gateway_instance(stack: Stack, api: Api) -> None:
    session = api.login("sam")
    token = session["access_token"]
    gateways = [stack.url(i) for i in stack.instances("gateway")]
    for url in gateways:
        for _ in range(4):  # every worker of every instance has seen the session
            assert requests.get(url + "/v1/auth/me", headers={"Authorization": f"Bearer {token}"},
                                timeout=10).status_code == 200
    assert requests.post(gateways[0] + "/v1/auth/logout", headers={"Authorization": f"Bearer {token}"},
                         timeout=10).status_code in (200, 204)
    deadline = time.monotonic() + 2.0  # the feed is polled every 0.25 s; Redis pushes it at once
    refused: dict[str, list[int]] = {}
    while time.monotonic() < deadline:
        refused = {url: [requests.get(url + "/v1/auth/me", headers={"Authorization": f"Bearer {token}"},
                                      timeout=10).status_code for _ in range(4)] for url in gateways}
        if all(status == 401 for statuses in refused.values() for status in statuses):
            break
        time.sleep(0.1)
    assert all(status == 401 for statuses in refused.values() for status in statuses), refused


def _audit_checkpoint(api: Api, auditor: str, key: str) -> cp.Checkpoint:
    note = api.call("GET", "/v1/audit/checkpoint", token=auditor)
    assert note.status_code == 200, note.text
    return cp.verify_checkpoint(note.text, key, origin=AUDIT_ORIGIN)


def test_the_audit_log_never_forks(stack: Stack, api: Api) -> None:
    """Events from every instance (both gateways, both auths) appended by both audit instances: every
    checkpoint either instance signs is consistent with every later one, and the whole log verifies."""
    auditor = api.token("audra")
    key = api.call("GET", "/v1/audit/checkpoint/key", token=auditor).text.strip()
    seen: list[cp.Checkpoint] = []
    with _load(api, [api.token(u) for u in ("sam", "pat", "dr-chen", "sam")], seconds=4) as statuses:
        while len(seen) < 12:
            seen.append(_audit_checkpoint(api, auditor, key))
            time.sleep(0.25)
    assert statuses and all(status == 200 for status in statuses), set(statuses)
    seen.append(_audit_checkpoint(api, auditor, key))
    by_size = sorted({c.size: c for c in seen}.values(), key=lambda c: c.size)
    assert len(by_size) >= 3, [c.size for c in seen]  # the load moved the log on
    for older, newer in itertools.pairwise(by_size):
        proof = api.call("GET", f"/v1/audit/proof/consistency?from={older.size}&to={newer.size}", token=auditor)
        assert proof.status_code == 200, proof.text
        merkle.verify_consistency(older.size, newer.size, [bytes.fromhex(p) for p in proof.json()["proof"]],
                                  older.root, newer.root)
    report = api.call("GET", "/v1/audit/verify", token=auditor).json()
    assert report["ok"] is True and report["first_bad_seq"] is None, report


def test_the_keydir_log_never_forks(api: Api, admin_token: str) -> None:
    """Registrations at once through both keydir instances: distinct leaves, and every checkpoint handed out
    extends the one before (a client's LogWatcher would reject a fork)."""
    people = [_person(api, admin_token) for _ in range(8)]
    tokens = [api.login(username, password)["access_token"] for _, username, password in people]
    verifier_key = api.call("GET", "/v1/keys/checkpoint/key").text.strip()
    barrier = threading.Barrier(len(people))
    answers: list[dict[str, Any]] = [{} for _ in people]

    def register(index: int) -> None:
        user_id = people[index][0]
        record = records.make_record(
            user_id=user_id, device_id="phone", version=1,
            enc_pub=b64url_encode(X25519PrivateKey.generate().public_key().public_bytes_raw()),
            signing_key=Ed25519PrivateKey.generate(), created_at=records.format_time(datetime.now(UTC)))
        barrier.wait()
        response = requests.post(api.base + "/v1/keys", json={k: v for k, v in record.items() if k != "user_id"},
                                 headers={"Authorization": f"Bearer {tokens[index]}"}, timeout=30)
        answers[index] = {"status": response.status_code, **(response.json() if response.content else {})}

    threads = [threading.Thread(target=register, args=(i,)) for i in range(len(people))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [a["status"] for a in answers] == [201] * len(people), answers
    assert len({a["leaf_index"] for a in answers}) == len(people)
    watcher = LogWatcher(verifier_key, origin="safeharbor.example/keys")
    fetch = _keydir_consistency(api)
    for answer in sorted(answers, key=lambda a: int(a["leaf_index"])):
        checkpoint = watcher.advance(answer["checkpoint"], fetch)
        watcher.check_published(answer, checkpoint, expected_user=people[answers.index(answer)][0])
    watcher.advance(api.call("GET", "/v1/keys/checkpoint").text, fetch)


def _keydir_consistency(api: Api) -> Callable[[int, int], list[str]]:
    def fetch(old: int, new: int) -> list[str]:
        response = api.call("GET", f"/v1/keys/proof/consistency?from={old}&to={new}")
        assert response.status_code == 200, response.text
        return list(response.json()["proof"])

    return fetch


def test_audit_checkpoints_are_signed_once_per_interval(stack: Stack, api: Api) -> None:
    """Every audit worker of both instances runs the checkpoint ticker; together they must sign at most one
    checkpoint per interval while entries keep arriving (not one per process)."""
    engine = create_engine(stack.settings.database_urls["audit"])
    started = time.time()
    with _load(api, [api.token(u) for u in ("sam", "pat")], seconds=8):
        pass
    with engine.connect() as conn:
        times = [float(row[0]) for row in conn.execute(
            text("SELECT created_at FROM checkpoints WHERE created_at >= :t ORDER BY created_at"), {"t": started})]
    engine.dispose()
    assert len(times) >= 3, times
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.9 * CHECKPOINT_INTERVAL, gaps


def test_the_drift_check_runs_once_per_interval(stack: Stack) -> None:
    """Four push-config processes (two instances, two workers): one drift check per interval in all, as the
    emulator counts Stream's app-settings reads."""
    log = stack.log_path("emulator")
    before = log.read_text(errors="replace").count("GET /app ")
    window = 6.0
    time.sleep(window)
    reads = log.read_text(errors="replace").count("GET /app ") - before
    assert 1 <= reads <= window / DRIFT_INTERVAL + 2, reads


def test_one_instance_of_every_service_down(stack: Stack, api: Api) -> None:
    """The first instance of every service killed (the gateways' first auth, whose revocation feed they read,
    among them): for longer than the revocation list may go stale, the stack keeps answering, and what was
    acknowledged meanwhile is in the audit trail once the instances are back."""
    token = api.token("sam")
    auditor = api.token("audra")
    first = [stack.instances(service)[0] for service in SERVICES]
    try:
        for instance in first:
            stack.kill(instance)
        time.sleep(6.5)  # past REVOCATION_MAX_STALENESS (5 s): a gateway stuck on one feed would now 503
        answers = [api.call("GET", "/v1/auth/me", token=token) for _ in range(10)]
        assert [a.status_code for a in answers] == [200] * 10, [(a.status_code, a.text[:80]) for a in answers]
        keys = api.call("GET", "/v1/keys?users=nobody", token=token)
        assert keys.status_code == 200, keys.text
    finally:
        for instance in first:
            if instance not in stack.processes:
                stack.start_service(instance)
        for instance in first:
            stack.wait_ready(instance, timeout=90)
    wanted = {a.headers["X-Request-ID"] for a in answers}
    deadline = time.monotonic() + 30
    found: set[str] = set()
    while time.monotonic() < deadline and found != wanted:
        for request_id in wanted - found:
            entries = api.call("GET", f"/v1/audit/entries?request_id={request_id}", token=auditor).json()
            if entries["entries"]:
                found.add(request_id)
        time.sleep(0.5)
    assert found == wanted


def test_break_glass_ends_on_time_on_every_gateway_and_closes_once(stack: Stack, api: Api,
                                                                    admin_token: str) -> None:
    patient_id, _, _ = _person(api, admin_token, "patient")
    channel = api.call("POST", "/v1/channels", token=api.token("dr-chen"),
                       json={"type": "patient-care", "members": [patient_id]})
    assert channel.status_code == 201, channel.text
    cid = channel.json()["cid"]
    _, username, password = _person(api, admin_token, "clinician")
    api.session(username, password)  # enrols TOTP: break-glass needs MFA
    token = api.session(username, password)["access_token"]
    opened = api.call("POST", "/v1/auth/break-glass", token=token,
                      json={"reason": "Covering the night shift, patient deteriorating",
                            "scope": {"channel_cid": cid}, "otp": api.otp(username)})
    assert opened.status_code == 201, opened.text
    bg_id, bg_token = opened.json()["break_glass_id"], opened.json()["access_token"]
    gateways = [stack.url(i) for i in stack.instances("gateway")]
    for url in gateways:
        assert requests.get(url + "/v1/channels/filter", headers={"Authorization": f"Bearer {bg_token}"},
                            timeout=10).status_code == 200
    expires = jwt.decode(bg_token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, expires - time.time()) + 1.0)
    for url in gateways:
        ended = requests.get(url + "/v1/channels/filter", headers={"Authorization": f"Bearer {bg_token}"},
                             timeout=10)
        assert ended.status_code == 401, ended.text
    deadline = time.monotonic() + 15
    item: dict[str, Any] = {}
    while time.monotonic() < deadline:
        item = next(b for b in api.call("GET", "/v1/break-glass", token=admin_token).json()["break_glass"]
                    if b["id"] == bg_id)
        if item["status"] == "closed":
            break
        time.sleep(0.5)
    assert item["status"] == "closed" and item["close_reason"] == "expired", item
    auditor = api.token("audra")
    time.sleep(2.0)  # every auth process's sweep has had its turn since the close
    closes = api.call("GET", f"/v1/audit/entries?action=auth.break_glass.close&resource={cid}",
                      token=auditor).json()["entries"]
    assert len(closes) == 1, closes
