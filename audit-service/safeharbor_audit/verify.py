"""Verification of the stored log: total (any stored value is reported, never raised) and range-parallel.

Everything is read as raw values from the database driver and checked for its type before it is used:
an attacker with database rights can put any value of any type in any column (SQLite stores what it is
given whatever the column's type), and a value the ORM cannot parse must make the report name that entry,
not make verification fail. On SQLite, text is read as bytes (invalid UTF-8 in a TEXT cell would make the
driver raise) and each row's storage classes are compared too: an indexed value stored as a BLOB would
vanish from the query endpoints while reading the same bytes.

Work is split in ranges of `2**range_level` entries, aligned so that every range is one perfect Merkle
subtree: a range is checked on its own (rows, hash chain, every Merkle node completed inside it, the
frontier at each checkpoint size inside it), by this process or a process pool, and the parent folds the
range roots into the upper tree, checks the upper nodes, the checkpoints' roots and the head.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import operator
import os
import sqlite3
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

import orjson
from safeharbor_protocol import checkpoint as cp
from safeharbor_protocol import merkle
from sqlalchemy import Engine

_log = logging.getLogger("safeharbor.audit.verify")
GENESIS_PREV = b"\x00" * 32
RANGE_LEVEL = 16  # ranges of 65,536 entries
_BATCH = 8192  # rows per query inside a range (bounded memory on every driver)
_TEXT_COLUMNS = ("event_id", "source", "actor", "role", "action", "resource", "outcome", "request_id", "severity")
_NULLABLE = frozenset({"role", "resource", "request_id"})
_PG_TS = """to_char(ts, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
_MISMATCH = object()
# Every stored entry has these keys (null where empty): C-level getters, a KeyError sends the row to the slow path.
_HEAD_FIELDS = operator.itemgetter("seq", "prev", "ts")
_INDEXED_FIELDS = operator.itemgetter(*_TEXT_COLUMNS)  # a stored value of a type no hashed value can equal


@dataclass
class VerifyReport:
    ok: bool
    size: int
    root: bytes
    checkpoint_size: int | None
    first_bad_seq: int | None
    problem: str | None = None
    checkpoints_checked: int = 0
    bad_checkpoint: int | None = None  # id of the first stored checkpoint that is itself bad

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "size": self.size,
            "root": self.root.hex(),
            "checkpoint_size": self.checkpoint_size,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
            "checkpoints_checked": self.checkpoints_checked,
            "bad_checkpoint": self.bad_checkpoint,
        }


@dataclass
class RangeResult:
    start: int
    end: int
    first_bad: int | None = None
    problem: str | None = None
    frontiers: dict[int, list[bytes]] = field(default_factory=dict)  # absolute size -> frontier inside range
    last_hash: bytes | None = None
    top_differs: bool = False  # the stored node of the whole range differs (named where it starts to)

    def mark(self, seq: int, why: str) -> None:
        if self.first_bad is None or seq < self.first_bad:
            self.first_bad, self.problem = seq, why


@contextlib.contextmanager
def raw_connection(engine: Engine) -> Iterator[Any]:
    """The driver's own connection (no ORM type processing); SQLite text comes back as bytes."""
    conn = engine.raw_connection()
    try:
        driver = conn.driver_connection
        if engine.dialect.name == "sqlite":
            saved = driver.text_factory  # type: ignore[union-attr]
            driver.text_factory = bytes  # type: ignore[union-attr]
            try:
                yield driver
            finally:
                driver.text_factory = saved  # type: ignore[union-attr]
                driver.rollback()  # type: ignore[union-attr]
        else:
            try:
                yield driver
            finally:
                driver.rollback()  # type: ignore[union-attr]
    finally:
        conn.close()


def fetch(conn: Any, sqlite: bool, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    cursor = conn.cursor()
    try:
        cursor.execute(sql if sqlite else sql.replace("?", "%s"), tuple(params))
        return [tuple(r) for r in cursor.fetchall()]
    finally:
        cursor.close()


def as_text(value: Any) -> Any:
    """A stored text value as str, or _MISMATCH for anything no hashed string can equal."""
    if value is None or type(value) is str:
        return value
    if type(value) is bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return _MISMATCH
    return _MISMATCH


def as_int(value: Any) -> int | None:
    return value if type(value) is int else None


def as_hash(value: Any) -> bytes | None:
    if isinstance(value, memoryview | bytearray):
        value = bytes(value)
    return value if type(value) is bytes and len(value) == 32 else None


def fold(frontier: Sequence[bytes]) -> bytes:
    if not frontier:
        return merkle.EMPTY_ROOT
    acc = frontier[-1]
    for h in reversed(frontier[:-1]):
        acc = merkle.node_hash(h, acc)
    return acc


_COLUMNS = f"seq, ts, {', '.join(_TEXT_COLUMNS)}, canonical, hash"
_RANGE = "FROM audit_entries WHERE seq >= ? AND seq < ? ORDER BY seq"
_SQLITE_ENTRIES = f"SELECT {_COLUMNS} {_RANGE}"
_SQLITE_ENTRIES_STRICT = "SELECT {}, {} {}".format(
    _COLUMNS, "||','||".join(f"typeof({c})" for c in ("seq", "ts", *_TEXT_COLUMNS, "canonical", "hash")), _RANGE
)
_PG_ENTRIES = f"SELECT {_COLUMNS.replace('ts,', _PG_TS + ',', 1)} {_RANGE}"


def _nodes_in_window(conn: Any, sqlite: bool, lo: int, hi: int, max_level: int) -> dict[tuple[int, int], Any]:
    """Stored nodes of levels 0..max_level completed by leaves [lo, hi) (their last leaf is in it)."""
    clauses: list[str] = []
    params: list[int] = []
    for level in range(max_level + 1):
        first, last = lo >> level, (hi >> level) - 1  # nodes whose end leaf (idx + 1) << level is in (lo, hi]
        if first <= last:
            clauses.append("(level = ? AND idx >= ? AND idx <= ?)")
            params += [level, first, last]
    if not clauses:
        return {}
    rows = fetch(conn, sqlite, f"SELECT level, idx, hash FROM merkle_nodes WHERE {' OR '.join(clauses)}", params)
    return {(r[0], r[1]): r[2] for r in rows if type(r[0]) is int and type(r[1]) is int}


def check_range(
    conn: Any, sqlite: bool, start: int, end: int, wanted: Sequence[int], range_level: int, anchor: bytes | None
) -> RangeResult:
    """Checks entries [start, end) and the nodes completed inside; `start >> range_level << range_level`
    is where the range's subtree begins (the log's first retained entry may lie inside it).

    `anchor`: the hash the first entry's `prev` must equal, or None to read it from entry start - 1
    (whose own correctness the range before checks).
    """
    result = RangeResult(start, end)
    try:
        _check_range(conn, sqlite, result, wanted, range_level, anchor)
    except Exception as exc:  # noqa: BLE001 - verification reports, never raises: name where it stopped
        result.mark(result.start, f"the entries could not be read ({type(exc).__name__})")
    return result


def _fetch_entries(conn: Any, sqlite: bool, lo: int, hi: int) -> tuple[list[tuple[Any, ...]], bool]:
    """Rows [lo, hi); True when read the strict way (SQLite text as bytes, with each cell's storage class).

    SQLite's fast way reads text as str: a TEXT cell then comes back as str and a BLOB as bytes, so types
    still tell them apart; only a TEXT cell that is not UTF-8 makes the driver raise, and then this batch
    is read the strict way.
    """
    if not sqlite:
        return fetch(conn, False, _PG_ENTRIES, (lo, hi)), False
    conn.text_factory = str
    try:
        return fetch(conn, True, _SQLITE_ENTRIES, (lo, hi)), False
    except sqlite3.OperationalError:
        pass
    finally:
        conn.text_factory = bytes
    return fetch(conn, True, _SQLITE_ENTRIES_STRICT, (lo, hi)), True


def _check_range(
    conn: Any, sqlite: bool, result: RangeResult, wanted: Sequence[int], range_level: int, anchor: bytes | None
) -> None:
    start, end = result.start, result.end
    base = start >> range_level << range_level
    wanted_set = {s for s in wanted if start < s <= end}
    prev: bytes | None = anchor
    if anchor is None and start > 0:
        rows = fetch(conn, sqlite, "SELECT hash FROM audit_entries WHERE seq = ?", (start - 1,))
        prev = as_hash(rows[0][0]) if len(rows) == 1 else None  # else the range before names it
    elif anchor is None:
        prev = GENESIS_PREV
    differing: set[tuple[int, int]] = set()
    frontier: list[bytes] = []
    if start > base:  # after a purge: the subtrees of [base, start) are kept as nodes (checkpoints sign them)
        ids = merkle.perfect_subtrees(base, start)
        found = {(r[0], r[1]): as_hash(r[2]) for r in fetch(
            conn, sqlite, "SELECT level, idx, hash FROM merkle_nodes WHERE " + " OR ".join(
                "(level = ? AND idx = ?)" for _ in ids), [v for n in ids for v in (n.level, n.index)])}
        kept = [found.get((n.level, n.index)) for n in ids]
        if any(h is None for h in kept):
            result.mark(start, "the Merkle nodes of the purged entries are missing")
            return
        frontier = [h for h in kept if h is not None]
    sha256, loads = hashlib.sha256, orjson.loads
    head_fields, indexed_fields = _HEAD_FIELDS, _INDEXED_FIELDS
    prev_hex = prev.hex() if prev is not None else None
    expected = start
    for lo in range(start, end, _BATCH):
        hi = min(end, lo + _BATCH)
        rows, strict = _fetch_entries(conn, sqlite, lo, hi)
        nodes = _nodes_in_window(conn, sqlite, lo, hi, range_level)
        for row in rows:
            seq = row[0]
            if type(seq) is not int:
                continue  # e.g. a REAL on SQLite: its own seq goes missing, named there
            if seq != expected:
                result.mark(min(seq, expected), "entry missing (gap in the sequence)" if seq > expected
                            else "entry duplicated")
                return
            # The common case in one pass, every comparison typed by its values; anything unusual is
            # examined again by _check_entry, which says what is wrong.
            canonical = row[11]
            digest = sha256(canonical).digest() if type(canonical) is bytes else None
            try:
                entry = loads(canonical) if digest is not None and row[12] == digest else None
                entry_seq, entry_prev, ts = head_fields(entry)  # type: ignore[arg-type]
                ok = (
                    not strict
                    and type(entry_seq) is int
                    and entry_seq == seq
                    and (prev_hex is None or entry_prev == prev_hex)
                    and indexed_fields(entry) == row[2:11]  # type: ignore[arg-type]
                    and type(ts) is str
                    and len(ts) == 27
                    and ts[26] == "Z"
                    and ts[10] == "T"
                    and ts[19] == "."
                    and row[1] == (ts[:10] + " " + ts[11:26] if sqlite else ts)
                )
            except (ValueError, TypeError, KeyError):  # not JSON, not an object, a key missing: look closer
                ok = False
            if not ok:
                why = _check_entry(row, seq, prev, sqlite, strict)
                if why is not None or digest is None:
                    result.mark(seq, why or "entry bytes are not stored as bytes")
                    return
            assert digest is not None  # the fast test above fails without it
            # Merkle: the leaf and every node it completes, each compared with the stored one.
            value = sha256(b"\x00" + digest).digest()
            if nodes.pop((0, seq), None) != value:
                _node_differs(result, differing, 0, seq)
            frontier.append(value)
            index, level = seq - base, 0
            while index & 1:
                value = sha256(b"\x01" + frontier[-2] + value).digest()
                del frontier[-2:]
                frontier.append(value)
                index >>= 1
                level += 1
                key = (level, index + (base >> level))
                if nodes.pop(key, None) != value:
                    _node_differs(result, differing, level, key[1])
                    if level == range_level:
                        result.top_differs = True
            prev, prev_hex = digest, digest.hex()
            expected += 1
            if expected in wanted_set:
                result.frontiers[expected] = list(frontier)
        if result.first_bad is not None:
            return
        if expected < hi:
            result.mark(expected, "entry missing (gap in the sequence)")
            return
    result.frontiers[end] = list(frontier)
    result.last_hash = prev


def _node_differs(result: RangeResult, differing: set[tuple[int, int]], level: int, index: int) -> None:
    differing.add((level, index))
    # A node above one that differs differs too: only the lowest is named.
    if level == 0 or not ({(level - 1, 2 * index), (level - 1, 2 * index + 1)} & differing):
        result.mark(index << level, f"Merkle node {(level, index)} is missing or differs")


def _check_entry(row: tuple[Any, ...], seq: int, prev: bytes | None, sqlite: bool, strict: bool) -> str | None:
    """Every check of one row, saying what is wrong (None: nothing). `strict`: SQLite text read as bytes,
    with each cell's storage class in row[13]."""
    sha256, loads = hashlib.sha256, orjson.loads
    canonical, stored_hash = row[11], row[12]
    if isinstance(canonical, memoryview):
        canonical = bytes(canonical)
    if type(canonical) is not bytes:
        return "entry bytes are not stored as bytes"
    if as_hash(stored_hash) != sha256(canonical).digest():
        return "entry hash does not match its canonical bytes"
    if strict:
        types = row[13]
        want = ["integer", "text"] + [
            "null" if row[2 + i] is None and c in _NULLABLE else "text" for i, c in enumerate(_TEXT_COLUMNS)
        ] + ["blob", "blob"]
        if types != ",".join(want).encode():
            return "a column is stored with the wrong type"
    try:
        entry = loads(canonical)
    except Exception:  # noqa: BLE001 - not JSON, too deep, not UTF-8: all the same to an auditor
        return "entry is not valid JSON"
    if not strict:
        for i in range(2, 11):  # fast read: TEXT is str, a BLOB (bytes) in a text column is a wrong type
            if row[i] is not None and type(row[i]) is not str:
                return "a column is stored with the wrong type"
    if type(entry) is not dict:
        return "entry is not a JSON object"
    entry_seq = entry.get("seq")
    if type(entry_seq) is not int or entry_seq != seq:
        return "entry is out of place (its sequence number differs)"
    if prev is not None and entry.get("prev") != prev.hex():
        return "hash chain broken (prev does not match the previous entry)"
    for i, column in enumerate(_TEXT_COLUMNS):
        want_value = entry.get(column)
        if type(want_value) is not str and not (want_value is None and column in _NULLABLE):
            return f"hashed field {column} has the wrong type"
        if as_text(row[2 + i]) != want_value:
            return f"indexed column {column} differs from the hashed entry"
    ts = entry.get("ts")
    if type(ts) is not str or len(ts) != 27 or ts[10] != "T" or ts[19] != "." or ts[26] != "Z":
        return "entry timestamp is malformed"
    stored_ts = as_text(row[1])
    if stored_ts != (ts[:10] + " " + ts[11:26] if sqlite else ts):
        return "indexed column ts differs from the hashed entry"
    return None


# -- process pool -------------------------------------------------------------------------------------

_worker_engine: Engine | None = None


def _worker_init(url: str) -> None:
    global _worker_engine
    from safeharbor_common.db import create_db_engine

    _worker_engine = create_db_engine(url)


def _worker_check(start: int, end: int, wanted: Sequence[int], range_level: int, anchor: bytes | None) -> RangeResult:
    assert _worker_engine is not None
    with raw_connection(_worker_engine) as conn:
        return check_range(conn, _worker_engine.dialect.name == "sqlite", start, end, wanted, range_level, anchor)


def run_ranges(
    engine: Engine, ranges: Sequence[tuple[int, int]], wanted: Sequence[int], range_level: int,
    anchor: bytes | None, workers: int,
) -> list[RangeResult]:
    """Checks every range, in this process or in `workers` processes; results in range order.

    Stops handing out ranges after the first bad one (later ranges cannot lower the first bad seq).
    """
    sqlite = engine.dialect.name == "sqlite"
    first_anchor = {ranges[0][0]: anchor} if ranges else {}
    if workers <= 1 or len(ranges) <= 1:
        results: list[RangeResult] = []
        with raw_connection(engine) as conn:
            for start, end in ranges:
                results.append(check_range(conn, sqlite, start, end, wanted, range_level, first_anchor.get(start)))
                if results[-1].first_bad is not None:
                    break
        return results
    url = engine.url.render_as_string(hide_password=False)
    # forkserver: a clean child, not a fork of a threaded server process (locks held by other threads).
    context = get_context("forkserver" if os.name == "posix" else "spawn")
    results = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init,
                             initargs=(url,)) as pool:
        futures = [pool.submit(_worker_check, s, e, wanted, range_level, first_anchor.get(s)) for s, e in ranges]
        for future in futures:
            results.append(future.result())
            if results[-1].first_bad is not None:
                for rest in futures:
                    rest.cancel()
                break
    return results


# -- the whole log ------------------------------------------------------------------------------------


@dataclass
class LogState:
    """What verify needs from the log_head row, each value checked."""

    size: int | None
    last_hash: bytes | None
    frontier: list[bytes] | None
    pruned_before: int | None


def read_head(conn: Any, sqlite: bool) -> LogState:
    rows = fetch(conn, sqlite, "SELECT size, last_hash, frontier, pruned_before FROM log_head WHERE id = 1")
    if len(rows) != 1:
        return LogState(None, None, None, None)
    size, last_hash, frontier_text, pruned = rows[0]
    size = as_int(size)
    frontier: list[bytes] | None = None
    text = as_text(frontier_text)
    if isinstance(text, str):
        with contextlib.suppress(Exception):
            parsed = json.loads(text)
            if type(parsed) is list and all(type(h) is str and len(h) == 64 for h in parsed):
                frontier = [bytes.fromhex(h) for h in parsed]
    return LogState(size if size is not None and size >= 0 else None, as_hash(last_hash), frontier,
                    as_int(pruned) if as_int(pruned) is not None and pruned >= 0 else None)


@dataclass
class StoredCheckpoint:
    id: Any
    checkpoint: cp.Checkpoint | None  # None: the stored row is bad (signature, size or root columns)
    why: str | None = None


def read_checkpoints(conn: Any, sqlite: bool, verifier_key: str, origin: str) -> list[StoredCheckpoint]:
    found: list[StoredCheckpoint] = []
    for cid, size, root, note in fetch(conn, sqlite, "SELECT id, size, root, note FROM checkpoints ORDER BY id"):
        text = as_text(note)
        try:
            if not isinstance(text, str):
                raise cp.NoteError("not text")
            signed = cp.verify_checkpoint(text, verifier_key, origin=origin)
        except Exception:  # noqa: BLE001 - any malformed note is a bad checkpoint, reported
            found.append(StoredCheckpoint(cid, None, "a stored checkpoint has a bad signature"))
            continue
        if as_int(size) != signed.size or as_hash(root) != signed.root:
            found.append(StoredCheckpoint(cid, None, "a stored checkpoint's size or root column differs from its note"))
            continue
        found.append(StoredCheckpoint(cid, signed))
    return found


def stray_rows(conn: Any, sqlite: bool, pruned_before: int) -> tuple[int | None, bool, bool]:
    """Rows no append can have written: entries at or past the head, below the pruned start or without a
    seq; Merkle nodes past the head. Each compared with the head as it is now, in one statement, so appends
    committed during verification are not strays. Every clause is an index range: on SQLite a TEXT or BLOB
    seq or level sorts after every number, so `>=` finds those too. Returns (size now, entries?, nodes?)."""
    head_now = "(SELECT size FROM log_head WHERE id = 1)"

    def any_of(table: str, conditions: list[str]) -> str:
        # One index search per arm (an OR of them made both databases scan the whole index).
        return " UNION ALL ".join(f"SELECT * FROM (SELECT 1 FROM {table} WHERE {c} LIMIT 1) AS arm{i}"
                                  for i, c in enumerate(conditions))

    entries = fetch(conn, sqlite, any_of("audit_entries", ["seq IS NULL", f"seq >= {head_now}",
                                                           f"seq < {int(pruned_before)}"]))
    arms = ["level IS NULL", "level < 0", "level > 62"]
    for lv in range(63):
        arms += [f"level = {lv} AND idx IS NULL", f"level = {lv} AND idx < 0",
                 f"level = {lv} AND idx >= ({head_now} >> {lv})"]
    nodes = fetch(conn, sqlite, any_of("merkle_nodes", arms))
    size_now = fetch(conn, sqlite, f"SELECT {head_now}")[0][0]
    return as_int(size_now), bool(entries), bool(nodes)


def last_seq_below(conn: Any, sqlite: bool, bound: int) -> int:
    rows = fetch(conn, sqlite, "SELECT max(seq) FROM audit_entries WHERE seq < ?", (bound,))
    value = rows[0][0] if rows else None
    return value if type(value) is int else -1


def verify_log(
    engine: Engine,
    *,
    verifier_key: str,
    origin: str,
    trusted_checkpoints: Sequence[str] = (),
    workers: int = 1,
    range_level: int = RANGE_LEVEL,
    purge_anchor: Any = None,
) -> VerifyReport:
    """Recompute chain and tree from the stored rows; check every Merkle node, the head and every signed
    checkpoint. Never raises for anything stored: the report names the first bad sequence number (or the
    first bad stored checkpoint). `purge_anchor(conn, sqlite, pruned_before)` gives the hash the first
    retained entry's `prev` must equal after a purge, or None when no purge record vouches for it."""
    try:
        return _verify(engine, verifier_key, origin, trusted_checkpoints, workers, range_level, purge_anchor)
    except Exception as exc:  # noqa: BLE001 - the last guard: an unforeseen state is reported, not a 500
        # The type and code locations only: a message may quote stored values.
        where = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in traceback.extract_tb(exc.__traceback__)]
        _log.error("verification failed", extra={"fields": {"error": type(exc).__name__, "at": where[-3:]}})
        return VerifyReport(False, 0, merkle.EMPTY_ROOT, None, None,
                            f"verification could not complete ({type(exc).__name__})")


def _verify(
    engine: Engine, verifier_key: str, origin: str, trusted: Sequence[str], workers: int, range_level: int,
    purge_anchor: Any,
) -> VerifyReport:
    sqlite = engine.dialect.name == "sqlite"
    first_bad: int | None = None
    problem: str | None = None

    def mark(seq: int, why: str) -> None:
        nonlocal first_bad, problem
        if first_bad is None or seq < first_bad:
            first_bad, problem = seq, why

    with raw_connection(engine) as conn:
        # Checkpoints before the head: every checkpoint read is then no larger than the head read.
        stored = read_checkpoints(conn, sqlite, verifier_key, origin)
        head = read_head(conn, sqlite)
        signed = [s.checkpoint for s in stored if s.checkpoint is not None]
        bad_stored = next((s for s in stored if s.checkpoint is None), None)
        for note in trusted:
            try:
                signed.append(cp.verify_checkpoint(note, verifier_key, origin=origin))
            except Exception:  # noqa: BLE001
                bad_stored = bad_stored or StoredCheckpoint(-1, None, "a given checkpoint does not verify")
        pruned = head.pruned_before if head.pruned_before is not None else 0
        if head.pruned_before is None:
            mark(0, "the log head's pruned start is malformed")
        bound = head.size if head.size is not None else last_seq_below(conn, sqlite, 2**62) + 1
        n = max(pruned, min(bound, last_seq_below(conn, sqlite, bound) + 1))
        if head.size is None:
            mark(n, "the log head's size is malformed")
        elif n < bound:
            mark(n, "entries missing at the end of the log (truncated)")
        anchor: bytes | None = None
        if pruned:
            anchor = purge_anchor(conn, sqlite, pruned) if purge_anchor is not None else None
            if anchor is None:
                mark(0, f"entries before {pruned} were removed without a purge record")
        upper_stored = {(r[0], r[1]): r[2] for r in fetch(
            conn, sqlite, "SELECT level, idx, hash FROM merkle_nodes WHERE level > ?", (range_level,))}
        upper = merkle.CompactRange()
        first_base = pruned >> range_level << range_level
        if first_base:
            prefix = merkle.perfect_subtrees(0, first_base)
            rows = {(r[0], r[1]): as_hash(r[2]) for r in fetch(
                conn, sqlite, "SELECT level, idx, hash FROM merkle_nodes WHERE " + " OR ".join(
                    "(level = ? AND idx = ?)" for _ in prefix), [v for p in prefix for v in (p.level, p.index)])}
            hashes = [rows.get((p.level, p.index)) for p in prefix]
            if any(h is None for h in hashes):
                mark(pruned, "the Merkle nodes of the purged entries are missing")
            upper = merkle.CompactRange(size=first_base >> range_level, frontier=[h for h in hashes if h is not None])

    step = 1 << range_level
    ranges = [(max(pruned, s), min(n, s + step)) for s in range(first_base, n, step)]
    wanted = sorted({c.size for c in signed if pruned < c.size <= n} | {n})
    results = run_ranges(engine, ranges, wanted, range_level, anchor, workers) if ranges else []

    roots: dict[int, bytes] = {}
    if n == pruned:
        roots[n] = fold(upper.frontier) if pruned else merkle.EMPTY_ROOT
    good_size = n
    upper_differing: set[tuple[int, int]] = set()
    last_hash: bytes | None = None
    final_frontier: list[bytes] | None = list(upper.frontier) if n == pruned else None
    for result in results:
        prefix_frontier = list(upper.frontier)
        for size, within in result.frontiers.items():
            roots[size] = fold(prefix_frontier + within)
        if result.first_bad is not None:
            mark(result.first_bad, result.problem or "bad entry")
            good_size = min(good_size, result.first_bad)
            break
        last_hash = result.last_hash
        if result.end == n:
            final_frontier = prefix_frontier + result.frontiers[n]
        if result.end - (result.start >> range_level << range_level) == step:
            if result.top_differs:
                upper_differing.add((0, upper.size))
            for node, value in upper.append(result.frontiers[result.end][0]):
                if node.level == 0:
                    continue  # the range's own root: checked by its range
                key = (node.level + range_level, node.index)
                if as_hash(upper_stored.get(key)) != value:
                    children = {(node.level - 1, 2 * node.index), (node.level - 1, 2 * node.index + 1)}
                    if not children & upper_differing:
                        mark(node.index << key[0], f"Merkle node {key} is missing or differs")
                    upper_differing.add((node.level, node.index))
    good_size = min(good_size, first_bad) if first_bad is not None else good_size

    if first_bad is None and n > pruned:
        if head.last_hash is None or head.last_hash != last_hash:
            mark(n, "the log head's last hash differs from the last entry")
        if head.frontier is None or head.frontier != final_frontier:
            mark(n, "the log head's frontier differs from the tree")
    with raw_connection(engine) as conn:
        _size_now, stray_entries, stray_nodes = stray_rows(conn, sqlite, pruned)
    if stray_entries:
        mark(n, "entries beyond the log head (or below its start) that no append wrote")
    if stray_nodes:
        mark(n, "Merkle nodes beyond the log head that no append wrote")

    matched_up_to = pruned
    for checkpoint in sorted(signed, key=lambda c: c.size):
        if checkpoint.size <= pruned:
            continue  # below the retained log: the purge archive carries its proofs
        if checkpoint.size > good_size:
            mark(good_size, f"a signed checkpoint covers {checkpoint.size} entries; only {good_size} verify")
            break
        if roots.get(checkpoint.size) != checkpoint.root:
            mark(matched_up_to, f"the tree disagrees with the signed checkpoint of size {checkpoint.size}")
            break
        matched_up_to = checkpoint.size
    good_size = min(good_size, first_bad) if first_bad is not None else good_size
    if bad_stored is not None and problem is None:
        problem = bad_stored.why
    latest = max(signed, key=lambda c: c.size) if signed else None
    verified_roots = [s for s in roots if s <= good_size]
    return VerifyReport(
        ok=first_bad is None and bad_stored is None,
        size=good_size,
        root=roots[max(verified_roots)] if verified_roots else merkle.EMPTY_ROOT,
        checkpoint_size=latest.size if latest else None,
        first_bad_seq=first_bad,
        problem=problem,
        checkpoints_checked=len(signed),
        bad_checkpoint=(bad_stored.id if isinstance(bad_stored.id, int) else -1) if bad_stored else None,
    )
