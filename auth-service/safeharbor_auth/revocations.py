"""The revocation feed the gateway reads (trust rule 3: ended sessions refused within 1 s).

The feed is the sessions table itself: rows revoked after the cursor whose tokens could still be valid,
`until` being the last `exp` issued for the session, and tokens retired by refresh (`retired`, by jti,
refused from the end of their grace). The cursor is a time in milliseconds set a few seconds
behind the newest answer, so a revocation whose transaction committed late (another worker, another
replica, a slightly different clock) is still delivered; the gateway's set is idempotent, so repeats cost
nothing. With Redis each revocation is also published at once on `safeharbor:revocations`.
"""
from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from .models import RetiredToken, Session
from .sessions.schemas import RetiredItem, RevocationFeed, RevokedItem

REDIS_CHANNEL = "safeharbor:revocations"
CURSOR_OVERLAP_MS = 5000
MAX_CURSOR_MS = 10**13  # year 2286: anything larger was not made by this feed
_log = logging.getLogger("safeharbor.auth.revocations")


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_cursor(text: str | None) -> int:
    if text is None or text.strip() == "":
        return 0
    value = int(text)  # ValueError handled by the view
    if value < 0 or value > MAX_CURSOR_MS:
        raise ValueError("cursor out of range")
    return value


FEED_VERSION = 1


def feed(engine: Engine, *, since_ms: int, leeway: int, now: datetime) -> RevocationFeed:
    since = datetime.fromtimestamp(since_ms / 1000, UTC) if since_ms > 0 else None
    query = select(Session.id, Session.token_expires_at).where(
        Session.revoked_at.is_not(None),
        Session.token_expires_at > now - timedelta(seconds=leeway),
    )
    if since is not None:
        query = query.where(Session.revoked_at >= since)
    retired_query = select(
        RetiredToken.jti, RetiredToken.session_id, RetiredToken.refuse_from, RetiredToken.expires_at
    ).where(RetiredToken.expires_at > now - timedelta(seconds=leeway))
    if since is not None:
        retired_query = retired_query.where(RetiredToken.retired_at >= since)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(Session.revoked_at)).all()
        retired = conn.execute(retired_query.order_by(RetiredToken.retired_at)).all()
    cursor = max(since_ms, int(now.timestamp() * 1000) - CURSOR_OVERLAP_MS)
    return RevocationFeed(
        version=FEED_VERSION,
        revoked=[RevokedItem(sid=r.id, until=rfc3339(r.token_expires_at + timedelta(seconds=leeway))) for r in rows],
        retired=[
            # `from` is a Python keyword: the item is made from its JSON names.
            RetiredItem.model_validate({"jti": r.jti, "sid": r.session_id, "from": rfc3339(r.refuse_from),
                                        "until": rfc3339(r.expires_at + timedelta(seconds=leeway))})
            for r in retired
        ],
        cursor=str(cursor),
    )


class RevocationPublisher:
    """Publishes revoked sids on Redis; the feed stays the source of truth if Redis is down."""

    def __init__(self, redis_url: str | None) -> None:
        self._client: Any = None
        if redis_url:
            import redis

            self._client = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)

    def publish(self, items: list[tuple[str, datetime]], *, leeway: int) -> None:
        if self._client is None or not items:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for sid, until in items:
                pipe.publish(
                    REDIS_CHANNEL, json.dumps({"sid": sid, "until": rfc3339(until + timedelta(seconds=leeway))})
                )
            pipe.execute()
        except Exception:  # noqa: BLE001 - Redis only accelerates; the polled feed still delivers
            _log.warning("revocation publish failed; the feed will deliver it", extra={"fields": {"count": len(items)}})
