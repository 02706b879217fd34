"""Which sessions and tokens have been ended before they expire (trust rule 3), the same at the gateway and in
every service that verifies tokens (keydir, audit, push; auth reads its own table).

Each worker keeps the set in memory, so a request costs a dict lookup. It is filled by polling
auth-service's revocation feed every `poll_interval` (a quarter second by default) and, where Redis is
configured, pushed at once over pub/sub. The feed carries ended sessions (`revoked`, by sid) and tokens
replaced by refresh (`retired`, by jti, refused from the end of their grace). Fail closed: when the feed
has not been read for `max_staleness` seconds, authenticated requests are refused with 503 rather than
risk honouring an ended session (docs/SECURITY.md).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import requests

from .internal_http import internal_session
from .service_identity import ServiceTokenSigner

REDIS_CHANNEL = "safeharbor:revocations"
FEED_PATH = "/internal/v1/revocations"
_log = logging.getLogger("safeharbor.revocation")


class RevocationList:
    def __init__(
        self,
        *,
        feed_url: str,
        signer: ServiceTokenSigner,
        fallback_feed_urls: Sequence[str] = (),
        redis_url: str | None = None,
        poll_interval: float = 0.25,
        max_staleness: float = 5.0,
    ) -> None:
        # Several auth-service instances: a feed that does not answer is left for the next one (the cursor is
        # the database's, the same on every instance), so one instance down never makes the list stale.
        self._feed_urls = (feed_url, *(url for url in fallback_feed_urls if url != feed_url))
        self._feed_turn = 0
        self._signer = signer
        self._redis_url = redis_url
        self._poll_interval = poll_interval
        self._max_staleness = max_staleness
        self._revoked: dict[str, float] = {}
        # jti → (refused from, until): epoch seconds.
        self._retired: dict[str, tuple[float, float]] = {}
        self._cursor = "0"
        self._last_fresh = float("-inf")
        self._started = False
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._http = internal_session()
        self._reported: set[str] = set()  # retired jtis whose reuse auth-service has been told of

    # -- the hot path -------------------------------------------------------------------------------

    def is_revoked(self, sid: str) -> bool:
        until = self._revoked.get(sid)
        return until is not None and until >= time.time() - 60

    def is_retired(self, jti: str) -> bool:
        window = self._retired.get(jti)
        return window is not None and window[0] <= time.time() <= window[1] + 60

    def refuses(self, *, sid: str, jti: str) -> bool:
        """True when the session has ended or this token was replaced by refresh (grace over).

        A retired token presented here is reuse, whichever verifier sees it first: auth-service is told (once
        per token, in the background) and ends the whole session, as it would had the token reached it."""
        if self.is_revoked(sid):
            return True
        if not self.is_retired(jti):
            return False
        if jti not in self._reported:
            self._reported.add(jti)
            threading.Thread(target=self._report_reuse, args=(sid, jti), name="revocation-reuse",
                             daemon=True).start()
        return True

    def is_fresh(self) -> bool:
        return time.monotonic() - self._last_fresh <= self._max_staleness

    def age(self) -> float:
        """Seconds since the feed last answered in this worker (inf: never); the compliance report's evidence."""
        return time.monotonic() - self._last_fresh

    @property
    def max_staleness(self) -> float:
        return self._max_staleness

    def ensure_started(self) -> None:
        """Starts the background readers in this worker (after the server's fork), once."""
        if self._started:
            return
        with self._start_lock:
            if self._started:
                return
            # The first poll before anyone is told "started": concurrent first requests wait on the lock for
            # it instead of finding an empty, stale list (a burst of 503s at a worker's first load).
            self.poll_once()
            self._started = True
            threading.Thread(target=self._poll_loop, name="revocation-poll", daemon=True).start()
            if self._redis_url:
                threading.Thread(target=self._redis_loop, name="revocation-redis", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    # -- background ---------------------------------------------------------------------------------

    @property
    def _feed_url(self) -> str:
        return self._feed_urls[self._feed_turn % len(self._feed_urls)]

    def add(self, sid: str, until: float) -> None:
        self._revoked[sid] = max(until, self._revoked.get(sid, 0.0))

    def add_retired(self, jti: str, *, refuse_from: float, until: float) -> None:
        self._retired[jti] = (refuse_from, until)

    def _report_reuse(self, sid: str, jti: str) -> None:
        try:
            response = self._http.post(
                self._feed_url + "/reuse",
                json={"sid": sid, "jti": jti},
                headers=self._signer.headers_for("auth"),
                timeout=(0.5, 2.0),
            )
            response.raise_for_status()
        except requests.RequestException:
            self._reported.discard(jti)  # told again at the token's next appearance
            _log.warning("token reuse report failed; retried when the token comes back")

    def poll_once(self) -> bool:
        try:
            response = self._http.get(
                self._feed_url,
                params={"since": self._cursor},
                headers=self._signer.headers_for("auth"),
                timeout=(0.5, 2.0),
            )
            response.raise_for_status()
            body: dict[str, Any] = response.json()
        except (requests.RequestException, ValueError):
            self._feed_turn += 1
            return False
        for item in body.get("revoked", []):
            sid, until = item.get("sid"), item.get("until")
            if isinstance(sid, str):
                self.add(sid, _as_epoch(until))
        for item in body.get("retired", []):
            jti = item.get("jti")
            if isinstance(jti, str):
                start = item.get("from")
                # No start given: refused at once (fail closed).
                refuse_from = 0.0 if start is None else _as_epoch(start)
                self.add_retired(jti, refuse_from=refuse_from, until=_as_epoch(item.get("until")))
        cursor = body.get("cursor")
        if cursor is not None:
            self._cursor = str(cursor)
        self._last_fresh = time.monotonic()
        self._prune()
        return True

    def _prune(self) -> None:
        cutoff = time.time() - 120
        if len(self._revoked) + len(self._retired) > 10_000 or int(time.time()) % 30 == 0:
            for sid in [s for s, until in self._revoked.items() if until < cutoff]:
                self._revoked.pop(sid, None)
            for jti in [j for j, (_, until) in self._retired.items() if until < cutoff]:
                self._retired.pop(jti, None)

    def _poll_loop(self) -> None:
        failures = 0
        while not self._stop.wait(min(1.0, self._poll_interval * 2**failures)):
            if self.poll_once():
                failures = 0
            else:
                failures = min(failures + 1, 3)
                _log.warning("revocation feed unreachable", extra={"fields": {"failures": failures}})

    def _redis_loop(self) -> None:
        import redis

        while not self._stop.is_set():
            try:
                client = redis.Redis.from_url(self._redis_url or "", health_check_interval=30)
                pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(REDIS_CHANNEL)
                for message in pubsub.listen():
                    if self._stop.is_set():
                        return
                    try:
                        item = json.loads(message["data"])
                        self.add(str(item["sid"]), _as_epoch(item.get("until")))
                    except (ValueError, KeyError, TypeError):
                        continue
            except Exception:  # noqa: BLE001 - Redis is an accelerator; the poll loop still runs
                _log.warning("revocation pub/sub unavailable; polling only")
                self._stop.wait(2.0)


def _as_epoch(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    # Unknown expiry: keep it long enough to outlive any token.
    return time.time() + 86_400
