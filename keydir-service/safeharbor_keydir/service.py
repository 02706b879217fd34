"""Domain logic of the key directory: registration (compare-and-swap on version), lookup, history,
revocation, change feed, per-user monitoring, encrypted key backups. Keyword-only functions; views stay thin.

Decisions (see also README.md):
- Versions are per (user, device). A device's first record is version 1; each rotation is current + 1,
  links to the previous record's hash and is co-signed by the previous signing key.
- `created_at` is signed by the client, must be within KEYDIR_CLOCK_SKEW_SECONDS of server time and later
  than the previous version's; it starts the record's validity, which ends at the next version's
  `created_at` or at the revocation's `revoked_at`. So validity intervals follow from log data alone.
- A revoked device id is retired: it takes no further versions (its key may be in a thief's hands).
- Revocation is a leaf signed by the log's key; revoking twice returns the first revocation.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from safeharbor_common.errors import InvalidRequest
from safeharbor_common.translog import bulk_insert
from safeharbor_protocol import keyrecords as records
from safeharbor_protocol.encoding import EncodingError, b64url_decode, b64url_encode, parse_decimal
from sqlalchemy import Connection, Select, Table, Text, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import schemas
from .errors import (
    BackupNotFound,
    BackupReadsLimited,
    BackupTooLarge,
    DeviceNotFound,
    DeviceRevoked,
    InvalidKeyRecord,
    KeyReused,
    NotYourKeys,
    TooManyDevices,
    UserKeysNotFound,
    VersionConflict,
)
from .log import Appender, LeafBatch, TransparencyLog, is_refused_row, utc_now_naive
from .models import BackupRead, Device, KeyBackup, KeyRecord, LogLeaf
from .schemas import (
    USER_ID_RE,
    BackupCreate,
    BackupStored,
    ChangesResponse,
    ConsistencyProofResponse,
    HistoryResponse,
    KeyRecordCreate,
    LeavesResponse,
    LogLeafEntry,
    UserAuditResponse,
)

MAX_CHANGES_PAGE = 1000
MAX_AUDIT_PAGE = 500
MAX_LEAVES_PAGE = 1000
BACKUP_READ_WINDOW_SECONDS = 3600


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@dataclass(frozen=True)
class Published:
    """What a write returns: the leaf, where it sits, and the checkpoint that covers it."""

    leaf: dict[str, Any]
    leaf_index: int
    inclusion_proof: list[str]
    checkpoint: str
    tree_size: int


def _publish(log: TransparencyLog, leaf: dict[str, Any], leaf_index: int) -> Published:
    checkpoint = log.latest_checkpoint()
    proof = log.inclusion_proofs([leaf_index], checkpoint.size)[leaf_index]
    return Published(leaf, leaf_index, proof, checkpoint.note, checkpoint.size)


def _leaf_object(session: Session, leaf_index: int) -> dict[str, Any]:
    data = session.scalar(select(LogLeaf.data).where(LogLeaf.leaf_index == leaf_index))
    if data is None:
        raise InvalidKeyRecord("The previous version is missing from the log.")
    return dict(json.loads(bytes(data)))


# -- registration -----------------------------------------------------------------------------------


def register_key(
    *,
    log: TransparencyLog,
    body: KeyRecordCreate,
    caller: str,
    now: datetime,
    clock_skew_seconds: int,
    max_devices: int,
) -> tuple[Published, bool]:
    """Publishes the caller's signed record; returns it and whether it was a rotation."""
    if body.user_id is not None and body.user_id != caller:
        raise NotYourKeys()
    record: dict[str, Any] = {
        "user_id": caller,
        "device_id": body.device_id,
        "version": body.version,
        "enc_pub": body.enc_pub,
        "sig_pub": body.sig_pub,
        "created_at": body.created_at,
        "prev_hash": body.prev_hash,
        "signature": body.signature,
    }
    for optional in ("rotation_signature", "pq_pub", "pq_signature"):
        if getattr(body, optional) is not None:
            record[optional] = getattr(body, optional)
    # Checks that need no database run before the log lock is taken.
    try:
        created = records.parse_time(body.created_at)
        records.check_x25519_public(body.enc_pub)
        records.verify_self_signature(record)
        records.verify_pq_extension(record)
    except records.RecordError as exc:
        raise InvalidKeyRecord(f"Key record refused: {exc}.") from exc
    if abs((created - now).total_seconds()) > clock_skew_seconds:
        raise InvalidKeyRecord(f"created_at must be within {clock_skew_seconds} s of the server's time.")
    if body.version == 1 and (body.prev_hash != "" or body.rotation_signature is not None):
        raise InvalidKeyRecord("Version 1 has an empty prev_hash and no rotation_signature.")

    # Group commit: concurrent registrations of this process are decided together, in one sequencer
    # transaction and commit (see _register_batch); this one is answered only after that commit.
    try:
        grouped = log.batched(_register_batch, _Registration(
            record, created, max_devices, data=records.leaf_data(record), record_hash=records.record_hash(record)))
    except Exception as exc:
        if not is_refused_row(exc):
            raise
        # Belt and braces: the unique (user, device, version) constraint, should the lock ever be bypassed.
        raise VersionConflict(current_version=body.version - 1) from exc
    published = Published(record, grouped.leaf_index, grouped.proof, grouped.checkpoint.note,
                          grouped.checkpoint.size)
    return published, body.version > 1


@dataclass(frozen=True)
class _Registration:
    """A record that passed every check needing no database, queued for its batch."""

    record: dict[str, Any]
    created: datetime
    max_devices: int
    # Made before the log lock is taken: the leaf (the record's canonical JSON) and the record's hash.
    data: bytes
    record_hash: str


@dataclass
class _DeviceState:
    version: int
    leaf_index: int
    revoked: bool
    record: dict[str, Any] | None = None  # the current record, once read or registered in this batch


_KEY_RECORD_COLUMNS = ("user_id", "device_id", "version", "enc_pub", "sig_pub", "created_at", "record_hash",
                       "leaf_index")
_DEVICE_COLUMNS = ("user_id", "device_id", "current_version", "current_leaf_index")
# A batch's statements, built once (building and caching a statement costs more than running it).
_USERS_DEVICES = select(
    Device.user_id, Device.device_id, Device.current_version, Device.current_leaf_index, Device.revoked_at
).where(Device.user_id.in_(bindparam("user_ids", expanding=True)))
_KEY_OWNERS = select(KeyRecord.user_id, KeyRecord.sig_pub, KeyRecord.enc_pub).distinct().where(
    KeyRecord.sig_pub.in_(bindparam("sig_pubs", expanding=True))
    | KeyRecord.enc_pub.in_(bindparam("enc_pubs", expanding=True))
)
_LEAVES_DATA = select(LogLeaf.leaf_index, LogLeaf.data).where(
    LogLeaf.leaf_index.in_(bindparam("leaf_indexes", expanding=True))
)
_DEVICE_UPDATE = (
    update(Device)
    .where(Device.user_id == bindparam("b_user_id"), Device.device_id == bindparam("b_device_id"))
    .values(current_version=bindparam("b_version"), current_leaf_index=bindparam("b_leaf_index"))
)


def _register_batch(batch: LeafBatch, items: list[_Registration]) -> list[int | Exception]:
    """Decides a batch of registrations under the log lock, each as if registered alone in queue order
    (each sees the ones before it). The database is read once for the whole batch (the users' devices, the
    rotated devices' current records, who already published the batch's public keys), the decisions are
    made in memory, and the accepted rows are written with one COPY / executemany per table."""
    conn = batch.conn
    devices: dict[tuple[str, str], _DeviceState] = {}
    active: dict[str, int] = defaultdict(int)
    user_ids = sorted({item.record["user_id"] for item in items})
    for user_id, device_id, version, leaf_index, revoked_at in conn.execute(_USERS_DEVICES, {"user_ids": user_ids}):
        devices[(user_id, device_id)] = _DeviceState(int(version), int(leaf_index), revoked_at is not None)
        active[user_id] += revoked_at is None
    _read_current_records(conn, [devices[key] for key in {_device_key(item) for item in items} if key in devices])
    sig_owners: dict[str, set[str]] = defaultdict(set)
    enc_owners: dict[str, set[str]] = defaultdict(set)
    for user_id, sig_pub, enc_pub in conn.execute(_KEY_OWNERS, {
        "sig_pubs": sorted({item.record["sig_pub"] for item in items}),
        "enc_pubs": sorted({item.record["enc_pub"] for item in items}),
    }):
        sig_owners[sig_pub].add(user_id)
        enc_owners[enc_pub].add(user_id)

    outcomes: list[int | Exception] = []
    key_rows: list[tuple[Any, ...]] = []
    new_devices: set[tuple[str, str]] = set()
    for item in items:
        try:
            state = _decide(item, devices.get(_device_key(item)), active, sig_owners, enc_owners)
        except Exception as exc:  # noqa: BLE001 - this registration's refusal (or failure) only
            outcomes.append(exc)
            continue
        record = item.record
        user_id, device_id, version = record["user_id"], record["device_id"], record["version"]
        leaf_index = batch.append(kind=records.KEY_LEAF, user_id=user_id, device_id=device_id, version=version,
                                  data=item.data)
        key_rows.append((user_id, device_id, version, record["enc_pub"], record["sig_pub"], _naive(item.created),
                         item.record_hash, leaf_index))
        if state is None:
            new_devices.add((user_id, device_id))
            devices[(user_id, device_id)] = state = _DeviceState(version, leaf_index, False)
            active[user_id] += 1
        state.version, state.leaf_index, state.record = version, leaf_index, record
        sig_owners[record["sig_pub"]].add(user_id)
        enc_owners[record["enc_pub"]].add(user_id)
        outcomes.append(leaf_index)

    _write_rows(conn, KeyRecord.__table__, _KEY_RECORD_COLUMNS, key_rows)  # type: ignore[arg-type]
    changed = {(row[0], row[1]) for row in key_rows}
    _write_rows(conn, Device.__table__, _DEVICE_COLUMNS,  # type: ignore[arg-type]
                [(u, d, devices[(u, d)].version, devices[(u, d)].leaf_index) for u, d in sorted(new_devices)])
    rotated = [
        {"b_user_id": u, "b_device_id": d, "b_version": devices[(u, d)].version,
         "b_leaf_index": devices[(u, d)].leaf_index}
        for u, d in sorted(changed - new_devices)
    ]
    if rotated:
        conn.execute(_DEVICE_UPDATE, rotated)
    return outcomes


def _write_rows(conn: Connection, table: Table, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    if rows:
        with bulk_insert(conn, table, columns) as write:
            for row in rows:
                write(row)


def _device_key(item: _Registration) -> tuple[str, str]:
    return item.record["user_id"], item.record["device_id"]


def _read_current_records(conn: Connection, states: list[_DeviceState]) -> None:
    """The current record of each device (the previous version of a rotation), in one read."""
    wanted = {state.leaf_index: state for state in states if not state.revoked}
    if not wanted:
        return
    for leaf_index, data in conn.execute(_LEAVES_DATA, {"leaf_indexes": sorted(wanted)}):
        wanted[int(leaf_index)].record = dict(json.loads(bytes(data)))


def _decide(
    item: _Registration,
    device: _DeviceState | None,
    active: Mapping[str, int],
    sig_owners: Mapping[str, set[str]],
    enc_owners: Mapping[str, set[str]],
) -> _DeviceState | None:
    """The rules of one registration against the batch's state as it stands; the device's state (None for a
    new device) when accepted, the refusal otherwise."""
    record = item.record
    user_id, version = record["user_id"], record["version"]
    previous: dict[str, Any] | None = None
    if device is None:
        if version != 1:
            raise VersionConflict(current_version=0)
        if active[user_id] >= item.max_devices:
            raise TooManyDevices()
    else:
        if device.revoked:
            raise DeviceRevoked()
        if version != device.version + 1:
            raise VersionConflict(current_version=device.version)
        if device.record is None:
            raise InvalidKeyRecord("The previous version is missing from the log.")
        previous = device.record
    try:
        records.verify_link(record, previous)
    except records.RecordError as exc:
        raise InvalidKeyRecord(f"Key record refused: {exc}.") from exc
    if previous is not None and item.created <= records.parse_time(previous["created_at"]):
        raise InvalidKeyRecord("created_at must be later than the previous version's.")
    if sig_owners.get(record["sig_pub"], set()) - {user_id} or enc_owners.get(record["enc_pub"], set()) - {user_id}:
        raise KeyReused()
    return device


# -- lookups ----------------------------------------------------------------------------------------


def parse_user_list(text: str | None, *, maximum: int) -> list[str]:
    if not text:
        raise InvalidRequest(
            "Query parameter 'users' is required (comma-separated user ids).", extra={"field": "users"}
        )
    users = list(dict.fromkeys(u.strip() for u in text.split(",") if u.strip()))
    if not users:
        raise InvalidRequest("Query parameter 'users' names no user.", extra={"field": "users"})
    if len(users) > maximum:
        raise InvalidRequest(f"At most {maximum} users per lookup.", extra={"field": "users"})
    return users


_DEVICES, _LEAVES = Device.__table__, LogLeaf.__table__


def _lookup_records(*, arrays: bool) -> Select[Any]:
    """A lookup's records, on the tables (no ORM entities to compile). On PostgreSQL the user ids are one
    array parameter joined as a table, not a hundred parameters rendered anew per lookup; once the driver
    prepares the statement, its generic plan joins them by hash or by the devices' primary key, where
    `user_id = ANY(?)` would compare each device row with the whole array."""
    columns = (_DEVICES.c.user_id, _DEVICES.c.device_id, _DEVICES.c.revoked_at, _LEAVES.c.leaf_index,
               _LEAVES.c.data)
    current = _LEAVES.c.leaf_index == _DEVICES.c.current_leaf_index
    if not arrays:
        return select(*columns).join_from(_DEVICES, _LEAVES, current).where(
            _DEVICES.c.user_id.in_(bindparam("user_ids", expanding=True)))
    wanted = func.unnest(bindparam("user_ids", type_=ARRAY(Text))).table_valued("user_id").render_derived("wanted")
    return select(*columns).select_from(
        wanted.join(_DEVICES, _DEVICES.c.user_id == wanted.c.user_id).join(_LEAVES, current))


_LOOKUP_RECORDS = {arrays: _lookup_records(arrays=arrays) for arrays in (False, True)}  # built once
_MALFORMED = {"code": "invalid_request", "message": "Malformed user id."}
_NO_KEYS = {"code": "not_found", "message": "No keys are published for this user."}


def lookup_users(*, log: TransparencyLog, user_ids: Sequence[str]) -> dict[str, Any]:
    """Current records of each device of each user; a per-user error never fails the batch.

    The answer is built as the JSON it becomes (no model to validate ~100 records and ~1,000 proof hashes
    again): each record is its leaf's own JSON, each proof node's hex is made once however many paths
    share it; `LookupResponse` is the published schema of this dict."""
    valid = [u for u in dict.fromkeys(user_ids) if USER_ID_RE.match(u)]
    found: dict[str, list[tuple[str, int, bytes]]] = {}
    # One connection, three statements: the records, the checkpoint, the proofs' nodes.
    with log.reading() as conn:
        if valid:
            query = _LOOKUP_RECORDS[conn.dialect.name == "postgresql"]
            for user_id, device_id, revoked_at, leaf_index, data in conn.execute(query, {"user_ids": valid}).all():
                devices = found.setdefault(user_id, [])
                if revoked_at is None:
                    devices.append((device_id, leaf_index, data))
        # Read after the records: it was committed with them, so it covers every leaf read above.
        checkpoint = log.latest_checkpoint(conn=conn)
        proofs = log.inclusion_proofs([i for devices in found.values() for _, i, _ in devices], checkpoint.size,
                                      conn=conn)
    results: dict[str, Any] = {}
    for user_id in user_ids:
        current = found.get(user_id)
        if current is None:
            error = _NO_KEYS if USER_ID_RE.match(user_id) else _MALFORMED
            results[user_id] = {"error": dict(error)}
        else:
            current.sort()
            results[user_id] = {
                "devices": [
                    {"record": json.loads(data.decode()), "leaf_index": index, "inclusion_proof": proofs[index]}
                    for _, index, data in current
                ]
            }
    return {"results": results, "checkpoint": checkpoint.note, "tree_size": checkpoint.size}


def history(*, log: TransparencyLog, user_id: str, at: datetime | None) -> HistoryResponse:
    """Every version of every device with its validity interval; with `at`, the ones valid then."""
    with log.engine.connect() as conn:
        rows = list(
            conn.execute(
                select(LogLeaf.leaf_index, LogLeaf.kind, LogLeaf.device_id, LogLeaf.version, LogLeaf.data)
                .where(LogLeaf.user_id == user_id)
                .order_by(LogLeaf.leaf_index)
            )
        )
    if not rows:
        raise UserKeysNotFound()
    checkpoint = log.latest_checkpoint()
    keys: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    revocations: dict[tuple[str, int], tuple[int, dict[str, Any]]] = {}
    for leaf_index, kind, device_id, version, data in rows:
        leaf = json.loads(bytes(data))
        if kind == records.REVOCATION_LEAF:
            revocations[(device_id, int(version))] = (int(leaf_index), leaf)
        else:
            keys[device_id].append((int(leaf_index), leaf))
    entries: list[dict[str, Any]] = []
    for device_id in sorted(keys):
        versions = sorted(keys[device_id], key=lambda item: item[1]["version"])
        for position, (leaf_index, record) in enumerate(versions):
            revocation = revocations.get((device_id, record["version"]))
            if position + 1 < len(versions):
                valid_until: str | None = versions[position + 1][1]["created_at"]
            elif revocation is not None:
                valid_until = revocation[1]["revoked_at"]
            else:
                valid_until = None
            entries.append(
                {
                    "record": record,
                    "leaf_index": leaf_index,
                    "valid_from": record["created_at"],
                    "valid_until": valid_until,
                    "revoked": revocation is not None,
                    "revoked_at": revocation[1]["revoked_at"] if revocation else None,
                    "revocation_reason": revocation[1]["reason"] if revocation else None,
                    "revocation_leaf_index": revocation[0] if revocation else None,
                }
            )
    if at is not None:
        entries = [e for e in entries if _valid_at(e, at)]
    proofs = log.inclusion_proofs([e["leaf_index"] for e in entries], checkpoint.size)
    for entry in entries:
        entry["inclusion_proof"] = proofs[entry["leaf_index"]]
    return HistoryResponse.model_validate({
        "user_id": user_id,
        "at": records.format_time(at) if at is not None else None,
        "history": entries,
        "checkpoint": checkpoint.note,
        "tree_size": checkpoint.size,
    })


def _valid_at(entry: Mapping[str, Any], at: datetime) -> bool:
    start = records.parse_time(entry["valid_from"])
    end = records.parse_time(entry["valid_until"]) if entry["valid_until"] else None
    return start <= at and (end is None or at < end)


# -- revocation -------------------------------------------------------------------------------------


def revoke_device(
    *, log: TransparencyLog, user_id: str, device_id: str, reason: str, revoked_by: str
) -> tuple[Published, bool]:
    """Appends a revocation leaf for the device's current key; returns it and whether it is new."""
    with log.sequencer() as appender:
        device = appender.session.get(Device, (user_id, device_id))
        if device is None:
            raise DeviceNotFound()
        if device.revoked_at is not None and device.revocation_leaf_index is not None:
            leaf_index = device.revocation_leaf_index
            leaf = _leaf_object(appender.session, leaf_index)
            is_new = False
        else:
            leaf_index, leaf = _revoke_locked(appender, device, reason=reason, revoked_by=revoked_by)
            is_new = True
    return _publish(log, leaf, leaf_index), is_new


def revoke_all(*, log: TransparencyLog, user_id: str, reason: str, revoked_by: str) -> list[int]:
    """Deprovisioning: revokes every active device of the user in one transaction; leaf indexes."""
    with log.sequencer() as appender:
        devices = appender.session.scalars(
            select(Device)
            .where(Device.user_id == user_id, Device.revoked_at.is_(None))
            .order_by(Device.device_id)
        ).all()
        return [_revoke_locked(appender, d, reason=reason, revoked_by=revoked_by)[0] for d in devices]


def _revoke_locked(
    appender: Appender, device: Device, *, reason: str, revoked_by: str
) -> tuple[int, dict[str, Any]]:
    record = _leaf_object(appender.session, device.current_leaf_index)
    now = utc_now_naive()
    body = records.revocation_body(
        record, revoked_at=records.format_time(now.replace(tzinfo=UTC)), reason=reason, revoked_by=revoked_by
    )
    # The log, not the user, signs a revocation: admins and deprovisioning revoke lost keys too.
    leaf = records.sign_revocation(body, appender.signing_key)
    leaf_index = appender.append(
        kind=records.REVOCATION_LEAF,
        user_id=device.user_id,
        device_id=device.device_id,
        version=device.current_version,
        data=records.leaf_data(leaf),
    )
    device.revoked_at = now
    device.revocation_leaf_index = leaf_index
    return leaf_index, leaf


# -- change feed and monitoring ---------------------------------------------------------------------


def parse_cursor(text: str | None, name: str) -> int:
    if text is None or text == "":
        return 0
    cursor = parse_decimal(text, max_digits=18)
    if cursor is None:
        raise InvalidRequest(
            f"Query parameter '{name}' must be a cursor from an earlier answer.", extra={"field": name}
        )
    return cursor


def changes(*, log: TransparencyLog, since: int, limit: int = MAX_CHANGES_PAGE) -> ChangesResponse:
    """Users whose keys changed at or after `since` (a log position); the cursor is the next position."""
    size = log.head_size()
    if since > size:
        # The client is ahead of the log (e.g. a restored database): start over with a full refresh.
        return ChangesResponse(users=[], cursor=str(size), reset=True)
    with log.engine.connect() as conn:
        rows = list(
            conn.execute(
                select(LogLeaf.leaf_index, LogLeaf.user_id)
                .where(LogLeaf.leaf_index >= since)
                .order_by(LogLeaf.leaf_index)
                .limit(limit)
            )
        )
    users = list(dict.fromkeys(str(u) for _, u in rows))
    cursor = int(rows[-1][0]) + 1 if rows else since
    return ChangesResponse(users=users, cursor=str(cursor), more=len(rows) == limit)


def user_audit(*, log: TransparencyLog, user_id: str, after: int, limit: int = MAX_AUDIT_PAGE) -> UserAuditResponse:
    """Every leaf ever published for the user (keys and revocations), with proofs: to catch a key the
    user did not make."""
    with log.engine.connect() as conn:
        rows = list(
            conn.execute(
                select(LogLeaf.leaf_index, LogLeaf.kind, LogLeaf.data, LogLeaf.appended_at)
                .where(LogLeaf.user_id == user_id, LogLeaf.leaf_index >= after)
                .order_by(LogLeaf.leaf_index)
                .limit(limit)
            )
        )
    checkpoint = log.latest_checkpoint()
    proofs = log.inclusion_proofs([int(r[0]) for r in rows], checkpoint.size)
    leaves = [
        {
            "leaf_index": int(index),
            "kind": kind,
            "record": json.loads(bytes(data)),
            "inclusion_proof": proofs[int(index)],
            "appended_at": records.format_time(_aware(appended_at)),
        }
        for index, kind, data, appended_at in rows
    ]
    return UserAuditResponse.model_validate({
        "user_id": user_id,
        "leaves": leaves,
        "checkpoint": checkpoint.note,
        "tree_size": checkpoint.size,
        "next_cursor": str(leaves[-1]["leaf_index"] + 1) if len(leaves) == limit else None,
    })


def log_leaves(*, log: TransparencyLog, start: int, end: int | None) -> LeavesResponse:
    """Raw leaves `[start, end)` for monitors that replay the whole log. Built without validation (a page
    is 1,000 leaves, each from the log's own columns): the answer is `LeavesResponse` as published."""
    size = log.head_size()
    stop = min(size, end if end is not None else size, start + MAX_LEAVES_PAGE)
    leaves = [
        LogLeafEntry.model_construct(
            leaf_index=leaf_index,
            kind=kind,
            record=json.loads(bytes(data)),
            appended_at=records.format_time(_aware(appended_at)),
        )
        for leaf_index, kind, data, appended_at in (log.leaves(start, stop) if start < stop else [])
    ]
    return LeavesResponse.model_construct(leaves=leaves, start=start, end=max(start, stop), tree_size=size)


def consistency_proof(*, log: TransparencyLog, from_size: int, to_size: int | None) -> ConsistencyProofResponse:
    latest = log.latest_checkpoint().size
    to = latest if to_size is None else to_size
    if not 0 <= from_size <= to:
        raise InvalidRequest("'from' must be between 0 and 'to'.", extra={"field": "from"})
    if to > latest:
        raise InvalidRequest(f"'to' must be at most the latest checkpoint size ({latest}).", extra={"field": "to"})
    return ConsistencyProofResponse.model_validate(
        {"from": from_size, "to": to, "proof": log.consistency_proof(from_size, to)})


# -- backups ----------------------------------------------------------------------------------------


def _backup_stored(backup: KeyBackup) -> BackupStored:
    return BackupStored(
        backup_version=backup.backup_version,
        key_version=backup.key_version,
        created_at=records.format_time(_aware(backup.created_at)),
        sha256=backup.sha256,
        size=len(backup.blob),
    )


def store_backup(
    *, log: TransparencyLog, user_id: str, body: BackupCreate, max_bytes: int, keep_versions: int
) -> BackupStored:
    """Stores a new version; the previous ones stay until this one is committed (then the oldest beyond
    `keep_versions` go), so a failed upload never destroys the last good backup."""
    try:
        blob = b64url_decode(body.blob)
    except EncodingError as exc:
        raise InvalidRequest("Field 'blob': must be unpadded base64url.", extra={"field": "blob"}) from exc
    if len(blob) > max_bytes:
        raise BackupTooLarge(f"The key backup is larger than {max_bytes} bytes.")
    for attempt in range(3):
        try:
            with Session(log.engine, expire_on_commit=False) as session, session.begin():
                latest = session.scalar(select(func.max(KeyBackup.backup_version)).where(KeyBackup.user_id == user_id))
                version = int(latest or 0) + 1
                backup = KeyBackup(
                    user_id=user_id,
                    backup_version=version,
                    key_version=body.key_version,
                    blob=blob,
                    sha256=hashlib.sha256(blob).hexdigest(),
                    created_at=utc_now_naive(),
                )
                session.add(backup)
                session.flush()
                session.execute(
                    delete(KeyBackup).where(
                        KeyBackup.user_id == user_id, KeyBackup.backup_version <= version - keep_versions
                    )
                )
            return _backup_stored(backup)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def check_backup_read_allowed(*, log: TransparencyLog, user_id: str, per_hour: int) -> None:
    """Per-user limit on backup retrievals, counted in the database so every worker and replica shares it."""
    now = time.time()
    window_start = now - BACKUP_READ_WINDOW_SECONDS
    with Session(log.engine) as session, session.begin():
        session.execute(delete(BackupRead).where(BackupRead.user_id == user_id, BackupRead.at < window_start))
        count, oldest = session.execute(
            select(func.count(), func.min(BackupRead.at)).where(
                BackupRead.user_id == user_id, BackupRead.at >= window_start
            )
        ).one()
        if int(count) >= per_hour:
            raise BackupReadsLimited(retry_after=int(float(oldest) + BACKUP_READ_WINDOW_SECONDS - now) + 1)
        session.add(BackupRead(user_id=user_id, at=now))


def latest_backup(*, log: TransparencyLog, user_id: str) -> schemas.BackupRead:
    with Session(log.engine) as session:
        backup = session.scalars(
            select(KeyBackup).where(KeyBackup.user_id == user_id).order_by(KeyBackup.backup_version.desc()).limit(1)
        ).first()
        if backup is None:
            raise BackupNotFound()
        return schemas.BackupRead(**_backup_stored(backup).model_dump(), blob=b64url_encode(bytes(backup.blob)))


def delete_backups(*, log: TransparencyLog, user_id: str) -> int:
    with Session(log.engine) as session, session.begin():
        result = session.execute(delete(KeyBackup).where(KeyBackup.user_id == user_id))
        return int(getattr(result, "rowcount", 0) or 0)


def is_fresh_login(claims_raw: Mapping[str, Any], *, iat: int, max_age: int, now: float | None = None) -> bool:
    """`auth_time` (the password login) when the token carries it, else `iat`."""
    auth_time = claims_raw.get("auth_time", iat)
    if not isinstance(auth_time, int | float):
        return False
    return (now if now is not None else time.time()) - float(auth_time) <= max_age


def parse_at(text: str | None) -> datetime | None:
    if text is None or text == "":
        return None
    try:
        return records.parse_time(text)
    except records.RecordError as exc:
        raise InvalidRequest("Query parameter 'at' must be an RFC 3339 time.", extra={"field": "at"}) from exc


def utc_now() -> datetime:
    return datetime.now(UTC)

