"""The SDK: one user on one device talking to SafeHarbor (through the gateway) and to Stream.

    client = SafeHarborClient("http://127.0.0.1:8080", state_dir="~/.safeharbor/alice-phone",
                              stream_url="http://127.0.0.1:8190")
    client.login("dr-chen", password, otp_provider=lambda: input("code: "))
    client.init_keys()                        # X25519 + Ed25519, registered in the key directory
    channel = client.open_channel("clinical", [peer_user_id])
    client.send(channel.cid, "See you at 3.")
    for m in client.read(channel.cid): print(m.sender_label, m.text or m.error)

State (session, keys, directory memory, seen ids) lives in `state_dir`, one per user and device.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from safeharbor_protocol import e2ee
from safeharbor_protocol.keyrecords import fingerprint, format_time, parse_time

from . import backup as backup_mod
from . import envelope as env
from .audit_export import ExportReader, ExportTrailerError
from .directory import DirectoryVerifier, PublishedLeaf, UserKeys, key_valid_at, verify_chain
from .errors import (
    ApiError,
    BackupError,
    DirectoryError,
    DirectoryInconsistent,
    EnvelopeError,
    EnvelopeTooLarge,
    KeyRecordInvalid,
    KeysNotInitialized,
    LoginRequired,
    MfaRequired,
    RecipientKeysMissing,
    SafeHarborClientError,
    SenderKeyNotValid,
    SessionExpired,
)
from .http import StreamUserClient, Transport, api_error
from .keys import (
    DeviceKeyPair,
    DeviceRef,
    Keyring,
    VerifiedKey,
    build_record,
    utc_now,
)
from .state import StateDir

DEFAULT_STREAM_URL = "https://chat.stream-io-api.com"


class AuditVerificationFailed(SafeHarborClientError):
    """The audit log's checkpoint, consistency or server-side verification failed."""

    code = "audit_verification_failed"


@dataclass(frozen=True)
class SessionInfo:
    user_id: str
    name: str
    role: str
    scope: str
    session_id: str
    expires_at: datetime
    absolute_expires_at: datetime
    idle_timeout_s: int
    mfa_enrolled: bool

    @property
    def needs_mfa_enrollment(self) -> bool:
        return self.scope == "mfa_enrollment"


@dataclass(frozen=True)
class Countdown:
    """Seconds until automatic logoff (idle) and until the session's absolute end."""

    idle_remaining_s: int
    absolute_remaining_s: int

    @property
    def remaining_s(self) -> int:
        return min(self.idle_remaining_s, self.absolute_remaining_s)


@dataclass(frozen=True)
class StreamCredentials:
    api_key: str
    token: str
    user: dict[str, Any]
    expires_at: datetime | None
    base_url: str


@dataclass(frozen=True)
class Channel:
    cid: str
    type: str
    id: str
    members: tuple[str, ...]
    name: str | None = None


@dataclass(frozen=True)
class SentMessage:
    message_id: str
    channel_cid: str
    suite: str
    recipients: tuple[DeviceRef, ...]
    envelope_chars: int


@dataclass(frozen=True)
class ReadMessage:
    """One Stream message as read: `text` only when every check passed, else `error` says why not."""

    stream_message_id: str
    stream_user_id: str | None
    created_at: datetime | None
    text: str | None = None
    sender: DeviceRef | None = None
    sender_fingerprint: str | None = None
    suite: str | None = None
    error: EnvelopeError | None = None

    @property
    def verified(self) -> bool:
        return self.error is None and self.text is not None


@dataclass(frozen=True)
class KeyInitResult:
    pair: DeviceKeyPair
    fingerprint: str
    pq_published: bool
    note: str | None = None


# What `monitor_keys` says of each key record ever published for the user.
THIS_DEVICE = "this_device"  # made here: this device's id and a key pair this device's keyring holds
OTHER_DEVICE = "other_device"  # another device id of this user: the user confirms it is one of theirs
ALARM = "alarm"  # this device's id with a key this device never made


@dataclass(frozen=True)
class MonitoredKey:
    """One key record published for this user, proven in the log, with what this device makes of it."""

    key: VerifiedKey
    leaf_index: int | None
    status: str  # THIS_DEVICE, OTHER_DEVICE or ALARM
    published_at: str | None = None
    revoked_at: datetime | None = None
    revocation_reason: str | None = None

    @property
    def device_id(self) -> str:
        return self.key.ref.device_id

    @property
    def version(self) -> int:
        return self.key.ref.version

    @property
    def fingerprint(self) -> str:
        return self.key.fingerprint

    def as_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "created_at": format_time(self.key.created_at),
            "status": self.status,
            "revoked_at": format_time(self.revoked_at) if self.revoked_at else None,
            "revocation_reason": self.revocation_reason,
            "leaf_index": self.leaf_index,
            "published_at": self.published_at,
        }


@dataclass(frozen=True)
class KeyMonitorReport:
    user_id: str
    device_id: str | None  # this device (None before `keys init` / `keys restore`)
    checkpoint_size: int
    keys: tuple[MonitoredKey, ...]

    @property
    def alarms(self) -> list[MonitoredKey]:
        return [k for k in self.keys if k.status == ALARM]

    @property
    def other_devices(self) -> list[MonitoredKey]:
        return [k for k in self.keys if k.status == OTHER_DEVICE]


@dataclass
class _Caches:
    stream: StreamCredentials | None = None
    history: dict[str, list[VerifiedKey]] = field(default_factory=dict)


def _parse_cid(cid: str) -> tuple[str, str]:
    channel_type, sep, channel_id = cid.partition(":")
    if not sep or not channel_type or not channel_id:
        raise SafeHarborClientError(f"not a channel cid (type:id): {cid!r}")
    return channel_type, channel_id


class SafeHarborClient:
    def __init__(
        self,
        gateway_url: str,
        *,
        state_dir: str | os.PathLike[str],
        stream_url: str | None = None,
        keydir_verifier_key: str | None = None,
        http: requests.Session | None = None,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
        kdf: backup_mod.KdfParams = backup_mod.DEFAULT_KDF,
    ) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.state = StateDir(Path(state_dir).expanduser())
        self.http = http or requests.Session()
        self.api = Transport(self.gateway_url, http=self.http, timeout=timeout)
        self.stream_url = stream_url or os.environ.get("STREAM_CHAT_URL") or None
        self.timeout = timeout
        self.clock = clock
        self.kdf = kdf
        self._caches = _Caches()
        self._keydir_pin = keydir_verifier_key
        # Passive (a command following a channel): calls do not slide the idle timeout, so automatic logoff
        # still comes when the person does nothing; only keep_alive() (a person acting) refreshes.
        self.passive = False

    # == sessions ===================================================================================

    def _stored_session(self) -> dict[str, Any] | None:
        stored = self.state.load_session()
        if stored is None or stored.get("gateway") != self.gateway_url:
            return None
        return stored

    @staticmethod
    def _info(stored: Mapping[str, Any]) -> SessionInfo:
        user = stored.get("user") or {}
        return SessionInfo(
            user_id=str(user.get("id")),
            name=str(user.get("name", "")),
            role=str(user.get("role", "")),
            scope=str(stored.get("scope") or "full"),
            session_id=str(stored.get("session_id", "")),
            expires_at=parse_time(stored["expires_at"]),
            absolute_expires_at=parse_time(stored.get("absolute_expires_at") or stored["expires_at"]),
            idle_timeout_s=int(stored.get("idle_timeout_s") or 600),
            mfa_enrolled=bool(user.get("mfa_enrolled", False)),
        )

    def _save_session(self, body: Mapping[str, Any], *, previous: Mapping[str, Any] | None = None) -> SessionInfo:
        stored = dict(body)
        if "user" not in stored and previous is not None:
            stored["user"] = previous.get("user")
        stored["gateway"] = self.gateway_url
        stored.setdefault("scope", (previous or {}).get("scope", "full"))
        self.state.save_session(stored)
        self._caches.stream = None
        return self._info(stored)

    @property
    def session(self) -> SessionInfo | None:
        stored = self._stored_session()
        return self._info(stored) if stored else None

    def login(
        self, username: str, password: str, *, otp: str | None = None, otp_provider: Callable[[], str] | None = None
    ) -> SessionInfo:
        """Password (and TOTP when the account has it) through the gateway; stores the session."""
        body: dict[str, Any] = {"username": username, "password": password}
        if otp:
            body["otp"] = otp
        try:
            answer = self.api.call("POST", "/v1/auth/login", json=body)
        except MfaRequired:
            if otp_provider is None or otp:
                raise
            answer = self.api.call("POST", "/v1/auth/login", json={**body, "otp": otp_provider()})
        self.state.clear_session()
        info = self._save_session({**answer, "logged_in_at": self.clock()})
        if self.state.read_json("keyring.json") and (self.state.read_json("keyring.json") or {}).get(
            "user_id"
        ) not in (None, info.user_id):
            # One state directory belongs to one user: refuse to mix keyrings.
            self.state.clear_session()
            raise SafeHarborClientError("this state directory holds another user's keys; use another --state-dir")
        return info

    def countdown(self) -> Countdown:
        stored = self._stored_session()
        if stored is None:
            raise LoginRequired("not logged in")
        info = self._info(stored)
        now = self.clock()
        return Countdown(
            idle_remaining_s=max(0, int(info.expires_at.timestamp() - now)),
            absolute_remaining_s=max(0, int(info.absolute_expires_at.timestamp() - now)),
        )

    def _token(self, *, refresh: bool | None = None) -> str:
        """A live access token: refreshes when under half the idle timeout is left (activity keeps it alive);
        raises SessionExpired once the idle or absolute limit passed (automatic logoff)."""
        stored = self._stored_session()
        if stored is None:
            raise LoginRequired("not logged in")
        info = self._info(stored)
        now = self.clock()
        if now >= info.absolute_expires_at.timestamp() or now >= info.expires_at.timestamp():
            self.state.clear_session()
            raise SessionExpired("the session has expired; log in again")
        if refresh is None:
            refresh = not self.passive
        if refresh and info.expires_at.timestamp() - now < info.idle_timeout_s / 2 and \
                info.expires_at.timestamp() < info.absolute_expires_at.timestamp():
            self._refresh(stored)
            refreshed = self._stored_session()
            if refreshed is None:
                raise LoginRequired("not logged in")
            return str(refreshed["access_token"])
        return str(stored["access_token"])

    def _refresh(self, stored: Mapping[str, Any]) -> SessionInfo:
        try:
            answer = self.api.call("POST", "/v1/auth/refresh", token=str(stored["access_token"]))
        except LoginRequired:
            self.state.clear_session()
            raise
        return self._save_session(answer, previous=stored)

    def refresh(self) -> SessionInfo:
        stored = self._stored_session()
        if stored is None:
            raise LoginRequired("not logged in")
        self._token(refresh=False)
        return self._refresh(stored)

    def keep_alive(self) -> Countdown:
        """Refresh if due (the person is active, even in passive mode); returns the countdown."""
        self._token(refresh=True)
        return self.countdown()

    def _authed(self, method: str, path: str, **kwargs: Any) -> Any:
        token = self._token()
        try:
            return self.api.call(method, path, token=token, **kwargs)
        except LoginRequired:
            self.state.clear_session()
            raise

    def logout(self) -> None:
        stored = self._stored_session()
        if stored is not None:
            with contextlib.suppress(LoginRequired):
                self.api.call("POST", "/v1/auth/logout", token=str(stored["access_token"]))
        self.state.clear_session()

    def me(self) -> dict[str, Any]:
        return dict(self._authed("GET", "/v1/auth/me"))

    def enroll_totp(self) -> dict[str, Any]:
        return dict(self._authed("POST", "/v1/auth/mfa/totp/enroll"))

    def confirm_totp(self, code: str) -> list[str]:
        """Confirms the enrolment; the full session that an enrolment-only session earns by it is stored
        (`session` then reads scope "full"): no second login, no wait for the next code."""
        previous = self._stored_session()
        answer = self._authed("POST", "/v1/auth/mfa/totp/confirm", json={"code": code})
        if answer.get("access_token"):
            self._save_session({**answer, "logged_in_at": self.clock()}, previous=previous)
        return list(answer["recovery_codes"])

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any gateway route with this session's token (refreshed when due): what the admin commands use."""
        return self._authed(method, path, **kwargs)

    @property
    def user_id(self) -> str:
        info = self.session
        if info is None:
            raise LoginRequired("not logged in")
        return info.user_id

    # == Stream and channels =========================================================================

    def stream_credentials(self) -> StreamCredentials:
        cached = self._caches.stream
        if cached is not None and (cached.expires_at is None or cached.expires_at.timestamp() - self.clock() > 60):
            return cached
        body = self._authed("POST", "/v1/stream-credentials")
        expires = body.get("expires_at")
        base = body.get("base_url") or body.get("baseURL") or self.stream_url or DEFAULT_STREAM_URL
        creds = StreamCredentials(api_key=str(body["apiKey"]), token=str(body["token"]), user=dict(body["user"]),
                                  expires_at=parse_time(expires) if isinstance(expires, str) else None,
                                  base_url=str(base))
        self._caches.stream = creds
        return creds

    def _stream(self) -> StreamUserClient:
        creds = self.stream_credentials()
        return StreamUserClient(creds.base_url, api_key=creds.api_key, token=creds.token, http=self.http,
                                timeout=self.timeout)

    def channel_filter(self) -> dict[str, Any]:
        return dict(self._authed("GET", "/v1/channels/filter"))

    def open_channel(self, channel_type: str, members: Sequence[str], *, name: str | None = None) -> Channel:
        """`POST /v1/channels` (role rules are the server's); the caller is a member."""
        body: dict[str, Any] = {"type": channel_type, "members": list(members)}
        if name:
            body["name"] = name
        answer = self._authed("POST", "/v1/channels", json=body)
        return Channel(cid=answer["cid"], type=answer["type"], id=answer["id"],
                       members=tuple(answer.get("members", [])), name=name)

    def list_channels(self) -> list[Channel]:
        filter_body = self.channel_filter()
        channels = self._stream().query_channels(filter_body.get("filter") or {})
        out = []
        for item in channels:
            ch = item.get("channel", {})
            members = tuple(m.get("user_id", "") for m in item.get("members", []))
            out.append(Channel(cid=ch.get("cid", ""), type=ch.get("type", ""), id=ch.get("id", ""), members=members,
                               name=ch.get("name")))
        return out

    def channel_members(self, cid: str) -> list[str]:
        channel_type, channel_id = _parse_cid(cid)
        state = self._stream().query_channel(channel_type, channel_id, limit=0)
        return [m["user_id"] for m in state.get("members", []) if isinstance(m, dict) and m.get("user_id")]

    # == key directory ===============================================================================

    def _directory(self) -> DirectoryVerifier:
        data = self.state.load_directory()
        memory = data.setdefault(self.gateway_url, {})

        def save(updated: dict[str, Any]) -> None:
            current = self.state.load_directory()
            old = current.get(self.gateway_url, {}).get("checkpoint")
            new = updated.get("checkpoint")
            # Several processes may share the state: never move the remembered checkpoint backwards.
            if old and new and int(old["size"]) > int(new["size"]):
                updated = {**updated, "checkpoint": old}
            current[self.gateway_url] = updated
            self.state.save_directory(current)

        return DirectoryVerifier(
            memory=memory,
            save=save,
            fetch_verifier_key=lambda: str(self.api.call("GET", "/v1/keys/checkpoint/key")),
            fetch_consistency=lambda a, b: list(
                self.api.call("GET", "/v1/keys/proof/consistency", params={"from": a, "to": b})["proof"]
            ),
            pinned_key=self._keydir_pin,
        )

    def lookup_keys(self, user_ids: Iterable[str]) -> dict[str, UserKeys]:
        """Current device keys of each user, every record proven in a checkpoint consistent with memory."""
        wanted = sorted(set(user_ids))
        if not wanted:
            return {}
        body = self._authed("GET", "/v1/keys", params={"users": ",".join(wanted)})
        return self._directory().verify_lookup(body, wanted)

    def key_history(self, user_id: str) -> list[VerifiedKey]:
        """Every key version of a user (with revocations), proven and chain-checked."""
        try:
            body = self._authed("GET", f"/v1/keys/{user_id}/history")
        except ApiError as exc:
            if exc.code == "not_found":
                return []
            raise
        directory = self._directory()
        checkpoint = directory.verify_checkpoint(str(body["checkpoint"]))
        keys = [directory.verify_device(item, user_id=user_id, checkpoint=checkpoint).key
                for item in body.get("history", [])]
        verify_chain(keys)
        self._caches.history[user_id] = keys
        return keys

    def _sender_key(self, ref: DeviceRef, moment: datetime) -> VerifiedKey:
        history = self._caches.history.get(ref.user_id)
        if history is None or not any(k.ref == ref for k in history):
            history = self.key_history(ref.user_id)
        if not any(k.ref == ref for k in history):
            raise SenderKeyNotValid("the sender key the message names is not in the directory")
        return key_valid_at(ref, moment, history)

    def _keyring(self) -> Keyring:
        return self.state.load_keyring(self.user_id)

    def _publish(self, pair: DeviceKeyPair, record: dict[str, Any]) -> dict[str, Any]:
        answer = self._authed("POST", "/v1/keys", json=record)
        published = answer.get("record")
        if not isinstance(published, dict):
            raise KeyRecordInvalid("the directory did not return the published record")
        ours = {k: v for k, v in record.items()}
        if any(published.get(k) != v for k, v in ours.items()):
            raise KeyRecordInvalid("the directory published something else than the record sent")
        directory = self._directory()
        checkpoint = directory.verify_checkpoint(str(answer["checkpoint"]))
        directory.verify_inclusion(published, answer.get("leaf_index"), answer.get("inclusion_proof"), checkpoint)
        return dict(published)

    def _register(self, ring: Keyring, pair: DeviceKeyPair, previous: DeviceKeyPair | None) -> tuple[bool, str | None]:
        """Save the private key first (a crash must not lose it), then publish; falls back to a classic
        record when the directory does not take the post-quantum extension."""
        note = None
        record = build_record(pair, previous=previous)
        ring.add(pair)
        self.state.save_keyring(ring)
        try:
            published = self._publish(pair, record)
        except ApiError as exc:
            if pair.pq is None or exc.status not in (400, 422):
                ring.pairs.pop(pair.ref, None)
                self.state.save_keyring(ring)
                raise
            pair.pq = None
            note = "the key directory does not accept post-quantum keys (pq_pub); registered X25519 + Ed25519 only"
            try:
                published = self._publish(pair, build_record(pair, previous=previous))
            except ApiError:
                ring.pairs.pop(pair.ref, None)
                self.state.save_keyring(ring)
                raise
        pair.record = published
        self.state.save_keyring(ring)
        return pair.pq is not None, note

    def init_keys(self, *, with_pq: bool = False, device_id: str | None = None) -> KeyInitResult:
        """Generate and register this device's keys (version 1 of a new device)."""
        ring = self._keyring()
        if ring.device_id is not None and any(
            p.device_id == ring.device_id and p.record is not None for p in ring.pairs.values()
        ):
            raise SafeHarborClientError("this device already has keys: use `keys rotate`")
        ring.device_id = device_id or ring.device_id or f"dev-{secrets.token_hex(6)}"
        pair = DeviceKeyPair.generate(user_id=ring.user_id, device_id=ring.device_id, version=1, with_pq=with_pq)
        pq, note = self._register(ring, pair, None)
        return KeyInitResult(pair=pair, fingerprint=_fp(pair), pq_published=pq, note=note)

    def rotate_keys(self) -> KeyInitResult:
        """A new version of this device's keys, co-signed by the previous one; old versions are kept."""
        ring = self._keyring()
        current = ring.current()
        if current.record is None:
            raise KeysNotInitialized("this device's key was never registered: run `keys init`")
        # The directory wants each version created after the previous one, even with a clock step back.
        created = max(utc_now(), parse_time(current.created_at) + timedelta(milliseconds=1))
        pair = DeviceKeyPair.generate(user_id=ring.user_id, device_id=current.device_id, version=current.version + 1,
                                      with_pq=current.pq is not None, created_at=format_time(created))
        pq, note = self._register(ring, pair, current)
        return KeyInitResult(pair=pair, fingerprint=_fp(pair), pq_published=pq, note=note)

    def backup_keys(self, password: str) -> dict[str, Any]:
        """Encrypt every private key this device holds with the password and store it in the directory."""
        ring = self._keyring()
        if not ring.pairs:
            raise KeysNotInitialized("no keys to back up")
        key_version = max(ring.max_version, 1)
        blob = backup_mod.seal_backup(ring.dumps(), password=password, user_id=ring.user_id,
                                      key_version=key_version, params=self.kdf)
        return dict(self._authed("PUT", "/v1/keys/backup", json={"blob": blob, "key_version": key_version}))

    def restore_keys(self, password: str, *, register_device: bool = True, with_pq: bool = False) -> dict[str, Any]:
        """On a second device: fetch the backup, add its keys (to read history), register this device's own
        keys if it has none, and store an updated backup. Needs a recent login (the directory asks for it)."""
        body = self._authed("GET", "/v1/keys/backup")
        plaintext = backup_mod.open_backup(str(body["blob"]), password=password, user_id=self.user_id,
                                           key_version=int(body["key_version"]))
        try:
            restored = Keyring.from_json(json.loads(plaintext))
        except ValueError as exc:
            raise BackupError("the backup's content is not a keyring") from exc
        if restored.user_id != self.user_id:
            raise BackupError("the backup belongs to another user")
        ring = self._keyring()
        added = ring.merge(restored.pairs.values())
        self.state.save_keyring(ring)
        registered = None
        if register_device and (ring.device_id is None or not any(
                p.device_id == ring.device_id and p.record is not None for p in ring.pairs.values())):
            registered = self.init_keys(with_pq=with_pq)
            self.backup_keys(password)
        return {"restored": added, "device_id": self._keyring().device_id,
                "registered": registered.pair.ref if registered else None}

    def show_keys(self) -> list[dict[str, Any]]:
        """This user's devices as the directory proves them, with fingerprints; marks this device."""
        ring = self._keyring()
        found = self.lookup_keys([ring.user_id])[ring.user_id]
        out = []
        for entry in found.devices:
            local = ring.get(entry.key.ref)
            out.append({
                "device_id": entry.key.ref.device_id,
                "version": entry.key.ref.version,
                "fingerprint": entry.key.fingerprint,
                "created_at": format_time(entry.key.created_at),
                "this_device": entry.key.ref.device_id == ring.device_id,
                "private_key_held": local is not None,
                "post_quantum": entry.key.pq_pub is not None,
                "leaf_index": entry.leaf_index,
            })
        return out

    def monitor_keys(self) -> KeyMonitorReport:
        """Every key record ever published for this user (`GET /v1/keys/{user_id}/audit`, all pages), each
        proven in a checkpoint consistent with the remembered one, chain-checked, and classified against this
        device's keyring (which holds every key pair this device generated, by version): THIS_DEVICE,
        OTHER_DEVICE (for the user to confirm) or ALARM (this device's id with a key it never made).
        Revocations (log-signed leaves) mark the versions they end."""
        ring = self._keyring()
        directory = self._directory()
        leaves: list[PublishedLeaf] = []
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            body = self._authed("GET", f"/v1/keys/{ring.user_id}/audit", params={"cursor": cursor} if cursor else None)
            leaves.extend(directory.verify_user_audit(body, user_id=ring.user_id))
            following = body.get("next_cursor")
            if not following:
                break
            cursor = str(following)
            if cursor in seen:
                raise KeyRecordInvalid("the directory's monitoring pages loop")
            seen.add(cursor)
        keys = [leaf for leaf in leaves if not leaf.is_revocation]
        verify_chain([leaf.entry.key for leaf in keys])
        by_ref = {leaf.entry.key.ref: leaf for leaf in keys}
        revocations: dict[str, PublishedLeaf] = {}  # device id -> its revocation (one per device)
        for leaf in leaves:
            if not leaf.is_revocation:
                continue
            revoked = leaf.entry.key
            listed = by_ref.get(revoked.ref)
            if listed is None or listed.entry.key.record.get("sig_pub") != revoked.record.get("sig_pub"):
                raise KeyRecordInvalid(f"leaf {leaf.entry.leaf_index} revokes a key the directory never listed")
            revocations.setdefault(revoked.ref.device_id, leaf)
        out = []
        for leaf in keys:
            key = leaf.entry.key
            revocation = revocations.get(key.ref.device_id)
            if revocation is not None and revocation.entry.key.ref.version < key.ref.version:
                revocation = None  # revoking a device ends the version it names and the earlier ones only
            out.append(MonitoredKey(
                key=key, leaf_index=leaf.entry.leaf_index, status=_classify(ring, key), published_at=leaf.appended_at,
                revoked_at=revocation.revoked_at if revocation else None,
                revocation_reason=revocation.revocation_reason if revocation else None,
            ))
        last = directory.last_checkpoint
        return KeyMonitorReport(user_id=ring.user_id, device_id=ring.device_id,
                                checkpoint_size=last.size if last else 0, keys=tuple(out))

    def revoke_device(self, device_id: str, reason: str) -> dict[str, Any]:
        return dict(self._authed("POST", f"/v1/keys/{self.user_id}/devices/{device_id}/revoke",
                                 json={"reason": reason}))

    # == messages ====================================================================================

    def _recipients(self, member_ids: Sequence[str], ring: Keyring, *, allow_missing: bool) -> list[env.Recipient]:
        me = ring.user_id
        current = ring.current()
        found = self.lookup_keys([*member_ids, me])
        missing = [u for u in member_ids if u != me and not found[u].devices]
        if missing and not allow_missing:
            raise RecipientKeysMissing(
                f"{len(missing)} channel member(s) have no published keys and could not read the message",
                user_ids=missing,
            )
        own = {d.key.ref.device_id: d.key for d in found[me].devices}
        listed = own.get(current.device_id)
        if listed is None:
            raise KeysNotInitialized("this device's key is not (or no longer) in the directory")
        if listed.ref != current.ref or listed.record.get("sig_pub") != current.sig_pub or \
                listed.record.get("enc_pub") != current.enc_pub:
            raise DirectoryInconsistent("the directory lists another key for this very device")
        out: list[env.Recipient] = []
        for user_keys in found.values():
            out.extend(env.Recipient.from_key(k) for k in user_keys.keys)
        return out

    def send(self, cid: str, text: str, *, allow_pq: bool = True, allow_missing: bool = False) -> SentMessage:
        """Encrypt for every device of every channel member (this user's other devices too), sign, post."""
        channel_type, channel_id = _parse_cid(cid)
        ring = self._keyring()
        sender = ring.current()
        members = self.channel_members(cid)
        recipients = self._recipients(members, ring, allow_missing=allow_missing)
        try:
            sealed = env.seal(text=text, sender=sender, recipients=recipients, channel_cid=cid, allow_pq=allow_pq)
        except EnvelopeTooLarge:
            if not allow_pq or env.choose_suite(recipients) != e2ee.SUITE_PQ:
                raise
            # Hybrid wrapped keys are ~1.6 KB each: past the message limit, fall back to X25519.
            sealed = env.seal(text=text, sender=sender, recipients=recipients, channel_cid=cid, allow_pq=False)
        wire = sealed.to_text()
        self._stream().send_message(channel_type, channel_id, message_id=sealed.mid, text=wire)
        return SentMessage(message_id=sealed.mid, channel_cid=cid, suite=sealed.suite, recipients=sealed.recipients,
                           envelope_chars=len(wire))

    def read(self, cid: str, *, limit: int = 50) -> list[ReadMessage]:
        """The channel's latest messages, each decrypted and verified, or with the reason it was refused."""
        channel_type, channel_id = _parse_cid(cid)
        ring = self._keyring()
        if not ring.pairs:
            raise KeysNotInitialized("this device has no keys: run `keys init` or `keys restore`")
        state = self._stream().query_channel(channel_type, channel_id, limit=limit)
        out: list[ReadMessage] = []
        for message in state.get("messages", []):
            if message.get("type") == "deleted":
                continue
            out.append(self._open_one(cid, message, ring))
        return out

    def _open_one(self, cid: str, message: Mapping[str, Any], ring: Keyring) -> ReadMessage:
        user = message.get("user")
        stream_user = str(user.get("id")) if isinstance(user, dict) and user.get("id") else None
        created: datetime | None
        try:
            created = parse_time(str(message.get("created_at")))
        except ValueError:
            created = None
        stream_id = str(message.get("id"))
        try:
            opened = env.open_envelope(
                str(message.get("text") or ""),
                keyring=ring,
                channel_cid=cid,
                sender_key=self._sender_key,
                stream_user_id=stream_user,
                stream_message_id=str(message.get("id")),
                stream_created_at=created,
                seen=self.state.seen,
            )
        except EnvelopeError as exc:
            return ReadMessage(stream_id, stream_user, created, error=exc)
        except (DirectoryError, KeyRecordInvalid) as exc:
            # A directory that cannot prove the sender key is as bad as a bad signature, for this message.
            return ReadMessage(stream_id, stream_user, created,
                               error=SenderKeyNotValid(f"sender key not provable: {exc.message}"))
        return ReadMessage(stream_id, stream_user, created, text=opened.text, sender=opened.sender,
                           sender_fingerprint=opened.sender_fingerprint, suite=opened.suite)

    # == audit (auditors) ============================================================================

    def _audit_checkpoints(self) -> DirectoryVerifier:
        """Verifies audit checkpoints: pinned key, consistent with the last one this client verified."""
        data = self.state.load_directory()
        memory = data.setdefault(f"audit:{self.gateway_url}", {})

        def save(updated: dict[str, Any]) -> None:
            current = self.state.load_directory()
            current[f"audit:{self.gateway_url}"] = updated
            self.state.save_directory(current)

        return DirectoryVerifier(
            memory=memory,
            save=save,
            fetch_verifier_key=lambda: str(self._authed("GET", "/v1/audit/checkpoint/key")),
            fetch_consistency=lambda a, b: list(
                self._authed("GET", "/v1/audit/proof/consistency", params={"from": a, "to": b})["proof"]
            ),
        )

    def audit_export(self, destination: str | os.PathLike[str], *, fmt: str = "jsonl", since: str | None = None,
                     until: str | None = None) -> dict[str, Any]:
        """Streams an export into `destination`, kept only if its trailer is valid (line count, SHA-256 of
        the lines, last seq, and a signed checkpoint consistent with what this client saw that covers
        every line); otherwise nothing is left there and AuditVerificationFailed is raised."""
        verifier = self._audit_checkpoints()

        def checkpoint_size(note: str) -> int:
            try:
                return verifier.verify_checkpoint(note).size
            except DirectoryError as exc:
                raise AuditVerificationFailed(f"audit export checkpoint refused: {exc.message}") from exc

        params = {k: v for k, v in (("format", fmt), ("since", since), ("until", until)) if v}
        target = Path(destination)
        partial = target.with_name(target.name + ".partial")
        reader = ExportReader(fmt)
        try:
            with self.api.http.get(self.gateway_url + "/v1/audit/export", params=params, stream=True,
                                   headers={"Authorization": f"Bearer {self._token()}"},
                                   timeout=self.api.timeout) as response:
                if response.status_code >= 400:
                    raise api_error(response)
                with partial.open("wb") as out:
                    for line in _lines(response.iter_content(chunk_size=65536)):
                        ready = reader.feed(line)
                        if ready is not None:
                            out.write(ready)
                    trailer = reader.finish(checkpoint_size)
                    size = checkpoint_size(trailer.checkpoint_note)
                    out.write(reader.pending or b"")  # the file keeps its trailer: it can be checked again later
        except ExportTrailerError as exc:
            partial.unlink(missing_ok=True)
            raise AuditVerificationFailed(f"audit export refused: {exc}") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)
        return {"path": str(target), "format": fmt, "count": trailer.count, "last_seq": trailer.last_seq,
                "sha256": trailer.sha256, "checkpoint_size": size}

    def audit_verify(self) -> dict[str, Any]:
        """Server-side verification plus this client's own: signed checkpoint (pinned key) consistent with
        the last audit checkpoint it verified."""
        verifier = self._audit_checkpoints()
        report = dict(self._authed("GET", "/v1/audit/verify"))
        note = str(self._authed("GET", "/v1/audit/checkpoint"))
        try:
            checkpoint = verifier.verify_checkpoint(note)
        except DirectoryError as exc:
            raise AuditVerificationFailed(f"audit checkpoint refused: {exc.message}") from exc
        report["client_checkpoint_size"] = checkpoint.size
        report["client_consistent"] = True
        if not report.get("ok"):
            raise AuditVerificationFailed(
                f"the audit log does not verify (first bad entry {report.get('first_bad_seq')}: "
                f"{report.get('problem') or 'no reason given'})"
            )
        return report


def _lines(chunks: Iterable[bytes]) -> Iterable[bytes]:
    """Exact lines, each with its newline; a last piece without one (a cut stream) comes out as it is."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        *whole, rest = rest.split(b"\n")
        yield from (line + b"\n" for line in whole)
    if rest:
        yield rest


def _classify(ring: Keyring, key: VerifiedKey) -> str:
    if ring.device_id is None or key.ref.device_id != ring.device_id:
        return OTHER_DEVICE
    made = ring.get(key.ref)
    if made is not None and made.sig_pub == key.record.get("sig_pub") and made.enc_pub == key.record.get("enc_pub"):
        return THIS_DEVICE
    return ALARM


def _fp(pair: DeviceKeyPair) -> str:
    return fingerprint(pair.record or {})
