"""The emulator's whole state: plain JSON-able dicts behind one lock, optionally persisted to a JSON file.

Why plain dicts: the stored form *is* (close to) Stream's response form, persistence is a `json.dump`, and
`GET /_emulator/state` can show exactly what is stored. One process, one lock: multi-worker safety is out of
scope (run gunicorn with 1 worker; threads are fine).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .clock import now_iso

log = logging.getLogger(__name__)

JSON = dict[str, Any]

# Permissions the emulator enforces for user-token calls (Stream permission ids, v2 permission system).
ALL_PERMISSIONS: tuple[str, ...] = (
    "create-channel",
    "read-channel",
    "read-channel-members",
    "create-message",
    "update-message",
    "update-message-owner",
    "delete-message",
    "delete-message-owner",
    "update-channel",
    "update-channel-members",
    "add-own-channel-membership",
    "remove-own-channel-membership",
    "delete-channel",
)
DEFAULT_USER_GRANTS: tuple[str, ...] = (
    "create-channel",
    "read-channel",
    "read-channel-members",
    "create-message",
    "update-message-owner",
    "delete-message-owner",
    "update-channel-members",
)


def default_channel_type(name: str, grants: dict[str, list[str]] | None = None) -> JSON:
    """Stream's channel type shape with its documented defaults."""
    ts = now_iso()
    return {
        "name": name,
        "typing_events": True,
        "read_events": True,
        "connect_events": True,
        "search": True,
        "reactions": True,
        "replies": True,
        "quotes": True,
        "mutes": True,
        "uploads": True,
        "url_enrichment": True,
        "custom_events": True,
        "push_notifications": True,
        "reminders": False,
        "mark_messages_pending": False,
        "polls": False,
        "message_retention": "infinite",
        "max_message_length": 5000,
        "automod": "disabled",
        "automod_behavior": "flag",
        "blocklist_behavior": "flag",
        "commands": [],
        "permissions": [],
        "grants": grants if grants is not None else {},
        "created_at": ts,
        "updated_at": ts,
    }


def default_app(name: str = "safeharbor-dev") -> JSON:
    return {
        "name": name,
        "organization": "safeharbor-dev",
        "permission_version": "v2",
        "disable_auth_checks": False,
        "disable_permissions_checks": False,
        "suspended": False,
        "multi_tenant_enabled": False,
        "webhook_url": "",
        "webhook_events": [],
        "event_hooks": [],
        "webhook_compression_algorithm": "",
        "custom_action_handler_url": "",
        "revoke_tokens_issued_before": None,
        "enforce_unique_usernames": "no",
        "grants": {},
        "policies": {},
        "push_notifications": {
            "version": "v1",
            "offline_only": False,
            "apn": {
                "enabled": False,
                "development": False,
                "notification_template": "",
                "auth_type": "",
                "bundle_id": "",
                "host": "",
                "key_id": "",
                "team_id": "",
            },
            "firebase": {
                "enabled": False,
                "notification_template": "",
                "data_template": "",
                "apn_template": "",
            },
            "huawei": {"enabled": False},
            "xiaomi": {"enabled": False},
            "providers": [],
        },
    }


def empty_state() -> JSON:
    return {
        "app": default_app(),
        "users": {},
        "roles": {},
        # Stream apps come with built-in types; "messaging" is the one people reach for.
        "channel_types": {
            "messaging": default_channel_type(
                "messaging",
                {"user": list(DEFAULT_USER_GRANTS), "admin": list(ALL_PERMISSIONS)},
            )
        },
        "channels": {},
        "messages": {},
    }


class Store:
    """Holds state; `tx()` gives exclusive access and persists afterwards when something changed."""

    def __init__(self, state_file: str | None = None) -> None:
        self.lock = threading.RLock()
        self.state_file = state_file
        self.state: JSON = empty_state()
        self.outage = False  # not persisted: an outage is a property of the running process
        self._dirty = False
        if state_file:
            self._load()

    # -- persistence -------------------------------------------------------------------------------

    def _load(self) -> None:
        assert self.state_file
        if not os.path.exists(self.state_file):
            return
        try:
            with open(self.state_file, encoding="utf-8") as fh:
                loaded = json.load(fh)
        except (OSError, ValueError) as exc:
            # Refuse to start on a corrupt file rather than silently dropping a developer's data.
            raise RuntimeError(f"cannot read emulator state file {self.state_file}: {exc}") from exc
        base = empty_state()
        for key in base:
            if key in loaded:
                base[key] = loaded[key]
        self.state = base
        log.info("state loaded users=%d channels=%d", len(self.state["users"]), len(self.state["channels"]))

    def save(self) -> None:
        if not self.state_file:
            return
        directory = os.path.dirname(os.path.abspath(self.state_file))
        os.makedirs(directory, exist_ok=True)
        # Write-then-rename so a crash mid-write never leaves a truncated file behind.
        fd, tmp = tempfile.mkstemp(prefix=".stream-emulator-", suffix=".json", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.state, fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.state_file)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    # -- access ------------------------------------------------------------------------------------

    @contextmanager
    def tx(self, *, snapshot: bool = False) -> Iterator[JSON]:
        """Exclusive access. Routes validate before they mutate; one that changes several things before a
        last check can fail asks for `snapshot`: the state is copied first and restored if the block
        raises, so a failed request never leaves a partial write. (Opt-in: a deep copy costs O(state).)"""
        with self.lock:
            self._dirty = False
            saved = copy.deepcopy(self.state) if snapshot else None
            try:
                yield self.state
            except BaseException:
                if saved is not None:
                    self.state = saved
                self._dirty = False
                raise
            if self._dirty:
                self.save()
                self._dirty = False

    def touch(self) -> None:
        """Mark the current transaction as having changed state."""
        self._dirty = True

    def reset(self) -> None:
        with self.lock:
            self.state = empty_state()
            self.save()

    # -- lookups used by several route modules -----------------------------------------------------

    def message_index(self) -> dict[str, str]:
        """message id -> cid (computed; message volumes in dev are small)."""
        out: dict[str, str] = {}
        for cid, msgs in self.state["messages"].items():
            for m in msgs:
                out[m["id"]] = cid
        return out
