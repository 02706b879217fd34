"""The audit trail end to end: gateway events, proofs against signed checkpoints, Stream webhooks."""
from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import pytest
from conftest import Api
from safeharbor_devstack import Stack
from safeharbor_protocol import checkpoint as cp
from safeharbor_protocol import merkle


def _wait_for_entries(api: Api, token: str, query: str, count: int = 1, timeout: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        response = api.call("GET", f"/v1/audit/entries?{query}", token=token)
        assert response.status_code == 200, response.text
        entries = list(response.json()["entries"])
        if len(entries) >= count or time.monotonic() > deadline:
            return entries
        time.sleep(0.2)


def test_gateway_request_is_audited_with_its_request_id(api: Api) -> None:
    auditor = api.token("audra")
    request = api.call("GET", "/v1/auth/me", token=api.token("sam"), headers={"User-Agent": "it-agent/1"})
    assert request.status_code == 200
    request_id = request.headers["X-Request-ID"]
    [entry] = _wait_for_entries(api, auditor, f"request_id={request_id}")
    assert entry["source"] == "gateway" and entry["outcome"] == "200"
    assert entry["user_agent"] == "it-agent/1"  # auditors see PHI fields decrypted
    admin_view = api.call("GET", f"/v1/audit/entries?request_id={request_id}", token=api.token("admin")).json()
    assert admin_view["entries"][0]["user_agent"] is None  # admins don't
    assert api.call("GET", "/v1/audit/entries", token=api.token("pat")).status_code == 403


def test_entry_is_provably_in_a_signed_checkpoint(api: Api) -> None:
    auditor = api.token("audra")
    marker = api.call("GET", "/v1/auth/me", token=api.token("sam")).headers["X-Request-ID"]
    [entry] = _wait_for_entries(api, auditor, f"request_id={marker}")
    key = api.call("GET", "/v1/audit/checkpoint/key", token=auditor).text.strip()
    deadline = time.monotonic() + 15
    while True:
        note = api.call("GET", "/v1/audit/checkpoint", token=auditor).text
        checkpoint = cp.verify_checkpoint(note, key, origin="safeharbor.example/audit")
        if checkpoint.size > entry["seq"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert checkpoint.size > entry["seq"]
    proof = api.call("GET", f"/v1/audit/proof/inclusion?index={entry['seq']}&size={checkpoint.size}",
                     token=auditor).json()
    leaf = merkle.leaf_hash(bytes.fromhex(entry["hash"]))
    merkle.verify_inclusion(leaf, entry["seq"], checkpoint.size, [bytes.fromhex(p) for p in proof["proof"]],
                            checkpoint.root)
    report = api.call("GET", "/v1/audit/verify", token=auditor).json()
    assert report["ok"] is True and report["first_bad_seq"] is None


@pytest.mark.stack_secrets
def test_stream_webhook_signature_and_replay(api: Api, stack: Stack) -> None:
    secret = stack.settings.secrets["STREAM_API_SECRET"]
    cid = f"clinical:it-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"type": "message.new", "cid": cid, "user": {"id": "dr-chen"},
                       "message": {"id": "m-1", "text": "Private clinical note"}}).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Webhook-Id": uuid.uuid4().hex}
    bad = api.call("POST", "/v1/webhooks/stream", data=body, headers={**headers, "X-Signature": "0" * 64})
    assert bad.status_code == 422
    for _ in range(2):
        ok = api.call("POST", "/v1/webhooks/stream", data=body, headers={**headers, "X-Signature": signature})
        assert ok.status_code == 200, ok.text
    entries = _wait_for_entries(api, api.token("audra"), f"action=stream.message.new&resource={cid}")
    assert len(entries) == 1
    assert "Private clinical note" not in json.dumps(entries)


def test_auditor_reads_are_audited_by_the_log_itself(api: Api) -> None:
    auditor = api.token("audra")
    read = api.call("GET", "/v1/audit/verify", token=auditor)
    assert read.status_code == 200 and read.json()["ok"] is True
    entries = _wait_for_entries(api, auditor, f"request_id={read.headers['X-Request-ID']}&action=audit.read.verify")
    assert entries[0]["source"] == "audit" and entries[0]["role"] == "auditor"
    assert entries[0]["meta"]["ok"] is True
