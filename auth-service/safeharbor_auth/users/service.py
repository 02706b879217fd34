"""Users' service functions."""
from __future__ import annotations

import uuid

from safeharbor_common.roles import Role
from safeharbor_common.tokens import SessionClaims
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..accounts import ACTIVE, actor_id, actor_role, normalise_username, other_active_admins, user_or_404, user_read
from ..context import AuthContext
from ..deprovisioning.service import user_detail
from ..errors import LastAdmin, UsernameTaken
from ..jobs import STREAM_SYNC_USER, enqueue, try_user_jobs_now
from ..models import User
from ..passwords import check_policy
from ..sessions.service import Revoked, after_revocation, revoke_in
from ..sessions.tokens import stream_cutoff
from .schemas import UserDetail, UserList, UserRead


def create_user(
    *, ctx: AuthContext, actor: SessionClaims | None, username: str, name: str, role: str, password: str
) -> UserRead:
    Role(role)
    name_clean = name.strip()
    login_name = normalise_username(username)
    check_policy(password, username=login_name, name=name_clean)
    password_hash = ctx.passwords.hash(password)
    now = ctx.clock.now()
    user = User(
        id=str(uuid.uuid4()),
        username=login_name,
        name=name_clean,
        role=role,
        status=ACTIVE,
        password_hash=password_hash,
        mfa_enrolled=False,
        created_at=now,
        updated_at=now,
    )
    try:
        with ctx.db() as db, db.begin():
            if db.scalar(select(User.id).where(User.username == login_name)) is not None:
                raise UsernameTaken()
            db.add(user)
    except IntegrityError as exc:  # a concurrent create of the same name
        raise UsernameTaken() from exc
    ctx.audit.record(
        action="user.create",
        actor=actor_id(actor),
        role=actor_role(actor),
        resource=f"user:{user.id}",
        outcome="success",
        meta={"user_id": user.id, "role": role},
    )
    return user_read(user)


def list_users(*, ctx: AuthContext, role: str | None = None, status: str | None = None) -> UserList:
    query = select(User).order_by(User.username)
    if role:
        query = query.where(User.role == role)
    if status:
        query = query.where(User.status == status)
    with ctx.db() as db:
        return UserList(users=[user_read(u) for u in db.scalars(query).all()])


def get_user(*, ctx: AuthContext, user_id: str, include_deprovisioning: bool) -> UserRead | UserDetail:
    """With `include_deprovisioning` (an admin asking) the detail, whose `deprovisioning` may be null;
    without it the user alone (no `deprovisioning` key at all)."""
    with ctx.db() as db:
        user = user_or_404(db, user_id)
        if include_deprovisioning:
            return user_detail(db=db, user=user)
        return user_read(user)


def update_user(
    *, ctx: AuthContext, actor: SessionClaims, user_id: str, name: str | None, role: str | None
) -> UserDetail:
    now = ctx.clock.now()
    role_changed = False
    with ctx.db() as db, db.begin():
        user = user_or_404(db, user_id, lock=True)
        if role is not None and role != user.role:
            if user.role == Role.ADMIN.value and user.status == ACTIVE and other_active_admins(db, user.id) == 0:
                raise LastAdmin()
            user.role = role
            role_changed = True
        if name is not None:
            user.name = name.strip()
        user.updated_at = now
        revoked: list[Revoked] = []
        if role_changed:
            # Tokens carry the role: end the sessions that were granted under the old one.
            revoked = revoke_in(ctx=ctx, db=db, ids=None, user_id=user.id, reason="role_changed", now=now)
        if (role_changed or name is not None) and ctx.stream is not None:
            # A role change also takes the user out of channel types the new role may not use and revokes
            # Stream tokens minted before it (deprovisioning.handlers).
            enqueue(db, user_id=user.id, kind=STREAM_SYNC_USER, now=now,
                    payload={"role_changed": True,
                             "revoke_before": max(stream_cutoff(now), user.stream_tokens_from or 0)}
                    if role_changed else None)
    after_revocation(ctx=ctx, revoked=revoked, reason="role_changed", actor=actor.sub, actor_role=actor.role)
    ctx.audit.record(
        action="user.update",
        actor=actor.sub,
        role=actor.role,
        resource=f"user:{user.id}",
        outcome="success",
        meta={"user_id": user.id, "fields": [f for f, v in (("name", name), ("role", role)) if v is not None]},
    )
    try_user_jobs_now(ctx, user.id)
    with ctx.db() as db:
        return user_detail(db=db, user=user_or_404(db, user.id))
