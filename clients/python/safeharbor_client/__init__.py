"""SafeHarbor client SDK: sessions through the gateway, device keys and the key directory, end-to-end
encrypted messages over Stream. Start with `SafeHarborClient`; the envelope layer is in `envelope`."""
from __future__ import annotations

from .errors import SafeHarborClientError

__all__ = ["SafeHarborClientError"]
