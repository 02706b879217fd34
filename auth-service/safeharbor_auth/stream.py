"""Stream Chat through the real server SDK (`stream_chat.StreamChat`), with SafeHarbor's error mapping.

Unreachable or failing Stream (connection errors, 5xx) → 503 `service_unavailable`; Stream refusing a call
(4xx) → 502 `upstream_error`. Stream's error text is never passed on (it may echo ids or names).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypedDict, TypeVar

import requests
from stream_chat import StreamChat
from stream_chat.base.exceptions import StreamAPIException

from .errors import StreamRejected, StreamUnavailable
from .roles import stream_role

DOES_NOT_EXIST = 16
_log = logging.getLogger("safeharbor.auth.stream")
T = TypeVar("T")


def is_missing(exc: StreamAPIException) -> bool:
    return exc.status_code == 404 or getattr(exc, "error_code", None) == DOES_NOT_EXIST


class StreamUserFields(TypedDict):
    """A Stream user record as SafeHarbor writes it (Stream's own field names)."""

    id: str
    name: str
    role: str
    image: None


class StreamGateway:
    def __init__(self, *, api_key: str, api_secret: str, base_url: str | None, timeout: float) -> None:
        options: dict[str, Any] = {"base_url": base_url} if base_url else {}
        self.api_key = api_key
        self.client = StreamChat(api_key=api_key, api_secret=api_secret, timeout=timeout, **options)

    def call(self, operation: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except StreamAPIException as exc:
            _log.warning("stream refused", extra={"fields": {"operation": operation, "status": exc.status_code,
                                                             "stream_code": getattr(exc, "error_code", None)}})
            if exc.status_code >= 500 or exc.status_code == 429:
                raise StreamUnavailable() from exc
            raise StreamRejected() from exc
        except requests.RequestException as exc:
            _log.warning("stream unreachable", extra={"fields": {"operation": operation,
                                                                 "error": type(exc).__name__}})
            raise StreamUnavailable() from exc

    # -- users --------------------------------------------------------------------------------------

    @staticmethod
    def user_fields(*, user_id: str, name: str, role: str) -> StreamUserFields:
        """The only fields SafeHarbor sets on a Stream user: chosen here, never taken from a request. Stream
        authorises by `role` alone (an upsert replaces custom fields, so an old `safeharbor_role` goes)."""
        return {"id": user_id, "name": name, "role": stream_role(role), "image": None}

    def upsert_users(self, users: list[StreamUserFields]) -> None:
        self.call("upsert_users", lambda: self.client.upsert_users([dict(u) for u in users]))

    def user_token(self, *, user_id: str, exp: int, iat: int) -> str:
        return str(self.client.create_token(user_id, exp=exp, iat=iat))

    def revoke_tokens(self, *, user_id: str, before: datetime) -> None:
        self.call("revoke_user_token", lambda: self.client.revoke_user_token(user_id, before.astimezone(UTC)))

    def deactivate(self, *, user_id: str) -> None:
        self.call("deactivate_user", lambda: self.client.deactivate_user(user_id))

    def reactivate(self, *, user_id: str) -> None:
        self.call("reactivate_user", lambda: self.client.reactivate_user(user_id))

    # -- roles and channel types (provisioning: `safeharbor_auth.provisioning`) ---------------------------

    def role_names(self) -> set[str]:
        listed = self.call("list_roles", lambda: self.client.list_roles())
        return {str(r.get("name")) for r in listed.get("roles") or [] if isinstance(r, dict)}

    def create_role(self, name: str) -> None:
        self.call("create_role", lambda: self.client.create_role(name))

    def channel_type(self, name: str) -> dict[str, Any] | None:
        """The channel type as Stream holds it, or None when it does not exist."""
        try:
            return dict(self.call("get_channel_type", lambda: self.client.get_channel_type(name)))
        except StreamRejected as exc:
            if isinstance(exc.__cause__, StreamAPIException) and is_missing(exc.__cause__):
                return None
            raise

    def create_channel_type(self, name: str, grants: dict[str, list[str]]) -> None:
        self.call("create_channel_type", lambda: self.client.create_channel_type({"name": name, "grants": grants}))

    def update_channel_type(self, name: str, grants: dict[str, list[str]]) -> None:
        self.call("update_channel_type", lambda: self.client.update_channel_type(name, grants=grants))

    # -- channels -----------------------------------------------------------------------------------

    def find_channel(self, cid: str) -> dict[str, Any] | None:
        found = self.call(
            "query_channels",
            lambda: self.client.query_channels({"cid": cid}, limit=1, message_limit=0),
        )
        channels = found.get("channels") or []
        return dict(channels[0]) if channels else None

    def create_channel(
        self, *, channel_type: str, channel_id: str, members: list[str], creator: str, name: str | None
    ) -> dict[str, Any]:
        data: dict[str, Any] = {"members": members}
        if name:
            data["name"] = name
        channel = self.client.channel(channel_type, channel_id, data)
        return dict(self.call("create_channel", lambda: channel.create(creator)))

    def add_member(self, *, cid: str, user_id: str) -> None:
        channel_type, _, channel_id = cid.partition(":")
        channel = self.client.channel(channel_type, channel_id)
        self.call("add_members", lambda: channel.add_members([user_id]))

    def member_channels(self, *, user_id: str, channel_types: list[str]) -> list[str]:
        """Cids of the channels of `channel_types` that `user_id` is a member of (every page)."""
        cids: list[str] = []
        if not channel_types:
            return cids
        page_size = 30  # Stream's maximum for query_channels
        conditions = {"type": {"$in": channel_types}, "members": {"$in": [user_id]}}
        while True:
            query = partial(self.client.query_channels, conditions, [{"field": "created_at", "direction": 1}],
                            limit=page_size, offset=len(cids), message_limit=0)
            found = self.call("query_channels", query)
            page = [str(c["channel"]["cid"]) for c in found.get("channels") or []]
            cids.extend(page)
            if len(page) < page_size:
                return cids

    def remove_member(self, *, cid: str, user_id: str) -> None:
        channel_type, _, channel_id = cid.partition(":")
        channel = self.client.channel(channel_type, channel_id)
        self.call("remove_members", lambda: channel.remove_members([user_id]))


def member_ids(channel_state: dict[str, Any]) -> list[str]:
    members = channel_state.get("members") or []
    ids = []
    for m in members:
        uid = m.get("user_id") or (m.get("user") or {}).get("id")
        if isinstance(uid, str):
            ids.append(uid)
    return ids
