"""HTTP views: parse, authorise, call service, shape the answer. Nothing else."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel
from safeharbor_common import web
from safeharbor_common.audit_recorder import recorder_of
from safeharbor_common.errors import Forbidden, InvalidRequest
from safeharbor_common.roles import Role
from safeharbor_common.service_identity import require_service
from safeharbor_common.tokens import SCOPE_BREAK_GLASS, SCOPE_FULL, current_session, require_session
from safeharbor_protocol.encoding import parse_decimal

from . import service
from .errors import BackupReadsLimited, CheckpointNotFound, FreshLoginRequired
from .log import TransparencyLog
from .schemas import (
    DEVICE_ID_RE,
    USER_ID_RE,
    BackupCreate,
    BackupRead,
    BackupStored,
    ChangesResponse,
    ConsistencyProofResponse,
    HistoryResponse,
    KeyRecordCreate,
    KeyRegistered,
    LeavesResponse,
    LookupResponse,
    RevokeAllResponse,
    RevokeRequest,
    RevokeResponse,
    UserAuditResponse,
)

bp = Blueprint("keydir", __name__)
# Looking keys up is what a clinician in a break-glass session needs to read and write messages.
READ_SCOPES = (SCOPE_FULL, SCOPE_BREAK_GLASS)
MONITOR_ROLES = (Role.ADMIN.value, Role.AUDITOR.value)


def _log() -> TransparencyLog:
    log: TransparencyLog = current_app.extensions["keydir_log"]
    return log


def _path_user(user_id: str) -> str:
    if not USER_ID_RE.match(user_id):
        raise InvalidRequest("Malformed user id in the path.", extra={"field": "user_id"})
    return user_id


def _int_arg(name: str, *, default: int | None = None) -> int | None:
    text = request.args.get(name)
    if text is None or text == "":
        return default
    number = parse_decimal(text, max_digits=18)
    if number is None:
        raise InvalidRequest(f"Query parameter '{name}' must be a non-negative integer.", extra={"field": name})
    return number


def _answer(model: BaseModel) -> Response:
    # exclude_unset: exactly the fields the service filled in (a record's absent optional fields stay absent;
    # a null it set, such as history's valid_until, stays null), so the JSON is what it was as a dict.
    return jsonify(model.model_dump(exclude_unset=True))


# -- keys -------------------------------------------------------------------------------------------


@bp.post("/v1/keys")
@require_session()
@web.api_doc(
    summary="Register or rotate the caller's device key (version = current + 1)",
    request_model=KeyRecordCreate,
    response_model=KeyRegistered,
    status=201,
)
def register_key() -> tuple[Response, int]:
    body = web.json_body(KeyRecordCreate)
    config = current_app.config
    result, rotated = service.register_key(
        log=_log(),
        body=body,
        caller=current_session().sub,
        now=service.utc_now(),
        clock_skew_seconds=config["KEYDIR_CLOCK_SKEW_SECONDS"],
        max_devices=config["KEYDIR_MAX_DEVICES_PER_USER"],
    )
    recorder_of().record(
        action="keys.key.rotated" if rotated else "keys.key.registered",
        resource=f"keys/{result.leaf['user_id']}/{body.device_id}",
        meta={"device_id": body.device_id, "version": body.version, "leaf_index": result.leaf_index},
    )
    registered = KeyRegistered.model_validate({
        "record": result.leaf, "leaf_index": result.leaf_index, "inclusion_proof": result.inclusion_proof,
        "checkpoint": result.checkpoint, "tree_size": result.tree_size,
    })
    return _answer(registered), 201


@bp.get("/v1/keys")
@require_session(scopes=READ_SCOPES)
@web.api_doc(
    summary="Batch lookup of current device keys (one unknown user does not fail the batch)",
    response_model=LookupResponse,
    query={"users": "comma-separated user ids (at most KEYDIR_MAX_BATCH_USERS)"},
)
def lookup() -> Response:
    users = service.parse_user_list(request.args.get("users"), maximum=current_app.config["KEYDIR_MAX_BATCH_USERS"])
    return jsonify(service.lookup_users(log=_log(), user_ids=users))


@bp.get("/v1/keys/<user_id>/history")
@require_session(scopes=READ_SCOPES)
@web.api_doc(
    summary="Every key version of a user with validity intervals; `at` picks the keys valid then",
    response_model=HistoryResponse,
    query={"at": "RFC 3339 time (optional)"},
)
def key_history(user_id: str) -> Response:
    at = service.parse_at(request.args.get("at"))
    return _answer(service.history(log=_log(), user_id=_path_user(user_id), at=at))


@bp.post("/v1/keys/<user_id>/devices/<device_id>/revoke")
@require_session()
@web.api_doc(summary="Revoke a device's keys (the user or an admin)", request_model=RevokeRequest,
             response_model=RevokeResponse)
def revoke_device(user_id: str, device_id: str) -> Response:
    claims = current_session()
    is_self = claims.sub == user_id
    if not is_self and claims.role != Role.ADMIN.value:
        raise Forbidden("Only the user or an admin may revoke these keys.")
    if not DEVICE_ID_RE.match(device_id):
        raise InvalidRequest("Malformed device id in the path.", extra={"field": "device_id"})
    body = web.json_body(RevokeRequest)
    result, is_new = service.revoke_device(
        log=_log(),
        user_id=_path_user(user_id),
        device_id=device_id,
        reason=body.reason,
        revoked_by="user" if is_self else "admin",
    )
    if is_new:
        recorder_of().record(
            action="keys.key.revoked",
            resource=f"keys/{user_id}/{device_id}",
            severity="info" if is_self else "high",
            meta={"device_id": device_id, "leaf_index": result.leaf_index, "by": "user" if is_self else "admin"},
        )
    return _answer(RevokeResponse.model_validate({
        "revocation": result.leaf, "leaf_index": result.leaf_index, "inclusion_proof": result.inclusion_proof,
        "checkpoint": result.checkpoint, "tree_size": result.tree_size, "already_revoked": not is_new,
    }))


@bp.post("/internal/v1/keys/<user_id>/revoke-all")
@require_service("auth")
@web.api_doc(summary="Deprovisioning: revoke every device of a user", request_model=RevokeRequest,
             response_model=RevokeAllResponse, auth="service")
def revoke_all(user_id: str) -> Response:
    body = web.json_body(RevokeRequest)
    indexes = service.revoke_all(
        log=_log(), user_id=_path_user(user_id), reason=body.reason, revoked_by="deprovisioning"
    )
    if indexes:
        recorder_of().record(
            action="keys.key.revoked",
            resource=f"keys/{user_id}",
            severity="high",
            meta={"devices": len(indexes), "by": "deprovisioning", "first_leaf_index": indexes[0]},
        )
    return jsonify({"revoked": len(indexes), "leaf_indexes": indexes})


@bp.get("/v1/keys/changes")
@require_session(scopes=READ_SCOPES)
@web.api_doc(summary="Users whose keys changed since a cursor", response_model=ChangesResponse,
             query={"since": "cursor from an earlier answer (default: the beginning)"})
def key_changes() -> Response:
    since = service.parse_cursor(request.args.get("since"), "since")
    return jsonify(service.changes(log=_log(), since=since).model_dump(exclude_none=True))


@bp.get("/v1/keys/<user_id>/audit")
@require_session()
@web.api_doc(summary="Monitoring: every leaf ever published for a user, with proofs",
             response_model=UserAuditResponse, query={"cursor": "next_cursor of an earlier page"})
def user_audit(user_id: str) -> Response:
    claims = current_session()
    if claims.sub != user_id and claims.role not in MONITOR_ROLES:
        raise Forbidden("Only the user, an admin or an auditor may list these keys.")
    after = service.parse_cursor(request.args.get("cursor"), "cursor")
    return _answer(service.user_audit(log=_log(), user_id=_path_user(user_id), after=after))


@bp.get("/v1/keys/log/leaves")
@require_session(scopes=READ_SCOPES)
@web.api_doc(summary="Raw log leaves [start, end) for monitors (at most 1000)", response_model=LeavesResponse,
             query={"start": "first leaf index", "end": "one past the last (default: tree size)"})
def log_leaves() -> Response:
    start = _int_arg("start", default=0) or 0
    return _answer(service.log_leaves(log=_log(), start=start, end=_int_arg("end")))


# -- transparency (public: anyone may audit the log) ------------------------------------------------


@bp.get("/v1/keys/checkpoint")
@web.api_doc(summary="Latest signed checkpoint (C2SP signed note, text/plain)", auth="none",
             query={"size": "an earlier checkpoint by tree size (optional)"})
def checkpoint() -> Response:
    size = _int_arg("size")
    if size is None:
        note = _log().latest_checkpoint().note
    else:
        found = _log().checkpoint_at(size)
        if found is None:
            raise CheckpointNotFound()
        note = found.note
    return Response(note, mimetype="text/plain", headers={"Cache-Control": "no-store"})


@bp.get("/v1/keys/checkpoint/key")
@web.api_doc(summary="Verifier key of the checkpoints (C2SP vkey, text/plain)", auth="none")
def checkpoint_key() -> Response:
    return Response(_log().verifier_key + "\n", mimetype="text/plain")


@bp.get("/v1/keys/proof/consistency")
@web.api_doc(summary="Consistency proof between two tree sizes (RFC 6962 order, hex)", auth="none",
             response_model=ConsistencyProofResponse,
             query={"from": "older tree size", "to": "newer tree size (default: latest checkpoint)"})
def consistency() -> Response:
    from_size = _int_arg("from")
    if from_size is None:
        raise InvalidRequest("Query parameter 'from' is required.", extra={"field": "from"})
    proof = service.consistency_proof(log=_log(), from_size=from_size, to_size=_int_arg("to"))
    return jsonify(proof.model_dump(by_alias=True))


# -- encrypted private-key backup -------------------------------------------------------------------


@bp.put("/v1/keys/backup")
@require_session()
@web.api_doc(summary="Store a new version of the caller's encrypted key backup", request_model=BackupCreate,
             response_model=BackupStored, status=201)
def put_backup() -> tuple[Response, int]:
    body = web.json_body(BackupCreate)
    config = current_app.config
    user_id = current_session().sub
    stored = service.store_backup(
        log=_log(),
        user_id=user_id,
        body=body,
        max_bytes=config["KEYDIR_BACKUP_MAX_BYTES"],
        keep_versions=config["KEYDIR_BACKUP_VERSIONS_KEPT"],
    )
    recorder_of().record(
        action="keys.backup.stored",
        resource=f"keys/{user_id}/backup",
        meta={"backup_version": stored.backup_version, "key_version": stored.key_version, "size": stored.size},
    )
    return _answer(stored), 201


def _require_fresh_login(action: str) -> None:
    claims = current_session()
    if not service.is_fresh_login(claims.raw, iat=claims.iat, max_age=current_app.config["BACKUP_FRESH_LOGIN_SECONDS"]):
        recorder_of().record(action=action, outcome="failure", resource=f"keys/{claims.sub}/backup",
                             meta={"reason": "fresh_login_required"})
        raise FreshLoginRequired()


@bp.get("/v1/keys/backup")
@require_session()
@web.api_doc(summary="Read the caller's latest key backup (fresh login, rate limited, audited)",
             response_model=BackupRead)
def get_backup() -> Response:
    user_id = current_session().sub
    _require_fresh_login("keys.backup.read")
    try:
        service.check_backup_read_allowed(
            log=_log(), user_id=user_id, per_hour=current_app.config["KEYDIR_BACKUP_READS_PER_HOUR"]
        )
    except BackupReadsLimited:
        recorder_of().record(action="keys.backup.read", outcome="failure", resource=f"keys/{user_id}/backup",
                             severity="high", meta={"reason": "rate_limited"})
        raise
    backup = service.latest_backup(log=_log(), user_id=user_id)
    # No retrieval leaves unaudited: if the event can't be recorded, the blob is not served.
    recorder_of().record(
        action="keys.backup.read",
        resource=f"keys/{user_id}/backup",
        meta={"backup_version": backup.backup_version, "key_version": backup.key_version},
        required=True,
    )
    response = _answer(backup)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.delete("/v1/keys/backup")
@require_session()
@web.api_doc(summary="Delete every stored version of the caller's key backup (fresh login)", status=204)
def delete_backup() -> tuple[str, int]:
    user_id = current_session().sub
    _require_fresh_login("keys.backup.deleted")
    deleted = service.delete_backups(log=_log(), user_id=user_id)
    recorder_of().record(action="keys.backup.deleted", resource=f"keys/{user_id}/backup", meta={"versions": deleted})
    return "", 204
