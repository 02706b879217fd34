"""What the gateway does differently under gevent workers (how it is served): blocking calls that hold no
socket, such as the audit outbox's SQLite commit, run in gevent's pool of real threads, so one request's
commit never pauses the other connections of its worker."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def gevent_active() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))


def run_blocking(function: Callable[..., T], **kwargs: Any) -> T:
    """`function(**kwargs)`, off the event loop when gevent is running it (the caller still waits)."""
    if not gevent_active():
        return function(**kwargs)
    import gevent

    return gevent.get_hub().threadpool.apply(function, kwds=kwargs)  # type: ignore[no-any-return]
