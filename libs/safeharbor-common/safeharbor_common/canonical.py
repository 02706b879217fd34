"""RFC 8785 (JCS) canonical JSON: the bytes that get hashed and signed."""
from __future__ import annotations

from typing import Any

import rfc8785


def canonical_json(value: Any) -> bytes:
    return rfc8785.dumps(value)
