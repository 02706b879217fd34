"""Records the wire formats of this release into tests/contracts/<release>.json (docs/CONTRACTS.md "Versions").

    .venv/bin/python tests/contracts/record.py 1.x

Run once per minor release, on that release's tree, and commit the file: the next release's contract tests
(test_previous_formats.py) hold every service to it. What is recorded: messages as this release's writers
produce them (a service token's claims, a revocation feed answer, audit events in both PHI forms, signed
audit and keydir checkpoints with their verifier keys, a compliance controls document) and what this
release's readers require (the service token claims checked, the audit ingest schema). The keys in it are
made for the recording and sign nothing else.
"""
from __future__ import annotations

import json
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from safeharbor_common import compliance
from safeharbor_common.audit_emitter import AuditEmitter
from safeharbor_common.service_identity import ServiceTokenSigner, generate_keypair, load_private_key
from safeharbor_protocol import checkpoint as cp
from safeharbor_protocol import merkle
from safeharbor_protocol.encoding import b64url_decode

HERE = Path(__file__).resolve().parent


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record() -> dict[str, Any]:
    seed, public = generate_keypair()
    token = ServiceTokenSigner(name="gateway", private_key=load_private_key(seed)).token_for("auth")
    now = datetime.now(UTC)
    return {
        "service_token": {
            "seed": seed, "public": public,
            "claims": jwt.decode(token, options={"verify_signature": False}),
            "header": jwt.get_unverified_header(token),
            "reader_requires": ["iss", "sub", "aud", "exp", "iat", "jti"],
        },
        "revocation_feed": {
            "revoked": [{"sid": "sess-" + uuid.uuid4().hex[:12], "until": rfc3339(now + timedelta(minutes=15))}],
            "retired": [{"jti": uuid.uuid4().hex, "sid": "sess-" + uuid.uuid4().hex[:12], "from": rfc3339(now),
                         "until": rfc3339(now + timedelta(minutes=15))}],
            "cursor": str(int(now.timestamp() * 1000)),
        },
        "audit_events": _events(),
        "audit_ingest_schema": _ingest_schema(),
        "checkpoints": {"audit": _note("safeharbor.example/audit", "safeharbor-audit"),
                        "keydir": _note("safeharbor.example/keys", "safeharbor-keydir")},
        "compliance_controls": {"service": "keydir", "version": compliance.CONTROLS_VERSION, "controls": [
            {"id": "keydir.log_verifies", "status": "pass", "measured_at": rfc3339(now), "evidence": {"size": 3}}]},
    }


def _events() -> list[dict[str, Any]]:
    """This release's emitter output, read back from its outbox: clear PHI fields (as accepted) and none."""
    with tempfile.TemporaryDirectory() as folder:
        emitter = AuditEmitter(outbox_path=Path(folder) / "outbox.db", source="auth", service_url=None)
        emitter.emit(action="auth.login.success", actor="u-1", role="clinician", outcome="success",
                     request_id="r-1", meta={"method": "password"})
        emitter.emit(action="gateway.request", actor="anonymous", outcome="401", severity="high", resource="/v1/x")
        rows = emitter._conn().execute("SELECT body FROM outbox ORDER BY rowid").fetchall()
    return [json.loads(body) for (body,) in rows]


def _ingest_schema() -> dict[str, Any]:
    from safeharbor_audit.schemas import AuditEventIn

    return dict(AuditEventIn.model_json_schema())


def _note(origin: str, key_name: str) -> dict[str, str]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.from_private_bytes(b64url_decode(generate_keypair()[0]))
    leaves = [merkle.leaf_hash(f"leaf-{i}".encode()) for i in range(3)]
    tree = merkle.CompactRange()
    for leaf in leaves:
        tree.append(leaf)
    note = cp.sign_checkpoint(origin, tree.size, tree.root(), key_name=key_name, private_key=private)
    return {"origin": origin, "note": note, "verifier_key": cp.verifier_key_string(key_name,
                                                                                   private.public_key())}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: record.py <release, e.g. 1.4>")
    path = HERE / f"{sys.argv[1]}.json"
    path.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")
    print(f"recorded {path}")
