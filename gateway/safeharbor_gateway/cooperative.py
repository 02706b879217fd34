"""What the gateway does differently under gevent workers (how it is served)."""
from __future__ import annotations

import functools


@functools.cache  # a worker is patched before the application loads, and stays so: ask once, not per request
def gevent_active() -> bool:
    """True in a gevent worker (sockets patched): blocking calls then wait cooperatively."""
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))
