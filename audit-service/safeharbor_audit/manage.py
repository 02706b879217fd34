"""Admin commands: `python -m safeharbor_audit.manage migrate | verify | checkpoint | prune`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from safeharbor_common.config import ConfigError
from safeharbor_common.db import upgrade_database

from .config import load_config

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
    sub.add_parser("retention", help="print the retention policy (there is no delete command)")
    args = parser.parse_args(argv)

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
        # Deliberately no prune/delete command: entries are kept at least AUDIT_RETENTION_DAYS (floor: six
        # years), and the database triggers refuse deleting younger entries whatever the caller.
        days = int(config["AUDIT_RETENTION_DAYS"])
        print(json.dumps({"retention_days": days, "delete_command": None, "database_guard_days": 2192}))
        return 0
    if args.command == "verifier-key":
        print(log.verifier_key)
        return 0
    return 2


def _database_url() -> str:
    from safeharbor_common.config import EnvReader

    return EnvReader().str("DATABASE_URL", "sqlite:///var/audit.db")


if __name__ == "__main__":
    sys.exit(main())
