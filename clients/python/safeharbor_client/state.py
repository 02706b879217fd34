"""The client's state directory: session, keyring, directory memory, seen message ids.

Layout (all files 0600, the directory 0700; writes are atomic renames):
    session.json     the current session (token, expiry, user)
    keyring.json     this user's private keys, every version (see keys.Keyring)
    directory.json   pinned checkpoint verifier key and the last verified checkpoint of the key directory
    seen.sqlite3     message ids read per channel, for replay detection
One directory per user and device: two devices of one user are two state directories.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from .keys import Keyring


def default_state_dir() -> Path:
    env = os.environ.get("SAFEHARBOR_HOME")
    return Path(env) if env else Path.home() / ".safeharbor"


class StateDir:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(self.path, 0o700)
        self._seen: SeenStoreSqlite | None = None

    # -- JSON files -----------------------------------------------------------------------------

    def read_json(self, name: str) -> dict[str, Any] | None:
        file = self.path / name
        try:
            data = json.loads(file.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / name).unlink()

    # -- typed accessors ------------------------------------------------------------------------

    def load_session(self) -> dict[str, Any] | None:
        return self.read_json("session.json")

    def save_session(self, session: dict[str, Any]) -> None:
        self.write_json("session.json", session)

    def clear_session(self) -> None:
        self.delete("session.json")

    def load_keyring(self, user_id: str) -> Keyring:
        data = self.read_json("keyring.json")
        if data is None or data.get("user_id") != user_id:
            return Keyring(user_id=user_id)
        return Keyring.from_json(data)

    def save_keyring(self, keyring: Keyring) -> None:
        self.write_json("keyring.json", keyring.to_json())

    def load_directory(self) -> dict[str, Any]:
        return self.read_json("directory.json") or {}

    def save_directory(self, data: dict[str, Any]) -> None:
        self.write_json("directory.json", data)

    @property
    def seen(self) -> SeenStoreSqlite:
        if self._seen is None:
            self._seen = SeenStoreSqlite(self.path / "seen.sqlite3")
        return self._seen


class SeenStoreSqlite:
    """Message ids read, per channel: the first transport message id each envelope id came in."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.closing(self._connect()) as conn, conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS seen (cid TEXT NOT NULL, mid TEXT NOT NULL, transport_id TEXT NOT NULL,"
                " ts_ms INTEGER NOT NULL, first_seen REAL NOT NULL, PRIMARY KEY (cid, mid))"
            )
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def remember(self, *, cid: str, mid: str, transport_id: str, ts_ms: int) -> str | None:
        with contextlib.closing(self._connect()) as conn, conn:
            conn.execute(
                "INSERT OR IGNORE INTO seen (cid, mid, transport_id, ts_ms, first_seen) VALUES (?, ?, ?, ?, ?)",
                (cid, mid, transport_id, ts_ms, time.time()),
            )
            row = conn.execute("SELECT transport_id FROM seen WHERE cid = ? AND mid = ?", (cid, mid)).fetchone()
        first = str(row[0])
        return None if first == transport_id else first
