"""Development secrets: generated once, kept in a 0600 file under var/ so restarts keep them."""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from safeharbor_common.service_identity import generate_keypair
from safeharbor_protocol.encoding import b64url_encode

SERVICE_IDENTITIES = ("gateway", "auth", "keydir", "audit", "push")


def generate_secrets() -> dict[str, str]:
    values: dict[str, str] = {}
    public: list[str] = []
    for name in SERVICE_IDENTITIES:
        seed, pub = generate_keypair()
        values[f"{name.upper()}_SERVICE_PRIVATE_KEY"] = seed
        public.append(f"{name}={pub}")
    values["SERVICE_PUBLIC_KEYS"] = ",".join(public)
    values["AUTH_DATA_KEY"] = b64url_encode(secrets.token_bytes(32))
    values["AUDIT_DATA_KEY"] = b64url_encode(secrets.token_bytes(32))
    values["AUDIT_DATA_KEY_ID"] = "dev-1"
    values["AUDIT_SIGNING_KEY"] = generate_keypair()[0]
    values["KEYDIR_SIGNING_KEY"] = generate_keypair()[0]
    values["STREAM_API_KEY"] = "dev-" + secrets.token_hex(6)
    values["STREAM_API_SECRET"] = secrets.token_urlsafe(48)
    return values


def load_or_create(path: Path) -> dict[str, str]:
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
        fresh = generate_secrets()
        missing = {k: v for k, v in fresh.items() if k not in stored}
        if missing:
            stored.update(missing)
            _write(path, stored)
        return stored
    values = generate_secrets()
    _write(path, values)
    return values


def _write(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(values, handle, indent=2)
