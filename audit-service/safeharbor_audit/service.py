"""audit-service domain logic: keyword-only functions the thin views call."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
import zlib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from safeharbor_common.errors import InvalidRequest, NotFound, PayloadTooLarge
from safeharbor_common.translog import SignedCheckpoint
from safeharbor_protocol import merkle
from safeharbor_protocol.encoding import EncodingError, b64url_decode, b64url_encode, parse_decimal

from . import formats
from .errors import BadWebhookSignature
from .models import audit_entries
from .phi import PhiDecryptionError
from .schemas import (
    AuditEventIn,
    ConsistencyProofResponse,
    EntriesResponse,
    EntryOut,
    InclusionProofResponse,
    IngestResponse,
    RejectedEvent,
    WebhookResponse,
)
from .store import AppendResult, AuditLog, NewEvent, naive_utc
from .verify import VerifyReport

MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_WEBHOOK_BYTES = 4 * 1024 * 1024  # after decompression (a gzip bomb stops here)
WEBHOOK_NAMESPACE = uuid.UUID("6f1c52c4-8a6e-4d57-9d0b-5b8f0e2b3c41")
EXPORT_FORMATS = ("jsonl", "cef", "syslog")


# -- ingestion ------------------------------------------------------------------------------------


def ingest_events(*, log: AuditLog, events: list[Any], caller: str, max_events: int) -> IngestResponse:
    """Validates each event on its own; appends the valid ones in one group commit."""
    if len(events) > max_events:
        raise PayloadTooLarge(f"At most {max_events} events per batch.")
    valid: list[NewEvent] = []
    rejected: list[RejectedEvent] = []
    for index, raw in enumerate(events):
        event_id = raw.get("event_id") if isinstance(raw, dict) else None
        try:
            parsed = AuditEventIn.model_validate(raw)
        except ValidationError as exc:
            details = exc.errors()
            where = ".".join(str(p) for p in details[0]["loc"]) if details else "event"
            kind = details[0]["type"] if details else "invalid"
            # The reason names the field, never echoes its value (it might be PHI).
            rejected.append(
                RejectedEvent(index=index, event_id=str(event_id) if event_id else None, reason=f"{where}: {kind}")
            )
            continue
        if parsed.source != caller:
            rejected.append(
                RejectedEvent(index=index, event_id=parsed.event_id, reason="source: must be the calling service")
            )
            continue
        valid.append(_new_event(parsed))
    result = log.append(valid) if valid else AppendResult()
    return IngestResponse(accepted=result.accepted, duplicates=result.duplicates, rejected=rejected)


def _new_event(parsed: AuditEventIn) -> NewEvent:
    return NewEvent(
        event_id=parsed.event_id,
        ts=parsed.ts,
        source=parsed.source,
        actor=parsed.actor,
        role=parsed.role,
        action=parsed.action,
        resource=parsed.resource,
        outcome=parsed.outcome,
        request_id=parsed.request_id,
        severity=parsed.severity,
        ip=parsed.ip,
        user_agent=parsed.user_agent,
        meta=parsed.meta,
        phi=parsed.phi.model_dump() if parsed.phi is not None else None,
    )


# -- reading --------------------------------------------------------------------------------------


def _entry_document(log: AuditLog, canonical: bytes, entry_hash: bytes, reveal_phi: bool) -> dict[str, Any]:
    """An entry as auditors see it (EntryOut's fields), ip and user agent decrypted only when `reveal_phi`; as
    the plain JSON document the export's line formats take (an EntryOut per line would cost ~10 µs a line)."""
    stored = json.loads(canonical)
    envelope = stored.pop("phi", None)
    view: dict[str, Any] = {
        **stored,
        "hash": entry_hash.hex(),
        "ip": None,
        "user_agent": None,
        "phi_encrypted": envelope is not None and not reveal_phi,
    }
    if envelope is not None and reveal_phi:
        try:
            view.update(log.cipher.open(envelope, event_id=stored["event_id"]))
        except PhiDecryptionError:
            view["phi_encrypted"] = True  # key retired or entry tampered: verify will say which
    return view


def parse_time(value: str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRequest(f"Query parameter '{name}' must be an RFC 3339 time.", extra={"field": name}) from exc
    if parsed.tzinfo is None:
        raise InvalidRequest(f"Query parameter '{name}' needs a time zone.", extra={"field": name})
    return parsed.astimezone(UTC)


def parse_int(value: str | None, name: str, *, default: int | None = None, minimum: int = 0) -> int:
    if value is None or value == "":
        if default is None:
            raise InvalidRequest(f"Query parameter '{name}' is required.", extra={"field": name})
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise InvalidRequest(f"Query parameter '{name}' must be an integer.", extra={"field": name}) from exc
    if number < minimum:
        raise InvalidRequest(f"Query parameter '{name}' must be at least {minimum}.", extra={"field": name})
    return number


def encode_cursor(seq: int) -> str:
    return b64url_encode(f"s{seq}".encode("ascii"))


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return -1
    try:
        text = b64url_decode(cursor).decode("ascii")
        if not text.startswith("s"):
            raise ValueError(text)
        return int(text[1:])
    except (EncodingError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest("Query parameter 'cursor' is not valid.", extra={"field": "cursor"}) from exc


def _conditions(filters: Mapping[str, str | None], since: datetime | None, until: datetime | None) -> list[Any]:
    conditions: list[Any] = []
    for name in ("actor", "action", "resource", "outcome", "source", "request_id"):
        value = filters.get(name)
        if value:
            conditions.append(audit_entries.c[name] == value)
    if since is not None:
        conditions.append(audit_entries.c.ts >= naive_utc(since))
    if until is not None:
        conditions.append(audit_entries.c.ts < naive_utc(until))
    return conditions


def list_entries(
    *,
    log: AuditLog,
    filters: Mapping[str, str | None],
    since: datetime | None,
    until: datetime | None,
    cursor: str | None,
    limit: int,
    reveal_phi: bool,
) -> EntriesResponse:
    """One page in sequence order; `cursor` continues after the last entry returned."""
    limit = max(1, min(limit, MAX_PAGE))
    rows = log.entries_after(decode_cursor(cursor), limit + 1, _conditions(filters, since, until))
    more = len(rows) > limit
    rows = rows[:limit]
    entries = [_entry_document(log, bytes(r.canonical), bytes(r.hash), reveal_phi) for r in rows]
    next_cursor = encode_cursor(int(rows[-1].seq)) if more and rows else None
    try:
        # The page validated at once (a third cheaper than entry by entry); strict: nothing converted.
        return EntriesResponse.model_validate({"entries": entries, "cursor": next_cursor}, strict=True)
    except ValidationError:
        # An entry changed in the database (verify names it) no longer fits EntryOut: shown as stored, not a 500.
        return EntriesResponse(entries=[EntryOut.model_construct(**e) for e in entries], cursor=next_cursor)


def export_lines(
    *, log: AuditLog, fmt: str, since: datetime | None, until: datetime | None, reveal_phi: bool, hostname: str = "-"
) -> Iterator[str]:
    """Streams the matching entries as lines, a chunk of rows at a time, then a trailer line.

    Only entries inside one signed checkpoint are exported (one is signed now if the head moved past the
    latest), so the trailer can name the checkpoint every line is in; later entries are the next export's.
    """
    if fmt not in EXPORT_FORMATS:
        raise InvalidRequest("Query parameter 'format' must be jsonl, cef or syslog.", extra={"field": "format"})
    head = log.head()
    if int(head.size) != int(head.checkpoint_size):
        log.checkpoint_if_due(force=True)
    checkpoint = log.latest_checkpoint()
    conditions = [*_conditions({}, since, until), audit_entries.c.seq < int(checkpoint.size)]

    def generate() -> Iterator[str]:
        digest = hashlib.sha256()
        count, last_seq, after = 0, -1, -1
        while True:
            rows = log.entries_after(after, 1000, conditions)
            if not rows:
                break
            for row in rows:
                entry = _entry_document(log, bytes(row.canonical), bytes(row.hash), reveal_phi)
                if fmt == "jsonl":
                    line = formats.jsonl_line(entry)
                elif fmt == "cef":
                    line = formats.cef_line(entry)
                else:
                    line = formats.syslog_line(entry, hostname=hostname)
                digest.update(line.encode("utf-8"))
                count += 1
                yield line
            after = last_seq = int(rows[-1].seq)
        now = datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"
        yield formats.trailer_line(fmt, count=count, last_seq=last_seq, sha256_hex=digest.hexdigest(),
                                   checkpoint_note=str(checkpoint.note), ts=now, hostname=hostname)

    return generate()


def record_read(
    *,
    log: AuditLog,
    action: str,
    actor: str,
    role: str,
    resource: str,
    request_id: str | None,
    ip: str | None,
    user_agent: str | None,
    meta: Mapping[str, Any],
) -> None:
    """An auditor's read, recorded in the log itself (committed before the answer is sent)."""
    log.append([
        NewEvent(
            event_id=str(uuid.uuid4()),
            ts=datetime.now(UTC),
            source="audit",
            actor=actor[:512],
            role=role[:32],
            action=action,
            resource=resource[:512],
            outcome="success",
            request_id=request_id,
            ip=ip[:64] if ip else None,
            user_agent=user_agent,
            meta=dict(meta),
        )
    ])


# -- proofs and checkpoints -------------------------------------------------------------------------


def latest_checkpoint(*, log: AuditLog) -> SignedCheckpoint:
    return log.latest_checkpoint()


def inclusion_proof(*, log: AuditLog, index: int, size: int | None) -> InclusionProofResponse:
    head_size = int(log.head().size)
    tree_size = int(log.latest_checkpoint().size) if size is None else size
    if tree_size > head_size:
        raise NotFound("The log is not that large yet.")
    if index >= tree_size:
        raise InvalidRequest("Query parameter 'index' must be less than 'size'.", extra={"field": "index"})
    proof = merkle.inclusion_proof(index, tree_size, log.read_nodes)
    leaf = log.read_nodes([merkle.NodeID(0, index)])[merkle.NodeID(0, index)]
    return InclusionProofResponse(index=index, size=tree_size, leaf_hash=leaf.hex(), proof=[p.hex() for p in proof])


def consistency_proof(*, log: AuditLog, size1: int, size2: int) -> ConsistencyProofResponse:
    if size1 > size2:
        raise InvalidRequest("Query parameter 'from' must not exceed 'to'.", extra={"field": "from"})
    if size2 > int(log.head().size):
        raise NotFound("The log is not that large yet.")
    proof = merkle.consistency_proof(size1, size2, log.read_nodes)
    return ConsistencyProofResponse.model_validate({"from": size1, "to": size2, "proof": [p.hex() for p in proof]})


def verify_log(*, log: AuditLog) -> VerifyReport:
    return log.verify()


# -- Stream webhooks --------------------------------------------------------------------------------


def _decompress(body: bytes, encoding: str | None) -> bytes:
    if not encoding or encoding.lower() == "identity":
        return body
    if encoding.lower() not in ("gzip", "x-gzip"):
        raise InvalidRequest("Unsupported Content-Encoding.")
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, MAX_WEBHOOK_BYTES + 1)
    except zlib.error as exc:
        raise InvalidRequest("The gzip body is corrupt.") from exc
    if len(data) > MAX_WEBHOOK_BYTES or decompressor.unconsumed_tail:
        raise PayloadTooLarge()
    return data


def verify_stream_signature(*, body: bytes, signature: str | None, secret: str) -> None:
    """Stream signs the raw, uncompressed body: hex HMAC-SHA256 keyed with the API secret."""
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    if not signature or not hmac.compare_digest(
        expected.encode("ascii"), signature.strip().lower().encode("ascii", "replace")
    ):
        raise BadWebhookSignature()


def _ids_only(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What of a Stream event may be kept: ids, counts, types; never text, names or IPs."""
    meta: dict[str, Any] = {}
    for key in ("channel_type", "channel_id", "created_at", "parent_id"):
        value = payload.get(key)
        if isinstance(value, str | int):
            meta[key] = value
    message = payload.get("message")
    if isinstance(message, Mapping):
        if isinstance(message.get("id"), str):
            meta["message_id"] = message["id"]
        attachments = message.get("attachments")
        if isinstance(attachments, list):
            meta["attachment_count"] = len(attachments)
        if isinstance(message.get("type"), str):
            meta["message_type"] = message["type"]
    reaction = payload.get("reaction")
    if isinstance(reaction, Mapping) and isinstance(reaction.get("message_id"), str):
        meta["message_id"] = reaction["message_id"]
    member = payload.get("member")
    if isinstance(member, Mapping) and isinstance(member.get("user_id"), str):
        meta["member_user_id"] = member["user_id"]
    target = payload.get("target_user")
    if isinstance(target, Mapping) and isinstance(target.get("id"), str):
        meta["target_user_id"] = target["id"]
    members = payload.get("members")
    if isinstance(members, list):
        meta["member_count"] = len(members)
    # Read events (issue 16): who read which channel up to which message; nothing else of the reader.
    if payload.get("type") in ("message.read", "notification.mark_read"):
        user = payload.get("user")
        if isinstance(user, Mapping) and isinstance(user.get("id"), str):
            meta["reader_user_id"] = user["id"]
        if isinstance(payload.get("last_read_message_id"), str):
            meta["last_read_message_id"] = payload["last_read_message_id"]
    return meta


def record_stream_webhook(
    *,
    log: AuditLog,
    raw_body: bytes,
    content_encoding: str | None,
    signature: str | None,
    webhook_id: str | None,
    attempt: str | None,
    secret: str,
    request_id: str | None,
) -> WebhookResponse:
    """Verifies and records one Stream webhook, once per signed body (so once per X-Webhook-Id too)."""
    body = _decompress(raw_body, content_encoding)
    verify_stream_signature(body=body, signature=signature, secret=secret)
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise InvalidRequest("The webhook body is not JSON.") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise InvalidRequest("The webhook has no event type.")
    body_sha256 = hashlib.sha256(body).hexdigest()
    delivery_id = webhook_id.strip() if webhook_id and webhook_id.strip() else "body:" + body_sha256
    # The event id comes from the signed body's hash, not from X-Webhook-Id (which the signature does not
    # cover): Stream's retries resend the same body under the same id, and a captured delivery replayed
    # under a fresh id is the same body too. The log's unique event id makes either a no-op.
    event_id = str(uuid.uuid5(WEBHOOK_NAMESPACE, "stream-webhook-body:" + body_sha256))
    event_type = "".join(c if c.isalnum() or c in "._-" else "_" for c in payload["type"].lower())[:100]
    user = payload.get("user")
    actor = f"stream:{user['id']}" if isinstance(user, Mapping) and isinstance(user.get("id"), str) else "svc:stream"
    info = payload.get("request_info")
    request_info: Mapping[str, Any] = info if isinstance(info, Mapping) else {}
    meta = _ids_only(payload)
    meta.update({"webhook_id": delivery_id[:128], "body_sha256": body_sha256})
    attempt_number = parse_decimal(attempt, max_digits=9) if attempt else None
    if attempt_number is not None:
        meta["attempt"] = attempt_number
    cid = payload.get("cid")
    event = NewEvent(
        event_id=event_id,
        ts=datetime.now(UTC),
        source="stream",
        actor=actor[:512],
        action=f"stream.{event_type}",
        resource=cid[:512] if isinstance(cid, str) else None,
        outcome="success",
        request_id=request_id,
        severity="high" if event_type in ("message.flagged", "user.flagged", "user.banned") else "info",
        # Encrypted at rest like every PHI-bearing field; never stored in clear.
        ip=str(request_info.get("ip"))[:64] if request_info.get("ip") else None,
        user_agent=str(request_info.get("user_agent"))[:512] if request_info.get("user_agent") else None,
        meta=meta,
    )
    result = log.append([event])
    return WebhookResponse(ok=True, duplicate=result.accepted == 0)
