"""Which sessions have been ended before their tokens expire (trust rule 3).

Every gateway worker keeps the set in memory, so a request costs a dict lookup. It is filled by polling
auth-service's revocation feed every `poll_interval` (a quarter second by default) and, where Redis is
configured, pushed at once over pub/sub. Fail closed: when the feed has not been read for
`max_staleness` seconds, authenticated requests are refused with 503 rather than risk honouring an ended
session (docs/SECURITY.md).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import requests
from safeharbor_common.service_identity import ServiceTokenSigner

REDIS_CHANNEL = "safeharbor:revocations"
_log = logging.getLogger("safeharbor.gateway.revocation")


class RevocationList:
    def __init__(
        self,
        *,
        feed_url: str,
        signer: ServiceTokenSigner,
        redis_url: str | None = None,
        poll_interval: float = 0.25,
        max_staleness: float = 5.0,
    ) -> None:
        self._feed_url = feed_url
        self._signer = signer
        self._redis_url = redis_url
        self._poll_interval = poll_interval
        self._max_staleness = max_staleness
        self._revoked: dict[str, float] = {}
        self._cursor = "0"
        self._last_fresh = float("-inf")
        self._started = False
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._http = requests.Session()

    # -- the hot path -------------------------------------------------------------------------------

    def is_revoked(self, sid: str) -> bool:
        until = self._revoked.get(sid)
        return until is not None and until >= time.time() - 60

    def is_fresh(self) -> bool:
        return time.monotonic() - self._last_fresh <= self._max_staleness

    def ensure_started(self) -> None:
        """Starts the background readers in this worker (after the server's fork), once."""
        if self._started:
            return
        with self._start_lock:
            if self._started:
                return
            self._started = True
            self.poll_once()
            threading.Thread(target=self._poll_loop, name="revocation-poll", daemon=True).start()
            if self._redis_url:
                threading.Thread(target=self._redis_loop, name="revocation-redis", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    # -- background ---------------------------------------------------------------------------------

    def add(self, sid: str, until: float) -> None:
        self._revoked[sid] = max(until, self._revoked.get(sid, 0.0))

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
            return False
        for item in body.get("revoked", []):
            sid, until = item.get("sid"), item.get("until")
            if isinstance(sid, str):
                self.add(sid, _as_epoch(until))
        cursor = body.get("cursor")
        if cursor is not None:
            self._cursor = str(cursor)
        self._last_fresh = time.monotonic()
        self._prune()
        return True

    def _prune(self) -> None:
        cutoff = time.time() - 120
        if len(self._revoked) > 10_000 or int(time.time()) % 30 == 0:
            for sid in [s for s, until in self._revoked.items() if until < cutoff]:
                self._revoked.pop(sid, None)

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
        from datetime import datetime

        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    # Unknown expiry: keep it long enough to outlive any token.
    return time.time() + 86_400
