"""Local Stream Chat API emulator: a DEVELOPMENT AND TEST TOOL, never part of a production stack.

It answers the subset of Stream's server API that SafeHarbor calls through the real `stream-chat` SDK
(point the SDK at it with `STREAM_CHAT_URL` / `base_url=`), checks server and user JWTs the way Stream
does, and emits signed webhooks.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
