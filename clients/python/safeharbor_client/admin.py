"""What admins do today with raw HTTP, as SDK calls: users, push templates, break-glass reviews.

Users are named by username or id (a username is looked up in the user list, so no one has to copy ids).
Every call goes through the gateway with the admin's own session: the server checks the role.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from .client import SafeHarborClient
from .errors import NotFound

ROLES = ("clinician", "billing", "patient", "admin", "auditor")
PROVIDERS = ("apn", "firebase")
KINDS = ("notification", "data")


def _is_id(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@dataclass
class Admin:
    client: SafeHarborClient

    # -- users -----------------------------------------------------------------------------------

    def user_id(self, who: str) -> str:
        """The id of a user named by id or username."""
        if _is_id(who):
            return who
        name = who.strip().lower()
        for user in self.list_users():
            if user.get("username") == name:
                return str(user["id"])
        raise NotFound(f"no user named {who!r}", status=404, code="not_found")

    def create_user(self, *, username: str, name: str, role: str, password: str) -> dict[str, Any]:
        return dict(self.client.call("POST", "/v1/users",
                                     json={"username": username, "name": name, "role": role, "password": password}))

    def list_users(self, *, role: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("role", role), ("status", status)) if v}
        return list(self.client.call("GET", "/v1/users", params=params or None)["users"])

    def show_user(self, who: str) -> dict[str, Any]:
        user_id = self.user_id(who)
        user = dict(self.client.call("GET", f"/v1/users/{user_id}"))
        user["sessions"] = list(self.client.call("GET", f"/v1/users/{user_id}/sessions")["sessions"])
        return user

    def set_role(self, who: str, role: str) -> dict[str, Any]:
        return dict(self.client.call("PATCH", f"/v1/users/{self.user_id(who)}", json={"role": role}))

    def deactivate(self, who: str) -> dict[str, Any]:
        return dict(self.client.call("POST", f"/v1/users/{self.user_id(who)}/deactivate"))

    def reactivate(self, who: str) -> dict[str, Any]:
        return dict(self.client.call("POST", f"/v1/users/{self.user_id(who)}/reactivate"))

    def revoke_sessions(self, who: str, *, session_id: str | None = None) -> list[str]:
        """Ends one session, or every active one of the user; returns the ids ended."""
        user_id = self.user_id(who)
        if session_id is not None:
            targets = [session_id]
        else:
            sessions = self.client.call("GET", f"/v1/users/{user_id}/sessions")["sessions"]
            targets = [str(s["id"]) for s in sessions if s.get("active")]
        for target in targets:
            self.client.call("DELETE", f"/v1/users/{user_id}/sessions/{target}")
        return targets

    # -- push templates --------------------------------------------------------------------------

    def push_lint(self, *, provider: str, kind: str, template: str) -> dict[str, Any]:
        return dict(self.client.call("POST", "/v1/push/lint",
                                     json={"provider": provider, "kind": kind, "template": template}))

    def push_apply(self, *, provider: str, kind: str, template: str) -> dict[str, Any]:
        return dict(self.client.call("PUT", "/v1/push/templates",
                                     json={"provider": provider, "kind": kind, "template": template}))

    def push_status(self) -> dict[str, Any]:
        return dict(self.client.call("GET", "/v1/push/status"))

    def push_rollback(self, *, provider: str, kind: str, version: int) -> dict[str, Any]:
        return dict(self.client.call("POST", "/v1/push/templates/rollback",
                                     json={"provider": provider, "kind": kind, "version": version}))

    # -- break-glass -----------------------------------------------------------------------------

    def break_glass_list(self, *, status: str | None = None) -> list[dict[str, Any]]:
        params = {"status": status} if status else None
        return list(self.client.call("GET", "/v1/break-glass", params=params)["break_glass"])

    def break_glass_review(self, break_glass_id: str, *, note: str) -> dict[str, Any]:
        return dict(self.client.call("POST", f"/v1/break-glass/{break_glass_id}/review", json={"note": note}))
