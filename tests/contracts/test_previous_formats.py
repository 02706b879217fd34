"""Independent releases (issue 19, docs/CONTRACTS.md "Versions"): each service is held to the wire formats
of the previous minor release, recorded in tests/contracts/<release>.json by record.py on that release's
tree: what it wrote, this release must read; what this release writes, that release's readers must read.
No stack needed: the real readers and writers are called in process.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import jwt
import pytest
from safeharbor_common.audit_emitter import AuditEmitter
from safeharbor_common.errors import Unauthenticated
from safeharbor_common.revocation import RevocationList
from safeharbor_common.service_identity import (
    ServiceTokenSigner,
    ServiceTokenVerifier,
    load_private_key,
    parse_public_keys,
)
from safeharbor_protocol import checkpoint as cp
from safeharbor_protocol.keydir import open_checkpoint

HERE = Path(__file__).resolve().parent
PREVIOUS = "1.0"  # the release before this one; bump (and record the new one) at each minor release


@pytest.fixture(scope="module")
def previous() -> dict[str, Any]:
    return dict(json.loads((HERE / f"{PREVIOUS}.json").read_text()))


def _sign(claims: dict[str, Any], seed: str) -> str:
    now = int(time.time())
    return jwt.encode({**claims, "iat": now, "exp": now + 60}, load_private_key(seed), algorithm="EdDSA")


# -- service tokens -----------------------------------------------------------------------------------------


def test_a_previous_release_service_token_is_accepted(previous: dict[str, Any]) -> None:
    recorded = previous["service_token"]
    token = _sign(recorded["claims"], recorded["seed"])
    verifier = ServiceTokenVerifier(name="auth", trusted=parse_public_keys(f"gateway={recorded['public']}"))
    assert verifier.verify(token) == "gateway"


def test_this_release_service_token_reads_under_the_previous_reader(previous: dict[str, Any]) -> None:
    recorded = previous["service_token"]
    token = ServiceTokenSigner(name="gateway", private_key=load_private_key(recorded["seed"])).token_for("auth")
    claims = jwt.decode(token, parse_public_keys(f"gateway={recorded['public']}")["gateway"],
                        algorithms=[recorded["header"]["alg"]], audience="svc:auth", issuer="svc:gateway",
                        options={"require": recorded["reader_requires"]})
    for name, value in recorded["claims"].items():  # every claim the previous reader saw, of the same type
        assert type(claims[name]) is type(value), name
    assert claims["v"] == 1  # this release's tokens say their version


def test_a_service_token_of_an_unknown_version_is_refused(previous: dict[str, Any]) -> None:
    recorded = previous["service_token"]
    verifier = ServiceTokenVerifier(name="auth", trusted=parse_public_keys(f"gateway={recorded['public']}"))
    with pytest.raises(Unauthenticated, match="version"):
        verifier.verify(_sign({**recorded["claims"], "v": 2}, recorded["seed"]))


# -- revocation feed ----------------------------------------------------------------------------------------


@pytest.fixture
def previous_feed(previous: dict[str, Any]) -> Iterator[str]:
    from flask import Flask, jsonify
    from werkzeug.serving import make_server

    # The recorded answer with its times moved to now (same format): what is tested is the shape, and a
    # recorded `until` has long passed.
    body = json.loads(json.dumps(previous["revocation_feed"]))
    def moved(minutes: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + minutes * 60))

    for item in body["revoked"] + body["retired"]:
        item["until"] = moved(15)
    for item in body["retired"]:
        item["from"] = moved(0)
    app = Flask("previous-auth")
    app.add_url_rule("/internal/v1/revocations", "feed", lambda: jsonify(body))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/internal/v1/revocations"
    server.shutdown()


def test_a_previous_release_revocation_feed_is_read(previous: dict[str, Any], previous_feed: str) -> None:
    recorded = previous["service_token"]
    revocations = RevocationList(feed_url=previous_feed, signer=ServiceTokenSigner(
        name="gateway", private_key=load_private_key(recorded["seed"])))
    assert revocations.poll_once()
    ended = previous["revocation_feed"]["revoked"][0]["sid"]
    retired = previous["revocation_feed"]["retired"][0]
    assert revocations.refuses(sid=ended, jti="any")
    assert revocations.is_retired(retired["jti"])


def test_this_release_feed_keeps_every_key_the_previous_reader_reads(previous: dict[str, Any]) -> None:
    from datetime import UTC, datetime

    from safeharbor_auth.models import Base
    from safeharbor_auth.revocations import FEED_VERSION, feed
    from sqlalchemy import create_engine

    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    body = feed(engine, since_ms=0, leeway=5, now=datetime.now(UTC)).model_dump(mode="json", by_alias=True)
    engine.dispose()
    assert set(previous["revocation_feed"]) <= set(body)
    assert body["version"] == FEED_VERSION == 1
    assert isinstance(body["cursor"], str) and isinstance(body["revoked"], list)


# -- audit events -------------------------------------------------------------------------------------------


def test_previous_release_audit_events_are_ingested(previous: dict[str, Any]) -> None:
    from safeharbor_audit.schemas import AuditEventIn

    for event in previous["audit_events"]:
        AuditEventIn.model_validate(event)


def test_this_release_audit_events_fit_the_previous_ingest_schema(previous: dict[str, Any], tmp_path: Path) -> None:
    """audit-service's schema forbids unknown fields: an emitter that sent a new field before every audit
    instance accepted it would lose events. Readers first, writers a release later."""
    emitter = AuditEmitter(outbox_path=tmp_path / "outbox.db", source="auth", service_url=None)
    emitter.emit(action="auth.login.success", actor="u-1", role="clinician", outcome="success", request_id="r-1",
                 meta={"method": "password"})
    emitter.emit(action="gateway.request", actor="anonymous", outcome="401", severity="high", resource="/v1/x")
    rows = emitter._conn().execute("SELECT body FROM outbox ORDER BY rowid").fetchall()
    assert len(rows) == 2
    for (body,) in rows:
        jsonschema.validate(json.loads(body), previous["audit_ingest_schema"])


# -- checkpoints and controls --------------------------------------------------------------------------------


def test_previous_release_checkpoints_verify(previous: dict[str, Any]) -> None:
    audit = previous["checkpoints"]["audit"]
    assert cp.verify_checkpoint(audit["note"], audit["verifier_key"], origin=audit["origin"]).size == 3
    keydir = previous["checkpoints"]["keydir"]
    assert open_checkpoint(keydir["note"], keydir["verifier_key"]).size == 3


def test_a_previous_release_controls_document_is_read(previous: dict[str, Any]) -> None:
    """audit-service's reader of GET /internal/v1/compliance/controls takes the previous release's document."""
    from safeharbor_audit.compliance import _valid_control
    from safeharbor_common import compliance

    document = previous["compliance_controls"]
    assert document["version"] == compliance.CONTROLS_VERSION
    assert all(_valid_control(item, document["service"]) for item in document["controls"])
