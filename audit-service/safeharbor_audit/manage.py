"""Admin commands: `python -m safeharbor_audit.manage migrate | verify | checkpoint | verifier-key | retention |
purge --archive-dir DIR | verify-archive FILE [--key VKEY]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from safeharbor_common.config import ConfigError
from safeharbor_common.db import upgrade_database
from sqlalchemy import select

from . import retention
from .config import load_config
from .models import audit_retention

MIGRATIONS = Path(__file__).parent / "migrations"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m safeharbor_audit.manage")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create or upgrade the tables")
    verify = sub.add_parser("verify", help="recompute chain and tree, check signed checkpoints")
    verify.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        type=Path,
        help="a signed checkpoint kept outside the database (e.g. by a witness); repeatable",
    )
    sub.add_parser("checkpoint", help="sign a checkpoint of the current log now")
    sub.add_parser("verifier-key", help="print the checkpoint verifier key")
    sub.add_parser("retention", help="print the retention policy")
    purge = sub.add_parser("purge", help="archive (signed, verified), then delete entries past AUDIT_RETENTION_DAYS")
    purge.add_argument("--archive-dir", type=Path, required=True)
    check = sub.add_parser("verify-archive", help="check a purge archive alone")
    check.add_argument("archive", type=Path)
    check.add_argument("--key", help="the log's verifier key (default: this log's own)")
    args = parser.parse_args(argv)

    if args.command == "verify-archive" and args.key:
        return _verify_archive(args.archive, args.key)

    try:
        if args.command == "migrate":
            upgrade_database(_database_url(), MIGRATIONS)  # only the database URL is needed here
            print("audit: database migrated")
            return 0
        config = load_config()
    except ConfigError as exc:
        print(f"audit: configuration error: {exc}", file=sys.stderr)
        return 2

    from .app import build_log

    log = build_log(config)
    if args.command == "verify":
        report = log.verify(trusted_checkpoints=[p.read_text() for p in args.checkpoint])
        print(json.dumps(report.as_dict(), indent=2))
        return 0 if report.ok else 1
    if args.command == "checkpoint":
        log.checkpoint_if_due(force=True)
        print(log.latest_checkpoint().note, end="")
        return 0
    if args.command == "retention":
        days = int(config["AUDIT_RETENTION_DAYS"])
        with log.engine.connect() as conn:
            guard = conn.execute(select(audit_retention.c.days).where(audit_retention.c.id == 1)).scalar_one()
        print(json.dumps({"retention_days": days, "delete_command": "purge", "database_guard_days": int(guard)}))
        return 0
    if args.command == "purge":
        try:
            result = retention.purge(log=log, retention_days=int(config["AUDIT_RETENTION_DAYS"]),
                                     archive_dir=args.archive_dir)
        except retention.ArchiveError as exc:
            print(f"audit: archive did not verify, nothing deleted: {exc}", file=sys.stderr)
            return 1
        print(json.dumps({"purged_from": result.purged_from, "purged_to": result.purged_to,
                          "archive": str(result.archive) if result.archive else None}))
        return 0
    if args.command == "verify-archive":
        return _verify_archive(args.archive, log.verifier_key)
    if args.command == "verifier-key":
        print(log.verifier_key)
        return 0
    return 2


def _verify_archive(path: Path, verifier_key: str) -> int:
    try:
        report = retention.verify_archive(json.loads(path.read_text(encoding="utf-8")), verifier_key=verifier_key)
    except (OSError, ValueError) as exc:  # ArchiveError is a ValueError; so is a file that is not JSON
        print(json.dumps({"ok": False, "problem": str(exc) if isinstance(exc, retention.ArchiveError)
                          else type(exc).__name__}))
        return 1
    print(json.dumps({"ok": True, "from": report.purged_from, "to": report.purged_to,
                      "checkpoint_size": report.checkpoint_size, "last_hash": report.last_hash}))
    return 0


def _database_url() -> str:
    from safeharbor_common.config import EnvReader

    return EnvReader().str("DATABASE_URL", "sqlite:///var/audit.db")


if __name__ == "__main__":
    sys.exit(main())
