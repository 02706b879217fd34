"""Admin commands: `python -m safeharbor_keydir.manage migrate | verify | checkpoint | verifier-key`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from safeharbor_common.config import ConfigError, EnvReader
from safeharbor_common.db import upgrade_database

from .config import DEFAULT_DATABASE_URL, load_config

MIGRATIONS = Path(__file__).parent / "migrations"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m safeharbor_keydir.manage")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create or upgrade the tables")
    sub.add_parser("verify", help="recompute the Merkle tree from the stored leaves; check every checkpoint")
    sub.add_parser("checkpoint", help="print the latest signed checkpoint")
    sub.add_parser("verifier-key", help="print the checkpoint verifier key")
    args = parser.parse_args(argv)

    try:
        if args.command == "migrate":
            # Only the database URL is needed here: migrations run before secrets are handed out.
            upgrade_database(EnvReader().str("DATABASE_URL", DEFAULT_DATABASE_URL), MIGRATIONS)
            print("keydir: database migrated")
            return 0
        config = load_config()
    except ConfigError as exc:
        print(f"keydir: configuration error: {exc}", file=sys.stderr)
        return 2

    from .app import build_log

    log = build_log(config)
    if args.command == "verify":
        report = log.verify()
        print(json.dumps(report, indent=2))
        return 0 if report["ok"] else 1
    if args.command == "checkpoint":
        print(log.latest_checkpoint().note, end="")
        return 0
    if args.command == "verifier-key":
        print(log.verifier_key)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
