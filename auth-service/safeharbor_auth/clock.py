"""The one source of "now" for every time decision in auth-service: session idle and absolute ends, token
expiry, MFA windows, lockout, break-glass deadlines, refresh grace, signing-key rotation, job back-off.

Production uses `SystemClock`; tests hand `create_app` a `FakeClock` (test_config["CLOCK"]) and move it
forward instead of sleeping. Elapsed-time budgets (how long a loop may run, cache ages) are not decisions
about the domain and keep reading the monotonic clock.
"""
from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def timestamp(self) -> float:
        """The current time as POSIX seconds."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def timestamp(self) -> float:
        return time.time()


class FakeClock:
    """A clock that moves only when told to (tests). Starts at the wall clock's time unless given one, so
    tokens it dates are still checked against keys and clocks that exist."""

    def __init__(self, start: datetime | None = None) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start")
        self._now = start or datetime.now(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def timestamp(self) -> float:
        return self.now().timestamp()

    def advance(self, seconds: float) -> datetime:
        """Moves time forward by `seconds` (never back: nothing in auth expects time to run backwards)."""
        if seconds < 0:
            raise ValueError("FakeClock only moves forward")
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now
