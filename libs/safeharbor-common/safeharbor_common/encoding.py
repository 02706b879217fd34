"""Unpadded base64url, the API's encoding for binary values."""
from __future__ import annotations

import base64
import binascii


class EncodingError(ValueError):
    """A value is not valid unpadded base64url."""


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not isinstance(text, str) or "=" in text:
        raise EncodingError("expected unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise EncodingError("expected unpadded base64url") from exc
