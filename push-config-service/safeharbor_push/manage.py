"""Admin commands: `python -m safeharbor_push.manage migrate | apply-defaults | check-drift | lint FILE`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from safeharbor_common.config import ConfigError, EnvReader
from safeharbor_common.db import upgrade_database

from .config import DEFAULT_DATABASE_URL

MIGRATIONS = Path(__file__).parent / "migrations"


def _database_url() -> str:
    env = EnvReader()
    return env.optional_str("DATABASE_URL") or DEFAULT_DATABASE_URL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m safeharbor_push.manage")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create or upgrade the tables")
    defaults = sub.add_parser(
        "apply-defaults", help="apply the generic templates to every slot without an approved version"
    )
    defaults.add_argument("--force", action="store_true", help="re-apply the generic templates to every slot")
    sub.add_parser("check-drift", help="compare approved templates with Stream now (records drift); print status")
    lint = sub.add_parser("lint", help="lint a template file (no database or Stream needed)")
    lint.add_argument("file", type=Path)
    lint.add_argument("--provider", choices=["apn", "firebase"], required=True)
    lint.add_argument("--kind", choices=["notification", "data", "apn"], default="notification")
    args = parser.parse_args(argv)

    if args.command == "migrate":
        upgrade_database(_database_url(), MIGRATIONS)
        print("push: database migrated")
        return 0
    if args.command == "lint":
        from .lint import PROVIDER_KINDS, lint_template

        if args.kind not in PROVIDER_KINDS[args.provider]:
            print(f"push: {args.provider} templates are of kind {', '.join(PROVIDER_KINDS[args.provider])}")
            return 2
        result = lint_template(args.file.read_text(), provider=args.provider, kind=args.kind)
        print(json.dumps({"ok": result.ok, "findings": [f.as_dict() for f in result.findings]}, indent=2))
        return 0 if result.ok else 1

    from .app import create_app
    from .errors import StreamFailure
    from .service import apply_defaults, check_drift

    try:
        app = create_app({"PUSH_DRIFT_CHECK_ENABLED": False, "PUSH_APPLY_DEFAULTS_ON_START": False})
    except ConfigError as exc:
        print(f"push: configuration error: {exc}", file=sys.stderr)
        return 2
    ctx = app.extensions["push"]
    try:
        with app.app_context():
            if args.command == "apply-defaults":
                rows = apply_defaults(ctx=ctx, force=args.force)
                for row in rows:
                    print(f"push: applied generic {row.provider} {row.kind} template as version {row.version}")
                if not rows:
                    print("push: every slot already has an approved template")
                return 0
            if args.command == "check-drift":
                print(json.dumps(check_drift(ctx=ctx).model_dump(), indent=2))
                return 0
    except StreamFailure as exc:
        print(f"push: {exc.message}", file=sys.stderr)
        return 1
    finally:
        audit = app.extensions.get("audit")
        if audit is not None:
            # Events are durable in the outbox the service's workers share; a short wait ships them now.
            audit.flush(timeout=3.0)
    return 2


if __name__ == "__main__":
    sys.exit(main())
