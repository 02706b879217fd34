"""Unpadded base64url, the API's encoding for binary values; decimal numbers as they arrive in text."""
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


def parse_decimal(text: str, *, max_digits: int) -> int | None:
    """The number an ASCII decimal string of 1 to `max_digits` digits spells; None for anything else.

    ASCII only: str.isdigit() is also true for "³" and other Unicode digits that int() refuses (a 500 where
    a 400 belongs), and `max_digits` bounds the conversion of a hostile string.
    """
    if text.isascii() and text.isdigit() and len(text) <= max_digits:
        return int(text)
    return None
