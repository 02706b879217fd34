"""Channels' service functions: Stream credentials, the role's channel filter, creating a channel."""
from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

from safeharbor_common.errors import InvalidRequest
from safeharbor_common.tokens import SCOPE_BREAK_GLASS, SessionClaims
from sqlalchemy import select

from .. import provisioning
from ..accounts import ACTIVE, resolve_members
from ..context import AuthContext
from ..deprovisioning.handlers import stream_user_fields
from ..errors import ChannelTypeNotAllowed, MemberNotAllowed, MemberNotFound, StreamNotConfigured, UnknownChannelType
from ..models import User
from ..revocations import rfc3339
from ..roles import CHANNEL_TYPES, allowed_types, may_use
from ..sessions.tokens import stream_iat
from ..stream import StreamGateway, member_ids
from .schemas import ChannelFilter, ChannelRead, StreamCredentials, StreamUser


def stream_of(*, ctx: AuthContext) -> StreamGateway:
    """The Stream gateway, or StreamNotConfigured (503) when this deployment has none."""
    if ctx.stream is None:
        raise StreamNotConfigured()
    return ctx.stream


def provision_stream(*, ctx: AuthContext) -> list[str]:
    """`manage provision-stream`: provision now; returns the drift left (empty when Stream holds the map)."""
    return provisioning.provision(stream_of(ctx=ctx))


def stream_credentials(*, ctx: AuthContext, claims: SessionClaims, user: User) -> StreamCredentials:
    stream = stream_of(ctx=ctx)
    fields = stream_user_fields(user)
    stream.upsert_users([fields])  # server-chosen fields only; the request body is not read
    iat = stream_iat(ctx.clock.now(), tokens_from=user.stream_tokens_from)  # after the last cutoff
    token = stream.user_token(user_id=user.id, exp=claims.exp, iat=iat)
    ctx.audit.record(action="stream.credentials", actor=user.id, role=user.role, resource=f"user:{user.id}",
                     outcome="success", meta={"session_id": claims.sid})
    return StreamCredentials(
        apiKey=stream.api_key,
        token=token,
        user=StreamUser(id=user.id, name=user.name, role=fields["role"], image=None, safeharbor_role=user.role),
        expires_at=rfc3339(datetime.fromtimestamp(claims.exp, UTC)),
    )


def channel_filter(*, ctx: AuthContext, claims: SessionClaims) -> ChannelFilter:
    """The filter is Stream's query language (a free-form document handed to its SDK by the client)."""
    if claims.scope == SCOPE_BREAK_GLASS:
        cid = str(claims.raw.get("bg_cid", ""))
        return ChannelFilter(filter={"cid": cid}, allowed_types=[cid.partition(":")[0]] if cid else [])
    types = allowed_types(claims.role)
    return ChannelFilter(filter={"type": {"$in": types}, "members": {"$in": [claims.sub]}}, allowed_types=types)


def _direct_channel_id(channel_type: str, members: list[str]) -> str:
    """Deterministic id of a two-member channel: asking twice gives the same channel."""
    digest = hashlib.sha256(f"{channel_type}|{','.join(sorted(members))}".encode()).hexdigest()
    return f"dm-{digest[:40]}"


def create_channel(
    *, ctx: AuthContext, caller: User, channel_type: str, members: list[str], name: str | None
) -> tuple[ChannelRead, bool]:
    """The channel and whether it was created now (a two-member channel that exists is answered as it is)."""
    if channel_type not in CHANNEL_TYPES:
        raise UnknownChannelType(extra={"allowed_types": allowed_types(caller.role)})
    if not may_use(caller.role, channel_type):
        raise ChannelTypeNotAllowed()
    with ctx.db() as db:
        wanted = list(dict.fromkeys([caller.id, *resolve_members(db, members)]))  # usernames or ids
        rows = {u.id: u for u in db.scalars(select(User).where(User.id.in_(wanted))).all()}
    for member_id in wanted:
        member = rows.get(member_id)
        if member is None:
            raise MemberNotFound(extra={"member": member_id[:64]})
        if member.status != ACTIVE or not may_use(member.role, channel_type):
            raise MemberNotAllowed(extra={"member": member_id})
    if len(wanted) < 2:
        raise InvalidRequest("Field 'members': name at least one other member.", extra={"field": "members"})
    stream = stream_of(ctx=ctx)
    channel_id = _direct_channel_id(channel_type, wanted) if len(wanted) == 2 else uuid.uuid4().hex
    cid = f"{channel_type}:{channel_id}"
    stream.upsert_users([stream_user_fields(rows[m]) for m in wanted])
    existing = stream.find_channel(cid) if len(wanted) == 2 else None
    if existing is not None:
        return ChannelRead(cid=cid, type=channel_type, id=channel_id, members=member_ids(existing),
                           name=(existing.get("channel") or {}).get("name")), False
    created = stream.create_channel(channel_type=channel_type, channel_id=channel_id, members=wanted,
                                    creator=caller.id, name=name)
    ctx.audit.record(action="channel.create", actor=caller.id, role=caller.role, resource=cid, outcome="success",
                     meta={"cid": cid, "members": len(wanted)})
    return ChannelRead(cid=cid, type=channel_type, id=channel_id, members=member_ids(created) or wanted,
                       name=name), True
