"""Audit emitting that loses nothing: a durable SQLite outbox and a background shipper.

`emit()` commits the event to a local SQLite file (WAL) before it returns, so an event whose request was
acknowledged survives a crash or kill -9 of this process and any outage of audit-service. Shipper threads
(two per process by default, each with one batch in flight; the second only while full batches go out)
claim batches (a lease, so threads and several
server workers sharing one outbox file never send the same rows), post them to audit-service's internal
ingestion endpoint with this service's identity, delete them only after a 2xx, and back off exponentially
with jitter on failure. audit-service dedupes by `event_id`, so a batch resent after a lost answer is
recorded once. Batches in flight at once may be committed in either order: the log's order is
audit-service's, by arrival, as it already was across server workers.

Choice on the hot path: a direct, synchronous INSERT+COMMIT per event (WAL, synchronous=NORMAL) costs
tens of microseconds and keeps the guarantee trivially. A queue and writer thread with group commit would
only save the commit cost by acknowledging before the write is durable (or by making every request wait
on another thread, which costs more than the commit under the GIL). synchronous=NORMAL in WAL mode
survives process crashes; an OS crash or power loss can drop the last transactions unless
`AUDIT_OUTBOX_SYNC=full` is set (fsync on every commit).

PHI (ip, user agent) is sealed before the event touches the outbox: HPKE to audit-service's X25519 key
(`safeharbor_common.audit_phi`), which this emitter cannot open, not even right after writing it: each
event's key is a leaf of a key tree the sealer has already moved past. The key comes from `AUDIT_PHI_PUBLIC_KEY`
when set (pinned), else from audit-service, signed by its service identity and checked against the key
this service already trusts for it; it is cached (signed, checked again on load) in the outbox file. Until
a key was ever obtained (audit-service unreachable on a first start), ip and user agent are withheld,
never written in clear: the event says so (`meta.phi_withheld`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from .audit_phi import KEY_PATH, PhiKeyError, PhiPublicKey
from .internal_http import internal_session

INGEST_PATH = "/internal/v1/audit/events"
AUDIT_SERVICE_IDENTITY = "audit"
SEVERITIES = frozenset({"info", "high", "alert"})  # alert: someone must look now (token reuse, a failed control)
MAX_FIELD_LENGTH = 512
LEASE_SECONDS = 30.0

_log = logging.getLogger("safeharbor.audit_emitter")

# The outbox is a plain rowid table: every index or AUTOINCREMENT counter is another B-tree page written
# by each emit, on every request's path (three of them tripled the cost of an emit). Claims scan in rowid
# order and skip the few leased rows; duplicates by event_id are dropped by audit-service.
# Rowids may be reused once the newest row is deleted, which keeps order: a reused id is again the newest.
_OUTBOX_TABLE = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    body TEXT NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0,
    lease_owner INTEGER NOT NULL DEFAULT 0
)"""
# Partial: an emit (lease_until = 0) never touches it; it finds the leased rows and their owners.
_LEASE_INDEX = "CREATE INDEX IF NOT EXISTS outbox_leased ON outbox (lease_owner, lease_until) WHERE lease_until > 0"
_DEAD_LETTER_TABLE = """
CREATE TABLE IF NOT EXISTS dead_letter (
    event_id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
)"""
_PHI_KEY_TABLE = "CREATE TABLE IF NOT EXISTS phi_key (id INTEGER PRIMARY KEY CHECK (id = 1), document TEXT NOT NULL)"
_OUTBOX_COLUMNS = "id, event_id, body, lease_until, lease_owner"
PHI_KEY_RETRY_SECONDS = 5.0


class AuditEmitError(ValueError):
    """An event cannot be emitted as given (a programming error in the caller)."""


@dataclass(frozen=True)
class ShipperSettings:
    batch_size: int = 500
    # Let events gather: each batch costs a POST, audit-service's request handling and commit, and two short
    # write locks here. 0.25 s instead of 0.1 s cut audit-service's CPU per gateway event by about 40 % at
    # 150-400 requests/s (docs/PERFORMANCE.md); events are durable in the outbox meanwhile.
    linger_seconds: float = 0.25
    idle_poll_seconds: float = 1.0  # other processes sharing the outbox may have left rows
    backoff_initial: float = 0.2
    backoff_max: float = 30.0
    request_timeout: float = 10.0
    # Shipper threads per process, each with its own batch in flight: while audit-service commits one
    # batch, the next is already being parsed by its other worker. Leases keep their batches disjoint.
    # Beyond the first, they ship only while there is a backlog (the last batch sent was full).
    in_flight: int = 2


# Built once: json.dumps with these arguments builds the same encoder on every call.
_encode_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _utc_now_rfc3339() -> str:
    # isoformat is a third cheaper than strftime and gives the same text: YYYY-MM-DDTHH:MM:SS.ffffff then "Z".
    return datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def _clip(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise AuditEmitError(f"audit field {name} must be a string")
    return value[:MAX_FIELD_LENGTH]


@dataclass(frozen=True)
class PreparedEvent:
    """What `AuditEmitter.prepare` made of an event before its outcome is known."""

    event_id: str
    ts: str
    phi: dict[str, Any] | None  # the sealed envelope of the event's PHI, if it has any
    phi_withheld: bool  # PHI was given but no key to seal it to: left out, and said so in meta


class AuditEmitter:
    def __init__(
        self,
        *,
        outbox_path: str | os.PathLike[str],
        source: str,
        service_url: str | None,
        token_provider: Callable[[], str] | None = None,
        settings: ShipperSettings | None = None,
        sync_full: bool = False,
        session: requests.Session | None = None,
        phi_key: PhiPublicKey | None = None,
        phi_key_verifier: Callable[[Mapping[str, Any]], PhiPublicKey] | None = None,
    ) -> None:
        """`phi_key`: pinned; else `phi_key_verifier` checks the signed key fetched from audit-service."""
        self.outbox_path = Path(outbox_path)
        self.source = source
        self.service_url = service_url.rstrip("/") if service_url else None
        self._token_provider = token_provider
        self.settings = settings or ShipperSettings()
        self._sync_full = sync_full
        self._session_factory: Callable[[], requests.Session] = (
            (lambda: session) if session is not None else internal_session
        )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pid = -1
        self._threads: list[threading.Thread] = []
        self._shipped_lock = threading.Lock()
        self._wake = threading.Event()
        # Set while full batches go out: the extra shippers (in_flight > 1) join in only then, so light traffic
        # is one lingering shipper's larger batches, not several shippers' small ones.
        self._backlog = threading.Event()
        self._stop = threading.Event()
        self._batch_size = self.settings.batch_size
        self.shipped = 0  # events this process delivered (2xx), for tests and metrics
        self._phi_key = phi_key
        self._phi_key_verifier = phi_key_verifier
        self._phi_key_tried = 0.0
        self.outbox_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(self._connect()) as conn:
            conn.execute(_OUTBOX_TABLE)
            conn.execute(_DEAD_LETTER_TABLE)
            conn.execute(_PHI_KEY_TABLE)
            _upgrade_outbox(conn)
            conn.execute(_LEASE_INDEX)

    # -- storage ------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.outbox_path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self._sync_full else 'NORMAL'}")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _conn(self) -> sqlite3.Connection:
        """One connection per thread and process: sqlite3 connections must not cross a fork."""
        pid = os.getpid()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != pid:
            conn = self._connect()
            self._local.conn, self._local.pid = conn, pid
        return conn

    # -- emitting -----------------------------------------------------------------------------------

    def emit(
        self,
        *,
        action: str,
        actor: str,
        role: str | None = None,
        resource: str | None = None,
        outcome: str,
        request_id: str | None = None,
        severity: str = "info",
        ip: str | None = None,
        user_agent: str | None = None,
        meta: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        ts: str | None = None,
        prepared: PreparedEvent | None = None,
    ) -> str:
        """Durably records one event (committed before returning) and returns its event id. `prepared`: the
        id, time and sealed PHI made earlier by `prepare` (then `ip`, `user_agent`, `event_id`, `ts` are not
        given again)."""
        if prepared is not None:
            if ip is not None or user_agent is not None or event_id is not None or ts is not None:
                raise AuditEmitError("a prepared event already has its id, time and PHI")
            event_id, ts = prepared.event_id, prepared.ts
        if not isinstance(action, str) or not action or len(action) > 128:
            raise AuditEmitError("audit action must be a non-empty string of at most 128 characters")
        if not isinstance(actor, str) or not actor:
            raise AuditEmitError("audit actor must be a non-empty string")
        if not isinstance(outcome, str) or not outcome:
            raise AuditEmitError("audit outcome must be a non-empty string")
        if severity not in SEVERITIES:
            raise AuditEmitError("audit severity must be info, high or alert")
        event: dict[str, Any] = {
            "event_id": event_id or str(uuid.uuid4()),
            "ts": ts or _utc_now_rfc3339(),
            "source": self.source,
            "actor": actor[:MAX_FIELD_LENGTH],
            "role": _clip(role, "role"),
            "action": action,
            "resource": _clip(resource, "resource"),
            "outcome": outcome[:64],
            "request_id": _clip(request_id, "request_id"),
            "severity": severity,
        }
        event["meta"] = event_meta = dict(meta or {})
        phi, withheld = ((prepared.phi, prepared.phi_withheld) if prepared is not None
                         else self._seal_phi(str(event["event_id"]), ip, user_agent))
        if phi is not None:
            event["phi"] = phi
        if withheld:
            event_meta["phi_withheld"] = True
        try:
            body = _encode_json(event)
        except (TypeError, ValueError) as exc:
            raise AuditEmitError("audit meta must be JSON-serialisable") from exc
        self._conn().execute("INSERT INTO outbox (event_id, body) VALUES (?, ?)", (event["event_id"], body))
        self.ensure_started()
        if not self._wake.is_set():  # set() takes a lock and notifies: once per wake-up is enough
            self._wake.set()
        return str(event["event_id"])

    def prepare(self, *, ip: str | None = None, user_agent: str | None = None) -> PreparedEvent:
        """An event's id and time, and its PHI sealed, ahead of `emit`: a caller that waits on something else
        anyway (the gateway, on the service's answer) does this work then, not after."""
        event_id = str(uuid.uuid4())
        phi, withheld = self._seal_phi(event_id, ip, user_agent)
        return PreparedEvent(event_id=event_id, ts=_utc_now_rfc3339(), phi=phi, phi_withheld=withheld)

    def _seal_phi(self, event_id: str, ip: str | None,
                  user_agent: str | None) -> tuple[dict[str, Any] | None, bool]:
        """The sealed PHI envelope (None when there is none) and whether PHI had to be withheld (no key)."""
        ip, user_agent = _clip(ip, "ip"), _clip(user_agent, "user_agent")
        if ip is None and user_agent is None:
            return None, False
        key = self.phi_key()
        if key is None:
            return None, True
        return key.seal({"ip": ip[:64] if ip else None, "user_agent": user_agent}, event_id=event_id), False

    # -- the PHI key --------------------------------------------------------------------------------

    def phi_key(self) -> PhiPublicKey | None:
        """The key PHI is sealed to: pinned, cached, or fetched (at most every few seconds while missing)."""
        if self._phi_key is not None or self._phi_key_verifier is None:
            return self._phi_key
        row = self._conn().execute("SELECT document FROM phi_key WHERE id = 1").fetchone()
        if row is not None:
            with contextlib.suppress(PhiKeyError, ValueError):
                self._phi_key = self._phi_key_verifier(json.loads(row[0]))
                return self._phi_key
        if self.service_url is None or time.monotonic() - self._phi_key_tried < PHI_KEY_RETRY_SECONDS:
            return None
        self._phi_key_tried = time.monotonic()
        try:
            headers = {"X-Service-Token": self._token_provider()} if self._token_provider else {}
            response = self._session().get(self.service_url + KEY_PATH, headers=headers, timeout=1.0)
            document = response.json() if response.status_code == 200 else None
            if not isinstance(document, dict):
                return None
            key = self._phi_key_verifier(document)
        except (requests.RequestException, ValueError) as exc:  # PhiKeyError is a ValueError
            _log.warning("audit PHI key unavailable", extra={"fields": {"error": type(exc).__name__}})
            return None
        self._conn().execute("INSERT OR REPLACE INTO phi_key (id, document) VALUES (1, ?)",
                             (_encode_json(document),))
        self._phi_key = key
        return key

    # -- shipping -----------------------------------------------------------------------------------

    def ensure_started(self) -> None:
        """Starts this process's shipper once (after a fork the child starts its own)."""
        if self._pid == os.getpid() or self.service_url is None:
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._stop = threading.Event()
            self._wake = threading.Event()
            self._backlog = threading.Event()
            self._threads = [threading.Thread(target=self._run, args=(n,), name=f"audit-shipper-{n}", daemon=True)
                             for n in range(max(1, self.settings.in_flight))]
            for thread in self._threads:
                thread.start()
            self._pid = os.getpid()

    def _claim(self, conn: sqlite3.Connection, limit: int) -> tuple[float, list[tuple[int, str, str]]]:
        now = time.time()
        # The lease's own stamp: deleting or releasing only rows still holding it means a batch taken over
        # by another process (this one stalled past its lease) never deletes rows that are not its own.
        stamp = now + LEASE_SECONDS + random.random() * 1e-3
        # Leases of processes that died (kill -9 mid-send) are taken over at once, not after LEASE_SECONDS.
        owners = [int(r[0]) for r in conn.execute(
            "SELECT DISTINCT lease_owner FROM outbox WHERE lease_until > 0 AND lease_until >= ?", (now,))]
        dead = [pid for pid in owners if pid != os.getpid() and not _process_alive(pid)][:50]
        marks = ",".join("?" * len(dead))
        stale = f"lease_until < ? OR lease_owner IN ({marks})" if dead else "lease_until < ?"
        # One statement under SQLite's write lock: processes sharing the file get disjoint batches.
        rows = conn.execute(
            "UPDATE outbox SET lease_until = ?, lease_owner = ? WHERE id IN "
            f"(SELECT id FROM outbox WHERE {stale} ORDER BY id LIMIT ?) "
            "RETURNING id, event_id, body",
            (stamp, os.getpid(), now, *dead, limit),
        ).fetchall()
        rows.sort()
        return stamp, [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    def ship_once(self, conn: sqlite3.Connection | None = None, session: requests.Session | None = None) -> int:
        """Sends one batch; returns how many events left the outbox (raises on a failed send)."""
        conn = conn or self._conn()
        session = session or self._session()
        stamp, batch = self._claim(conn, self._batch_size)
        if not batch:
            return 0
        ids = [row[0] for row in batch]
        try:
            delivered = self._post(session, batch)
        except BaseException:
            self._release(conn, ids, stamp)
            raise
        rejected = delivered.get("rejected") or []
        reasons = {str(r.get("event_id")): str(r.get("reason", "rejected"))[:200] for r in rejected
                   if isinstance(r, Mapping)}
        conn.execute("BEGIN IMMEDIATE")
        try:
            if reasons:
                # Kept locally for an operator: never silently dropped, never retried forever.
                conn.executemany(
                    "INSERT OR REPLACE INTO dead_letter (event_id, body, reason, at) VALUES (?, ?, ?, ?)",
                    [(eid, body, reasons[eid], time.time()) for _, eid, body in batch if eid in reasons],
                )
            conn.executemany("DELETE FROM outbox WHERE id = ? AND lease_owner = ? AND lease_until = ?",
                             [(i, os.getpid(), stamp) for i in ids])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if reasons:
            _log.error("audit events rejected", extra={"fields": {"count": len(reasons)}})
        with self._shipped_lock:
            self.shipped += len(batch) - len(reasons)
        return len(batch)

    def _release(self, conn: sqlite3.Connection, ids: list[int], stamp: float) -> None:
        with contextlib.suppress(sqlite3.Error):  # if this fails, the lease expires on its own
            conn.executemany("UPDATE outbox SET lease_until = 0 WHERE id = ? AND lease_until = ?",
                             [(i, stamp) for i in ids])

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None or getattr(self._local, "session_pid", None) != os.getpid():
            session = self._session_factory()
            self._local.session, self._local.session_pid = session, os.getpid()
        return session

    def _post(self, session: requests.Session, batch: list[tuple[int, str, str]]) -> dict[str, Any]:
        assert self.service_url is not None
        # The stored bodies are already JSON: splice them rather than parse and re-serialise.
        payload = '{"events":[' + ",".join(body for _, _, body in batch) + "]}"
        headers = {"Content-Type": "application/json"}
        if self._token_provider is not None:
            headers["X-Service-Token"] = self._token_provider()
        response = session.post(
            self.service_url + INGEST_PATH,
            data=payload.encode("utf-8"),
            headers=headers,
            timeout=self.settings.request_timeout,
        )
        if response.status_code == 413 and self._batch_size > 1:
            self._batch_size = max(1, self._batch_size // 2)
        if not 200 <= response.status_code < 300:
            raise ShipError(f"audit-service answered {response.status_code}")
        self._batch_size = self.settings.batch_size
        try:
            answer = response.json()
        except ValueError:
            return {}
        return answer if isinstance(answer, dict) else {}

    def _run(self, index: int = 0) -> None:
        conn = self._connect()
        session = self._session_factory()
        backoff = self.settings.backoff_initial
        stop, wake, backlog = self._stop, self._wake, self._backlog
        with contextlib.suppress(Exception):  # obtained off the request path when possible
            self.phi_key()
        while not stop.is_set():
            if index > 0 and not backlog.is_set():
                backlog.wait(self.settings.idle_poll_seconds)
                continue
            try:
                sent = self.ship_once(conn, session)
            except Exception as exc:  # noqa: BLE001 - any failure: keep the rows, back off, retry
                delay = random.uniform(0, backoff) + backoff / 2  # jitter so workers don't stampede
                _log.warning(
                    "audit shipping failed; retrying",
                    extra={"fields": {"error": type(exc).__name__, "retry_in_s": round(delay, 2)}},
                )
                stop.wait(delay)
                backoff = min(self.settings.backoff_max, backoff * 2)
                continue
            backoff = self.settings.backoff_initial
            if sent >= self._batch_size:
                backlog.set()
                continue  # more waiting: no pause
            if index > 0:
                backlog.clear()  # the backlog is gone: back to waiting for the next one
                continue
            if sent == 0:
                wake.wait(self.settings.idle_poll_seconds)
                wake.clear()
            if self.settings.linger_seconds:
                stop.wait(self.settings.linger_seconds)
        conn.close()
        session.close()

    # -- control ------------------------------------------------------------------------------------

    def pending(self) -> int:
        row = self._conn().execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(row[0])

    def dead_letters(self) -> int:
        row = self._conn().execute("SELECT COUNT(*) FROM dead_letter").fetchone()
        return int(row[0])

    def is_empty(self) -> bool:
        """No event waiting (a look at the first row: counting them all walks the whole table)."""
        return self._conn().execute("SELECT 1 FROM outbox LIMIT 1").fetchone() is None

    def flush(self, timeout: float = 10.0) -> bool:
        """Waits until the outbox is empty (shipped by any process); True if it emptied in time."""
        self.ensure_started()
        deadline = time.monotonic() + timeout
        while True:
            if self.is_empty():
                return True
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.02)

    def close(self, timeout: float = 5.0) -> None:
        if self._threads and self._pid == os.getpid():
            self._stop.set()
            self._wake.set()
            deadline = time.monotonic() + timeout
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        self._pid = -1
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _upgrade_outbox(conn: sqlite3.Connection) -> None:
    """Rewrites an outbox file of an earlier layout (lease index, UNIQUE event_id, AUTOINCREMENT) in
    place, in one transaction: pending events are kept, in order."""
    conn.execute("BEGIN IMMEDIATE")  # processes starting together: one upgrades, the others see it done
    try:
        conn.execute("DROP INDEX IF EXISTS outbox_lease")
        row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'outbox'").fetchone()
        sql = str(row[0]).upper() if row else ""
        columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(outbox)")}
        if "UNIQUE" in sql or "AUTOINCREMENT" in sql or "lease_owner" not in columns:
            owner = "lease_owner" if "lease_owner" in columns else "0"
            conn.execute("ALTER TABLE outbox RENAME TO outbox_old")
            conn.execute(_OUTBOX_TABLE)
            conn.execute(f"INSERT INTO outbox ({_OUTBOX_COLUMNS}) "
                         f"SELECT id, event_id, body, lease_until, {owner} FROM outbox_old ORDER BY id")
            conn.execute("DROP TABLE outbox_old")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class ShipError(RuntimeError):
    """audit-service did not accept a batch (it stays in the outbox)."""


def init_app(app: Any) -> AuditEmitter:
    """Builds the emitter from app.config and registers it as app.extensions["audit"].

    Keys: AUDIT_OUTBOX_PATH (default var/outbox-<service>.db), AUDIT_SERVICE_URL (default loopback 8103;
    empty disables shipping), SERVICE_NAME, optional AUDIT_OUTBOX_SYNC ("full" to fsync every event),
    optional AUDIT_PHI_PUBLIC_KEY (pins the PHI key; else fetched, checked with the trusted "audit" key);
    the signer is app.extensions["service_signer"]. The shipper starts in the serving process on the first
    request or emit (never in a server main process before the fork).
    """
    config = app.config
    signer = app.extensions.get("service_signer")
    # audit-service accepts an event only when its source is the calling service's identity.
    source = str(config.get("SERVICE_NAME") or getattr(signer, "name", None) or app.name)
    outbox = config.get("AUDIT_OUTBOX_PATH") or f"var/outbox-{source}.db"
    url = config.get("AUDIT_SERVICE_URL", "http://127.0.0.1:8103")
    token_provider: Callable[[], str] | None = None
    if signer is not None:

        def token_provider() -> str:
            return str(signer.token_for(AUDIT_SERVICE_IDENTITY))

    pinned = config.get("AUDIT_PHI_PUBLIC_KEY")
    verifier = app.extensions.get("service_verifier")
    audit_identity = verifier.trusted_key(AUDIT_SERVICE_IDENTITY) if verifier is not None else None
    phi_key_verifier: Callable[[Mapping[str, Any]], PhiPublicKey] | None = None
    if audit_identity is not None:

        def phi_key_verifier(document: Mapping[str, Any]) -> PhiPublicKey:
            return PhiPublicKey.from_signed(document, audit_identity=audit_identity)

    emitter = AuditEmitter(
        outbox_path=outbox,
        source=source,
        service_url=str(url) if url else None,
        token_provider=token_provider,
        sync_full=str(config.get("AUDIT_OUTBOX_SYNC", "normal")).lower() == "full",
        phi_key=PhiPublicKey.from_setting(str(pinned)) if pinned else None,
        phi_key_verifier=phi_key_verifier,
    )
    app.extensions["audit"] = emitter
    # Events left by a previous run ship as soon as this worker serves anything.
    app.before_request(emitter.ensure_started)
    return emitter

