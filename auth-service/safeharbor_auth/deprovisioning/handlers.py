"""The job runner's handlers for Stream follow-ups: deactivate, reactivate, revoke tokens, sync a user after a
change of name or role, take back a break-glass membership. Each is idempotent; a user or channel Stream
never knew needs nothing done; anything else is retried with back-off."""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from safeharbor_common.errors import SafeHarborError
from sqlalchemy import select

from ..context import AuthContext
from ..jobs import (
    STREAM_BG_REMOVE,
    STREAM_DEACTIVATE,
    STREAM_REACTIVATE,
    STREAM_REVOKE_TOKENS,
    STREAM_SYNC_USER,
    Handler,
    RetryableJobError,
)
from ..models import Job, User
from ..roles import CHANNEL_TYPES, may_use
from ..stream import StreamGateway, StreamUserFields, is_missing


def stream_user_fields(user: User) -> StreamUserFields:
    """The Stream user record of `user`: server-chosen fields only."""
    return StreamGateway.user_fields(user_id=user.id, name=user.name, role=user.role)


def stream_job_handlers(ctx: AuthContext) -> dict[str, Handler]:
    def gateway() -> StreamGateway:
        if ctx.stream is None:
            raise RetryableJobError("stream_not_configured")
        return ctx.stream

    def tolerate_missing(action: Callable[[], object]) -> None:
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
        return datetime.fromtimestamp(float(payload.get("revoke_before", ctx.clock.timestamp())), UTC)

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
        with ctx.db() as db:
            user = db.get(User, job.user_id)
            if user is None:
                return
            fields = stream_user_fields(user)
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
        with ctx.db() as db:
            latest = db.scalar(select(User.stream_tokens_from).where(User.id == job.user_id)) or 0
        before = datetime.fromtimestamp(max(float(payload.get("revoke_before", 0)), float(latest)), UTC)
        tolerate_missing(lambda: gateway().revoke_tokens(user_id=job.user_id, before=before))

    def remove_break_glass_member(job: Job, payload: dict[str, Any]) -> None:
        stream = gateway()
        cid = str(payload.get("cid", ""))
        if cid:
            tolerate_missing(lambda: stream.remove_member(cid=cid, user_id=job.user_id))

    return {
        STREAM_DEACTIVATE: deactivate,
        STREAM_REACTIVATE: reactivate,
        STREAM_SYNC_USER: sync_user,
        STREAM_BG_REMOVE: remove_break_glass_member,
        STREAM_REVOKE_TOKENS: revoke_tokens,
    }
