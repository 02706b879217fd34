"""What every room knows about a user account: statuses, names, ids, how a user reads, who acted."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Final, cast

from safeharbor_common.roles import Role
from safeharbor_common.tokens import SessionClaims
from sqlalchemy import func, select
from sqlalchemy.orm import Session as OrmSession

from .errors import MemberNotFound, UserNotFound
from .models import User
from .revocations import rfc3339
from .schema_base import RoleName
from .users.schemas import UserRead, UserStatus

ACTIVE: Final = "active"
DEACTIVATED: Final = "deactivated"


def iso(value: datetime | None) -> str | None:
    return None if value is None else rfc3339(value)


def normalise_username(username: str) -> str:
    return username.strip().lower()


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def role_name(user: User) -> RoleName:
    """The stored role as the schemas type it (the models check the value again)."""
    return cast(RoleName, user.role)


def user_read(user: User) -> UserRead:
    return UserRead(
        id=user.id,
        username=user.username,
        name=user.name,
        role=role_name(user),
        status=cast(UserStatus, user.status),
        mfa_enrolled=user.mfa_enrolled,
        created_at=rfc3339(user.created_at),
        updated_at=rfc3339(user.updated_at),
        deactivated_at=iso(user.deactivated_at),
    )


def user_or_404(db: OrmSession, user_id: str, *, lock: bool = False) -> User:
    user = db.get(User, user_id, with_for_update=lock) if is_uuid(user_id) else None
    if user is None:
        raise UserNotFound()
    return user


def other_active_admins(db: OrmSession, user_id: str) -> int:
    return int(
        db.scalar(
            select(func.count()).select_from(User).where(
                User.role == Role.ADMIN.value, User.status == ACTIVE, User.id != user_id
            )
        )
        or 0
    )


def resolve_members(db: OrmSession, members: list[str]) -> list[str]:
    """Channel members as user ids: a user id stays as given, anything else is a username (the CLI lets
    people name colleagues); an unknown username is a MemberNotFound naming it."""
    names = {normalise_username(m) for m in members if not is_uuid(m)}
    rows = db.execute(select(User.username, User.id).where(User.username.in_(names)))
    found = {str(name): str(user_id) for name, user_id in rows}
    resolved = []
    for member in members:
        if is_uuid(member):
            resolved.append(member)
        elif normalise_username(member) in found:
            resolved.append(found[normalise_username(member)])
        else:
            raise MemberNotFound(extra={"member": member[:64]})
    return resolved


def actor_id(actor: SessionClaims | None) -> str:
    return actor.sub if actor is not None else "system"


def actor_role(actor: SessionClaims | None) -> str | None:
    return actor.role if actor is not None else None
