"""Automatic logoff, seen from a long-running command: warn before it happens, once per threshold."""
from __future__ import annotations

WARN_AT_S: tuple[int, ...] = (60, 30, 10)


def logoff_warning(idle_remaining_s: int, absolute_remaining_s: int, *, warned: set[int],
                   thresholds: tuple[int, ...] = WARN_AT_S) -> str | None:
    """The warning to show now, or None. Each threshold warns once (`warned` remembers which did); the idle
    timeout can be pushed back by the person acting, the session's absolute end cannot."""
    remaining = min(idle_remaining_s, absolute_remaining_s)
    due = [t for t in thresholds if remaining <= t and t not in warned]
    if not due:
        return None
    warned.update(due)
    if absolute_remaining_s <= idle_remaining_s:
        return f"the session ends in {remaining} s (its maximum lifetime); log in again afterwards"
    return f"automatic logoff in {remaining} s: press Enter to stay logged in"
