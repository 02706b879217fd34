"""Stream credentials, channels by role, Stream deprovisioning jobs and break-glass access."""
from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import UTC, datetime
from functools import partial
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from safeharbor_common.errors import InvalidRequest, MfaInvalid, NotFound, SafeHarborError
from safeharbor_common.roles import Role
from safeharbor_common.tokens import SCOPE_BREAK_GLASS, SCOPE_FULL, SessionClaims
from safeharbor_common.web import api_doc, client_ip, json_body
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session as OrmSession

from . import provisioning, schemas, service
from .api import claims, live_session
from .context import AuthContext as AuthServices
from .context import services
from .errors import (
    BreakGlassNotAllowed,
    BreakGlassNotFound,
    ChannelTypeNotAllowed,
    MemberNotAllowed,
    MemberNotFound,
    StreamNotConfigured,
    UnknownChannelType,
)
from .jobs import Handler, JobRunner, RetryableJobError
from .models import BreakGlass, Job, Session, User
from .provisioning import StreamProvisioner
from .revocations import rfc3339
from .roles import CHANNEL_TYPES, allowed_types, may_use
from .stream import StreamGateway, is_missing, member_ids

bp = Blueprint("stream", __name__)
_log = logging.getLogger("safeharbor.auth.streaming")

STREAM_SYNC_USER = "stream.sync_user"
STREAM_BG_REMOVE = "stream.bg_remove_member"
FULL_OR_BREAK_GLASS = (SCOPE_FULL, SCOPE_BREAK_GLASS)


def _stream() -> StreamGateway:
    gateway = services().stream
    if gateway is None:
        raise StreamNotConfigured()
    return gateway


def _json(body: Any, status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


# -- wiring ---------------------------------------------------------------------------------------------


def init_stream(app: Flask, auth: AuthServices, runner: JobRunner) -> None:
    """Builds the Stream gateway when configured, registers its job handlers and the break-glass sweep."""
    runner.periodic.append(sweep_break_glass)
    if not app.config.get("STREAM_API_KEY"):
        return
    auth.stream = StreamGateway(
        api_key=app.config["STREAM_API_KEY"],
        api_secret=app.config["STREAM_API_SECRET"].reveal(),
        base_url=app.config.get("STREAM_CHAT_URL"),
        timeout=float(app.config["STREAM_TIMEOUT"]),
    )
    runner.handlers.update(stream_job_handlers(app))
    if app.config.get("STREAM_PROVISIONER", True):  # off only for one-shot admin commands
        auth.provisioner = StreamProvisioner(
            audit=auth.audit, clock=auth.clock, stream=auth.stream, write=bool(app.config.get("STREAM_PROVISION_ON_START")),
            verify_interval=float(app.config["STREAM_VERIFY_INTERVAL"]),
        )
        auth.provisioner.check_now()  # first attempt at start; the job loop retries and re-reads
        runner.periodic.append(auth.provisioner.tick)


def provision_stream() -> list[str]:
    """`manage provision-stream`: provision now; returns the drift left (empty when Stream holds the map)."""
    return provisioning.provision(_stream())


def _stream_user(user: User) -> dict[str, Any]:
    return StreamGateway.user_fields(user_id=user.id, name=user.name, role=user.role)


# -- deprovisioning jobs --------------------------------------------------------------------------------


def stream_job_handlers(app: Flask) -> dict[str, Handler]:
    def gateway() -> StreamGateway:
        stream = app.extensions["auth"].stream
        if stream is None:
            raise RetryableJobError("stream_not_configured")
        return stream  # type: ignore[no-any-return]

    def tolerate_missing(action: Any) -> None:
        """Runs a Stream call; a user or channel Stream never knew needs nothing done."""
        from stream_chat.base.exceptions import StreamAPIException

        try:
            action()
        except Exception as exc:
            cause = exc.__cause__
            if isinstance(cause, StreamAPIException) and is_missing(cause):
                return
            code = getattr(exc, "code", type(exc).__name__)
            raise RetryableJobError(f"stream:{code}") from exc

    def revoke_before(payload: dict[str, Any]) -> datetime:
        return datetime.fromtimestamp(float(payload.get("revoke_before", app.extensions["auth"].clock.timestamp())), UTC)

    def deactivate(job: Job, payload: dict[str, Any]) -> None:
        stream = gateway()
        tolerate_missing(lambda: stream.revoke_tokens(user_id=job.user_id, before=revoke_before(payload)))
        tolerate_missing(lambda: stream.deactivate(user_id=job.user_id))

    def reactivate(job: Job, payload: dict[str, Any]) -> None:
        stream = gateway()
        # Tokens from before the deactivation stay dead; the user gets new ones with new sessions.
        tolerate_missing(lambda: stream.revoke_tokens(user_id=job.user_id, before=revoke_before(payload)))
        tolerate_missing(lambda: stream.reactivate(user_id=job.user_id))

    def sync_user(job: Job, payload: dict[str, Any]) -> None:
        stream = gateway()
        with OrmSession(app.extensions["auth"].engine) as db:
            user = db.get(User, job.user_id)
            if user is None:
                return
            fields = _stream_user(user)
            role = user.role
        tolerate_missing(lambda: stream.upsert_users([fields]))  # Stream's `role` follows (issue 16)
        if not payload.get("role_changed"):
            return
        # Tokens minted under the old role stop working, and the user leaves every channel of a type the new
        # role may not use (Stream would refuse it anyway by grant; membership must not linger either).
        tolerate_missing(lambda: stream.revoke_tokens(user_id=job.user_id, before=revoke_before(payload)))
        barred = [t for t in CHANNEL_TYPES if not may_use(role, t)]
        try:
            cids = stream.member_channels(user_id=job.user_id, channel_types=barred)
        except SafeHarborError as exc:
            raise RetryableJobError(f"stream:{exc.code}") from exc
        for cid in cids:
            tolerate_missing(partial(stream.remove_member, cid=cid, user_id=job.user_id))

    def revoke_tokens(job: Job, payload: dict[str, Any]) -> None:
        # The user's latest cutoff, so a late retry never moves Stream's revocation time backwards.
        with OrmSession(app.extensions["auth"].engine) as db:
            latest = db.scalar(select(User.stream_tokens_from).where(User.id == job.user_id)) or 0
        before = datetime.fromtimestamp(max(float(payload.get("revoke_before", 0)), float(latest)), UTC)
        tolerate_missing(lambda: gateway().revoke_tokens(user_id=job.user_id, before=before))

    def remove_break_glass_member(job: Job, payload: dict[str, Any]) -> None:
        stream = gateway()
        cid = str(payload.get("cid", ""))
        if cid:
            tolerate_missing(lambda: stream.remove_member(cid=cid, user_id=job.user_id))

    return {
        service.STREAM_DEACTIVATE: deactivate,
        service.STREAM_REACTIVATE: reactivate,
        STREAM_SYNC_USER: sync_user,
        STREAM_BG_REMOVE: remove_break_glass_member,
        service.STREAM_REVOKE_TOKENS: revoke_tokens,
    }


# -- credentials ----------------------------------------------------------------------------------------


@bp.post("/v1/stream-credentials")
@api_doc(summary="A Stream user token for this session (exp = the session token's exp)",
         response_model=schemas.StreamCredentials)
@live_session(scopes=FULL_OR_BREAK_GLASS)
def stream_credentials() -> Response:
    session_claims = claims()
    _, user = service.current(session_claims)
    stream = _stream()
    fields = _stream_user(user)
    stream.upsert_users([fields])  # server-chosen fields only; the request body is not read
    iat = service.stream_iat(service.utcnow(), tokens_from=user.stream_tokens_from)  # after the last cutoff
    token = stream.user_token(user_id=user.id, exp=session_claims.exp, iat=iat)
    services().audit.record(action="stream.credentials", actor=user.id, role=user.role, resource=f"user:{user.id}",
                 outcome="success", meta={"session_id": session_claims.sid})
    return _json({
        "apiKey": stream.api_key,
        "token": token,
        "user": {"id": user.id, "name": user.name, "role": fields["role"], "image": None,
                 "safeharbor_role": user.role},
        "expires_at": rfc3339(datetime.fromtimestamp(session_claims.exp, UTC)),
    })


# -- channels -------------------------------------------------------------------------------------------


def _channel_filter(session_claims: SessionClaims) -> dict[str, Any]:
    if session_claims.scope == SCOPE_BREAK_GLASS:
        cid = str(session_claims.raw.get("bg_cid", ""))
        return {"filter": {"cid": cid}, "allowed_types": [cid.partition(":")[0]] if cid else []}
    types = allowed_types(session_claims.role)
    return {
        "filter": {"type": {"$in": types}, "members": {"$in": [session_claims.sub]}},
        "allowed_types": types,
    }


@bp.get("/v1/channels/filter")
@api_doc(summary="The Stream channel filter for the caller's role", response_model=schemas.ChannelFilter)
@live_session(scopes=FULL_OR_BREAK_GLASS)
def channel_filter() -> Response:
    return _json(_channel_filter(claims()))


def direct_channel_id(channel_type: str, members: list[str]) -> str:
    """Deterministic id of a two-member channel: asking twice gives the same channel."""
    digest = hashlib.sha256(f"{channel_type}|{','.join(sorted(members))}".encode()).hexdigest()
    return f"dm-{digest[:40]}"


@bp.post("/v1/channels")
@api_doc(summary="Create a channel of a type the caller and every member may use", status=201,
         request_model=schemas.ChannelCreate, response_model=schemas.ChannelRead)
@live_session()
def create_channel() -> Response:
    body = json_body(schemas.ChannelCreate)
    session_claims = claims()
    _, caller = service.current(session_claims)
    if body.type not in CHANNEL_TYPES:
        raise UnknownChannelType(extra={"allowed_types": allowed_types(caller.role)})
    if not may_use(caller.role, body.type):
        raise ChannelTypeNotAllowed()
    svc = services()
    with OrmSession(svc.engine) as db:
        wanted = list(dict.fromkeys([caller.id, *service.resolve_members(db, body.members)]))  # usernames or ids
        rows = {u.id: u for u in db.scalars(select(User).where(User.id.in_(wanted))).all()}
    for member_id in wanted:
        member = rows.get(member_id)
        if member is None:
            raise MemberNotFound(extra={"member": member_id[:64]})
        if member.status != service.ACTIVE or not may_use(member.role, body.type):
            raise MemberNotAllowed(extra={"member": member_id})
    if len(wanted) < 2:
        raise InvalidRequest("Field 'members': name at least one other member.", extra={"field": "members"})
    stream = _stream()
    channel_id = direct_channel_id(body.type, wanted) if len(wanted) == 2 else uuid.uuid4().hex
    cid = f"{body.type}:{channel_id}"
    stream.upsert_users([_stream_user(rows[m]) for m in wanted])
    existing = stream.find_channel(cid) if len(wanted) == 2 else None
    if existing is not None:
        return _json({"cid": cid, "type": body.type, "id": channel_id, "members": member_ids(existing),
                      "name": (existing.get("channel") or {}).get("name")}, 200)
    created = stream.create_channel(channel_type=body.type, channel_id=channel_id, members=wanted,
                                    creator=caller.id, name=body.name)
    services().audit.record(action="channel.create", actor=caller.id, role=caller.role, resource=cid, outcome="success",
                 meta={"cid": cid, "members": len(wanted)})
    return _json({"cid": cid, "type": body.type, "id": channel_id,
                  "members": member_ids(created) or wanted, "name": body.name}, 201)


# -- break-glass ----------------------------------------------------------------------------------------


def _reason_context(bg_id: str) -> str:
    return f"break-glass-reason:{bg_id}"


def _note_context(bg_id: str) -> str:
    return f"break-glass-note:{bg_id}"


def break_glass_read(svc: AuthServices, row: BreakGlass) -> dict[str, Any]:
    return {
        "id": row.id,
        "user_id": row.user_id,
        "session_id": row.session_id,
        "channel_cid": row.channel_cid,
        "reason": svc.cipher.decrypt_text(row.reason_enc, context=_reason_context(row.id)),
        "opened_at": rfc3339(row.opened_at),
        "expires_at": rfc3339(row.expires_at),
        "closed_at": service.iso(row.closed_at),
        "close_reason": row.close_reason,
        "status": "closed" if row.closed_at is not None else "open",
        "reviewed_at": service.iso(row.reviewed_at),
        "reviewed_by": row.reviewed_by,
        "review_note": (
            svc.cipher.decrypt_text(row.review_note_enc, context=_note_context(row.id))
            if row.review_note_enc is not None else None
        ),
    }


@bp.post("/v1/auth/break-glass")
@api_doc(summary="Emergency, time-boxed access to one channel (clinician with MFA)", status=201,
         request_model=schemas.BreakGlassOpen, response_model=schemas.BreakGlassOpened)
@live_session(roles=(Role.CLINICIAN.value,))
def open_break_glass() -> Response:
    body = json_body(schemas.BreakGlassOpen)
    svc = services()
    session_claims = claims()
    _, user = service.current(session_claims)
    if not user.mfa_enrolled:
        raise BreakGlassNotAllowed()
    cid = body.scope.channel_cid
    if not may_use(user.role, cid.partition(":")[0]):
        raise ChannelTypeNotAllowed()
    ip = client_ip()
    reservation = svc.throttler.reserve(username=user.username, ip=ip)  # counted before the code is checked
    now = service.utcnow()
    with OrmSession(svc.engine, expire_on_commit=False) as db, db.begin():
        fresh = db.get(User, user.id)
        factor = service._verify_second_factor(svc, db, user=fresh, code=body.otp, now=now) if fresh else None
    if factor is None:
        svc.throttler.failed(reservation)
        services().audit.record(action="auth.break_glass.open", actor=user.id, role=user.role, resource=cid,
                     outcome="failure", severity="high", meta={"reason": "mfa_invalid", "channel_cid": cid})
        raise MfaInvalid()
    svc.throttler.not_a_guess(reservation)

    stream = _stream()
    channel = stream.find_channel(cid)
    if channel is None:
        raise NotFound("Channel not found.")
    added = user.id not in member_ids(channel)
    if added:
        stream.upsert_users([_stream_user(user)])  # Stream adds only users it knows
        stream.add_member(cid=cid, user_id=user.id)
    bg_id = str(uuid.uuid4())
    deadline = service.whole_second_after(now, int(current_app.config["BREAK_GLASS_TTL"]))
    try:
        with OrmSession(svc.engine, expire_on_commit=False) as db, db.begin():
            session = service._new_session(user=user, scope=SCOPE_BREAK_GLASS, now=now, absolute=deadline,
                                           break_glass_id=bg_id, break_glass_cid=cid)
            db.add(session)
            db.flush()
            db.add(BreakGlass(
                id=bg_id, user_id=user.id, session_id=session.id, channel_cid=cid,
                reason_enc=svc.cipher.encrypt_text(body.reason, context=_reason_context(bg_id)),
                opened_at=now, expires_at=deadline, stream_member_added=added,
            ))
            token = service._issue_token(svc, session=session, user=user, now=now)
    except Exception:
        if added:  # no break-glass record: take the membership back
            try:
                stream.remove_member(cid=cid, user_id=user.id)
            except Exception:  # noqa: BLE001 - logged; the original error is what the caller sees
                _log.warning("could not undo break-glass membership", extra={"fields": {"cid": cid}})
        raise
    services().audit.record(action="auth.break_glass.open", actor=user.id, role=user.role, resource=cid, outcome="success",
                 severity="high", meta={"break_glass_id": bg_id, "channel_cid": cid, "session_id": session.id,
                                        "expires_at": rfc3339(deadline), "reason_length": len(body.reason)})
    if factor in ("totp", "recovery"):
        services().audit.record(action="auth.mfa.use", actor=user.id, role=user.role, resource=f"user:{user.id}",
                     outcome="success", meta={"method": factor, "break_glass_id": bg_id})
    return _json({"break_glass_id": bg_id, "access_token": token.token, "expires_at": rfc3339(token.expires_at),
                  "deadline": rfc3339(deadline), "session_id": session.id}, 201)


@bp.get("/v1/break-glass")
@api_doc(summary="Break-glass sessions, open and past (admin)", response_model=schemas.BreakGlassList,
         query={"status": "open or closed"})
@live_session(roles=(Role.ADMIN.value,))
def list_break_glass() -> Response:
    status = request.args.get("status")
    if status not in (None, "open", "closed"):
        raise InvalidRequest("Query 'status': must be open or closed.", extra={"field": "status"})
    svc = services()
    query = select(BreakGlass).order_by(BreakGlass.opened_at.desc()).limit(500)
    if status == "open":
        query = query.where(BreakGlass.closed_at.is_(None))
    elif status == "closed":
        query = query.where(BreakGlass.closed_at.is_not(None))
    with OrmSession(svc.engine) as db:
        rows = db.scalars(query).all()
        return _json({"break_glass": [break_glass_read(svc, r) for r in rows]})


@bp.post("/v1/break-glass/<bg_id>/review")
@api_doc(summary="Record an admin's review of a break-glass session", request_model=schemas.BreakGlassReview,
         response_model=schemas.BreakGlassRead)
@live_session(roles=(Role.ADMIN.value,))
def review_break_glass(bg_id: str) -> Response:
    body = json_body(schemas.BreakGlassReview)
    svc = services()
    reviewer = claims()
    now = service.utcnow()
    with OrmSession(svc.engine, expire_on_commit=False) as db, db.begin():
        row = db.get(BreakGlass, bg_id, with_for_update=True)
        if row is None:
            raise BreakGlassNotFound()
        row.reviewed_at = now
        row.reviewed_by = reviewer.sub
        row.review_note_enc = svc.cipher.encrypt_text(body.note, context=_note_context(row.id))
    services().audit.record(action="auth.break_glass.review", actor=reviewer.sub, role=reviewer.role,
                 resource=row.channel_cid, outcome="success", meta={"break_glass_id": row.id})
    return _json(break_glass_read(svc, row))


def sweep_break_glass() -> int:
    """Closes break-glass sessions past their deadline or whose session ended; exactly one process records
    each closing (conditional update). Returns how many this call closed."""
    svc = services()
    now = service.utcnow()
    with OrmSession(svc.engine) as db:
        due = db.execute(
            select(BreakGlass.id, BreakGlass.session_id)
            .join(Session, Session.id == BreakGlass.session_id)
            .where(BreakGlass.closed_at.is_(None),
                   or_(BreakGlass.expires_at <= now, Session.revoked_at.is_not(None)))
        ).all()
    closed = 0
    for bg_id, _session_id in due:
        with OrmSession(svc.engine, expire_on_commit=False) as db, db.begin():
            row = db.get(BreakGlass, bg_id)
            if row is None or row.closed_at is not None:
                continue
            reason = "expired" if row.expires_at <= now else "session_ended"
            result = db.execute(
                update(BreakGlass).where(BreakGlass.id == bg_id, BreakGlass.closed_at.is_(None))
                .values(closed_at=now, close_reason=reason).execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                continue
            revoked = service._revoke_in(db, ids=[row.session_id], user_id=None, reason="break_glass_closed",
                                         now=now)
            if row.stream_member_added:
                service._enqueue(db, user_id=row.user_id, kind=STREAM_BG_REMOVE, now=now,
                                 payload={"cid": row.channel_cid})
        service._after_revocation(svc, revoked, reason="break_glass_closed", actor="svc:auth", actor_role=None)
        services().audit.record(action="auth.break_glass.close", actor=row.user_id, role=Role.CLINICIAN.value,
                     resource=row.channel_cid, outcome="success", severity="high",
                     meta={"break_glass_id": row.id, "reason": reason, "session_id": row.session_id})
        closed += 1
    if closed and svc.jobs is not None:
        svc.jobs.wake()
    return closed
