"""Signed webhook delivery from a background thread, with retries and exponential backoff.

Like Stream: POST of the event JSON, `X-Signature` = hex HMAC-SHA256 of the *uncompressed* body keyed with
the API secret, `X-Webhook-Id` constant across retries (receivers dedupe on it), `X-Webhook-Attempt` from 1,
`X-Api-Key`, and `Content-Encoding: gzip` when the app setting `webhook_compression_algorithm` is "gzip".
Targets: `STREAM_EMULATOR_WEBHOOK_URL`, the app's `webhook_url` (filtered by `webhook_events`, empty = all)
and enabled `event_hooks` of `hook_type` "webhook" (filtered by `event_types`). The delivery log keeps ids,
types and outcomes only, never bodies (they carry message text).
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import requests

from .clock import now_iso
from .config import EmulatorConfig

log = logging.getLogger(__name__)

JSON = dict[str, Any]
_LOG_LIMIT = 2000


def sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


@dataclass
class _Job:
    webhook_id: str
    url: str
    body: bytes
    gzip: bool
    entry: JSON
    attempt: int = 1
    headers: dict[str, str] = field(default_factory=dict)


def targets_for(event_type: str, app: JSON, env_url: str | None) -> list[str]:
    urls: list[str] = []
    if env_url:
        urls.append(env_url)
    app_url = app.get("webhook_url") or ""
    wanted = app.get("webhook_events") or []
    if app_url and (not wanted or event_type in wanted):
        urls.append(app_url)
    for hook in app.get("event_hooks") or []:
        if not isinstance(hook, dict) or not hook.get("enabled", True):
            continue
        if hook.get("hook_type", "webhook") != "webhook" or not hook.get("webhook_url"):
            continue
        types = hook.get("event_types") or []
        if not types or event_type in types:
            urls.append(str(hook["webhook_url"]))
    # Same URL configured twice gets one delivery, as a receiver would expect.
    return list(dict.fromkeys(urls))


class WebhookDispatcher:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._heap: list[tuple[float, int, _Job]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._log: list[JSON] = []
        self._inflight = 0
        self._stopped = False
        self._session = requests.Session()
        self._thread = threading.Thread(target=self._run, name="stream-emulator-webhooks", daemon=True)
        self._thread.start()

    # -- producer side -----------------------------------------------------------------------------

    def emit(self, event: JSON, app: JSON) -> None:
        """Queue `event` for every configured target. Never blocks on the network."""
        event_type = str(event.get("type", ""))
        urls = targets_for(event_type, app, self.config.webhook_url)
        if not urls:
            return
        body = json.dumps(event, separators=(",", ":")).encode("utf-8")
        compress = str(app.get("webhook_compression_algorithm") or "").lower() == "gzip"
        with self._cond:
            for url in urls:
                webhook_id = str(uuid.uuid4())
                entry: JSON = {
                    "webhook_id": webhook_id,
                    "type": event_type,
                    "cid": event.get("cid"),
                    "message_id": (event.get("message") or {}).get("id"),
                    "user_id": (event.get("user") or {}).get("id"),
                    "url": url,
                    "gzip": compress,
                    "status": "pending",
                    "attempts": [],
                    "queued_at": now_iso(),
                }
                self._log.append(entry)
                del self._log[:-_LOG_LIMIT]
                job = _Job(webhook_id=webhook_id, url=url, body=body, gzip=compress, entry=entry)
                heapq.heappush(self._heap, (time.monotonic(), next(self._seq), job))
            self._cond.notify_all()
        log.info("webhook queued type=%s targets=%d", event_type, len(urls))

    def deliveries(self) -> list[JSON]:
        with self._cond:
            return copy.deepcopy(self._log)

    def clear(self) -> None:
        with self._cond:
            self._log.clear()
            self._heap.clear()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is queued or in flight (tests and `/_emulator/webhooks?wait=`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    # -- worker side -------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        break
                    timeout = (self._heap[0][0] - time.monotonic()) if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, job = heapq.heappop(self._heap)
                self._inflight += 1
            try:
                self._attempt(job)
            except Exception:  # a bug here must not kill the delivery thread
                log.exception("webhook worker error id=%s", job.webhook_id)
            finally:
                with self._cond:
                    self._inflight -= 1
                    self._cond.notify_all()

    def _attempt(self, job: _Job) -> None:
        payload = gzip.compress(job.body) if job.gzip else job.body
        headers = {
            "Content-Type": "application/json",
            "X-Signature": sign(job.body, self.config.api_secret),
            "X-Webhook-Id": job.webhook_id,
            "X-Webhook-Attempt": str(job.attempt),
            "X-Api-Key": self.config.api_key,
            "User-Agent": "Stream-Webhook-Client (safeharbor stream-emulator)",
        }
        if job.gzip:
            headers["Content-Encoding"] = "gzip"
        record: JSON = {"attempt": job.attempt, "at": now_iso()}
        ok = False
        try:
            resp = self._session.post(job.url, data=payload, headers=headers, timeout=self.config.webhook_timeout_s)
            record["status_code"] = resp.status_code
            ok = 200 <= resp.status_code < 300
        except requests.RequestException as exc:
            record["error"] = type(exc).__name__
        with self._cond:
            job.entry["attempts"].append(record)
            if ok:
                job.entry["status"] = "delivered"
            elif job.attempt >= self.config.webhook_attempts:
                job.entry["status"] = "failed"
            else:
                delay = self.config.webhook_backoff_s * (2 ** (job.attempt - 1))
                job.attempt += 1
                heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), job))
                self._cond.notify_all()
        log.info(
            "webhook attempt id=%s type=%s attempt=%d outcome=%s",
            job.webhook_id,
            job.entry["type"],
            record["attempt"],
            record.get("status_code", record.get("error")),
        )
