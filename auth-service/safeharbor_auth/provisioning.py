"""Stream provisioning: the role map (`safeharbor_auth.roles`) written to Stream and read back.

What Stream must hold for it to keep each role to its channel types (permissions v2): one custom role per
SafeHarbor role, and on each SafeHarbor channel type grants keyed by those roles (every other role, Stream's
built-in and channel roles included, with nothing). Each process provisions at start (idempotent: create
what is missing, rewrite the grants, read back), then re-reads every STREAM_VERIFY_INTERVAL seconds
without writing. Until a read-back matches, and whenever one does not (drift: someone changed Stream
elsewhere), `/readyz` answers 503 with the reasons; the next start or `manage provision-stream` repairs it.
A check that cannot reach Stream keeps the last verdict (unknown is not drift), except before the first
success, which stays "not provisioned".
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from safeharbor_common.audit_recorder import AuditRecorder
from safeharbor_common.errors import NotReady, SafeHarborError

from .clock import Clock
from .errors import StreamRejected
from .roles import CHANNEL_TYPES, STREAM_CUSTOM_ROLES, channel_type_grants
from .stream import StreamGateway

_log = logging.getLogger("safeharbor.auth.provisioning")
NOT_PROVISIONED = "Stream roles and channel types are not provisioned yet"


def drift(*, roles: Iterable[str], channel_types: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """Every way Stream's roles and grants differ from the role map, as short reasons (names only)."""
    held_roles = set(roles)
    reasons = [f"Stream role '{r}' is missing" for r in STREAM_CUSTOM_ROLES if r not in held_roles]
    for name in CHANNEL_TYPES:
        held = channel_types.get(name)
        if held is None:
            reasons.append(f"channel type '{name}' is missing")
            continue
        grants = held.get("grants") or {}
        wanted = channel_type_grants(name)
        for role in sorted(set(wanted) | set(grants)):
            # A role Stream does not list holds nothing; a role we do not list must hold nothing.
            if sorted(grants.get(role) or []) != sorted(wanted.get(role, [])):
                reasons.append(f"channel type '{name}': grants of role '{role}' differ from the role map")
    return reasons


def read_back(stream: StreamGateway) -> list[str]:
    return drift(roles=stream.role_names(), channel_types={t: stream.channel_type(t) for t in CHANNEL_TYPES})


def provision(stream: StreamGateway) -> list[str]:
    """Creates missing roles and channel types, writes every type's grants, then reads back. Returns the
    drift that remains (empty: Stream holds the role map). Raises StreamUnavailable when Stream is down."""
    present = stream.role_names()
    for role in STREAM_CUSTOM_ROLES:
        if role not in present:
            _tolerate_race(partial(stream.create_role, role))
    for name in CHANNEL_TYPES:
        grants = channel_type_grants(name)
        held = stream.channel_type(name)
        if held is None:
            _tolerate_race(partial(stream.create_channel_type, name, grants))
            held = stream.channel_type(name) or {}
        # Stream keeps the grants of roles an update leaves out (its defaults on a new type, a dashboard
        # edit): every role it shows that the map does not name is cleared too.
        unnamed: dict[str, list[str]] = {role: [] for role in held.get("grants") or {} if role not in grants}
        stream.update_channel_type(name, {**grants, **unnamed})
    return read_back(stream)


def _tolerate_race(create: Callable[[], None]) -> None:
    """Another worker or replica may create the same role or type first; the read-back decides."""
    try:
        create()
    except StreamRejected:
        _log.info("Stream create refused (created elsewhere?); the read-back decides")


@dataclass(frozen=True)
class Verdict:
    in_sync: bool
    reasons: tuple[str, ...]
    checked_at: float


class StreamProvisioner:
    """This process's view of Stream's provisioning, for `/readyz`; `tick()` is the job loop's periodic task."""

    def __init__(
        self, *, audit: AuditRecorder, clock: Clock, stream: StreamGateway, write: bool, verify_interval: float
    ) -> None:
        self._audit = audit
        self._clock = clock
        self._stream = stream
        self._write = write  # STREAM_PROVISION_ON_START=0: read back only, never write
        self._verify_interval = verify_interval
        self._lock = threading.Lock()
        self._verdict: Verdict | None = None
        self._next_at = 0.0
        self._failures = 0

    @property
    def verdict(self) -> Verdict | None:
        return self._verdict

    def check_now(self) -> Verdict | None:
        """Provisions (until the first success, when writing is on) or reads back, now."""
        with self._lock:
            first = self._verdict is None
            try:
                reasons = provision(self._stream) if first and self._write else read_back(self._stream)
            except SafeHarborError as exc:
                # Stream down or refusing: retry with backoff; an earlier verdict stands.
                self._failures += 1
                self._next_at = time.monotonic() + min(30.0, 2.0 ** min(self._failures, 5))
                _log.warning("Stream provisioning check failed", extra={"fields": {"error": exc.code}})
                return self._verdict
            self._failures = 0
            self._next_at = time.monotonic() + self._verify_interval
            previous = self._verdict
            self._verdict = Verdict(in_sync=not reasons, reasons=tuple(reasons), checked_at=self._clock.timestamp())
        self._record_change(previous, self._verdict)
        return self._verdict

    def tick(self) -> None:
        if time.monotonic() >= self._next_at:
            self.check_now()

    def check_ready(self) -> None:
        verdict = self._verdict
        if verdict is None:
            raise NotReady(reasons=[NOT_PROVISIONED])
        if not verdict.in_sync:
            raise NotReady(reasons=list(verdict.reasons))

    def _record_change(self, previous: Verdict | None, current: Verdict) -> None:
        if previous is not None and previous.in_sync == current.in_sync:
            return
        self._record(previous, current)

    def _record(self, previous: Verdict | None, current: Verdict) -> None:
        if current.in_sync:
            _log.info("Stream holds the role map")
            if previous is not None:
                self._audit.record(action="stream.provisioning.drift.resolved", actor="svc:auth", outcome="success",
                             resource="stream:permissions")
            return
        _log.warning("Stream drift from the role map", extra={"fields": {"reasons": len(current.reasons)}})
        self._audit.record(action="stream.provisioning.drift.detected", actor="svc:auth", outcome="failure",
                     resource="stream:permissions", severity="high", meta={"reasons": list(current.reasons)})
